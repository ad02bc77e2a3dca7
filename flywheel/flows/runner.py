"""The local server's runner: a warm process that runs `flywheel curate` for commands.

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
import threading
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
    """The code a runner runs: the interpreter and every .py file of the package (path, size,
    mtime). A command whose signature differs does not use the runner."""
    import flywheel

    h = hashlib.sha256(sys.executable.encode())
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


# -- the runner's side ------------------------------------------------------------------------------
class _Out(io.TextIOBase):
    """The command's socket as a text stream for rich; after the command has gone, writes are
    dropped (the run is being interrupted)."""

    def __init__(self, f) -> None:
        self.f, self.gone, self.lock = f, False, threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not self.gone:
            with self.lock:
                try:
                    self.f.write(s.encode())
                    self.f.flush()
                except OSError:
                    self.gone = True
        return len(s)

    def flush(self) -> None:
        pass


class Runner:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.d = Path(home) / "server"
        self.busy = threading.Lock()
        self.jobs: list = []
        self.job_ready = threading.Condition()
        self.runs = 0
        self.sig = signature()
        self.env = relevant_env()
        self.stop = threading.Event()

    def warm(self) -> None:
        """Import what a run needs and join the server's Ray, before answering anyone."""
        from flywheel.cli import curate  # noqa: F401 - typer, rich, the flow, the pipeline
        from flywheel.curation import engine, pipeline  # noqa: F401
        from flywheel.flows import curate as flows  # noqa: F401 - Prefect
        from flywheel.flows import server

        engine.KEEP_POOL = True
        st = server.wait_ready(self.home, 600)
        os.environ["RAY_ADDRESS"] = st["ray_address"]
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        engine.ensure_ray(2)
        os.environ.pop("RAY_ADDRESS", None)  # a run's session() sets it again, from the server's state

    def serve(self) -> None:
        self.warm()
        path = sock_path(self.d)
        path.unlink(missing_ok=True)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            ls.bind(str(path))
        finally:
            os.umask(old)
        ls.listen(8)
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        print(time.strftime("%Y-%m-%d %H:%M:%S"), f"runner ready on {path} (signature {self.sig})", flush=True)
        try:
            while not self.stop.is_set():
                with self.job_ready:
                    self.job_ready.wait_for(lambda: self.jobs or self.stop.is_set(), timeout=1.0)
                    job = self.jobs.pop(0) if self.jobs else None
                if job is not None:
                    try:
                        self._run(*job)
                    finally:
                        self.busy.release()
        finally:
            ls.close()
            path.unlink(missing_ok=True)
            from flywheel.curation import engine

            with contextlib.suppress(Exception):
                engine.end_pool()

    def _accept(self, ls: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")

        def reply(obj: dict) -> None:
            f.write((json.dumps(obj) + "\n").encode())
            f.flush()

        try:
            req = json.loads(f.readline() or b"{}")
            op = req.get("op")
            if op == "ping":
                reply({"pid": os.getpid(), "busy": self.busy.locked(), "runs": self.runs, "signature": self.sig})
            elif op == "exit":
                reply({"exiting": True})
                self.stop.set()
                with self.job_ready:
                    self.job_ready.notify()
            elif op == "curate":
                if req.get("signature") != self.sig:
                    reply({"accepted": False, "stale": True})
                elif relevant_env(req.get("env") or {}) != self.env:
                    reply({"accepted": False, "reason": "environment"})
                elif not self.busy.acquire(blocking=False):
                    reply({"accepted": False, "reason": "busy"})
                else:
                    reply({"accepted": True})
                    with self.job_ready:
                        self.jobs.append((conn, f, req))
                        self.job_ready.notify()
                    return  # the main thread answers and closes
            else:
                reply({"error": f"unknown op {op!r}"})
        except (OSError, ValueError):
            pass
        f.close()
        conn.close()

    def _run(self, conn: socket.socket, f, req: dict) -> None:
        import _thread
        import traceback

        from rich.console import Console

        from flywheel.cli import UserError
        from flywheel.cli.curate import run_curate

        out = _Out(f)
        done = threading.Event()

        def watch() -> None:
            """The command went away (Ctrl-C): interrupt the run in the main thread."""
            with contextlib.suppress(OSError):
                conn.settimeout(None)
                while not done.is_set():
                    if not conn.recv(1):
                        break
            if not done.is_set():
                out.gone = True
                _thread.interrupt_main()

        threading.Thread(target=watch, daemon=True).start()
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        res: dict
        t0 = time.perf_counter()
        try:
            os.environ.clear()
            os.environ.update({k: v for k, v in req["env"].items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL")})
            os.chdir(req["cwd"])
            con = Console(file=out, force_terminal=req.get("tty") or None, width=req.get("width"),
                          color_system="auto" if req.get("tty") else None)
            stats = run_curate(**req["kwargs"], console=con)
            stats["timing"]["runner"] = {"pid": os.getpid(), "run": self.runs + 1, "s": time.perf_counter() - t0}
            p = Path(stats["output"]) / "stats.json"
            if p.exists():  # the record says the run was the runner's (an output on an object store keeps it local)
                p.write_text(json.dumps(stats, indent=2))
            res = {"stats": stats}
        except UserError as e:
            res = {"error": str(e)}
        except KeyboardInterrupt:
            res = {"error": "interrupted"}
        except BaseException:  # noqa: BLE001 - the command shows it; the runner serves the next one
            res = {"traceback": traceback.format_exc()}
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            self.runs += 1
        done.set()
        out.write(SENTINEL + json.dumps(res, default=str) + "\n")
        with contextlib.suppress(OSError):
            f.close()
            conn.close()


def main(home: str) -> None:
    Runner(Path(home)).serve()


if __name__ == "__main__":
    main(sys.argv[1])
