"""What a reviewer needs to decide (issue 19, item 8), through the app: the router's evidence and
the nearest training neighbours on each card, a feedback signal's own text, the real image size,
empty caption types collapsed, unknown queues 404, undo of one's own decision within the window,
and the audit page for admins with long values cut and details readable."""

from __future__ import annotations

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from flywheel.loop import queue as q
from flywheel.review.app import create_app

from .conftest import csrf_of, login, queue_routed


def _as(env, user):
    c = TestClient(create_app(env["cat"], secure_cookies=False))
    assert login(c, user).status_code == 303
    return c


@pytest.fixture
def routed(review_env):
    return {**review_env, "routed": queue_routed(review_env["cat"], review_env["ref"], review_env["rows"][:3])}


def test_card_shows_the_evidence_neighbours_feedback_and_real_size(routed):
    html = _as(routed, "ann").get("/queue/kites").text
    card = html[html.index(f'id="item-{routed["routed"][0]}"'):html.index(f'id="item-{routed["routed"][1]}"')]
    for part in ("failed: <b>color</b>", "2.10x the reserve", "retrieval similarity <b class=\"num\">0.734</b>",
                 "a blue kite on a beach", "0.612", "train/kites/0041.jpg", "abababababab", "two kites in a park",
                 "rating 1/5", "the kite came out orange and there are two of them", "320 × 240 px",
                 'data-full="/thumb/', "Undo my decision"):
        assert part in card, part
    assert "none recorded" not in card
    # only the general caption exists (the router's row text): the three empty types are one line
    assert re.search(r'<dt class="empty">empty</dt><dd class="empty">text, knowledge, structured</dd>', card)
    caps = card[card.index('<dl class="captions">'):]
    assert caps[:caps.index("</dl>")].count("<dt>") == 1


def test_cards_of_older_items_take_the_evidence_from_the_route(review_env):
    cat = review_env["cat"]
    with cat.tx() as con:
        con.execute("INSERT INTO routes (signal_id, track, evidence_json, created_at) VALUES (?,?,?,?)",
                    ("sig-red-bicycle", "pretrain", json.dumps({"reason": "3 training rows within similarity 0.8 of "
                                                                          "'red bicycle' (< 5): the concept is scarce",
                                                                "density": {"near": 3, "tau": 0.8}}), time.time()))
    html = _as(review_env, "ann").get("/queue/pretrain").text
    assert "3 training rows within similarity 0.8 of &#39;red bicycle&#39; (&lt; 5)" in html
    # the fixture's empty text caption collapses; a bicycle's neighbour keeps its similarity
    assert '<dd class="empty">text</dd>' in html and "a blue bicycle 1" in html


def test_unknown_queue_is_404_and_an_empty_known_one_is_not(review_env):
    ann = _as(review_env, "ann")
    r = ann.get("/queue/no-such-queue")
    assert r.status_code == 404 and "there is no queue" in r.text and "0 pending" not in r.text
    q.bulk_decide(review_env["cat"], review_env["ids"], "approved", "bob")
    r = ann.get("/queue/pretrain")
    assert r.status_code == 200 and "No pending items here" in r.text


def test_undo_own_decision_within_the_window_is_audited(routed, monkeypatch):
    cat, ids = routed["cat"], routed["routed"]
    ann, bob = _as(routed, "ann"), _as(routed, "bob")
    tok = csrf_of(ann.get("/queue/kites").text)
    btok = csrf_of(bob.get("/queue/kites").text)
    fetch = {"X-Requested-With": "fetch"}
    assert ann.post(f"/items/{ids[0]}/decide", data={"csrf": tok, "decision": "rejected", "reason": "off_concept"},
                    headers=fetch).status_code == 200
    r = bob.post(f"/items/{ids[0]}/undo", data={"csrf": btok}, headers=fetch)
    assert r.status_code == 409 and "only they can undo it" in r.json()["detail"]
    assert ann.post(f"/items/{ids[0]}/undo", data={"csrf": "forged"}, headers=fetch).status_code == 403
    r = ann.post(f"/items/{ids[0]}/undo", data={"csrf": tok}, headers=fetch)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    it = q.get_item(cat, ids[0])
    assert (it["status"], it["decided_by"], it["reason"]) == ("pending", None, None)
    assert not cat.execute("SELECT 1 FROM review_votes WHERE item_id = ?", (ids[0],))
    row = cat.execute("SELECT actor, detail_json FROM audit_log WHERE action = 'review.undo'")
    assert len(row) == 1 and row[0]["actor"] == "ann"
    assert json.loads(row[0]["detail_json"])["undone"] == "rejected"
    assert q.stats(cat)["queues"]["kites"]["pending"] == 3
    # decided again (the page's form carries the new version), then too late to undo
    assert ann.post(f"/items/{ids[0]}/decide", data={"csrf": tok, "decision": "approved", "version": str(r.json()["version"])},
                    headers=fetch).status_code == 200
    with cat.tx() as con:
        con.execute("UPDATE review_items SET decided_at = decided_at - 61 WHERE item_id = ?", (ids[0],))
    r = ann.post(f"/items/{ids[0]}/undo", data={"csrf": tok}, headers=fetch)
    assert r.status_code == 409 and "within 60 s" in r.json()["detail"]
    monkeypatch.setenv("FLYWHEEL_UNDO_SECONDS", "120")  # configurable
    assert ann.post(f"/items/{ids[0]}/undo", data={"csrf": tok}, headers=fetch).status_code == 200
    # a bulk decision is not undone one item at a time
    q.bulk_decide(cat, ids[1:2], "approved", "ann")
    r = ann.post(f"/items/{ids[1]}/undo", data={"csrf": tok}, headers=fetch)
    assert r.status_code == 409 and "bulk decision" in r.json()["detail"]
    assert cat.audit_verify().ok


def test_audit_page_is_for_admins_with_long_values_cut_and_readable_details(review_env):
    cat = review_env["cat"]
    cat.audit("x" * 1_000_000, "login.fail", "user:" + "y" * 5000, {"client": "10.0.0.7", "name_length": 1_000_000,
                                                                    "note": "z" * 10_000})
    q.decide(cat, review_env["ids"][0], "approved", "ann", reason="relevant")
    assert _as(review_env, "ann").get("/audit").status_code == 403
    assert _as(review_env, "ann").get("/audit.csv").status_code == 403
    r = _as(review_env, "root").get("/audit")
    assert r.status_code == 200 and len(r.text) < 60_000
    assert "(1,000,000 characters)" in r.text and "(5,005 characters)" in r.text
    assert "<dt>client:</dt><dd>10.0.0.7</dd>" in r.text and "<dt>decision:</dt><dd>approved</dd>" in r.text
    assert "{&#34;" not in r.text and '{"' not in r.text  # no raw JSON
    assert 'href="/audit"' not in _as(review_env, "ann").get("/queue").text  # not offered to reviewers
