"""The caption cache: keyed lookups, and concurrent writers in separate processes."""

from __future__ import annotations

import multiprocessing as mp

from flywheel.captioning.cache import CaptionCache, Entry, Key


def _writer(path: str, worker: int, n: int) -> None:
    c = CaptionCache(path)
    for i in range(n):
        c.put_many([(Key(f"s{worker}-{i}", "general", "b", "r", "h"), Entry(f"cap {worker} {i}", None, "raw"))])


def test_keyed_get_put(tmp_path):
    c = CaptionCache(tmp_path / "c.db")
    k = Key("id1", "general", "transformers", "rev1", "hash1")
    c.put_many([(k, Entry("a caption", None, "a caption"))])
    got = c.get_many([k, Key("id1", "general", "transformers", "rev2", "hash1"), Key("id1", "text", "transformers", "rev1", "hash1")])
    assert got == {k: Entry("a caption", None, "a caption")}  # another revision or type misses
    c.put_many([(k, Entry(None, "invalid", "{bad"))])  # replaced, not duplicated
    assert c.get_many([k])[k].error == "invalid" and c.count() == 1


def test_concurrent_writers_in_processes(tmp_path):
    path = str(tmp_path / "c.db")
    CaptionCache(path).count()  # create the file and WAL mode first
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    c = CaptionCache(path)
    assert c.count() == 120
    keys = [Key(f"s{w}-{i}", "general", "b", "r", "h") for w in range(3) for i in range(40)]
    assert len(c.get_many(keys)) == 120
