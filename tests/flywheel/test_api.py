"""The signal API over real HTTP semantics (FastAPI TestClient): tokens, validation, idempotency,
and the review API mounted beside it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flywheel.catalog import Catalog
from flywheel.loop import queue as rq
from flywheel.review import auth


@pytest.fixture()
def client():
    from flywheel.review.signals_api import create_app

    cat = Catalog()
    tok = auth.create_token(cat, "eval-bot")
    with TestClient(create_app(cat)) as c:
        c.cat, c.tok = cat, tok
        yield c


def h(tok):
    return {"Authorization": f"Bearer {tok}"}


SIG = {"kind": "eval", "id": "ev-1", "prompt": "a red star", "results": {"color": True, "shape": False}, "concept": "red star"}


def test_tokens_are_stored_hashed(client):
    rows = client.cat.execute("SELECT token_id, name, hash FROM tokens")
    assert len(rows) == 1 and rows[0]["name"] == "eval-bot"
    assert client.tok.split(".", 1)[1] not in rows[0]["hash"] and rows[0]["hash"] not in client.tok


def test_missing_and_wrong_tokens_are_refused(client):
    r = client.post("/api/signals", json=SIG)
    assert r.status_code == 401 and "flywheel tokens create" in r.json()["detail"]
    r = client.post("/api/signals", json=SIG, headers=h(client.tok[:-2] + "xx"))
    assert r.status_code == 401 and "invalid" in r.json()["detail"]
    r = client.post("/api/signals", json=SIG, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    with client.cat.tx() as con:
        con.execute("UPDATE tokens SET revoked = 1")
    assert client.post("/api/signals", json=SIG, headers=h(client.tok)).status_code == 401
    assert client.cat.execute("SELECT COUNT(*) AS n FROM signals")[0]["n"] == 0
    assert client.get("/api/health").status_code == 200


def test_a_repeated_id_with_other_content_is_a_conflict(client):
    assert client.post("/api/signals", json=SIG, headers=h(client.tok)).status_code == 201
    changed = {**SIG, "results": {"color": False, "shape": False}}
    r = client.post("/api/signals", json={"signals": [{**SIG, "id": "ev-3"}, changed]}, headers=h(client.tok))
    assert r.status_code == 409 and r.json()["conflict"] == ["ev-1"]
    assert "ev-1" in r.json()["detail"] and "different content" in r.json()["detail"]
    # nothing of the request is stored, and the first content stands
    assert client.cat.execute("SELECT COUNT(*) AS n FROM signals")[0]["n"] == 1
    got = client.get("/api/signals/ev-1", headers=h(client.tok)).json()
    assert got["payload"]["results"] == {"color": True, "shape": False}
    # the same content again is still an idempotent duplicate
    r = client.post("/api/signals", json=SIG, headers=h(client.tok))
    assert r.status_code == 200 and r.json()["duplicate"] == ["ev-1"]


def test_malformed_signals_get_clear_errors(client):
    r = client.post("/api/signals", json={"kind": "feedback", "prompt": "a cat", "rating": 11}, headers=h(client.tok))
    assert r.status_code == 422 and "rating" in r.json()["detail"] and "less than or equal to 5" in r.json()["detail"]
    r = client.post("/api/signals", content=b"{not json", headers={**h(client.tok), "content-type": "application/json"})
    assert r.status_code == 422 and "not JSON" in r.json()["detail"]
    r = client.post("/api/signals", json={"signals": [SIG, {"kind": "eval", "prompt": "x"}]}, headers=h(client.tok))
    assert r.status_code == 422 and "signals[1]" in r.json()["detail"] and "results" in r.json()["detail"]
    # a batch with one bad signal stores none of them
    assert client.cat.execute("SELECT COUNT(*) AS n FROM signals")[0]["n"] == 0


def test_repeated_signal_id_is_stored_once(client):
    r1 = client.post("/api/signals", json=SIG, headers=h(client.tok))
    assert r1.status_code == 201 and r1.json()["inserted"] == ["ev-1"]
    r2 = client.post("/api/signals", json=SIG, headers=h(client.tok))
    assert r2.status_code == 200 and r2.json()["duplicate"] == ["ev-1"]
    r3 = client.post("/api/signals", json={"signals": [SIG, {**SIG, "id": "ev-2"}]}, headers=h(client.tok))
    assert r3.json() == {"inserted": ["ev-2"], "duplicate": ["ev-1"]}
    assert client.cat.execute("SELECT COUNT(*) AS n FROM signals")[0]["n"] == 2
    got = client.get("/api/signals/ev-1", headers=h(client.tok)).json()
    assert got["source"] == "api:eval-bot" and got["payload"]["results"] == {"color": True, "shape": False}
    assert client.get("/api/signals/nope", headers=h(client.tok)).status_code == 404
    assert client.get("/api/routes/ev-1", headers=h(client.tok)).status_code == 404


def test_review_api_is_mounted_and_decides_over_http(client):
    ids = rq.enqueue(client.cat, "pretrain", [{"signal_id": "ev-1", "sample_id": "abc", "source": "s", "dataset": "pool@v1"}])
    # the signal-ingest token may not review (issue 19: one approved items through /api/review)
    r = client.get("/api/review/items", params={"queue": "pretrain"}, headers=h(client.tok))
    assert r.status_code == 403 and "review:read" in r.json()["detail"]
    auth.add_user(client.cat, "rita", "reviewer", "rita-password-1")
    tok = auth.create_token(client.cat, "rita-bot", user="rita", scopes=["review:read", "review:write"])
    r = client.get("/api/review/items", params={"queue": "pretrain"}, headers=h(tok))
    assert r.status_code == 200 and [i["item_id"] for i in r.json()["items"]] == ids
    r = client.post(f"/api/review/items/{ids[0]}/decision", json={"decision": "approved", "reason": "relevant"}, headers=h(tok))
    assert r.status_code == 200 and r.json()["status"] == "approved"
    assert rq.approved(client.cat)[0]["decided_by"] == "token:rita-bot"
    assert client.get("/api/review/items", headers={}).status_code == 401


def test_swagger_ui_is_off_by_default_and_the_schema_is_local():
    from flywheel.review.signals_api import create_app

    with TestClient(create_app(Catalog())) as c:
        assert c.get("/api/docs").status_code == 404 and c.get("/redoc").status_code == 404
        assert c.get("/api/openapi.json").json()["info"]["title"] == "flywheel signal API"
    with TestClient(create_app(Catalog(), docs=True)) as c:
        assert "swagger" in c.get("/api/docs").text.lower()
