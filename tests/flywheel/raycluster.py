"""A real multi-node Ray cluster on this machine for the tests: a head and worker nodes started with
Ray's own CLI (`ray start`, as deploy/ray-cluster.yaml and deploy/kuberay/ do), each in its own
session, all state in one short temp folder, every port chosen free on 127.0.0.1.

Never `ray stop`: it stops every Ray on the machine, other users' included. A node is stopped by
killing the processes of its session (the `ray start --block` leader and what it started)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a node's death is noticed within ~3 s instead of Ray's default ~30 s (GCS health checks)
FAST_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
              "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


# token auth, as `flywheel server` runs its head: every node and driver reads ~/.ray/auth_token
# (`ray get-auth-token --generate` makes one); a node without the mode set is refused by the GCS
AUTH = {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(pid: int) -> int | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(s[s.rindex(")") + 2:].split()[3])  # field 6: session id


def session_members(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and _session(int(d.name)) == sid:
            out.append(int(d.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Node:
    def __init__(self, argv: list[str], log: Path, env: dict):
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.sid = self.proc.pid  # start_new_session: the leader's pid is the session id

    def wait_started(self, timeout: float = 120) -> None:
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            if b"Ray runtime started" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"ray start did not come up: {self.log.read_text()[-2000:]}")

    def pids(self, name: str) -> list[int]:
        """This node's processes whose command line contains `name` (raylet, gcs_server, ray::_score_task)."""
        return [p for p in session_members(self.sid) if name in _cmdline(p)]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for p in session_members(self.sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        t = time.monotonic() + 5
        while time.monotonic() < t and session_members(self.sid):
            time.sleep(0.2)
        self.kill(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


class Cluster:
    """`ray start --head` plus `ray start --address` worker nodes, 1 CPU each (as the brief's commands)."""

    def __init__(self, object_store_bytes: int | None = None):
        # Ray's Unix socket paths must stay under 107 bytes: a short folder, not pytest's tmp_path
        self.tmp = Path(tempfile.mkdtemp(prefix="fwray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.object_store_bytes = object_store_bytes
        self.nodes: list[Node] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **FAST_DEATH, **AUTH}
        self.env.pop("RAY_ADDRESS", None)

    def driver_env(self, **extra: str) -> dict:
        """The environment a driver (`flywheel curate`) joins this cluster with."""
        return {**os.environ, "RAY_ADDRESS": self.address, **AUTH, **extra}

    def _argv(self, head: bool) -> list[str]:
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
                "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                # two nodes on one host: every port of a node its own (Ray's defaults are fixed numbers)
                "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
        if self.object_store_bytes:
            argv += ["--object-store-memory", str(self.object_store_bytes)]
        if head:
            # no Ray Client server: it needs ray[client], and drivers join by the GCS address
            return argv + ["--head", "--port", str(self.port), "--include-dashboard=false", "--temp-dir", str(self.tmp / "ray")]
        return argv + ["--address", self.address]

    def start_head(self) -> Node:
        n = Node(self._argv(True), self.tmp / f"node{len(self.nodes)}.log", self.env)
        self.nodes.append(n)
        n.wait_started()
        return n

    def add_node(self) -> Node:
        n = Node(self._argv(False), self.tmp / f"node{len(self.nodes)}.log", self.env)
        self.nodes.append(n)
        n.wait_started()
        return n

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()
        self.nodes.clear()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
