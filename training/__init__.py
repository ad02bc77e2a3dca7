"""flywheel.training"""
