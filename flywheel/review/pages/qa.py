"""Sampled QA: a batch draws a random sample of decided items, a second reviewer marks each, and
the batch is accepted when the sample's error rate allows it (`queue.batch_status`)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.api import get_catalog
from flywheel.review.guard import FORM, form_doc, page_guard
from flywheel.review.pages.cards import decorate
from flywheel.review.pages.common import csrf_form, page, session_dep, uncache

router = APIRouter()


@router.get("/qa", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def qa_index(request: Request, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    groups = q.groups(catalog)
    return page(request, "qa_index.html", {"batches": q.batches(catalog), "groups": groups}, session=s)


@router.post("/qa", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("group", "queue", "signal", "track", "sample_size", "max_error"))
def qa_create(request: Request, form: dict = Depends(csrf_form)):
    try:
        g = json.loads(form.get("group") or "{}")
        if not isinstance(g, dict):
            raise ValueError("pick a batch from the list")
        b = q.create_batch(get_catalog(request), form["session"].user, queue=g.get("queue") or form.get("queue") or None,
                           signal_id=g.get("signal") or form.get("signal") or None,
                           track=g.get("track") or form.get("track") or None,
                           sample_size=int(form.get("sample_size") or 20), max_error=float(form.get("max_error") or 0.1))
    except (q.ReviewError, ValueError) as e:
        raise HTTPException(400, str(e)) from None
    return RedirectResponse(f"/qa/{b['batch_id']}", 303)


@router.get("/qa/{batch_id}", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def qa_batch(request: Request, batch_id: str, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    try:
        b = q.batch_status(catalog, batch_id)
    except q.ReviewError as e:
        raise HTTPException(404, str(e)) from None
    items = [q.get_item(catalog, i) for i in b["sample"]]
    return page(request, "qa_batch.html", {"b": b, "items": decorate(catalog, items), "here": request.url.path,
                                           "max_id": None}, session=s)


@router.post("/qa/{batch_id}/close", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("accept"))
def qa_close(request: Request, batch_id: str, form: dict = Depends(csrf_form)):
    try:
        q.close_batch(get_catalog(request), batch_id, form.get("accept") == "yes", form["session"].user)
    except q.ReviewError as e:
        raise HTTPException(409, str(e)) from None
    uncache(request)
    return RedirectResponse(f"/qa/{batch_id}?note=batch_closed", 303)
