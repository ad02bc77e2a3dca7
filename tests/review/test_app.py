"""The dashboard and the review API through FastAPI's TestClient against a real catalog and a
real dataset: authentication, roles, CSRF, escaping, concurrency, thumbnails, bulk, QA, audit."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient

from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.app import create_app
from flywheel.review.pages.audit import _csv_cell

from .conftest import PASSWORDS, csrf_of, login


def _logged_in(env, user):
    c = TestClient(create_app(env["cat"], secure_cookies=False))
    assert login(c, user).status_code == 303
    return c


def test_unauthenticated_requests_are_redirected_or_refused(client, review_env):
    for path in ("/queue", "/queue/pretrain", "/audit", "/audit.csv", "/stats", "/admin/users", f"/thumb/{review_env['ids'][0]}"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    r = client.post(f"/items/{review_env['ids'][0]}/decide", data={"decision": "approved"}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/review/items").status_code == 401
    r = client.get("/api/review/items", headers={"Authorization": "Bearer fwt_nope.nope"})
    assert r.status_code == 401 and "tokens create" in r.json()["detail"]
    assert q.get_item(review_env["cat"], review_env["ids"][0])["status"] == "pending"


def test_login_sets_strict_cookie_and_rejects_bad_password_and_forged_login(review_env):
    c = TestClient(create_app(review_env["cat"], secure_cookies=True), base_url="https://testserver")
    r = login(c, "ann")
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    cookie = [h for h in r.headers.get_list("set-cookie") if h.startswith("fw_session=")][0].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    assert c.get("/queue").status_code == 200
    c2 = TestClient(create_app(review_env["cat"], secure_cookies=False))
    assert login(c2, "ann", "wrong-password").status_code == 401
    # no login CSRF token: refused before the password is even checked
    r = c2.post("/login", data={"username": "ann", "password": PASSWORDS["ann"]}, follow_redirects=False)
    assert r.status_code == 403


def test_login_is_rate_limited_per_user(review_env):
    c = TestClient(create_app(review_env["cat"], secure_cookies=False))
    for _ in range(auth.MAX_FAILS_PER_USER):
        assert login(c, "bob", "not-his-password").status_code == 401
    r = login(c, "bob")  # the right password no longer helps inside the window
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert login(c, "ann").status_code == 303  # other users are unaffected
    fails = review_env["cat"].execute("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'login.fail'")[0]["n"]
    assert fails == auth.MAX_FAILS_PER_USER


def test_reviewer_cannot_reach_admin_pages(review_env):
    ann = _logged_in(review_env, "ann")
    assert ann.get("/admin/users").status_code == 403
    assert ann.get("/admin/queues").status_code == 403
    token = csrf_of(ann.get("/queue").text)
    r = ann.post("/admin/users", data={"csrf": token, "name": "mallory", "role": "admin", "password": "x" * 12})
    assert r.status_code == 403
    assert "mallory" not in [u["name"] for u in auth.list_users(review_env["cat"])]
    assert "/admin/users" not in ann.get("/queue").text
    root = _logged_in(review_env, "root")
    assert root.get("/admin/users").status_code == 200
    token = csrf_of(root.get("/admin/users").text)
    r = root.post("/admin/users", data={"csrf": token, "name": "carol", "role": "reviewer", "password": "carol-pass-1"},
                  follow_redirects=False)
    assert r.status_code == 303
    assert login(TestClient(create_app(review_env["cat"], secure_cookies=False)), "carol", "carol-pass-1").status_code == 303
    # disabling a user ends their sessions at once
    root.post("/admin/users/ann", data={"csrf": token, "action": "disable"})
    assert ann.get("/queue", follow_redirects=False).status_code == 303


def test_posts_without_csrf_token_are_refused(review_env):
    ann = _logged_in(review_env, "ann")
    item = review_env["ids"][0]
    for data in ({"decision": "approved"}, {"decision": "approved", "csrf": "forged"}):
        r = ann.post(f"/items/{item}/decide", data=data, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
    assert ann.post("/queue/pretrain/bulk", data={"decision": "approved", "confirm": "yes", "max_id": "999"}).status_code == 403
    assert ann.post(f"/api/review/items/{item}/decision", json={"decision": "approved"}).status_code == 403
    assert q.get_item(review_env["cat"], item)["status"] == "pending"
    token = csrf_of(ann.get("/queue").text)
    r = ann.post(f"/api/review/items/{item}/decision", json={"decision": "approved"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["decided_by"] == "ann"


def test_captions_render_inert(review_env):
    ann = _logged_in(review_env, "ann")
    r = ann.get("/queue/pretrain?signal=sig-red-bicycle")
    assert r.status_code == 200
    html = r.text
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert "onerror=" not in re.sub(r"&lt;.*?&gt;", "", html)  # only inside escaped text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html.replace('<script src="/static/review.js" defer></script>', "")
    # every card shows the four caption types, the signal, neighbours and scores
    assert html.count('class="card pending"') == len(review_env["ids"])
    for part in ("knowledge 3", "&#34;color&#34;: &#34;red&#34;", "a blue bicycle 3", "clip__score", "sig-red-bicycle"):
        assert part in html, part


def test_second_reviewer_sees_who_decided_first(review_env):
    ann, bob = _logged_in(review_env, "ann"), _logged_in(review_env, "bob")
    item = review_env["ids"][1]
    ta, tb = csrf_of(ann.get("/queue/pretrain").text), csrf_of(bob.get("/queue/pretrain").text)
    hdr = {"X-Requested-With": "fetch"}
    r = ann.post(f"/items/{item}/decide", data={"csrf": ta, "decision": "approved", "reason": "relevant",
                                                "request_id": "r1"}, headers=hdr)
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = ann.post(f"/items/{item}/decide", data={"csrf": ta, "decision": "approved", "request_id": "r1"}, headers=hdr)
    assert r.status_code == 200 and r.json()["repeated"]  # a double click
    r = bob.post(f"/items/{item}/decide", data={"csrf": tb, "decision": "rejected"}, headers=hdr)
    assert r.status_code == 409 and r.json()["decided_by"] == "ann" and r.json()["decision"] == "approved"
    # without JavaScript: redirected back with the notice on the page
    r = bob.post(f"/items/{item}/decide", data={"csrf": tb, "decision": "rejected", "next": "/queue/pretrain"})
    assert r.status_code == 200 and "already approved by ann" in r.text
    assert q.get_item(review_env["cat"], item)["decided_by"] == "ann"


def test_thumbnail_is_resized_once_and_served_from_cache(review_env):
    from PIL import Image

    from flywheel.config import cache_dir

    ann = _logged_in(review_env, "ann")
    item, row = review_env["ids"][2], review_env["rows"][2]
    r = ann.get(f"/thumb/{item}?w=128")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (128, 96)  # 320x240 fitted into 128x128
    cached = list(cache_dir("thumbs").rglob(f"{row['id']}_128.jpg"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert ann.get(f"/thumb/{item}?w=100").content == r.content
    assert cached[0].stat().st_mtime_ns == mtime
    assert ann.get("/thumb/99999").status_code == 404


def test_bulk_decision_on_filtered_set(review_env):
    cat, ids = review_env["cat"], review_env["ids"]
    ann = _logged_in(review_env, "ann")
    q.decide(cat, ids[0], "rejected", "bob")
    html = ann.get("/queue/pretrain?signal=sig-red-bicycle").text
    max_id = int(re.search(r'name="max_id" value="(\d+)"', html).group(1))
    late = q.enqueue(cat, "pretrain", [{"signal_id": "sig-red-bicycle", "sample_id": "f" * 64, "track": "pretrain"}])
    form = {"csrf": csrf_of(html), "decision": "approved", "reason": "relevant", "max_id": str(max_id),
            "signal": "sig-red-bicycle", "track": ""}
    assert ann.post("/queue/pretrain/bulk", data=form).status_code == 400  # not confirmed
    r = ann.post("/queue/pretrain/bulk", data={**form, "confirm": "yes"})
    assert r.status_code == 200 and f"Applied to {len(ids) - 1} items" in r.text
    assert len(q.approved(cat)) == len(ids) - 1
    assert q.get_item(cat, late[0])["status"] == "pending"  # queued after the page was seen


def test_audit_page_and_csv_export(review_env):
    cat, ids = review_env["cat"], review_env["ids"]
    for i in ids[:3]:
        q.decide(cat, i, "approved", "ann", reason="relevant")
    q.decide(cat, ids[3], "rejected", "bob", reason="=HYPERLINK(\"http://x\")")
    root = _logged_in(review_env, "root")
    html = root.get("/audit?action=review.").text
    assert html.count("review.approve") == 3 and html.count("review.reject") == 1
    r = root.get("/audit.csv?action=review.")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    decisions = [x for x in rows if x["action"] in ("review.approve", "review.reject")]
    assert len(decisions) == 4 and {x["actor"] for x in decisions} == {"ann", "bob"}
    assert rows[0]["seq"] > rows[-1]["seq"] or len(rows) == 1
    assert _csv_cell("=1+1") == "'=1+1" and _csv_cell("ann") == "ann"
    # the audit log is append-only from the dashboard: no route deletes or edits it
    n = cat.execute("SELECT COUNT(*) AS n FROM audit_log")[0]["n"]
    assert n >= 4 + 3  # 4 decisions, 3 user.add, enqueue


def test_sampled_qa_batch_through_pages(review_env):
    cat = review_env["cat"]
    ann = _logged_in(review_env, "ann")
    html = ann.get("/qa").text
    group = re.search(r'<option value="([^"]+)">pretrain', html).group(1).replace("&#34;", '"')
    r = ann.post("/qa", data={"csrf": csrf_of(html), "group": group, "sample_size": "4", "max_error": "0.3"},
                 follow_redirects=False)
    assert r.status_code == 303
    batch_url = r.headers["location"]
    b = q.batch_status(cat, batch_url.rsplit("/", 1)[1])
    for k, i in enumerate(b["sample"]):
        q.decide(cat, i, "rejected" if k == 0 else "approved", "ann")
    page = ann.get(batch_url).text
    assert "25.0%" in page and "accept</b> the batch" in page and "Wilson" in page
    r = ann.post(batch_url + "/close", data={"csrf": csrf_of(page), "accept": "yes"})
    assert r.status_code == 200 and "accepted" in r.text
    assert len(q.approved(cat)) == len(review_env["ids"]) - 1


def test_second_opinions_feed_agreement_stats(review_env):
    cat, ids = review_env["cat"], review_env["ids"]
    q.decide(cat, ids[0], "approved", "ann")
    q.decide(cat, ids[1], "rejected", "ann")
    bob = _logged_in(review_env, "bob")
    page = bob.get("/check").text
    assert page.count('action="/items/') == 2
    token = csrf_of(page)
    bob.post(f"/items/{ids[0]}/check", data={"csrf": token, "decision": "approved"})
    bob.post(f"/items/{ids[1]}/check", data={"csrf": token, "decision": "approved"})
    assert q.get_item(cat, ids[1])["status"] == "rejected"  # a second opinion never overrides
    stats = bob.get("/stats").text
    row = re.search(r"<tr><td>ann</td>(.*?)</tr>", stats, re.S).group(1)
    assert "50%" in row


def test_admin_emit_says_why_it_failed_and_audits_nothing(review_env):
    root = _logged_in(review_env, "root")
    token = csrf_of(root.get("/admin/queues").text)
    r = root.post("/admin/emit", data={"csrf": token, "from_ref": "nothere@v9", "name": "train"})
    assert r.status_code == 400 and "Emission failed" in r.text and "nothere" in r.text
    assert review_env["cat"].execute("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'admin.emit'")[0]["n"] == 0


def test_api_with_token(review_env):
    cat, ids = review_env["cat"], review_env["ids"]
    tok = auth.create_token(cat, "loop", user="root", scopes=["review:read", "review:write", "admin"])
    c = TestClient(create_app(cat, secure_cookies=False))
    h = {"Authorization": f"Bearer {tok}"}
    page1 = c.get("/api/review/items?queue=pretrain&limit=5", headers=h).json()
    page2 = c.get(f"/api/review/items?queue=pretrain&limit=5&after_id={page1['next_after_id']}", headers=h).json()
    assert [i["item_id"] for i in page1["items"] + page2["items"]] == ids[:10]
    r = c.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "approved", "expected_version": 3}, headers=h)
    assert r.status_code == 409 and "changed since" in r.json()["detail"]
    r = c.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "approved", "expected_version": 0,
                                                           "request_id": "x1"}, headers=h)
    assert r.status_code == 200 and r.json()["decided_by"] == "token:loop"
    r = c.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "maybe"}, headers=h)
    assert r.status_code == 422
    r = c.post("/api/review/bulk", json={"item_ids": ids[:4], "decision": "approved"}, headers=h).json()
    assert (r["applied"], r["repeated"]) == (3, 1)
    assert len(c.get("/api/review/approved?queue=pretrain", headers=h).json()["items"]) == 4
    r = c.post("/api/review/enqueue", json={"queue": "pretrain", "items": [
        {"sample_id": review_env["rows"][0]["id"], "source": review_env["rows"][0]["source"], "dataset": review_env["ref"],
         "signal_id": "s9"}]}, headers=h)
    assert r.status_code == 200 and len(r.json()["item_ids"]) == 1
    assert c.get("/api/review/stats", headers=h).json()["queues"]["pretrain"]["approved"] == 4
    ann = _logged_in(review_env, "ann")  # reviewers decide, they do not queue
    t = csrf_of(ann.get("/queue").text)
    r = ann.post("/api/review/enqueue", json={"queue": "x", "items": []}, headers={"X-CSRF-Token": t})
    assert r.status_code == 403


def test_router_payload_renders_and_admin_emit_writes_lineage(review_env, tmp_path):
    """The loop end to end through the dashboard: items queued as the router queues them,
    decided on the page, emitted from the admin page by `flywheel.loop.emit.emit`;
    the emitted dataset names the review item behind every added row."""
    from flywheel.datasets import open_dataset
    from flywheel.loop.emit import lineage

    from .conftest import make_pool

    cat = review_env["cat"]
    base_ref, _ = make_pool(cat, tmp_path, n=3, name="train", offset=100)
    rows = review_env["rows"][:4]
    ids = q.enqueue(cat, "router-q", [{
        "signal_id": "sig-loop", "sample_id": r["id"], "source": r["source"], "dataset": review_env["ref"], "track": "pretrain",
        "payload": {"track": "pretrain", "prompt": "a red cube on a blue sphere", "text": f"retrieved text {k}",
                    "task": "t2i", "score": 0.61, "signal_kind": "eval", "concept": "red cube"}} for k, r in enumerate(rows)])
    ann = _logged_in(review_env, "ann")
    html = ann.get("/queue/router-q").text
    for part in ("retrieved text 2", "a red cube on a blue sphere", "concept: red cube", "retrieval_similarity", "0.610"):
        assert part in html, part
    token = csrf_of(html)
    for i, d in zip(ids, ("approved", "approved", "rejected", "approved")):
        assert ann.post(f"/items/{i}/decide", data={"csrf": token, "decision": d, "reason": "relevant"},
                        headers={"X-Requested-With": "fetch"}).status_code == 200
    root = _logged_in(review_env, "root")
    r = root.post("/admin/emit", data={"csrf": csrf_of(root.get("/admin/queues").text), "from_ref": base_ref, "name": "train"})
    assert r.status_code == 200, r.text
    assert "train@v2 (3 approved samples added, 6 rows)" in r.text, re.findall(r'class="(?:note|error)"[^>]*>([^<]*)', r.text)
    t = open_dataset("train@v2", catalog=cat).to_table(columns=["id", "lineage_item", "lineage_signal"])
    added = {x["lineage_item"] for x in t.to_pylist() if x["lineage_item"] is not None}
    assert added == {ids[0], ids[1], ids[3]}
    assert {x["lineage_signal"] for x in t.to_pylist() if x["lineage_item"]} == {"sig-loop"}
    lin = lineage(rows[0]["id"], catalog=cat)
    assert "ann" in str(lin)


@pytest.mark.parametrize("target,ok", [("/queue/pretrain?signal=s%201&track=t", True), ("//evil.example", False),
                                       ("/\t/evil.example", False), ("/\\evil.example", False),
                                       ("https://evil.example", False), ("/a\nb", False)])
def test_login_redirect_stays_on_site(review_env, target, ok):
    c = TestClient(create_app(review_env["cat"], secure_cookies=False))
    r = login(c, "ann", next=target)
    assert r.status_code == 303 and r.headers["location"] == (target if ok else "/queue")


def test_refused_form_posts_get_an_html_page(review_env):
    ann = _logged_in(review_env, "ann")
    r = ann.post("/queue/pretrain/bulk", data={"csrf": csrf_of(ann.get("/queue").text), "decision": "approved", "max_id": "9"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/html")
    assert "tick the confirmation box" in r.text and 'href="/queue"' in r.text


# Every page route of the dashboard as one `create_app` defined them before the pages were split
# into routers, in matching order: the split must keep each URL, its methods and its precedence.
PAGE_ROUTES = [
    ("/login", {"GET"}), ("/login", {"POST"}), ("/logout", {"POST"}), ("/", {"GET"}),
    ("/queue", {"GET"}), ("/queue/{queue}", {"GET"}), ("/items/{item_id}/decide", {"POST"}),
    ("/queue/{queue}/bulk", {"POST"}), ("/thumb/{item_id}", {"GET"}),
    ("/qa", {"GET"}), ("/qa", {"POST"}), ("/qa/{batch_id}", {"GET"}), ("/qa/{batch_id}/close", {"POST"}),
    ("/check", {"GET"}), ("/items/{item_id}/check", {"POST"}),
    ("/audit", {"GET"}), ("/audit.csv", {"GET"}), ("/stats", {"GET"}),
    ("/admin/users", {"GET"}), ("/admin/users", {"POST"}), ("/admin/users/{name}", {"POST"}),
    ("/admin/queues", {"GET"}), ("/admin/emit", {"POST"}),
]


def test_every_page_route_survives_the_split_into_routers(review_env):
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # before FastAPI 0.150 include_router copied each route into app.routes
        def iter_route_contexts(routes):
            return routes

    app = create_app(review_env["cat"], secure_cookies=False)
    every = list(iter_route_contexts(app.routes))
    routes = [(r.path, set(r.methods)) for r in every if r.methods]
    missing = [r for r in PAGE_ROUTES if r not in routes]
    assert not missing, f"page routes gone: {missing}"
    assert [r for r in routes if r in PAGE_ROUTES] == PAGE_ROUTES
    assert "/static" in [r.path for r in every]
    assert ("/api/review/items", {"GET"}) in routes


def test_an_oversized_user_name_or_password_is_refused_before_anything_is_stored(review_env):
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    huge = "m" * 1_000_000
    before = cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"]
    # a megabyte never reaches the log-in code: the body is over the route's limit (413)
    r = login(c, huge, "some-password-1")
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"] == before
    assert login(c, "m" * 1500, "some-password-1").status_code == 401  # within the body limit: refused as malformed
    assert login(c, "ann", "p" * (auth.MAX_PASSWORD + 1)).status_code == 401
    assert login(c, "a" * 65, "some-password-1").status_code == 401
    rows = cat.execute("SELECT target, detail_json FROM audit_log WHERE seq > ?", (before,))
    assert len(rows) == 3 and all(r["target"] == "user:(malformed)" for r in rows)
    assert max(len(r["detail_json"]) for r in rows) < 200
    keys = [r["key"] for r in cat.execute("SELECT key FROM login_attempts")]
    assert keys and max(len(k) for k in keys) < 100
    # still throttled per client: malformed names do not open a way around the limit
    assert cat.execute("SELECT COUNT(*) AS n FROM login_attempts WHERE ok = 0")[0]["n"] == 3
    assert login(c, "ann").status_code == 303


def test_users_add_refuses_an_oversized_name_or_password(review_env):
    from typer.testing import CliRunner

    from flywheel.cli import UserError, _register_all, app

    cat = review_env["cat"]
    before = cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"]
    _register_all()
    for name, password in (("m" * 1_000_000, "long-enough-1"), ("a" * 65, "long-enough-1"),
                           ("dora", "p" * (auth.MAX_PASSWORD + 1))):
        r = CliRunner().invoke(app, ["users", "add", name, "--password-stdin"], input=password + "\n")
        assert isinstance(r.exception, UserError), r.output
        assert len(str(r.exception)) < 400
    assert cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"] == before
    assert "dora" not in [u["name"] for u in auth.list_users(cat)]


@pytest.mark.parametrize("bad", [2**63, -1])
def test_ids_outside_the_integer_column_range_are_answered_4xx(review_env, bad):
    """SQLite integers are signed 64-bit: 2**63 once raised OverflowError (HTTP 500) on the way to
    the catalog, and -1 names no row either. Every id, version and cursor a client sends is
    checked first; nothing is decided."""
    cat = review_env["cat"]
    ann = TestClient(create_app(cat, secure_cookies=False), raise_server_exceptions=False)
    assert login(ann, "ann").status_code == 303
    token = csrf_of(ann.get("/queue").text)
    api = {"X-CSRF-Token": token}
    item = review_env["ids"][0]
    ids = [
        ("get", f"/api/review/items/{bad}", {}),
        ("get", f"/api/review/items?after_id={bad}", {}),
        ("post", f"/api/review/items/{bad}/decision", {"json": {"decision": "approved"}, "headers": api}),
        ("post", f"/api/review/items/{item}/decision", {"json": {"decision": "approved", "expected_version": bad},
                                                         "headers": api}),
        ("post", "/api/review/bulk", {"json": {"item_ids": [item, bad], "decision": "approved"}, "headers": api}),
        ("get", f"/thumb/{bad}", {}),
        ("get", f"/queue/pretrain?after={bad}", {}),
        ("get", f"/audit?before={bad}", {}),
        ("post", f"/items/{bad}/decide", {"data": {"csrf": token, "decision": "approved"}}),
        ("post", f"/items/{item}/decide", {"data": {"csrf": token, "decision": "approved", "version": str(bad)}}),
        ("post", f"/items/{bad}/check", {"data": {"csrf": token, "decision": "approved"}}),
        ("post", "/queue/pretrain/bulk", {"data": {"csrf": token, "decision": "approved", "confirm": "yes",
                                                   "max_id": str(bad)}}),
    ]
    # sizes and display hints are clamped or ignored rather than refused; they must not fail either
    others = [
        ("get", f"/api/review/items?limit={bad}", {}),
        ("get", f"/queue/pretrain?limit={bad}", {}),
        ("get", f"/queue/pretrain?note=already&item={bad}", {}),
        ("get", f"/thumb/{item}?w={bad}", {}),
    ]
    audit = cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"]
    for method, path, kw in ids + others:
        r = getattr(ann, method)(path, follow_redirects=False, **kw)
        if (method, path, kw) in ids:
            assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:300])
        else:
            assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
    assert cat.execute("SELECT COUNT(*) AS n FROM review_items WHERE status != 'pending'")[0]["n"] == 0
    assert cat.execute("SELECT max(seq) AS s FROM audit_log")[0]["s"] == audit
