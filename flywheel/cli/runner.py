"""The local server's runner: a warm process that runs `flywheel curate` for commands. This module
is the command's side (and what both sides share); the runner's process is `flywheel.cli.runnerd`.

A command in `auto` mode spends most of a small run's time getting ready: importing Prefect, Ray,
pyarrow and the operators (~4 CPU s), joining Ray, creating its first Prefect flow run, and starting
the model actors, whose ONNX models load for every run. The runner is the local server's third
component (beside its Prefect API and Ray head). It has imported all of that once, stays joined to
the server's Ray as one long-lived driver, and keeps the model actors of the last recipe
(`engine.KEEP_POOL`). A `flywheel curate` that finds it sends its arguments over a Unix socket
(`FLYWHEEL_HOME/server/runner.sock`, mode 0600), and the runner runs the same `run_curate` the
command would have run: a real Prefect flow run on the server's API, real Ray tasks and actors. The
command prints what the runner writes (plan, progress bar, summary) and exits with its status.

The command runs the flow itself, as before, whenever the runner cannot stand in for it exactly:
- another command is using the runner (one run at a time; the second one runs on its own);
- the runner was started from other code (`signature()`: the package's files, the interpreter)
  or another environment (`relevant_env()`: the variables that change what workers do);
- `FLYWHEEL_RUNNER=0`, `FLYWHEEL_SERVER=off`, or `PREFECT_API_URL` / `RAY_ADDRESS` set by the user;
- no runner answered within `FLYWHEEL_RUNNER_WAIT_S` (default 90 s) of the server's start.
A stale runner is told to exit; the supervisor starts a new one from the current code.

Ctrl-C in the command closes the socket; the runner interrupts the run (its flow run fails, the
pool's actors are stopped) and waits for the next command. A run interrupted that way resumes
like any other (`flywheel curate` again with the same output).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

SOCK = "runner.sock"
SENTINEL = "\x1e"  # starts the runner's last line: the result, as JSON
_VARS = ("FLYWHEEL_", "PREFECT_", "RAY_", "AWS_", "S3_", "HF_", "TRANSFORMERS_", "TORCH", "CUDA_", "OMP_", "MKL_",
         "OPENBLAS_", "NUMBA_", "TESSDATA", "PYTHONPATH", "PATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "HOME", "TMPDIR",
         "LANG", "LC_", "TZ")
_NOT_COMPARED = {"FLYWHEEL_HOME", "FLYWHEEL_SERVER", "FLYWHEEL_SERVER_SERVICES", "FLYWHEEL_SERVER_REGISTRY",
                 "FLYWHEEL_RUNNER", "FLYWHEEL_RUNNER_WAIT_S", "RAY_ADDRESS", "PREFECT_API_URL", "RAY_AUTH_MODE"}


def sock_path(d: Path) -> Path:
    """The socket under the server's folder; a deep FLYWHEEL_HOME gets a short path in /tmp named
    after it (Unix socket paths stay under 107 bytes), as Ray's session folder does."""
    p = d / SOCK
    if len(str(p)) > 100:
        p = Path("/tmp") / f"flywheel-runner-{hashlib.sha256(str(d).encode()).hexdigest()[:10]}.sock"
    return p


def signature() -> str:
    """The code a runner runs: the environment, the interpreter and every .py file of the package
    (path, size, mtime). A command whose signature differs does not use the runner."""
    import flywheel

    # the environment (venv) and the real interpreter: `.venv/bin/python` and the `python3` a
    # script's shebang names are the same one
    h = hashlib.sha256(f"{sys.prefix}|{os.path.realpath(sys.executable)}".encode())
    root = Path(flywheel.__file__).parent
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def relevant_env(env: dict | None = None) -> dict:
    """The variables that change what the runner's Ray workers and models do (they were started
    with the runner's environment): a command whose values differ runs on its own."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k.startswith(_VARS) and k not in _NOT_COMPARED}


def enabled() -> bool:
    from flywheel.flows import server

    return (os.environ.get("FLYWHEEL_RUNNER", "1") != "0" and server.mode() == "auto"
            and not os.environ.get("PREFECT_API_URL") and not os.environ.get("RAY_ADDRESS"))


# -- the command's side ------------------------------------------------------------------------------
def _connect(d: Path, wait_s: float) -> socket.socket | None:
    from flywheel.flows import server

    path = sock_path(d)
    t = time.monotonic() + wait_s
    while True:
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(path))
                return s
            except OSError:
                s.close()
        st = server.read_state(d.parent)
        if time.monotonic() > t or not st or not server._alive(st.get("pid"), st.get("start")):
            return None
        time.sleep(0.05)


def submit(kwargs: dict, out=None) -> dict | None:
    """Run `run_curate(**kwargs)` in the local server's runner, its output copied to `out`
    (stdout). The run's stats, or None when the runner cannot take it (the command runs it then);
    the runner's UserError is raised here as one."""
    from flywheel.cli import UserError
    from flywheel.flows import server

    if not enabled():
        return None
    out = out or sys.stdout
    server.start(wait=False)  # no-op when it runs
    d = server.server_dir()
    s = _connect(d, float(os.environ.get("FLYWHEEL_RUNNER_WAIT_S", "90")))
    if s is None:
        return None
    try:
        width = os.get_terminal_size(out.fileno()).columns if out.isatty() else int(os.environ.get("COLUMNS", 0) or 0)
    except (OSError, ValueError, io.UnsupportedOperation):
        width = 0
    req = {"op": "curate", "kwargs": kwargs, "cwd": os.getcwd(), "env": dict(os.environ), "signature": signature(),
           "tty": bool(getattr(out, "isatty", lambda: False)()), "width": width or None}
    f = s.makefile("rwb")
    try:
        f.write((json.dumps(req) + "\n").encode())
        f.flush()
        first = json.loads(f.readline() or b"{}")
        if not first.get("accepted"):
            if first.get("stale"):
                with contextlib.suppress(OSError):  # a runner from other code: the supervisor starts a current one
                    _ask(d, {"op": "exit"})
            return None
        for line in f:
            text = line.decode("utf-8", "replace")
            if text.startswith(SENTINEL):
                res = json.loads(text[1:])
                if res.get("error"):
                    raise UserError(res["error"])
                if res.get("traceback"):
                    raise RuntimeError(f"the local server's runner failed this run:\n{res['traceback']}")
                return res["stats"]
            out.write(text)
            out.flush()
        raise RuntimeError(f"the local server's runner stopped during the run; see {d / 'logs' / 'runner.log'}")
    finally:
        f.close()
        s.close()


def _ask(d: Path, req: dict) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path(d)))
        s.sendall((json.dumps(req) + "\n").encode())
        return json.loads(s.makefile("rb").readline() or b"{}")


def ping(d: Path) -> dict | None:
    """The runner's state ({"pid", "busy", "runs", "signature"}), or None when none answers."""
    try:
        return _ask(d, {"op": "ping"})
    except (OSError, ValueError):
        return None
