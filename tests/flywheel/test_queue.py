"""The review queue over a real SQLite catalog: idempotent enqueue, keyset pages, one decision per
item under concurrent reviewers (threads and processes), audit rows, QA batches, statistics."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading

import pytest

from flywheel.catalog import Catalog
from flywheel.loop import queue as q


def _items(n, signal="sig-1", track="pretrain", start=0):
    return [{"signal_id": signal, "sample_id": f"{i:064x}", "source": f"pool/{i}.png", "dataset": "pool@v1",
             "payload": {"track": track, "captions": {"general": f"caption {i}"}, "scores": {"clip": 0.3}}}
            for i in range(start, start + n)]


@pytest.fixture
def cat(catalog_location):
    """SQLite, and PostgreSQL (tests/pg_fixtures.py; marked slow)."""
    return Catalog(catalog_location)


def test_enqueue_is_idempotent_per_key(cat):
    ids = q.enqueue(cat, "pretrain", _items(5))
    assert len(set(ids)) == 5
    again = q.enqueue(cat, "pretrain", _items(5) + _items(2, start=5))
    assert again[:5] == ids and len(set(again)) == 7
    # the same sample for another signal or queue is another item
    other = q.enqueue(cat, "pretrain", _items(1, signal="sig-2")) + q.enqueue(cat, "other", _items(1))
    assert not set(other) & set(again)
    assert q.count_items(cat, queue="pretrain") == 8
    item = q.get_item(cat, ids[0])
    assert item["track"] == "pretrain" and item["payload"]["captions"]["general"] == "caption 0"
    with pytest.raises(q.ReviewError, match="sample_id"):
        q.enqueue(cat, "pretrain", [{"signal_id": "s"}])


def test_keyset_pagination_walks_every_item_once(cat):
    ids = q.enqueue(cat, "pretrain", _items(23))
    q.enqueue(cat, "pretrain", _items(4, signal="sig-2", start=100))
    seen, after = [], None
    while page := q.list_items(cat, queue="pretrain", signal_id="sig-1", after_id=after, limit=5):
        assert len(page) <= 5
        seen += [p["item_id"] for p in page]
        after = page[-1]["item_id"]
    assert seen == ids
    q.decide(cat, ids[3], "approved", "ann")
    assert ids[3] not in [p["item_id"] for p in q.list_items(cat, queue="pretrain", limit=100)]
    assert [p["item_id"] for p in q.list_items(cat, status="approved")] == [ids[3]]


def test_decide_writes_audit_and_losers_see_who_decided(cat):
    (i,) = q.enqueue(cat, "pretrain", _items(1))
    r = q.decide(cat, i, "approved", "ann", reason="relevant", request_id="req-1")
    assert r["applied"] and r["status"] == "approved" and r["version"] == 1
    # the same request again: the stored result, no second audit row
    again = q.decide(cat, i, "approved", "ann", reason="relevant", request_id="req-1")
    assert again["repeated"] and not again["applied"]
    with pytest.raises(q.AlreadyDecided) as e:
        q.decide(cat, i, "rejected", "bob", reason="low_quality")
    assert e.value.by == "ann" and e.value.decision == "approved" and e.value.at == r["decided_at"]
    assert "ann" in str(e.value)
    with pytest.raises(q.AlreadyDecided):  # ann changing her mind is not a repeat
        q.decide(cat, i, "rejected", "ann")
    audit = cat.execute("SELECT actor, action, target, detail_json FROM audit_log WHERE action IN ('review.approve', 'review.reject')")
    decisions = [a for a in audit if a["target"] == f"review_item:{i}"]
    assert len(decisions) == 1 and decisions[0]["actor"] == "ann"
    assert json.loads(decisions[0]["detail_json"])["reason"] == "relevant"
    with pytest.raises(q.ItemNotFound):
        q.decide(cat, 999_999, "approved", "ann")
    with pytest.raises(q.ReviewError, match="decision must be"):
        q.decide(cat, i, "maybe", "ann")


def test_expected_version_guards_stale_reads(cat):
    (i,) = q.enqueue(cat, "pretrain", _items(1))
    with pytest.raises(q.VersionConflict):
        q.decide(cat, i, "approved", "ann", expected_version=7)
    assert q.decide(cat, i, "approved", "ann", expected_version=0)["applied"]


def test_two_threads_deciding_one_item_leave_one_decision(cat):
    ids = q.enqueue(cat, "pretrain", _items(20))
    results: dict[str, list] = {"ann": [], "bob": []}

    def worker(name, decision):
        c = Catalog(cat.location)
        for i in ids:
            try:
                results[name].append(q.decide(c, i, decision, name)["item_id"])
            except q.AlreadyDecided:
                pass

    ts = [threading.Thread(target=worker, args=a) for a in (("ann", "approved"), ("bob", "rejected"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results["ann"] + results["bob"]) == sorted(ids)
    audit = cat.execute("SELECT target FROM audit_log WHERE action IN ('review.approve', 'review.reject')")
    assert sorted(int(a["target"].split(":")[1]) for a in audit) == sorted(ids)
    for i in ids:
        it = q.get_item(cat, i)
        assert (it["decided_by"], it["status"]) in (("ann", "approved"), ("bob", "rejected"))


def _proc_decide(path, ids, name, decision, out):
    c = Catalog(path)
    won = []
    for i in ids:
        try:
            q.decide(c, i, decision, name)
            won.append(i)
        except q.AlreadyDecided:
            pass
    out.put((name, won))


def test_two_processes_deciding_one_item_leave_one_decision(cat):
    ids = q.enqueue(cat, "pretrain", _items(15))
    ctx = mp.get_context("fork")  # the target lives in this test module, which a spawned child cannot import
    out = ctx.Queue()
    ps = [ctx.Process(target=_proc_decide, args=(cat.location, ids, n, d, out)) for n, d in (("ann", "approved"), ("bob", "rejected"))]
    for p in ps:
        p.start()
    won = dict(out.get(timeout=60) for _ in ps)
    for p in ps:
        p.join(30)
    assert sorted(won["ann"] + won["bob"]) == sorted(ids)
    assert not set(won["ann"]) & set(won["bob"])
    assert cat.execute("SELECT COUNT(*) AS n FROM review_votes")[0]["n"] == len(ids)


def test_bulk_decide_counts_and_filter_respects_max_id(cat):
    ids = q.enqueue(cat, "pretrain", _items(10))
    q.decide(cat, ids[0], "rejected", "bob")
    r = q.bulk_decide(cat, ids[:4] + [123456], "approved", "ann", reason="relevant")
    assert (r["applied"], r["already_decided"], r["missing"]) == (3, 1, 1)
    late = q.enqueue(cat, "pretrain", _items(2, start=50))  # queued after the reviewer looked
    r = q.bulk_decide_filter(cat, "rejected", "ann", "off_concept", queue="pretrain", signal_id="sig-1", max_id=ids[-1])
    assert r["applied"] == 6
    assert all(q.get_item(cat, i)["status"] == "pending" for i in late)
    assert [a["item_id"] for a in q.approved(cat, queue="pretrain")] == ids[1:4]
    audit = cat.execute("SELECT actor, action, target, detail_json FROM audit_log WHERE action IN ('review.approve', 'review.reject')")
    assert len(audit) == 1 + 3 + 6  # one row per decision, bulk ones included
    assert sorted(int(a["target"].split(":")[1]) for a in audit) == sorted(ids)
    bulk = [json.loads(a["detail_json"]) for a in audit if a["actor"] == "ann"]
    assert {(d["kind"], d["signal_id"], d["dataset"]) for d in bulk} == {("bulk", "sig-1", "pool@v1")}
    assert cat.execute("SELECT COUNT(*) AS n FROM review_votes")[0]["n"] == 10
    assert {a["signal_id"] for a in q.approved(cat, signal_id="sig-1")} == {"sig-1"}


def test_qa_batch_accepts_by_sample_error_rate(cat):
    q.enqueue(cat, "pretrain", _items(40))
    b = q.create_batch(cat, "ann", queue="pretrain", signal_id="sig-1", sample_size=10, max_error=0.2, seed=1)
    assert b["size"] == 40 and len(b["sample"]) == 10 and b["recommend"] is None
    with pytest.raises(q.ReviewError, match="remaining sampled"):
        q.close_batch(cat, b["batch_id"], True, "ann")
    for k, i in enumerate(b["sample"]):
        q.decide(cat, i, "rejected" if k == 0 else "approved", "ann")
    st = q.batch_status(cat, b["batch_id"])
    assert st["errors"] == 1 and st["error_rate"] == pytest.approx(0.1) and st["recommend"] == "accept"
    assert 0 < st["ci_low"] < 0.1 < st["ci_high"] < 0.5
    done = q.close_batch(cat, b["batch_id"], True, "ann")
    assert done["applied"] == 30 and done["status"] == "accepted"
    assert len(q.approved(cat)) == 39
    with pytest.raises(q.ReviewError, match="already accepted"):
        q.close_batch(cat, b["batch_id"], True, "ann")


def test_qa_batch_interval_is_exact_with_no_errors_and_with_all_errors(cat):
    """A clean sample's error rate is bounded below by exactly 0, an all-wrong one above by exactly 1
    (flywheel.stats.wilson). At n = 21 the bare Wilson formula misses both ends by a rounding error."""
    for decision, sig in (("approved", "sig-1"), ("rejected", "sig-2")):
        q.enqueue(cat, "pretrain", _items(21, signal=sig))
        b = q.create_batch(cat, "ann", queue="pretrain", signal_id=sig, sample_size=21, seed=0)
        for i in b["sample"]:
            q.decide(cat, i, decision, "ann")
        st = q.batch_status(cat, b["batch_id"])
        if decision == "approved":
            assert st["errors"] == 0 and st["ci_low"] == 0.0 and 0.15 < st["ci_high"] < 0.16  # 0/21: [0, 0.155]
        else:
            assert st["errors"] == 21 and st["ci_high"] == 1.0 and 0.84 < st["ci_low"] < 0.85


def test_stats_throughput_and_agreement(cat):
    ids = q.enqueue(cat, "pretrain", _items(6))
    for i in ids[:3]:
        q.decide(cat, i, "approved", "ann")
    for i in ids[3:5]:
        q.decide(cat, i, "rejected", "bob")
    assert q.check(cat, ids[0], "bob", "approved")["agrees"]
    assert not q.check(cat, ids[1], "bob", "rejected")["agrees"]
    with pytest.raises(q.ReviewError, match="decided by you"):
        q.check(cat, ids[0], "ann", "approved")
    assert {i["item_id"] for i in q.items_to_check(cat, "bob")} == {ids[2]}
    s = q.stats(cat)
    assert s["queues"]["pretrain"] == {"pending": 1, "approved": 3, "rejected": 2}
    ann, bob = s["reviewers"]["ann"], s["reviewers"]["bob"]
    assert (ann["decisions"], ann["approved"], ann["compared"], ann["agreement"]) == (3, 3, 2, 0.5)
    assert (bob["decisions"], bob["checks"], bob["rejected"], bob["votes"], bob["agreement"]) == (2, 2, 2, 4, 0.5)
    assert ann["per_hour"] > 0


def test_review_counts_follow_every_write(cat):
    ids = q.enqueue(cat, "pretrain", _items(12))
    q.enqueue(cat, "pretrain", _items(12) + _items(3, signal="sig-2", track="edit"))  # 9 repeats, 3 new
    q.decide(cat, ids[0], "approved", "ann")
    with pytest.raises(q.AlreadyDecided):
        q.decide(cat, ids[0], "rejected", "bob")
    q.bulk_decide(cat, ids[1:5], "rejected", "bob")
    b = q.create_batch(cat, "ann", queue="pretrain", signal_id="sig-1", sample_size=2, seed=0)
    for i in b["sample"]:
        q.decide(cat, i, "approved", "ann")
    q.close_batch(cat, b["batch_id"], False, "ann")
    truth = {(r["queue"], r["signal_id"], r["track"], r["status"]): r["n"] for r in cat.execute(
        "SELECT queue, signal_id, track, status, COUNT(*) AS n FROM review_items GROUP BY 1, 2, 3, 4")}
    kept = {(r["queue"], r["signal_id"] or None, r["track"] or None, r["status"]): r["n"]
            for r in cat.execute("SELECT * FROM review_counts WHERE n != 0")}
    assert kept == truth
    assert q.groups(cat) == [{"queue": "pretrain", "signal_id": "sig-2", "track": "edit", "n": 3}]
    assert q.stats(cat)["queues"]["pretrain"] == {"pending": 3, "approved": 3, "rejected": 9}
    with cat.tx() as con:  # a row written around the queue API: recount repairs the counts
        con.execute("INSERT INTO review_items (queue, sample_id, status) VALUES ('pretrain', 'x', 'pending')")
    q.recount(cat)
    assert q.stats(cat)["queues"]["pretrain"]["pending"] == 4


def test_audit_log_is_append_only(cat):
    (i,) = q.enqueue(cat, "pretrain", _items(1))
    q.decide(cat, i, "approved", "ann")
    for sql in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(cat.integrity_errors, match="append-only"):
            cat.execute(sql)
    assert [r["actor"] for r in cat.execute("SELECT actor FROM audit_log WHERE action = 'review.approve'")] == ["ann"]
