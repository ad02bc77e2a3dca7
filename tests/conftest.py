"""Shared fixtures. Ray and Prefect start once per session (ray.init ~6 s, Prefect's temporary
server ~10 s here), never per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/builders.py (tiny random-weight models) is imported as `builders` from any test; the suite runs
# with --import-mode=importlib, which puts no test folder on sys.path by itself
sys.path.insert(0, str(Path(__file__).resolve().parent))

# tiny random-weight CLIP and aesthetic models, shared by tests/models and tests/filters
pytest_plugins = ["model_fixtures"]

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own FLYWHEEL_HOME (catalog, state, caches)."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "fw-home"))
    yield


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the whole session (2 CPUs + 1 logical, as `engine.ensure_ray`)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary local API for the session, no server to run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
