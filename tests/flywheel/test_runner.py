"""The local server's runner (`flywheel.cli.runner`): a `flywheel curate` in auto mode runs in the
warm runner, decides as a command that runs its own flow, and falls back to running its own flow
whenever the runner cannot stand in for it exactly; Ctrl-C interrupts the runner's run, not the
runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runs import wait_until

from flywheel.cli import runner
from flywheel.flows import server

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")
SKIP = "clip,nsfw"  # rotation stays: a model operator, so the runner's pool of actors is used


def _photos(root: Path, n: int) -> Path:
    from PIL import Image
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "horse"]
    for i in range(n):
        d = root / f"s{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(getattr(data, names[i % len(names)])()).convert("RGB")
        im.resize((320 + 7 * i, 300 + 5 * i)).save(d / f"p{i:03d}.jpg", quality=90)
        (d / f"p{i:03d}.txt").write_text(f"a photo, number {i}")
    return root


def _curate(inp: Path, out: Path, env: dict, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(inp), "--output", str(out), "--skip", SKIP,
                        *extra], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p


def _decisions(out: Path) -> dict:
    import glob

    import pyarrow.parquet as pq

    rows = {}
    for f in glob.glob(f"{out}/*/data/**/*.parquet", recursive=True):
        for r in pq.read_table(f, columns=["source", "reject_reason", "rotation__angle"]).to_pylist():
            rows[Path(r["source"]).name] = (r["reject_reason"], r["rotation__angle"])
    return rows


def _timing(out: Path) -> dict:
    return json.loads((out / "stats.json").read_text())["timing"]


def test_curate_runs_in_the_warm_runner_and_falls_back_when_it_cannot(tmp_path):
    home = tmp_path / "home"
    inp = _photos(tmp_path / "in", 4)
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": "auto", "COLUMNS": "160"}
    env.pop("PREFECT_API_URL", None)
    env.pop("RAY_ADDRESS", None)
    try:
        # the first command starts the server, whose runner runs it; the second finds everything warm
        _curate(inp, tmp_path / "o1", env)
        p2 = _curate(inp, tmp_path / "o2", env)
        t1, t2 = _timing(tmp_path / "o1"), _timing(tmp_path / "o2")
        assert t1["runner"]["pid"] == t2["runner"]["pid"] and t2["runner"]["run"] == t1["runner"]["run"] + 1
        assert "4 rows:" in p2.stdout and "scoring" in p2.stdout and "report:" in p2.stdout  # the runner's output, shown
        # the same decisions as a command that runs its own flow (mode off)
        _curate(inp, tmp_path / "off", {**env, "FLYWHEEL_SERVER": "off"})
        assert "runner" not in _timing(tmp_path / "off")
        assert _decisions(tmp_path / "o2") == _decisions(tmp_path / "o1") == _decisions(tmp_path / "off")
        assert len(_decisions(tmp_path / "off")) == 4
        # another environment for the workers: the command runs its own flow (on the same server);
        # the runner's kept actors give back their CPUs (the head has 5: 4 workers' actors would
        # otherwise wait for ever behind the runner's 2 idle ones)
        _curate(inp, tmp_path / "env", {**env, "FLYWHEEL_EXTRA_SETTING": "1"}, "--workers", "4")
        te = _timing(tmp_path / "env")
        assert "runner" not in te and te["server_mode"] == "auto"
        # a user error found by the runner is the command's error (exit 2, the message, no traceback)
        bad = _curate(inp, tmp_path / "bad", env, "--skip", "clip,nosuchop", check=False)
        assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
        # Ctrl-C in a command interrupts the runner's run; the runner serves the next command
        d = server.server_dir(home)
        big = _photos(tmp_path / "big", 40)
        p = subprocess.Popen([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(big), "--output",
                              str(tmp_path / "int"), "--skip", SKIP], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert wait_until(lambda: (runner.ping(d) or {}).get("busy"), 120)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) != 0
        assert wait_until(lambda: not (runner.ping(d) or {"busy": True})["busy"], 120)
        state = runner.ping(d)
        assert state and not state["busy"] and state["pid"] == t1["runner"]["pid"]
        _curate(big, tmp_path / "int", env)  # the interrupted output resumes, in the runner
        ti = _timing(tmp_path / "int")
        assert ti["runner"]["pid"] == t1["runner"]["pid"] and len(_decisions(tmp_path / "int")) == 40
        # a runner from other code is told so; asked to exit, the supervisor starts a new one
        assert runner._ask(d, {"op": "curate", "signature": "other code", "env": {}}) == {"accepted": False, "stale": True}
        assert runner._ask(d, {"op": "exit"}) == {"exiting": True}
        assert wait_until(lambda: (runner.ping(d) or {}).get("pid") not in (None, state["pid"]), 180)
        # the new runner loads the last recipe's models before a command asks for them
        log = d / "logs" / "runner.log"
        assert wait_until(lambda: "last recipe's actors ready" in log.read_text())
        _curate(inp, tmp_path / "o3", env)
        assert _decisions(tmp_path / "o3") == _decisions(tmp_path / "off") and _timing(tmp_path / "o3")["runner"]["run"] == 1
    finally:
        server.stop(home)
    assert not runner.sock_path(server.server_dir(home)).exists()


def test_commands_do_not_use_the_runner_when_told_not_to(monkeypatch):
    for var, value in (("FLYWHEEL_RUNNER", "0"), ("FLYWHEEL_SERVER", "off"), ("PREFECT_API_URL", "http://x/api"),
                       ("RAY_ADDRESS", "127.0.0.1:1")):
        monkeypatch.setenv("FLYWHEEL_SERVER", "auto")
        monkeypatch.delenv("FLYWHEEL_RUNNER", raising=False)
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        assert runner.enabled()
        monkeypatch.setenv(var, value)
        assert not runner.enabled(), var
        assert runner.submit({}) is None  # and nothing was started for it
    assert server.status()["running"] is False


def test_only_variables_that_change_workers_are_compared():
    base = {"FLYWHEEL_HOME": "/a", "PATH": "/bin", "OMP_NUM_THREADS": "1", "TERM": "xterm", "PWD": "/x", "RAY_ADDRESS": "h:1"}
    assert runner.relevant_env(base) == {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert runner.relevant_env({**base, "PWD": "/y", "FLYWHEEL_HOME": "/b", "COLUMNS": "80"}) == runner.relevant_env(base)
    assert runner.relevant_env({**base, "OMP_NUM_THREADS": "2"}) != runner.relevant_env(base)


@pytest.mark.parametrize("depth", [1, 60])
def test_the_socket_path_fits_a_unix_socket(tmp_path, depth):
    d = tmp_path.joinpath(*["d" * 3] * depth)
    assert len(str(runner.sock_path(d))) < 107
