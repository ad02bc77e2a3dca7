"""A throw-away PostgreSQL cluster for the catalog tests: `initdb` + `pg_ctl` from Debian's
`postgresql` package, run as the unprivileged `postgres` user through `runuser` when the suite
runs as root (CI does; PostgreSQL refuses to run as root), listening on a free 127.0.0.1 port with
its unix socket in the same tmp dir, password (SCRAM) authentication, stopped at teardown.

`pg_catalog_url()` gives each test a fresh database, so tests never see each other's rows."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_USER = "flywheel"
PG_PASSWORD = "s3cret-Pw!xyzzy"  # distinctive: the tests grep output for it


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="fw-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.port = _free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self._n = itertools.count()
        self.started = False

    def _run(self, *cmd: str) -> None:
        r = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")

    def start(self) -> None:
        self.sock.mkdir()
        pw = self.root / "pw"
        pw.write_text(PG_PASSWORD + "\n")
        if self._as:
            shutil.chown(self.root, "postgres")
            for p in (self.sock, pw):
                shutil.chown(p, "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", PG_USER, "--pwfile", str(pw),
                  "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pw.unlink()
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "-t", "60", "start")
        self.started = True

    def stop(self) -> None:
        if self.started:
            subprocess.run([*self._as, _bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres", user: str = PG_USER, password: str = PG_PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"cat{next(self._n)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@pytest.fixture(scope="session")
def pg_cluster():
    if not _bin("initdb") or not _bin("pg_ctl"):
        pytest.fail("PostgreSQL is not installed: run deploy/install-system.sh (Debian package postgresql)")
    c = PgCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def pg_url(pg_cluster, monkeypatch):
    """A fresh database in the session's cluster, selected as the catalog (FLYWHEEL_CATALOG)."""
    url = pg_cluster.new_database()
    monkeypatch.setenv("FLYWHEEL_CATALOG", url)
    return url


# The catalog tests run on both dialects: `catalog_location` is None for SQLite (the default
# under FLYWHEEL_HOME) and a fresh PostgreSQL database otherwise. The PostgreSQL runs are slow
# (a cluster per session, a database per test); test_catalog_pg.py keeps one fast one in the
# default suite.
DIALECTS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="pg", marks=pytest.mark.slow)]


@pytest.fixture(params=DIALECTS)
def catalog_location(request):
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")
