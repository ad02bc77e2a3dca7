"""flywheel.captioning"""
