"""Issue 19, replayed: scoped tokens, a declared scope and limits on every route, request limits,
and log-in throttling that cannot lock out the account's owner. Each test is an attack from the
issue (or its fix's edge) against the real apps and a real catalog."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flywheel.catalog import MIGRATIONS, Catalog
from flywheel.loop import queue as q
from flywheel.review import auth, guard
from flywheel.review.app import create_app

from .conftest import PASSWORDS, csrf_of, login


def _h(tok):
    return {"Authorization": f"Bearer {tok}"}


def _apps(cat):
    from flywheel.review.signals_api import create_app as signals_app

    return {"dashboard": create_app(cat, secure_cookies=False), "signal API": signals_app(cat, docs=True)}


def _undeclared(app) -> list[str]:
    out = []
    for r, g in guard.route_guards(app):
        if g is None or not isinstance(g.limits, guard.Limits):
            out.append(f"{sorted(getattr(r, 'methods', None) or [])} {getattr(r, 'path', r)}")
    return out


def _cli(*args, input=None):
    from flywheel.cli import _register_all, app

    _register_all()
    return CliRunner().invoke(app, list(args), input=input)


# -- every route declares a scope and limits -------------------------------------------------
def test_every_route_of_both_apps_declares_a_scope_and_limits(review_env):
    for name, app in _apps(review_env["cat"]).items():
        routes = guard.route_guards(app)
        assert len(routes) > 5, name
        assert not _undeclared(app), f"{name}: routes without a guard: {_undeclared(app)}"
        for r, g in routes:
            assert all(s == guard.PUBLIC or s in auth.SCOPES for s in g.scopes), (r, g)
            # only log-in, health, the schema and static files are reachable without credentials
            if g.public:
                assert getattr(r, "path", "") in ("/login", "/", "/static", "/api/health", "/api/openapi.json", "/api/docs"), r
    # the walk itself catches a route someone adds without a guard
    app = create_app(review_env["cat"], secure_cookies=False)

    @app.get("/forgotten")
    def forgotten():
        return {}

    assert _undeclared(app) == ["['GET'] /forgotten"]


# -- tokens ----------------------------------------------------------------------------------
def test_a_signal_token_cannot_review_and_scopes_are_capped_by_the_role(review_env):
    """Issue 19: a signal-ingest token approved an item and bulk-approved three."""
    cat, ids = review_env["cat"], review_env["ids"]
    c = TestClient(create_app(cat, secure_cookies=False))
    sig = auth.create_token(cat, "ingest", user="ann")  # default scope: signals:write
    r = c.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "approved"}, headers=_h(sig))
    assert r.status_code == 403 and "missing scope review:write" in r.json()["detail"]
    r = c.post("/api/review/bulk", json={"item_ids": ids[:3], "decision": "approved"}, headers=_h(sig))
    assert r.status_code == 403 and "review:write" in r.json()["detail"]
    assert c.get("/api/review/items", headers=_h(sig)).status_code == 403
    assert cat.execute("SELECT COUNT(*) AS n FROM review_items WHERE status != 'pending'")[0]["n"] == 0
    # a reviewer cannot mint an admin token, and a token dies with its user's rights
    with pytest.raises(auth.AuthError, match="beyond"):
        auth.create_token(cat, "sneaky", user="ann", scopes=["admin"])
    with pytest.raises(auth.AuthError, match="pass --user"):
        auth.create_token(cat, "orphan", scopes=["review:write"])
    tok = auth.create_token(cat, "ops", user="root", scopes=["review:read", "admin"])
    row = review_env["rows"][0]  # items name a catalog dataset row (test_samples.py)
    body = {"queue": "x", "items": [{"sample_id": row["id"], "source": row["source"], "dataset": review_env["ref"]}]}
    assert c.post("/api/review/enqueue", json=body, headers=_h(tok)).status_code == 200
    r = c.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "approved"}, headers=_h(tok))
    assert r.status_code == 403 and "review:write" in r.json()["detail"]  # its scopes, not the admin's role
    auth.add_user(cat, "root2", "admin", "root2-password")
    auth.set_user(cat, "root", "cli", role="reviewer")  # demoted: the admin scope no longer counts
    r = c.post("/api/review/enqueue", json=body, headers=_h(tok))
    assert r.status_code == 403 and "missing scope admin" in r.json()["detail"]
    auth.set_user(cat, "root", "cli", disabled=True)
    r = c.get("/api/review/stats", headers=_h(tok))
    assert r.status_code == 401 and "disabled" in r.json()["detail"]


def test_expired_and_revoked_tokens_and_the_tokens_commands(review_env):
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    r = _cli("tokens", "create", "--name", "bot", "--user", "ann", "--scope", "review:read", "--expires", "1h")
    assert r.exit_code == 0, r.output
    tok = r.stdout.strip().splitlines()[0]
    token_id = tok[4:].split(".")[0]
    assert c.get("/api/review/stats", headers=_h(tok)).status_code == 200
    listing = _cli("tokens", "list").stdout
    assert token_id in listing and "review:read" in listing and tok.split(".")[1] not in listing  # secret shown once
    assert "last used never" not in listing.split(token_id)[1].splitlines()[0]  # last use recorded
    assert tok.split(".")[1] not in json.dumps([dict(x) for x in cat.execute("SELECT * FROM tokens")])
    # revocation holds from the very next request
    assert _cli("tokens", "revoke", token_id).exit_code == 0
    r = c.get("/api/review/stats", headers=_h(tok))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert "revoked" in _cli("tokens", "list", "--all").stdout
    # expiry: 401 that says so
    old = auth.create_token(cat, "old", user="ann", scopes=["review:read"], expires_in=60)
    with cat.tx() as con:
        con.execute("UPDATE tokens SET expires_at = ? WHERE name = 'old'", (time.time() - 1,))
    r = c.get("/api/review/stats", headers=_h(old))
    assert r.status_code == 401 and "expired at" in r.json()["detail"]
    assert _cli("tokens", "create", "--name", "x", "--user", "nobody").exit_code != 0
    assert "--expires" in str(_cli("tokens", "create", "--name", "x", "--user", "ann", "--expires", "soon").exception)


def test_tokens_made_before_scopes_keep_only_signals_write(tmp_path):
    """Migration 7: a token issued when tokens had every right can only post signals now."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, sql in MIGRATIONS:
        if version > 6:
            break
        for stmt in filter(str.strip, sql if isinstance(sql, list) else sql.split(";")):
            con.execute(stmt)
        con.execute("INSERT INTO schema_version VALUES (?)", (version,))
    con.execute("INSERT INTO tokens (token_id, name, hash, created_at) VALUES ('abc', 'legacy', ?, 0)", (auth._sha("s3cret"),))
    con.commit()
    con.close()
    cat = Catalog(path)
    assert cat.schema_version() >= 8
    t = auth.verify_token(cat, "fwt_abc.s3cret")
    assert t.rights == {"signals:write"} and t.user is None and t.expires_at is None
    from flywheel.review.signals_api import create_app as signals_app

    c = TestClient(signals_app(cat))
    assert c.get("/api/review/stats", headers=_h("fwt_abc.s3cret")).status_code == 403
    sig = {"kind": "feedback", "id": "f1", "prompt": "a cat", "rating": 2}
    assert c.post("/api/signals", json=sig, headers=_h("fwt_abc.s3cret")).status_code == 201


def test_throttled_requests_get_429_with_retry_after(review_env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_LIMITS", json.dumps({"GET /api/review/stats": {"rate": 2}}))
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    tok = auth.create_token(cat, "bot", user="ann", scopes=["review:read"])
    assert [c.get("/api/review/stats", headers=_h(tok)).status_code for _ in range(2)] == [200, 200]
    r = c.get("/api/review/stats", headers=_h(tok))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "2 a minute" in r.json()["detail"]
    other = auth.create_token(cat, "bot2", user="bob", scopes=["review:read"])
    assert c.get("/api/review/stats", headers=_h(other)).status_code == 200  # per principal
    # a page says so too, as a page
    monkeypatch.setenv("FLYWHEEL_LIMITS", json.dumps({"GET /stats": {"rate": 1}}))
    ann = TestClient(create_app(cat, secure_cookies=False))
    assert login(ann, "ann").status_code == 303
    assert ann.get("/stats").status_code == 200
    r = ann.get("/stats")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "too many requests" in r.text


# -- request limits --------------------------------------------------------------------------
def test_bodies_over_the_limit_are_refused_before_they_are_read(review_env):
    cat = review_env["cat"]
    from flywheel.review.signals_api import create_app as signals_app

    c = TestClient(signals_app(cat), raise_server_exceptions=False)
    tok = _h(auth.create_token(cat, "bot"))
    limit = next(g for r, g in guard.route_guards(c.app) if getattr(r, "path", "") == "/api/signals").limits.body
    # declared too large: refused on the header (50 MB in the issue)
    r = c.post("/api/signals", content=b"x" * (limit + 1), headers={**tok, "content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    # streamed without a length, endlessly: cut off once it passes the limit, never read whole
    import asyncio

    chunks, sent = [0], []

    async def receive():
        chunks[0] += 1
        return {"type": "http.request", "body": b" " * (1 << 20), "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/signals", "raw_path": b"/api/signals", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"authorization", tok["Authorization"].encode())],
             "client": ("192.0.2.1", 1), "server": ("testserver", 80), "scheme": "http", "http_version": "1.1",
             "root_path": ""}
    asyncio.run(c.app(scope, receive, send))
    assert sent[0]["status"] == 413 and chunks[0] == limit // (1 << 20) + 1
    # a route that takes no body refuses one
    assert c.request("GET", "/api/health", content=b"x" * 10).status_code == 413
    # `[` x 100000 is a 4xx, not RecursionError; 200k keys in one field are not stored
    r = c.post("/api/signals", content=b"[" * 100_000, headers={**tok, "content-type": "application/json"})
    assert r.status_code == 422 and "nested deeper" in r.json()["detail"]
    wide = {"kind": "eval", "id": "w1", "prompt": "p", "results": {f"k{i}": True for i in range(200_000)}}
    r = c.post("/api/signals", json=wide, headers=tok)
    assert r.status_code == 413 and "keys" in r.json()["detail"]
    assert not cat.execute("SELECT * FROM signals WHERE signal_id = 'w1'"), [dict(x) for x in cat.execute("SELECT signal_id, source FROM signals")]
    # the review API: an enqueue item with a long field, and a deep payload
    admin = _h(auth.create_token(cat, "ops", user="root", scopes=["admin"]))
    d = TestClient(create_app(cat, secure_cookies=False), raise_server_exceptions=False)
    r = d.post("/api/review/enqueue", json={"queue": "x", "items": [{"sample_id": "a", "source": "s" * 100_000}]}, headers=admin)
    assert r.status_code in (413, 422)
    deep: dict = {}
    for _ in range(40):
        deep = {"a": deep}
    r = d.post("/api/review/enqueue", json={"queue": "x", "items": [{"sample_id": "a", "payload": deep}]}, headers=admin)
    assert r.status_code == 422
    assert not cat.execute("SELECT 1 FROM review_items WHERE queue = 'x'")


def test_limits_are_configurable_per_route(review_env, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_LIMITS", json.dumps({"POST /api/review/bulk": {"items": 2}, "*": {"depth": 8}}))
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    tok = _h(auth.create_token(cat, "bot", user="ann", scopes=["review:write"]))
    r = c.post("/api/review/bulk", json={"item_ids": review_env["ids"][:3], "decision": "approved"}, headers=tok)
    assert r.status_code == 413 and "at most 2" in r.json()["detail"]
    g = dict((getattr(r, "path", ""), g) for r, g in guard.route_guards(c.app))
    assert g["/api/review/stats"].limits.depth == 8
    monkeypatch.setenv("FLYWHEEL_LIMITS", json.dumps({"*": {"bogus": 1}}))
    with pytest.raises(ValueError, match="bogus"):
        create_app(cat, secure_cookies=False)


# -- log-in throttling -----------------------------------------------------------------------
def test_failures_sent_by_others_cannot_lock_out_the_owner(review_env):
    """Issue 19: while a name was locked a correct password was refused too, so anyone could lock
    out a named reviewer."""
    cat = review_env["cat"]
    owner = TestClient(create_app(cat, secure_cookies=False))
    assert login(owner, "bob").status_code == 303  # bob's browser: now a known device
    owner.cookies.delete("fw_session")  # logged out; the device cookie stays
    attacker = TestClient(create_app(cat, secure_cookies=False), client=("198.51.100.7", 1))
    for _ in range(auth.ACCOUNT_FREE_FAILS):
        assert login(attacker, "bob", "guess-guess").status_code == 401
    r = login(attacker, "bob")  # even the right password, from an unknown device, waits
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= auth.BACKOFF_BASE - 1
    assert "users unlock bob" in r.text
    assert login(owner, "bob").status_code == 303  # the owner's known device gets in ...
    assert login(attacker, "bob").status_code == 303  # ... and that cleared the back-off
    assert [auth.account_backoff(n) for n in (4, 5, 6, 7, 30)] == [0, 30, 60, 120, auth.BACKOFF_CAP]


def test_an_admin_unlocks_an_account(review_env):
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    for _ in range(auth.ACCOUNT_FREE_FAILS):
        login(c, "ann", "wrong-wrong")
    assert login(c, "ann").status_code == 429
    r = _cli("users", "unlock", "ann")
    assert r.exit_code == 0 and "5 failed log-ins cleared" in r.stdout
    assert login(c, "ann").status_code == 303
    for _ in range(auth.ACCOUNT_FREE_FAILS):
        login(c, "bob", "wrong-wrong")
    root = TestClient(create_app(cat, secure_cookies=False))
    assert login(root, "root").status_code == 303
    t = csrf_of(root.get("/admin/users").text)
    assert root.post("/admin/users/bob", data={"csrf": t, "action": "unlock"}, follow_redirects=False).status_code == 303
    assert login(c, "bob").status_code == 303
    unlocks = cat.execute("SELECT actor, target FROM audit_log WHERE action = 'user.unlock' ORDER BY seq")
    assert [(u["actor"], u["target"]) for u in unlocks] == [("cli", "user:ann"), ("root", "user:bob")]
    assert _cli("users", "unlock", "nobody").exit_code != 0


def test_client_limits_use_forwarded_addresses_only_from_trusted_proxies(review_env):
    """Issue 19: behind the TLS proxy every user shared one address, so 30 failures locked all."""
    cat = review_env["cat"]
    proxy = TestClient(create_app(cat, secure_cookies=False, trusted_proxies=["10.0.0.1"]), client=("10.0.0.1", 1))
    for i in range(auth.MAX_FAILS_PER_CLIENT):
        r = login(proxy, f"nobody{i}", "wrong-wrong", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.9"})
        assert r.status_code == 401
    r = login(proxy, "ann", headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 429  # that client is limited ...
    assert login(proxy, "ann", headers={"X-Forwarded-For": "203.0.113.10"}).status_code == 303  # ... others are not
    clients = {json.loads(r["detail_json"])["client"] for r in cat.execute("SELECT detail_json FROM audit_log WHERE action LIKE 'login.%'")}
    assert clients == {"203.0.113.9", "203.0.113.10"}  # the right-most hop, not the client's claim
    # without trusted proxies the header is ignored: a client cannot pick a fresh address
    direct = TestClient(create_app(cat, secure_cookies=False), client=("192.0.2.5", 1))
    bobs = TestClient(create_app(cat, secure_cookies=False), client=("192.0.2.5", 2))  # same address, bob's browser
    assert login(bobs, "bob").status_code == 303
    for i in range(auth.MAX_FAILS_PER_CLIENT):
        login(direct, f"nobody{i}", "wrong-wrong", headers={"X-Forwarded-For": f"198.18.0.{i}"})
    assert login(direct, "bob", headers={"X-Forwarded-For": "198.18.1.1"}).status_code == 429
    assert login(bobs, "bob").status_code == 303  # a known device is not locked out by its neighbours
    with pytest.raises(ValueError, match="not an address"):
        create_app(cat, trusted_proxies=["proxy.example"])


def test_a_known_device_has_its_own_limit(review_env):
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    assert login(c, "ann").status_code == 303
    for _ in range(auth.MAX_FAILS_PER_DEVICE):
        assert login(c, "ann", "wrong-wrong").status_code == 401
    assert login(c, "ann").status_code == 429


def test_a_decided_item_count_is_unchanged_by_refused_requests(review_env):
    """Refusals change nothing: after the attacks above on a fresh catalog, the queue is intact."""
    cat = review_env["cat"]
    c = TestClient(create_app(cat, secure_cookies=False))
    ann = TestClient(create_app(cat, secure_cookies=False))
    assert login(ann, "ann", PASSWORDS["ann"]).status_code == 303
    t = csrf_of(ann.get("/queue").text)
    r = ann.post("/api/review/enqueue", json={"queue": "x", "items": []}, headers={"X-CSRF-Token": t})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    assert c.get("/api/review/items").status_code == 401
    assert q.stats(cat)["queues"]["pretrain"].get("approved", 0) == 0


def test_the_json_scan_counts_nesting_outside_strings_only():
    lim = guard.Limits(depth=2)
    guard.check_json(b'{"a": "x\\"[[[[[[[[[[[[[[[[[[[[{{{{", "b": [1]}', lim)  # brackets inside a string are text
    with pytest.raises(guard.TooLarge, match="nested deeper than 2"):
        guard.check_json(b'{"a": [[1]]}', lim)
    guard.check_json(b"[[[[not json", guard.Limits(depth=8))  # malformed: left for the route to answer
