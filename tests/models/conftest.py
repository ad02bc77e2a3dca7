"""Fixtures of tests/models live in model_fixtures.py so tests/filters can import them too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_fixtures import photos, tiny_aesthetic_dir, tiny_clip_dir, tiny_models  # noqa: E402,F401
