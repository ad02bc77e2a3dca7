"""Helpers for tests that kill a curation run mid-way or wait on the local server (imported as `runs`;
tests/ is on sys.path)."""

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


def wait_until(cond, timeout: float = 240.0) -> bool:
    """Poll `cond()` every 0.2 s until it is true (True) or `timeout` seconds pass (False)."""
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if cond():
            return True
        time.sleep(0.2)
    return False
