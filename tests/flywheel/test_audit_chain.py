"""The audit log's HMAC chain (flywheel/audit.py) replayed against the attacks of issue 19: an
attacker with the catalog file drops the triggers with sqlite3, edits a row and recomputes an
unkeyed chain; deletes the newest rows; the server refuses to start until the break is sealed,
and concurrent writers keep the chain whole. Every test runs on SQLite and on PostgreSQL (the
attacker there holds the owner's password and psql; see tests/pg_fixtures.py)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sqlite3
import stat

import pytest
from typer.testing import CliRunner

from flywheel import audit
from flywheel.catalog import Catalog
from flywheel.loop import queue as q


def _items(n, start=0):
    return [{"signal_id": "sig-1", "sample_id": f"{i:064x}", "source": f"pool/{i}.png", "dataset": "pool@v1"}
            for i in range(start, start + n)]


@pytest.fixture
def cat(catalog_location):
    c = Catalog(catalog_location)
    ids = q.enqueue(c, "pretrain", _items(6))
    for i, d in zip(ids, ("approved", "rejected", "approved")):
        q.decide(c, i, d, "ann", reason="relevant")
    q.bulk_decide(c, ids[3:], "rejected", "bob", reason="off_concept")
    c.audit_save_head()
    return c


def _cli(*args):
    from flywheel.cli import _register_all, app

    _register_all()
    return CliRunner().invoke(app, list(args))


def _raw(cat):
    """What an attacker has: the catalog file and sqlite3 (on PostgreSQL: the owner's login)."""
    if cat.dialect == "postgresql":
        from flywheel import catalog_pg

        return catalog_pg.connect(cat.url)
    return sqlite3.connect(cat.path, isolation_level=None)


def _pg(con) -> bool:
    return getattr(con, "dialect", "sqlite") == "postgresql"


def _drop(con, trigger):
    con.execute(f"DROP TRIGGER {trigger}" + (" ON audit_log" if _pg(con) else ""))


def _create(con, trigger):
    con.execute(audit.triggers(con)[trigger])


def _create_all(con):
    for t in audit.triggers(con):
        _create(con, t)


def _drop_all(con):
    for t in audit.triggers(con):
        _drop(con, t)


def test_every_row_is_chained_and_verifies(cat):
    rows = cat.execute("SELECT seq, mac FROM audit_log ORDER BY seq")
    assert len(rows) == 1 + 3 + 3 and all(r["mac"] for r in rows)
    rep = cat.audit_verify()
    assert rep.ok and rep.rows == len(rows) and rep.first_break is None
    key = audit.key_file(cat.path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.parent != cat.path  # outside the catalog file
    r = _cli("audit", "verify")
    assert r.exit_code == 0 and "OK: the audit log" in r.output


def test_edit_with_triggers_dropped_and_unkeyed_chain_recomputed_is_caught(cat):
    con = _raw(cat)
    _drop_all(con)
    target = con.execute("SELECT seq FROM audit_log WHERE action = 'review.reject' ORDER BY seq LIMIT 1").fetchone()[0]
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", (target,))
    # the attacker recomputes a chain without the key: plain SHA-256 over the same message
    prev = ""
    for seq, at, actor, action, tgt, detail in con.execute(
            "SELECT seq, at, actor, action, target, detail_json FROM audit_log ORDER BY seq").fetchall():
        prev = hashlib.sha256(prev.encode() + b"\x00" + audit.canonical(seq, at, actor, action, tgt, detail)).hexdigest()
        con.execute("UPDATE audit_log SET mac = ? WHERE seq = ?", (prev, seq))
    _create_all(con)  # and puts the triggers back
    con.close()
    rep = cat.audit_verify()
    assert not rep.ok and rep.first_break["seq"] == 1  # every recomputed MAC is wrong from the first row on
    r = _cli("audit", "verify")
    assert r.exit_code == 1 and "first broken link at seq 1" in r.output and "flywheel audit seal" in r.output


def test_edit_of_one_row_names_that_row(cat):
    con = _raw(cat)
    _drop(con, "audit_log_no_update")
    con.execute("UPDATE audit_log SET detail_json = '{}' WHERE seq = 3")
    con.close()
    rep = cat.audit_verify()
    assert rep.first_break == {"seq": 3, "problem": rep.first_break["problem"]} and "does not match" in rep.first_break["problem"]
    assert rep.triggers_missing == ["audit_log_no_update"]


def test_deleted_middle_row_is_a_gap(cat):
    con = _raw(cat)
    _drop(con, "audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE seq = 4")
    con.close()
    rep = cat.audit_verify()
    assert rep.first_break["seq"] == 5 and "rows 4..4 are missing" in rep.first_break["problem"]


def test_deleted_tail_rows_then_honest_appends_leave_a_gap(cat):
    """Rows written after the head was saved, deleted, and the server appending on top of what
    is left: every MAC checks out, the numbering does not."""
    last = cat.execute("SELECT MAX(seq) AS s FROM audit_log")[0]["s"]
    con = _raw(cat)
    _drop(con, "audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE seq >= ?", (last - 1,))
    _create(con, "audit_log_no_delete")
    con.close()
    cat.audit_save_head()  # as if the server had restarted meanwhile
    cat.audit("ann", "review.approve", "review_item:9")
    rep = cat.audit_verify()
    assert rep.first_break == {"seq": last + 1, "problem": f"rows {last - 1}..{last} are missing (deleted)"}


def test_deleted_tail_row_is_caught_by_the_saved_head(cat):
    last = cat.execute("SELECT MAX(seq) AS s FROM audit_log")[0]["s"]
    con = _raw(cat)
    _drop(con, "audit_log_no_delete")
    con.execute("DELETE FROM audit_log WHERE seq = ?", (last,))
    if _pg(con):  # the high-water mark of handed-out seqs, lowered too
        con.execute("UPDATE audit_high_water SET top = ?", (last - 1,))
    else:
        con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'audit_log'", (last - 1,))
    _create(con, "audit_log_no_delete")
    con.close()
    assert cat.audit_verify(use_saved_head=False).ok  # the chain alone cannot see a shorter log
    rep = cat.audit_verify()
    assert not rep.ok and f"names seq {last}" in rep.head_problem and "rows were deleted" in rep.head_problem


def test_server_refuses_an_altered_log_until_sealed(cat):
    from fastapi.testclient import TestClient

    from flywheel.review.app import create_app

    con = _raw(cat)
    _drop(con, "audit_log_no_delete")
    con.close()
    with pytest.raises(audit.AuditTampered, match="flywheel audit seal"):
        with TestClient(create_app(cat, secure_cookies=False)):
            pass
    r = _cli("audit", "seal")
    assert r.exit_code != 0  # --reason is required
    r = _cli("audit", "seal", "--reason", "trigger dropped during a manual repair on 2026-12-04")
    assert r.exit_code == 0, r.output
    assert "recreated triggers: audit_log_no_delete" in r.output
    assert not audit.missing_triggers(_raw(cat))
    seal = cat.execute("SELECT actor, detail_json FROM audit_log WHERE action = 'audit.seal'")
    assert len(seal) == 1 and seal[0]["actor"].startswith("cli:")
    assert "manual repair" in json.loads(seal[0]["detail_json"])["reason"]
    with TestClient(create_app(cat, secure_cookies=False)) as c:
        assert c.get("/login").status_code == 200
        c.post("/login", data={"username": "nobody", "password": "x", "csrf": "x"})
    # the head saved at stop names the newest row, so deleting it later is caught
    assert audit.load_head(cat.path)["seq"] == cat.execute("SELECT MAX(seq) AS s FROM audit_log")[0]["s"]


def test_a_trigger_recreated_to_do_nothing_counts_as_missing(cat):
    con = _raw(cat)
    _drop(con, "audit_log_no_update")
    if _pg(con):
        con.execute("CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
        con.execute("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION noop()")
    else:
        con.execute("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT 1; END")
    con.close()
    assert cat.audit_verify().triggers_missing == ["audit_log_no_update"]
    cat.audit_seal("admin", "no-op trigger found")
    assert cat.audit_verify().ok
    with pytest.raises(cat.integrity_errors, match="append-only"):
        _raw(cat).execute("UPDATE audit_log SET actor = 'x'")


def test_seal_acknowledges_a_break_and_a_later_edit_breaks_it_again(cat):
    con = _raw(cat)
    _drop(con, "audit_log_no_update")
    con.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    con.close()
    cat.audit_seal("admin", "row 2 edited by mallory; restored from backup elsewhere")
    rep = cat.audit_verify()
    assert rep.ok and rep.acknowledged[0]["seq"] == 2
    q.enqueue(cat, "pretrain", _items(1, start=50))  # the chain continues after the seal
    assert cat.audit_verify().ok
    con = _raw(cat)
    _drop(con, "audit_log_no_update")
    con.execute("UPDATE audit_log SET actor = 'eve' WHERE seq = 1")  # an edit after the seal
    _create(con, "audit_log_no_update")
    con.close()
    rep = cat.audit_verify()
    assert not rep.ok and rep.first_break["seq"] == 1


def test_a_lost_key_is_refused_then_sealed_with_a_new_one(cat):
    audit.key_file(cat.path).unlink()
    rep = cat.audit_verify()
    assert rep.key_missing and not rep.ok
    with pytest.raises(audit.AuditKeyMissing, match="audit seal"):
        q.enqueue(cat, "pretrain", _items(1, start=60))
    res = cat.audit_seal("admin", "key lost with the old disk")
    assert res["new_key"] and cat.audit_verify().ok


def test_legacy_rows_are_vouched_for_by_the_first_chained_row(catalog_location):
    cat = Catalog(catalog_location)
    with cat.tx() as con:  # rows as written before migration 10
        con.execute("INSERT INTO audit_log (at, actor, action, target, detail_json) VALUES (1.5, 'old', 'x', 't', '{}')")
    cat.audit("new", "y", "t")
    assert cat.audit_verify().ok
    con = _raw(cat)
    _drop(con, "audit_log_no_update")
    con.execute("UPDATE audit_log SET actor = 'forged' WHERE seq = 1")
    _create(con, "audit_log_no_update")
    con.close()
    assert cat.audit_verify().first_break["seq"] == 2


def _writer(path, n, name):
    c = Catalog(path)
    for k in range(n):
        c.audit(name, "ping", "catalog", {"k": k})


def test_concurrent_writers_keep_one_chain(cat):
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=_writer, args=(cat.location, 40, f"w{j}")) for j in range(3)]
    for p in ps:
        p.start()
    ids = q.enqueue(cat, "pretrain", _items(30, start=100))
    for i in ids[:15]:
        q.decide(cat, i, "approved", "ann")
    q.bulk_decide(cat, ids[15:], "rejected", "bob")
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    rep = cat.audit_verify()
    assert rep.ok, rep.problems()
    assert cat.execute("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'ping'")[0]["n"] == 120


def test_key_from_the_environment(catalog_location, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_AUDIT_KEY", "k" * 40)
    cat = Catalog(catalog_location)
    cat.audit("a", "b", "c")
    assert not audit.key_file(cat.path).exists() and cat.audit_verify().ok
    monkeypatch.setenv("FLYWHEEL_AUDIT_KEY", "another key")
    assert cat.audit_verify().first_break["seq"] == 1
    assert os.environ["FLYWHEEL_AUDIT_KEY"] == "another key"
