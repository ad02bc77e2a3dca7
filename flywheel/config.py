"""Where things live. Embedded defaults: everything under one home directory."""

from __future__ import annotations

import os
from pathlib import Path

# Offline by default: Prefect's telemetry and the hubs cannot be reached here, and their errors
# must not reach users' logs. A user who wants them sets the variables themselves.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# Prefect without a server starts a temporary local one; on a loaded 2-core machine it can take
# far longer than Prefect's default wait.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def home() -> Path:
    """`FLYWHEEL_HOME`, default `./.flywheel`: the catalog, run state, models and caches."""
    p = Path(os.environ.get("FLYWHEEL_HOME", ".flywheel")).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p


def catalog_path() -> Path:
    return home() / "catalog.db"


def catalog_location() -> str:
    """`FLYWHEEL_CATALOG` (a `postgresql://user:pass@host:port/db` URL, or a SQLite file path),
    else the embedded default `FLYWHEEL_HOME/catalog.db`. A URL that fails to connect is an
    error, never a quiet fall back to SQLite."""
    env = os.environ.get("FLYWHEEL_CATALOG", "").strip()
    return env if env else str(catalog_path())


def models_dir() -> Path:
    p = home() / "models"
    p.mkdir(parents=True, exist_ok=True)
    return p


def state_dir() -> Path:
    """In-progress run state (scored parts), keyed by the run's inputs and recipe."""
    p = home() / "state"
    p.mkdir(parents=True, exist_ok=True)
    return p


def cache_dir(kind: str) -> Path:
    p = home() / "cache" / kind
    p.mkdir(parents=True, exist_ok=True)
    return p


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("image-flywheel")
    except PackageNotFoundError:
        v = "0+unknown"
    sha = _git_sha()
    return f"{v}+g{sha}" if sha else v


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            p = root / ".git" / ref[5:]
            if p.exists():
                return p.read_text().strip()[:10]
            packed = root / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.exists() else []:
                if line.endswith(ref[5:]):
                    return line.split()[0][:10]
            return None
        return ref[:10]
    except OSError:
        return None
