"""Image-data flywheel: curation, captioning, training and the closed loop (see ARCHITECTURE.md)."""
