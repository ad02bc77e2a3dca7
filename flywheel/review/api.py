"""The review queue's JSON API under `/api/review`: list, read, decide, bulk
decide, approved items, statistics and enqueue. Authenticated by an API token
(`Authorization: Bearer fwt_...`) or by a dashboard session, whose state-changing requests must
carry the session's CSRF token in `X-CSRF-Token`. `review_api_router()` can be mounted in any
FastAPI app; the catalog is `app.state.review_catalog` (created on first use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from flywheel.catalog import ROW_ID_MAX
from flywheel.loop import queue as q
from flywheel.review import auth

SESSION_COOKIE = "fw_session"
# An item id, a version or a keyset cursor as a client sends it: within the catalog's integer
# column, or a 422 before the catalog is asked.
RowId = Annotated[int, Field(ge=0, le=ROW_ID_MAX)]


def get_catalog(request: Request):
    cat = getattr(request.app.state, "review_catalog", None)
    if cat is None:
        from flywheel.catalog import Catalog

        cat = request.app.state.review_catalog = Catalog()
    return cat


@dataclass
class Actor:
    name: str
    role: str  # reviewer | admin | token
    via: str  # token | session


def api_actor(request: Request) -> Actor:
    cat = get_catalog(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        name = auth.verify_token(cat, header[7:].strip())
        if name is None:
            raise HTTPException(401, "invalid or revoked API token; create one with `flywheel tokens create --name NAME`",
                                headers={"WWW-Authenticate": "Bearer"})
        return Actor(f"token:{name}", "token", "token")
    session = auth.get_session(cat, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise HTTPException(401, "authentication required: send `Authorization: Bearer <token>` or log in to the dashboard",
                            headers={"WWW-Authenticate": "Bearer"})
    if request.method not in ("GET", "HEAD", "OPTIONS") and not auth.csrf_ok(session, request.headers.get("x-csrf-token")):
        raise HTTPException(403, "missing or wrong X-CSRF-Token header; read it from the page's <meta name=csrf-token>")
    return Actor(session.user, session.role, "session")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(None, max_length=q.MAX_REASON)
    expected_version: RowId | None = None
    request_id: str | None = Field(None, max_length=100)


class Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[RowId] = Field(..., min_length=1, max_length=100_000)
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(None, max_length=q.MAX_REASON)


class EnqueueItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str = Field(..., min_length=1, max_length=200)
    signal_id: str | None = None
    source: str | None = None
    dataset: str | None = None
    track: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class Enqueue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str = Field(..., min_length=1, max_length=100)
    items: list[EnqueueItem] = Field(..., max_length=100_000)


def _conflict(e: q.ReviewError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(e)}
    if isinstance(e, q.AlreadyDecided):
        body.update(decided_by=e.by, decided_at=e.at, decision=e.decision, item_id=e.item_id)
    return JSONResponse(body, status_code=409)


def review_api_router() -> APIRouter:
    r = APIRouter(prefix="/api/review", tags=["review"])

    @r.get("/items")
    def list_items(request: Request, queue: str | None = None, signal_id: str | None = None, status: str = "pending",
                   track: str | None = None, after_id: RowId | None = None, limit: int = 50,
                   actor: Actor = Depends(api_actor)):
        if status not in (*q.STATUSES, "any"):
            raise HTTPException(422, f"status must be one of {', '.join(q.STATUSES)} or any")
        items = q.list_items(get_catalog(request), queue=queue, signal_id=signal_id, track=track,
                             status=None if status == "any" else status, after_id=after_id, limit=limit)
        return {"items": items, "next_after_id": items[-1]["item_id"] if len(items) == max(1, min(limit, 1000)) else None}

    @r.get("/items/{item_id}")
    def get_item(request: Request, item_id: RowId, actor: Actor = Depends(api_actor)):
        try:
            return q.get_item(get_catalog(request), item_id)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None

    @r.post("/items/{item_id}/decision")
    def decide(request: Request, item_id: RowId, body: Decision, actor: Actor = Depends(api_actor)):
        try:
            return q.decide(get_catalog(request), item_id, body.decision, actor.name, body.reason,
                            body.expected_version, body.request_id)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None
        except q.ReviewError as e:
            return _conflict(e)

    @r.post("/bulk")
    def bulk(request: Request, body: Bulk, actor: Actor = Depends(api_actor)):
        return q.bulk_decide(get_catalog(request), body.item_ids, body.decision, actor.name, body.reason)

    @r.get("/approved")
    def approved(request: Request, queue: str | None = None, signal_id: str | None = None,
                 actor: Actor = Depends(api_actor)):
        return {"items": q.approved(get_catalog(request), queue=queue, signal_id=signal_id)}

    @r.get("/stats")
    def stats(request: Request, actor: Actor = Depends(api_actor)):
        return q.stats(get_catalog(request))

    @r.post("/enqueue")
    def enqueue(request: Request, body: Enqueue, actor: Actor = Depends(api_actor)):
        if actor.role not in ("token", "admin"):
            raise HTTPException(403, "only API tokens and admins may queue items")
        cat = get_catalog(request)
        items = [i.model_dump() for i in body.items]
        try:  # items reference samples the catalog knows, never paths (issue 19: thumbnail poisoning)
            for it, facts in zip(items, q.resolve_samples(cat, items)):
                it["sample"] = facts
        except q.SampleNotFound as e:
            return JSONResponse({"detail": str(e), "problems": e.problems[:100]}, status_code=422)
        ids = q.enqueue(cat, body.queue, items, actor=actor.name)
        return {"item_ids": ids}

    return r
