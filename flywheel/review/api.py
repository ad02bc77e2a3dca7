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
from flywheel.review.guard import READ, SESSION_COOKIE, WRITE, Limits, get_catalog, guard  # noqa: F401 (re-exported)

# An item id, a version or a keyset cursor as a client sends it: within the catalog's integer
# column, or a 422 before the catalog is asked.
RowId = Annotated[int, Field(ge=0, le=ROW_ID_MAX)]
MAX_BULK = 100_000
# A bulk decision or an enqueue carries up to MAX_BULK ids or items: its own, larger limits.
BULK = Limits(body=16 * 1024 * 1024, items=MAX_BULK, rate=120)
Text = Annotated[str, Field(max_length=200)]


@dataclass
class Actor:
    name: str
    role: str  # reviewer | admin | token
    via: str  # token | session


def api_actor(request: Request) -> Actor:
    """Who the route's guard let in (`flywheel.review.guard`): a token (`token:NAME`, role
    `token`) or a dashboard user."""
    p = request.state.principal
    if p.via == "token":
        return Actor(p.name, "token", "token")
    return Actor(p.name, p.role, "session")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(None, max_length=q.MAX_REASON)
    expected_version: RowId | None = None
    request_id: str | None = Field(None, max_length=100)


class Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_ids: list[RowId] = Field(..., min_length=1, max_length=MAX_BULK)
    decision: Literal["approved", "rejected"]
    reason: str | None = Field(None, max_length=q.MAX_REASON)


class EnqueueItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str = Field(..., min_length=1, max_length=200)
    signal_id: Text | None = None
    source: Text | None = Field(None, max_length=1000)
    dataset: Text | None = None
    track: Text | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class Enqueue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str = Field(..., min_length=1, max_length=100)
    items: list[EnqueueItem] = Field(..., max_length=MAX_BULK)


def _conflict(e: q.ReviewError) -> JSONResponse:
    body: dict[str, Any] = {"detail": str(e)}
    if isinstance(e, q.AlreadyDecided):
        body.update(decided_by=e.by, decided_at=e.at, decision=e.decision, item_id=e.item_id)
    return JSONResponse(body, status_code=409)


def review_api_router() -> APIRouter:
    r = APIRouter(prefix="/api/review", tags=["review"])

    @r.get("/items", dependencies=guard("review:read", READ))
    def list_items(request: Request, queue: str | None = None, signal_id: str | None = None, status: str = "pending",
                   track: str | None = None, after_id: RowId | None = None, limit: RowId = 50,
                   actor: Actor = Depends(api_actor)):
        if status not in (*q.STATUSES, "any"):
            raise HTTPException(422, f"status must be one of {', '.join(q.STATUSES)} or any")
        items = q.list_items(get_catalog(request), queue=queue, signal_id=signal_id, track=track,
                             status=None if status == "any" else status, after_id=after_id, limit=limit)
        return {"items": items, "next_after_id": items[-1]["item_id"] if len(items) == max(1, min(limit, 1000)) else None}

    @r.get("/items/{item_id}", dependencies=guard("review:read", READ))
    def get_item(request: Request, item_id: RowId, actor: Actor = Depends(api_actor)):
        try:
            return q.get_item(get_catalog(request), item_id)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None

    @r.post("/items/{item_id}/decision", dependencies=guard("review:write", WRITE))
    def decide(request: Request, item_id: RowId, body: Decision, actor: Actor = Depends(api_actor)):
        try:
            return q.decide(get_catalog(request), item_id, body.decision, actor.name, body.reason,
                            body.expected_version, body.request_id)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None
        except q.ReviewError as e:
            return _conflict(e)

    @r.post("/bulk", dependencies=guard("review:write", BULK))
    def bulk(request: Request, body: Bulk, actor: Actor = Depends(api_actor)):
        return q.bulk_decide(get_catalog(request), body.item_ids, body.decision, actor.name, body.reason)

    @r.get("/approved", dependencies=guard("review:read", READ))
    def approved(request: Request, queue: str | None = None, signal_id: str | None = None,
                 actor: Actor = Depends(api_actor)):
        return {"items": q.approved(get_catalog(request), queue=queue, signal_id=signal_id)}

    @r.get("/stats", dependencies=guard("review:read", READ))
    def stats(request: Request, actor: Actor = Depends(api_actor)):
        return q.stats(get_catalog(request))

    @r.post("/enqueue", dependencies=guard("admin", BULK))  # queueing is queue administration
    def enqueue(request: Request, body: Enqueue, actor: Actor = Depends(api_actor)):
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
