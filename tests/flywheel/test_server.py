"""The local server commands reuse (`flywheel.flows.server`): started once, answering, a crashed
component noticed and restarted, a dead supervisor's leftovers stopped, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from runs import wait_until

from flywheel.flows import server

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def _fake_server(home: Path) -> subprocess.Popen:
    """A server.json naming a live process of ours, as a supervisor that nobody stopped would."""
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)
    d = server.server_dir(home)
    (d / "server.json").write_text(json.dumps({"pid": p.pid, "start": server._start_time(p.pid), "ready": True,
                                               "prefect_url": "http://127.0.0.1:9/api", "ray_address": "127.0.0.1:9",
                                               "children": {}}))
    return p


def test_status_and_stop_when_none_runs(tmp_path):
    assert server.status(tmp_path)["running"] is False
    assert server.stop(tmp_path) is False


def test_modes_are_checked(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SERVER", "sometimes")
    with pytest.raises(ValueError, match="auto .* or off"):
        server.mode()


def test_the_suite_end_check_finds_and_stops_a_live_server(tmp_path):
    from flywheel.flows.server import stop_listed

    p = _fake_server(tmp_path / "home")
    reg = tmp_path / "registry"
    reg.write_text(f"{tmp_path / 'home'}\n")
    assert stop_listed(reg) == [str(tmp_path / "home")]
    assert p.wait(timeout=10) == -signal.SIGTERM
    assert stop_listed(reg) == []


@pytest.mark.slow
def test_start_reuse_crash_restart_stop(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FLYWHEEL_SERVER", "auto")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    try:
        st = server.start(home)
        assert st["running"] and st["healthy"] == {"prefect": True, "ray": True}
        assert st["prefect_url"].startswith("http://127.0.0.1:")
        # started once: a second start finds it
        assert server.start(home)["pid"] == st["pid"]
        # the Ray head crashes: the supervisor notices and starts it again
        ray = st["children"]["ray"]
        os.killpg(ray["pid"], signal.SIGKILL)
        assert wait_until(lambda: (server.read_state(home) or {}).get("children", {}).get("ray", {}).get("restarts") == 1)
        st2 = server.wait_ready(home)
        assert st2["healthy"]["ray"] and st2["children"]["ray"]["pid"] != ray["pid"]
        # a command runs a real flow on it (Prefect API of the server, Ray head of the server)
        from PIL import Image
        from skimage import data

        inp = tmp_path / "in"
        inp.mkdir()
        Image.fromarray(data.astronaut()).save(inp / "a.jpg")
        (inp / "a.txt").write_text("an astronaut")
        env = {**os.environ, "COLUMNS": "200"}
        p = subprocess.run([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(inp), "--output", str(tmp_path / "o"),
                            "--skip", "clip,nsfw,rotation"], env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        timing = json.loads((tmp_path / "o" / "stats.json").read_text())["timing"]
        assert timing["server_mode"] == "auto" and timing["rows_scored_this_attempt"] == 1
        # run by the runner, restarted with the Ray head it is a driver of
        assert timing["runner"]["pid"] == server.read_state(home)["children"]["runner"]["pid"]
        assert server.read_state(home)["children"]["runner"]["restarts"] == 1
        assert server.status(home)["pid"] == st["pid"]  # reused, not restarted
        # the supervisor is killed -9: the next start stops what it left and starts a new one
        os.kill(st["pid"], signal.SIGKILL)
        assert wait_until(lambda: not server._alive(st["pid"], st["start"]), 30)
        left = server.read_state(home)["children"]
        st3 = server.start(home)
        assert st3["pid"] != st["pid"]
        for c in left.values():
            assert not server._alive(c["pid"], c["start"])
    finally:
        last = server.read_state(home) or {}
        server.stop(home)
    for c in [last, *last.get("children", {}).values()]:
        if c.get("pid"):
            assert not server._alive(c["pid"], c["start"])
    assert not (home / "server" / "server.json").exists()


@pytest.mark.slow
def test_off_mode_prefect_starts_answers_and_stops_without_the_server_module_in_the_command():
    probe = (
        "import json, sys\n"
        "from flywheel.flows import server\n"
        "p = server._TemporaryPrefect()\n"
        "p.start()\n"
        "ok = server.prefect_healthy(p.api_url)\n"
        "proc = p.proc\n"
        "p.stop()\n"
        "print(json.dumps({'ok': ok, 'exited': proc.poll() is not None,\n"
        "                  'server_module': 'prefect.server.api.server' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env, timeout=300)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"ok": True, "exited": True, "server_module": False}
