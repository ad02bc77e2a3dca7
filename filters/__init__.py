"""flywheel.filters"""
