"""The local runtime a command runs its flow on: a Prefect API and Ray.

Two modes (`FLYWHEEL_SERVER`); in `auto` the server also has a runner that runs commands' curate
flows in a warm process (`flywheel.cli.runner`):

- `auto` (default): a local server, started on first use and reused by later commands. One
  supervisor process per `FLYWHEEL_HOME` (`python -m flywheel.flows.server`) owns a Prefect API
  (uvicorn, 127.0.0.1, its own SQLite database) and a Ray head (`ray start --head --block`,
  dashboard and job API off), started side by side. It restarts either
  when it exits or stops answering, and stops both when no command has used it for
  `FLYWHEEL_SERVER_IDLE_S` seconds (default 1200). Ports, pids, state and logs are under
  `FLYWHEEL_HOME/server/`. `flywheel server start|stop|status` manage it by hand. Why: a cold
  command pays Prefect's ~6 s and Ray's ~3 s once, in parallel and overlapped with planning; a
  second command pays neither.
- `off`: everything lives and dies with the command: Prefect's temporary API server (started in a
  thread while Ray starts in the process, not after it) and a local Ray in the process. What the
  tests and `benchmarks/soak.py` use (nothing outlives them).

`PREFECT_API_URL` or `RAY_ADDRESS` set by the user win over both modes for their component.

`flywheel server start --services` (what `flywheel deploy` starts when no API is given) runs the
same server with Prefect's background services (scheduler, automations), so deployments'
schedules and event triggers fire; such a server does not stop for idleness.

Ray 2.60's GCS and raylet listen on every interface whatever address they advertise (no option
narrows them, and a driver given 127.0.0.1 connects to the node's address instead, so the head
advertises that); the cluster has Ray's token authentication on. The Prefect API binds 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from flywheel import config

IDLE_S = float(os.environ.get("FLYWHEEL_SERVER_IDLE_S", "1200"))
STATE = "server.json"


def mode() -> str:
    m = os.environ.get("FLYWHEEL_SERVER", "auto").lower()
    if m not in ("auto", "off"):
        raise ValueError(f"FLYWHEEL_SERVER={m!r}: use auto (a local server reused across commands) or off (per command)")
    return m


def server_dir(home: Path | None = None) -> Path:
    d = (home or config.home()) / "server"
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "leases").mkdir(exist_ok=True)
    return d


# -- processes, by pid and start time (a pid reused by another process is never ours) ---------------
def _start_time(pid: int) -> int | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = s[s.rindex(")") + 2:].split()
    return None if f[0] in ("Z", "X") else int(f[19])


def _alive(pid: int | None, start: int | None) -> bool:
    return bool(pid) and start is not None and _start_time(pid) == start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def prefect_healthy(url: str, timeout: float = 2.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _kill_group(pgid: int, start: int | None, grace: float = 5.0) -> None:
    """SIGTERM a process group we started (its leader verified by start time), SIGKILL after `grace`."""
    if not _alive(pgid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    t = time.monotonic() + grace
    while time.monotonic() < t and _alive(pgid, start):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # Ray drains for up to 30 s on SIGTERM; the members may outlive the leader


def read_state(home: Path | None = None) -> dict | None:
    try:
        return json.loads((server_dir(home) / STATE).read_text())
    except (OSError, ValueError):
        return None


def _write_state(d: Path, st: dict) -> None:
    tmp = d / f".{STATE}.tmp"
    tmp.write_text(json.dumps(st, indent=2))
    os.replace(tmp, d / STATE)


# -- the supervisor (its own process) ----------------------------------------------------------------
class _Child:
    """One supervised component in its own session (process group), logging to logs/<name>.log."""

    def __init__(self, name: str, d: Path, argv_env):
        self.name, self.d, self.argv_env = name, d, argv_env
        self.proc: subprocess.Popen | None = None
        self.start_time: int | None = None
        self.port = 0
        self.log_offset = 0
        self.restarts = -1

    def start(self) -> None:
        self.port = _free_port() if not self.port or _port_open(self.port) else self.port
        argv, env = self.argv_env(self.port)
        log = open(self.d / "logs" / f"{self.name}.log", "ab")
        self.log_offset = log.tell()  # what this start writes comes after (readiness is read there)
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.d)
        log.close()
        self.start_time = _start_time(self.proc.pid)
        self.restarts += 1

    def stop(self) -> None:
        if self.proc:
            _kill_group(self.proc.pid, self.start_time)
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=1)

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None


def _prefect_argv(d: Path, services: bool = False):
    def argv_env(port: int):
        import prefect  # the supervisor's only Prefect use: where its package is

        env = {**os.environ, "PREFECT_HOME": str(d / "prefect"), "PREFECT_UI_ENABLED": "0",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
        if not services:  # API only: no scheduler, automations or other background services
            env["PREFECT__SERVER_EPHEMERAL"] = "1"
        env.pop("PREFECT_API_URL", None)
        return ([sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "error", "--lifespan", "on"], env)
    return argv_env


class _TemporaryPrefect:
    """Prefect's temporary API server for one command (mode `off`), started as Prefect's own
    `SubprocessASGIServer` starts it (uvicorn on 127.0.0.1, API only, the command's Prefect settings
    passed on), but without importing `prefect.server.api.server` into the command: that module
    (FastAPI, the ORM, every API route) cost the command ~3 CPU s that only the server process needs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        import prefect
        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, get_current_settings

        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
               **get_current_settings().to_environment_variables(exclude_unset=True)}
        deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        while time.monotonic() < deadline:
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"], env=env)
            while time.monotonic() < deadline and self.proc.poll() is None:
                if prefect_healthy(self.api_url, timeout=1.0):
                    return
                time.sleep(0.1)
            # exited: most likely the port was taken between the probe and uvicorn's bind; another one
        code = self.proc.poll() if self.proc else None
        self.stop()
        raise RuntimeError("Prefect's temporary API server did not answer within "
                           f"{PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()} s"
                           + (f" (it exited with code {code})" if code is not None else ""))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def ray_temp_dir(d: Path) -> Path:
    """Ray's session folder holds Unix sockets, whose paths must stay under 107 bytes; a deep
    FLYWHEEL_HOME gets a short folder in /tmp named after it instead (said in `status`)."""
    p = d / "ray"
    if len(str(p)) > 40:
        import hashlib

        p = Path("/tmp") / f"flywheel-ray-{hashlib.sha256(str(d).encode()).hexdigest()[:10]}"
    return p


def _ray_argv(d: Path):
    def argv_env(port: int):
        cpus = max(os.cpu_count() or 1, 4) + 1  # a logical CPU beyond the workers, as engine.ensure_ray
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
        env.pop("RAY_ADDRESS", None)
        # Ray's own CLI, run by this interpreter (a venv may see Ray through a .pth, without its script)
        return ([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--port", str(port), "--include-dashboard=false", "--num-cpus", str(cpus), "--temp-dir", str(ray_temp_dir(d)),
                 "--disable-usage-stats"], env)
    return argv_env


def _runner_argv(d: Path):
    def argv_env(port: int):
        # the warm process that runs commands' flows (`flywheel.cli.runnerd`); no port of its own
        return [sys.executable, "-m", "flywheel.cli.runnerd", str(d.parent)], dict(os.environ)
    return argv_env


def _ray_ready(d: Path, child: _Child) -> bool:
    if not _port_open(child.port):
        return False
    try:
        with open(d / "logs" / "ray.log", "rb") as f:
            f.seek(child.log_offset)
            return b"Ray runtime started" in f.read()
    except OSError:
        return False


def _live_leases(d: Path) -> int:
    n = 0
    for f in (d / "leases").glob("*"):
        try:
            pid, start = (int(x) for x in f.name.split("-"))
        except ValueError:
            continue
        if _alive(pid, start):
            n += 1
        else:
            f.unlink(missing_ok=True)  # a command that was killed
    return n


def supervise(home: Path) -> None:
    """Run the server until stopped (SIGTERM) or idle: restart a component that exits or stops answering."""
    d = server_dir(home)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # with services (`flywheel server start --services`, for `flywheel deploy`): Prefect's scheduler
    # and automations run in the API process, and the server never stops for idleness (schedules
    # and event triggers fire with no command running)
    services = os.environ.get("FLYWHEEL_SERVER_SERVICES") == "1"
    prefect, ray = _Child("prefect", d, _prefect_argv(d, services)), _Child("ray", d, _ray_argv(d))
    # the runner (`flywheel.cli.runner`): started beside them, it imports while they start and
    # joins them when they answer; FLYWHEEL_RUNNER=0 at the server's start leaves it out
    runner = _Child("runner", d, _runner_argv(d)) if os.environ.get("FLYWHEEL_RUNNER", "1") != "0" else None
    children = [c for c in (prefect, ray, runner) if c is not None]
    me = {"pid": os.getpid(), "start": _start_time(os.getpid()), "python": sys.executable, "started_at": time.time(),
          "idle_s": IDLE_S, "ray_temp_dir": str(ray_temp_dir(d)), "services": services}

    ray_up = [False]  # the head answers (the runner joins it before Prefect is up)

    def state(ready: bool) -> None:
        _write_state(d, {**me, "ready": ready, "ray_ready": ready or ray_up[0],
                         "prefect_url": f"http://127.0.0.1:{prefect.port}/api",
                         "ray_address": f"127.0.0.1:{ray.port}",
                         "children": {c.name: {"pid": c.proc.pid if c.proc else None, "start": c.start_time,
                                               "port": c.port, "restarts": c.restarts} for c in children}})

    def log(msg: str) -> None:
        print(time.strftime("%Y-%m-%d %H:%M:%S"), msg, flush=True)

    def restart_runner() -> None:
        """The runner is a driver of the Ray head: a new head needs a new runner."""
        if runner is not None and runner in children and not runner.exited():
            log("restarting the runner for the new Ray head")
            runner.stop()
            runner.start()

    ready, fails, last_check, runner_fails = False, 0, 0.0, 0
    try:
        for c in children:
            c.start()
        state(False)
        (d / "last_used").touch()
        while not stop.is_set():
            for c in children:
                if c.exited():
                    if c is runner:  # commands run their flows themselves meanwhile; a runner that keeps failing is left out
                        runner_fails += c.proc.returncode != 0  # 0: told to exit (it ran older code)
                        if runner_fails >= 5:
                            log(f"runner failed {runner_fails} times (rc {c.proc.returncode}); not restarting it, "
                                f"see logs/runner.log")
                            children.remove(c)
                            state(ready)
                            break
                        log(f"runner exited (rc {c.proc.returncode if c.proc else None}); restarting")
                        c.start()
                        state(ready)
                        continue
                    log(f"{c.name} exited (rc {c.proc.returncode if c.proc else None}); restarting")
                    c.stop()
                    c.start()
                    if c is ray:
                        ray_up[0] = False
                        restart_runner()
                    ready = False
                    state(False)
            now = time.monotonic()
            if not ready:
                if not ray_up[0] and _ray_ready(d, ray):
                    ray_up[0] = True
                    state(False)
                if ray_up[0] and prefect_healthy(f"http://127.0.0.1:{prefect.port}/api", 1.0):
                    ready, fails = True, 0
                    state(True)
                    log(f"ready: prefect :{prefect.port}, ray :{ray.port}")
            elif now - last_check > 5:
                last_check = now
                fails = 0 if prefect_healthy(f"http://127.0.0.1:{prefect.port}/api", 3.0) else fails + 1
                if fails >= 3:
                    log("prefect stopped answering; restarting it")
                    prefect.stop()
                    prefect.start()
                    ready = False
                    state(False)
                elif not _port_open(ray.port):
                    log("ray's GCS stopped answering; restarting the head")
                    ray.stop()
                    ray.start()
                    ray_up[0] = False
                    restart_runner()
                    ready = False
                    state(False)
            try:
                idle = time.time() - (d / "last_used").stat().st_mtime
            except OSError:
                idle = 0.0
            if idle > IDLE_S and not services and not _live_leases(d):
                log(f"idle for {idle:.0f} s; stopping")
                break
            stop.wait(0.2 if not ready else 1.0)
    finally:
        for c in reversed(children):
            c.stop()
        st = read_state(home)
        if st and st.get("pid") == me["pid"]:
            (d / STATE).unlink(missing_ok=True)
        log("stopped")


# -- clients -------------------------------------------------------------------------------------------
def status(home: Path | None = None) -> dict:
    """{"running": bool, ...server.json, "healthy": {...}} for this FLYWHEEL_HOME."""
    st = read_state(home)
    if not st or not _alive(st.get("pid"), st.get("start")):
        return {"running": False, "dir": str(server_dir(home))}
    ch = st.get("children", {})
    ray = ch.get("ray") or {}
    healthy = {"prefect": bool(st.get("prefect_url")) and prefect_healthy(st["prefect_url"], 1.0),
               "ray": _alive(ray.get("pid"), ray.get("start")) and bool(ray.get("port")) and _port_open(ray["port"])}
    return {"running": True, "dir": str(server_dir(home)), "healthy": healthy, **st}


def _stop_stale(st: dict) -> None:
    """A supervisor that died (killed -9) leaves its components running: stop those that are ours."""
    for c in (st.get("children") or {}).values():
        if c.get("pid"):
            _kill_group(c["pid"], c.get("start"), grace=2.0)


def start(home: Path | None = None, wait_s: float = 180.0, wait: bool = True, services: bool = False) -> dict:
    """Start the server for this FLYWHEEL_HOME unless it runs; with `wait`, until it answers.
    `services`: with Prefect's scheduler and automations (what deployments need); a server
    already running without them is not changed (RuntimeError)."""
    d = server_dir(home)
    with open(d / "lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # two commands starting at once start one server
        st = read_state(home)
        running = bool(st and _alive(st.get("pid"), st.get("start")))
        if running and services and not st.get("services"):
            raise RuntimeError("the local server runs the Prefect API only (no scheduler, no automations); restart it "
                               "with them: `flywheel server stop && flywheel server start --services`")
        if not running:
            if st:
                _stop_stale(st)
                (d / STATE).unlink(missing_ok=True)
            log = open(d / "logs" / "supervisor.log", "ab")
            env = {**os.environ, "FLYWHEEL_HOME": str(d.parent), "FLYWHEEL_SERVER_SERVICES": "1" if services else "0"}
            p = subprocess.Popen([sys.executable, "-m", "flywheel.flows.server", str(d.parent)], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            reg = os.environ.get("FLYWHEEL_SERVER_REGISTRY")
            if reg:  # the test suite's list of servers it started, checked when it ends
                with open(reg, "a") as f:
                    f.write(f"{d.parent}\n")
            t = time.monotonic() + 30
            while time.monotonic() < t and not (read_state(home) or {}).get("pid") == p.pid:
                if p.poll() is not None:
                    raise RuntimeError(f"the flywheel server did not start; see {d / 'logs' / 'supervisor.log'}")
                time.sleep(0.05)
    return wait_ready(home, wait_s) if wait else status(home)


def wait_ready(home: Path | None = None, wait_s: float = 180.0) -> dict:
    d = server_dir(home)
    t = time.monotonic() + wait_s
    while time.monotonic() < t:
        st = read_state(home)
        if not st or not _alive(st.get("pid"), st.get("start")):
            raise RuntimeError(f"the flywheel server stopped while starting; see {d / 'logs'}")
        if st.get("ready"):
            return status(home)
        time.sleep(0.05)
    raise RuntimeError(f"the flywheel server did not answer within {wait_s:.0f} s; see {d / 'logs'}")


def stop(home: Path | None = None, wait_s: float = 40.0) -> bool:
    """Stop this FLYWHEEL_HOME's server (and its components). False when none was running."""
    st = read_state(home)
    if not st:
        return False
    if not _alive(st.get("pid"), st.get("start")):
        _stop_stale(st)
        (server_dir(home) / STATE).unlink(missing_ok=True)
        return False
    os.kill(st["pid"], signal.SIGTERM)
    t = time.monotonic() + wait_s
    while time.monotonic() < t and _alive(st["pid"], st["start"]):
        time.sleep(0.1)
    if _alive(st["pid"], st["start"]):
        os.kill(st["pid"], signal.SIGKILL)
    _stop_stale(st)
    return True


def prestart() -> None:
    """Start the local server in the background (auto mode), so that it comes up while the
    command plans its run; `session` then waits for it."""
    if mode() == "auto" and not (os.environ.get("PREFECT_API_URL") and os.environ.get("RAY_ADDRESS")):
        start(wait=False)


@contextlib.contextmanager
def session(workers: int, tasks_only: bool = False) -> Iterator[dict]:
    """Prefect API and Ray for one command, per `mode()`. Yields the start-up timings, filled in
    as they happen: `server_s` (waiting for the local server), `ray_startup_s`, `prefect_startup_s`.
    `tasks_only`: as `engine.ensure_ray` (a Ray started by the command gets `workers` CPUs)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flywheel.curation import engine

    t0 = time.perf_counter()
    info: dict = {"mode": mode()}
    own_prefect = not PREFECT_API_URL.value()  # set by the user, a deployment or Prefect's test harness
    own_ray = not os.environ.get("RAY_ADDRESS")
    lease = None
    saved_addr = os.environ.get("RAY_ADDRESS")
    ephemeral = None
    if info["mode"] == "auto" and (own_prefect or own_ray):
        st = start()
        info["server_s"] = time.perf_counter() - t0
        d = server_dir()
        lease = d / "leases" / f"{os.getpid()}-{_start_time(os.getpid())}"
        lease.touch()
        (d / "last_used").touch()
        url = st["prefect_url"] if own_prefect else None
        if own_ray:
            os.environ["RAY_ADDRESS"] = st["ray_address"]
            # the head requires Ray's token (~/.ray/auth_token); a driver joining sends it only when told
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        info["ray_startup_s"] = engine.ensure_ray(workers)["startup_s"]
        info["prefect_startup_s"] = 0.0
    else:
        url, box = None, {}
        if own_prefect:
            def _prefect() -> None:
                t = time.perf_counter()
                try:
                    srv = _TemporaryPrefect()
                    box["server"] = srv
                    srv.start()
                except BaseException as e:  # noqa: BLE001 - raised in the command's thread below
                    box["error"] = e
                box["s"] = time.perf_counter() - t

            th = threading.Thread(target=_prefect, daemon=True)
            th.start()  # Prefect's temporary server starts while Ray starts, not after it
        info["ray_startup_s"] = engine.ensure_ray(workers, tasks_only=tasks_only)["startup_s"]
        if own_prefect:
            th.join()
            ephemeral = box.get("server")
            if "error" in box:
                raise box["error"]
            url = ephemeral.api_url
            info["prefect_startup_s"] = box["s"]
    try:
        with temporary_settings({PREFECT_API_URL: url}) if url else contextlib.nullcontext():
            yield info
    finally:
        if ephemeral is not None:
            ephemeral.stop()
        if lease is not None:
            (lease.parent.parent / "last_used").touch()
            lease.unlink(missing_ok=True)
        if saved_addr is None:
            os.environ.pop("RAY_ADDRESS", None)


if __name__ == "__main__":
    supervise(Path(sys.argv[1]))


def stop_listed(registry: Path) -> list[str]:
    """The FLYWHEEL_HOMEs listed in `registry` (one per line, as `FLYWHEEL_SERVER_REGISTRY`
    records them) whose local server is still alive; every one listed is stopped (a dead
    supervisor's components too), so that nothing outlives the test suite that listed them."""
    homes = sorted(set(registry.read_text().split())) if registry.exists() else []
    alive = [h for h in homes if status(Path(h))["running"]]
    for h in homes:
        stop(Path(h))
    return alive
