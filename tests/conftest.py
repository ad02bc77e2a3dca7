"""Shared fixtures. Ray and Prefect start once per session (ray.init ~6 s, Prefect's temporary
server ~10 s here), never per test."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# tests/builders.py (tiny random-weight models) is imported as `builders` from any test; the suite runs
# with --import-mode=importlib, which puts no test folder on sys.path by itself
sys.path.insert(0, str(Path(__file__).resolve().parent))

# tiny random-weight CLIP and aesthetic models, shared by tests/models and tests/filters
pytest_plugins = ["model_fixtures", "pg_fixtures"]

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every command of the suite runs on its own Ray and Prefect, which end with it (flywheel.flows.server,
# mode off); the tests of the reused local server turn it on themselves. Each server any test starts
# is listed here, and the session fails if one is still alive at its end (pytest_sessionfinish).
os.environ["FLYWHEEL_SERVER"] = "off"
_SERVERS = Path(tempfile.mkdtemp(prefix="fw-test-servers-")) / "started"
os.environ["FLYWHEEL_SERVER_REGISTRY"] = str(_SERVERS)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a local server a test started is still alive."""
    from flywheel.flows.server import stop_listed

    alive = stop_listed(_SERVERS)
    shutil.rmtree(_SERVERS.parent, ignore_errors=True)
    if alive:
        msg = "flywheel servers left running by the tests (now stopped): " + ", ".join(alive)
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        (tr.write_line if tr else print)(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch, request):
    """Every test gets its own FLYWHEEL_HOME (catalog, state, caches). The catalog is SQLite unless
    a test picks PostgreSQL, or FLYWHEEL_TEST_CATALOG=postgresql runs every test of the session on
    a fresh PostgreSQL database (tests/pg_fixtures.py) to find SQL that only SQLite accepts."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "fw-home"))
    monkeypatch.delenv("FLYWHEEL_CATALOG", raising=False)
    if os.environ.get("FLYWHEEL_TEST_CATALOG") == "postgresql":
        request.getfixturevalue("pg_url")
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
