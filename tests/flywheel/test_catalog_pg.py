"""The catalog on PostgreSQL (FLYWHEEL_CATALOG=postgresql://…) against a real throw-away cluster
(tests/pg_fixtures.py): selection, no fall-back to SQLite, the password kept out of every output,
`flywheel sql` through DuckDB's postgres extension as a read-only role, migrations under an
advisory lock, and `flywheel catalog migrate --to` from SQLite. The catalog's own tests
(test_queue, test_audit_chain, test_catalog_migrations) run on PostgreSQL too, marked slow."""

from __future__ import annotations

import logging
import multiprocessing as mp

import pytest
from pg_fixtures import PG_PASSWORD
from typer.testing import CliRunner

from flywheel.catalog import MIGRATIONS, Catalog
from flywheel.catalog_pg import CatalogUnavailable
from flywheel.loop import queue as q


def _cli(*args):
    from flywheel.cli import _register_all, app

    _register_all()
    return CliRunner().invoke(app, list(args))


def _items(n, start=0):
    return [{"signal_id": "sig-1", "sample_id": f"{i:064x}", "source": f"pool/{i}.png", "dataset": "pool@v1"}
            for i in range(start, start + n)]


def test_postgres_catalog_queue_audit_and_sql(pg_url, caplog, tmp_path):
    """The one fast PostgreSQL test of the default suite."""
    import psycopg

    caplog.set_level(logging.DEBUG)
    cat = Catalog()  # FLYWHEEL_CATALOG selects it
    assert cat.dialect == "postgresql" and PG_PASSWORD not in repr(cat) + cat.where
    assert not (tmp_path / "fw-home" / "catalog.db").exists()
    ids = q.enqueue(cat, "pretrain", _items(4))
    assert q.enqueue(cat, "pretrain", _items(2)) == ids[:2]  # ON CONFLICT DO NOTHING RETURNING
    q.decide(cat, ids[0], "approved", "ann")
    with pytest.raises(q.AlreadyDecided):
        q.decide(cat, ids[0], "rejected", "bob")
    q.bulk_decide(cat, ids[1:], "rejected", "bob")
    assert q.stats(cat)["queues"]["pretrain"] == {"pending": 0, "approved": 1, "rejected": 3}
    row = cat.execute("SELECT seq, actor FROM audit_log ORDER BY seq DESC LIMIT 1")[0]
    assert row[1] == row["actor"] == "bob" and dict(row)["seq"] == row[0]
    with pytest.raises(cat.integrity_errors, match="append-only"):
        cat.execute("DELETE FROM audit_log")
    with pytest.raises(cat.integrity_errors, match="append-only"):
        cat.execute("TRUNCATE audit_log")
    out = [_cli("audit", "verify"),
           _cli("sql", "SELECT reviewer, COUNT(*) AS n FROM review_votes GROUP BY reviewer ORDER BY reviewer"),
           _cli("sql", "SELECT password_hash FROM users")]
    assert out[0].exit_code == 0 and "OK: the audit log of postgresql://flywheel@127.0.0.1" in out[0].output
    assert out[1].exit_code == 0 and "ann" in out[1].output and "bob" in out[1].output, out[1].output
    assert out[2].exit_code != 0
    # the role flywheel sql logs in as may read, never write, and never a credential column
    from flywheel.catalog import _read_only_url

    with psycopg.connect(_read_only_url(cat), autocommit=True) as ro:
        assert ro.execute("SELECT COUNT(*) FROM review_items").fetchone()[0] == 4
        for sql in ("INSERT INTO signals (signal_id, kind, status) VALUES ('x', 'y', 'new')",
                    "SELECT password_hash FROM users", "SELECT * FROM sessions", "DROP TABLE runs"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                ro.execute(sql)
    seen = "".join(r.output for r in out) + caplog.text + "".join(
        str(r["params_json"]) for r in cat.execute("SELECT params_json FROM runs"))
    assert PG_PASSWORD not in seen


def test_an_unreachable_postgres_is_an_error_never_sqlite(monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://flywheel:{PG_PASSWORD}@127.0.0.1:{port}/prod"
    with pytest.raises(CatalogUnavailable, match=f"database prod on 127.0.0.1:{port}") as e:
        Catalog(url)
    assert PG_PASSWORD not in str(e.value)
    monkeypatch.setenv("FLYWHEEL_CATALOG", url)
    r = _cli("audit", "verify")
    assert r.exit_code != 0 and PG_PASSWORD not in r.output + repr(r.exception)
    assert f"127.0.0.1:{port}" in str(r.exception)
    assert not list((tmp_path / "fw-home").glob("*.db"))  # no SQLite catalog appeared
    monkeypatch.setenv("FLYWHEEL_CATALOG", "postgresq://x@h/db")  # a typo is not a file name
    with pytest.raises(ValueError, match="not postgresql"):
        Catalog()


def _open(url, out):
    out.put(Catalog(url).schema_version())


@pytest.mark.slow
def test_processes_starting_together_migrate_once(pg_cluster):
    url = pg_cluster.new_database()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ps = [ctx.Process(target=_open, args=(url, out)) for _ in range(4)]
    for p in ps:
        p.start()
    got = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(60)
    assert got == [max(v for v, _ in MIGRATIONS)] * 4
    rows = Catalog(url).execute("SELECT version, COUNT(*) AS n FROM schema_version GROUP BY version")
    assert sorted(r["version"] for r in rows) == sorted(v for v, _ in MIGRATIONS) and {r["n"] for r in rows} == {1}


@pytest.mark.slow
def test_migrate_a_sqlite_catalog_to_postgres(pg_cluster, monkeypatch):
    src = Catalog()  # the SQLite default under FLYWHEEL_HOME
    ids = q.enqueue(src, "pretrain", _items(8))
    q.decide(src, ids[0], "approved", "ann")
    q.bulk_decide(src, ids[1:5], "rejected", "bob")
    src.start_run("r1", "curate", params={"k": 1})
    v = src.reserve_dataset("pool", "curated", "r1")
    src.commit_dataset("pool", v, "/data/pool", {"rows": 3})
    src.audit_save_head()
    counts = {t: src.execute(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in ("review_items", "review_votes", "audit_log", "runs", "datasets")}
    url = pg_cluster.new_database()
    r = _cli("catalog", "migrate", "--to", url)
    assert r.exit_code == 0, r.output
    assert "the audit log verifies" in r.output and PG_PASSWORD not in r.output
    assert _cli("catalog", "migrate", "--to", url).exit_code != 0  # not into a non-empty one
    monkeypatch.setenv("FLYWHEEL_CATALOG", url)
    dst = Catalog()
    assert {t: dst.execute(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"] for t in counts} == counts
    assert _cli("audit", "verify").exit_code == 0
    more = q.enqueue(dst, "pretrain", _items(2, start=100))  # identities continue past the copied ids
    assert min(more) > max(ids)
    q.decide(dst, more[0], "approved", "ann")
    rep = dst.audit_verify()
    assert rep.ok and rep.rows == counts["audit_log"] + 2, rep.problems()
    assert dst.resolve_dataset("pool@latest").as_posix() == "/data/pool"


def test_portable_upserts_replace_and_ignore_like_sqlite_did(catalog_location):
    """The statements that were INSERT OR REPLACE / OR IGNORE, each run twice on each dialect."""
    from flywheel.cli.models import _record
    from flywheel.loop import blobs, measure

    cat = Catalog(catalog_location)
    cat.start_run("r", "curate", params={"a": 1})
    cat.finish_run("r", "succeeded", {"n": 1})
    cat.start_run("r", "curate", params={"a": 2})  # a rerun replaces the whole row
    assert [tuple(r) for r in cat.execute("SELECT status, params_json, finished_at, stats_json FROM runs")] == [
        ("running", '{"a": 2}', None, None)]
    for rev in ("v1", "v2"):
        _record("m", {"kind": "clip", "path": "/m", "revision": rev, "files": {}})
    assert [tuple(r) for r in cat.execute("SELECT name, revision FROM models")] == [("m", "v2")]
    for size in (3, 4):
        with cat.tx() as con:
            blobs.register(con, {"sha256": "ab" * 32, "size": size, "format": "png", "width": 1, "height": 1}, "sig")
    assert [tuple(r) for r in cat.execute("SELECT size FROM blobs")] == [(3,)]  # the first one stays
    for ok in (False, True):
        measure.record_evals(cat, "run", "after", "ckpt", "ds@v1",
                             [{"concept": "kite", "seed": 0, "concept_ok": ok, "passed": ok}])
    got = cat.execute("SELECT attribute, n, correct FROM loop_evals ORDER BY attribute")
    assert [tuple(r) for r in got] == [("all", 1, 1), ("concept", 1, 1)]
