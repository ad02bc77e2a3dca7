"""flywheel.models"""
