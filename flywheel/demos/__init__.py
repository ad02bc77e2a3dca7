"""Demos on generated data: `flywheel demo` (curation) and `flywheel loop --demo` (the closed loop)."""
