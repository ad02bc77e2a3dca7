"""Helpers for tests that kill a curation run mid-way (imported as `runs`; tests/ is on sys.path)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def kill_after_first_part(proc, home: Path, timeout: float = 240) -> list[Path]:
    """SIGKILL `proc` once its job state under `home` holds a first scored part; the parts seen.
    Fails the test when the run ends (or the time runs out) before any part was written."""
    deadline, parts = time.time() + timeout, []
    while time.time() < deadline and proc.poll() is None:
        parts = list((Path(home) / "state").glob("*/parts/part-*.parquet"))
        if parts:
            break
        time.sleep(0.1)
    assert parts, "the run finished before a part was written; cannot test the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return parts
