"""The runner's own process (`python -m flywheel.cli.runnerd HOME`, started by the local server's
supervisor): imports what a curation needs once, joins the server's Ray, and runs the commands
that `flywheel.cli.runner.submit` sends it, one at a time (`flywheel.cli.runner` says why and how)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import socket
import sys
import threading
import time
from pathlib import Path

from flywheel.cli.runner import SENTINEL, relevant_env, signature, sock_path

POOL = "runner-pool.json"  # the last run's pool of model actors, made again when a runner starts


def _log(msg: str) -> None:
    print(time.strftime("%Y-%m-%d %H:%M:%S"), msg, flush=True)  # logs/runner.log


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
        self.jobs: queue.Queue = queue.Queue()  # at most one: `busy` is held from accepting a job to its end
        self.runs = 0
        self.sig = signature()
        self.env = relevant_env()
        self.stop = threading.Event()
        self.release_after = False

    def warm(self) -> None:
        """Import what a run needs and join the server's Ray, before answering anyone."""
        from flywheel.cli import curate  # noqa: F401 - typer, rich, the flow, the pipeline
        from flywheel.curation import engine, pipeline  # noqa: F401
        from flywheel.flows import curate as flows  # noqa: F401 - Prefect
        from flywheel.flows import server

        engine.KEEP_POOL = True
        # join the head as soon as it answers, while Prefect may still be starting
        t = time.monotonic() + 600
        while not (st := server.read_state(self.home) or {}).get("ray_ready"):
            if time.monotonic() > t or not server._alive(st.get("pid"), st.get("start")):
                raise RuntimeError("the local server's Ray head did not start")
            time.sleep(0.05)
        os.environ["RAY_ADDRESS"] = st["ray_address"]
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        engine.ensure_ray(2)
        os.environ.pop("RAY_ADDRESS", None)  # a run's session() sets it again, from the server's state
        # the last recipe's models load meanwhile (a command that needs them waits for them)
        spec = self._last_pool()
        if spec:
            threading.Thread(target=self._warm_pool, args=(spec,), daemon=True).start()
        server.wait_ready(self.home, 600)

    def _last_pool(self) -> dict | None:
        try:
            return json.loads((self.d / POOL).read_text())
        except (OSError, ValueError):
            return None

    def _warm_pool(self, spec: dict) -> None:
        from flywheel.curation import engine

        t = time.perf_counter()
        try:
            engine.warm_pool(spec)
            _log(f"last recipe's actors ready in {time.perf_counter() - t:.1f}s")
        except Exception as e:  # noqa: BLE001 - a command makes its own pool then
            _log(f"could not warm the last recipe's actors: {e}")
            (self.d / POOL).unlink(missing_ok=True)

    def _save_pool(self) -> None:
        from flywheel.curation import engine

        spec = engine.pool_spec()
        if spec:
            tmp = self.d / f".{POOL}.tmp"
            tmp.write_text(json.dumps(spec))
            os.replace(tmp, self.d / POOL)

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
        _log(f"runner ready on {path} (signature {self.sig})")
        try:
            while not self.stop.is_set():
                try:
                    job = self.jobs.get(timeout=1.0)
                except queue.Empty:
                    continue
                if job is not None:  # None: told to exit
                    try:
                        self._run(*job)
                    except KeyboardInterrupt:  # the command left just as its run ended
                        pass
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
                self.jobs.put(None)
            elif op == "curate":
                if req.get("signature") != self.sig:
                    self._release()
                    reply({"accepted": False, "stale": True})
                elif relevant_env(req.get("env") or {}) != self.env:
                    self._release()
                    reply({"accepted": False, "reason": "environment"})
                elif not self.busy.acquire(blocking=False):
                    self.release_after = True
                    reply({"accepted": False, "reason": "busy"})
                else:
                    reply({"accepted": True})
                    self.jobs.put((conn, f, req))
                    return  # the main thread answers and closes
            else:
                reply({"error": f"unknown op {op!r}"})
        except (OSError, ValueError):
            pass
        f.close()
        conn.close()

    def _release(self) -> None:
        """A command is about to run its own flow on the same Ray head: the kept actors must not
        hold the CPUs it needs (its actors would wait for them for ever). Now when idle, else as
        soon as the run in progress ends."""
        from flywheel.curation import engine

        if self.busy.acquire(blocking=False):
            try:
                engine.end_pool()
            finally:
                self.busy.release()
        else:
            self.release_after = True

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
        with contextlib.suppress(OSError):
            self._save_pool()
        if self.release_after:  # a command ran its own flow meanwhile (this one was busy)
            self.release_after = False
            from flywheel.curation import engine

            engine.end_pool()
        done.set()
        out.write(SENTINEL + json.dumps(res, default=str) + "\n")
        with contextlib.suppress(OSError):
            f.close()
            conn.close()


def main(home: str) -> None:
    Runner(Path(home)).serve()


if __name__ == "__main__":
    main(sys.argv[1])
