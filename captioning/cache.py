"""The caption cache: one SQLite file in WAL mode under `cache_dir("captions")`.

Keyed by (sample id, caption type, backend, model revision, prompt hash); the prompt hash covers
the template version, the rendered prompt and the generation parameters, so changing any of them
misses. Several workers (Ray actors in other processes) read and write it at once: WAL lets readers
run beside the one writer, and writes are short `INSERT OR REPLACE` transactions with a busy
timeout. A caption is written as soon as its batch finishes, so a killed run loses at most the
batches in flight; the rerun finds the rest here.

Outcomes of the model are cached, valid or not (`error` = "invalid" keeps the raw reply, which a
greedy rerun would only repeat); transport failures (timeouts, HTTP errors) are not, so a rerun
tries them again.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    sample_id TEXT NOT NULL, type TEXT NOT NULL, backend TEXT NOT NULL, revision TEXT NOT NULL,
    prompt_hash TEXT NOT NULL, text TEXT, error TEXT, raw TEXT, created_at REAL, meta TEXT,
    PRIMARY KEY (sample_id, type, backend, revision, prompt_hash)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class Key:
    sample_id: str
    type: str
    backend: str
    revision: str
    prompt_hash: str


@dataclass(frozen=True)
class Entry:
    text: str | None
    error: str | None
    raw: str | None
    meta: str | None = None  # what the backend says about how it made the caption (offline: the OCR engine)


class CaptionCache:
    def __init__(self, path: str | Path | None = None):
        if path is None:
            from flywheel import config

            path = config.cache_dir("captions") / "captions.db"
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con: sqlite3.Connection | None = None

    def __getstate__(self):  # picklable for Ray actors: the connection is reopened per process
        return {"path": self.path, "_con": None}

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute(SCHEMA)
            if "meta" not in {r[1] for r in con.execute("PRAGMA table_info(captions)")}:  # a cache from before meta
                try:
                    con.execute("ALTER TABLE captions ADD COLUMN meta TEXT")
                except sqlite3.OperationalError as e:  # another worker added it first
                    if "duplicate column" not in str(e):
                        raise
            self._con = con
        return self._con

    def get_many(self, keys: Iterable[Key]) -> dict[Key, Entry]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        con = self._connect()
        out: dict[Key, Entry] = {}
        for i in range(0, len(keys), 150):  # 5 params a key, SQLite's limit is 32766 or 999
            chunk = keys[i: i + 150]
            cond = " OR ".join(["(sample_id=? AND type=? AND backend=? AND revision=? AND prompt_hash=?)"] * len(chunk))
            params = [v for k in chunk for v in (k.sample_id, k.type, k.backend, k.revision, k.prompt_hash)]
            for row in con.execute(
                f"SELECT sample_id, type, backend, revision, prompt_hash, text, error, raw, meta FROM captions WHERE {cond}",
                params,
            ):
                out[Key(*row[:5])] = Entry(*row[5:])
        return out

    def put_many(self, items: Iterable[tuple[Key, Entry]]) -> None:
        rows = [(k.sample_id, k.type, k.backend, k.revision, k.prompt_hash, e.text, e.error, e.raw, time.time(), e.meta)
                for k, e in items]
        if not rows:
            return
        con = self._connect()
        for attempt in range(50):
            try:
                con.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError(f"caption cache {self.path} stayed locked; is a process stuck holding it?")
        try:
            con.executemany("INSERT OR REPLACE INTO captions (sample_id, type, backend, revision, prompt_hash, text, error, "
                           "raw, created_at, meta) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def count(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
