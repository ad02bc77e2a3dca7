"""The queue pages: the list of queues, one queue's cards (keyset-paginated, filtered by signal
and track), a decision on one item, a bulk decision on a filter, and the cards' thumbnails."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from flywheel.catalog import ROW_ID_MAX
from flywheel.loop import queue as q
from flywheel.review import auth, thumbs
from flywheel.review.api import RowId, get_catalog
from flywheel.review.guard import FORM, THUMB, form_doc, page_guard
from flywheel.review.pages.cards import decorate
from flywheel.review.pages.common import csrf_form, form_row_id, here, page, safe_next, session_dep, uncache, with_note

MISSING_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="240" height="240" viewBox="0 0 240 240">'
               '<rect width="240" height="240" fill="#eaecf0"/><text x="120" y="125" font-family="sans-serif"'
               ' font-size="14" text-anchor="middle" fill="#667085">image not found</text></svg>')
COUNT_CAP = 1000  # a queue page says "1000+" rather than counting a million index entries

router = APIRouter()


@router.get("/queue", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def queue_index(request: Request, s: auth.Session = Depends(session_dep)):
    groups = q.groups(get_catalog(request))
    return page(request, "queue_index.html", {"groups": groups}, session=s)


@router.get("/queue/{queue}", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def queue_page(request: Request, queue: str, signal: str | None = None, track: str | None = None,
               after: RowId | None = None, limit: int = 20, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    limit = max(1, min(limit, 100))
    signal, track = signal or None, track or None
    rc = _OneConnection(catalog)
    try:
        if not rc.execute("SELECT 1 FROM review_items WHERE queue = ? LIMIT 1", (queue,)):
            raise HTTPException(404, f"there is no queue {queue!r}; the queue list shows the ones that exist")
        items = q.list_items(rc, queue=queue, signal_id=signal, track=track, after_id=after, limit=limit)
        count = q.count_items(rc, queue=queue, signal_id=signal, track=track, cap=COUNT_CAP)
        max_id = q.max_item_id(rc, queue=queue, signal_id=signal, track=track)
        items = decorate(rc, items)
    finally:
        rc.close()
    flt = {k: v for k, v in (("signal", signal), ("track", track)) if v}
    nxt = f"/queue/{queue}?" + urlencode({**flt, "after": items[-1]["item_id"], "limit": limit}) if len(items) == limit else None
    decided = None
    shown = request.query_params.get("item", "")
    if request.query_params.get("note") == "already" and shown.isdigit() and int(shown) <= ROW_ID_MAX:
        try:
            decided = q.get_item(catalog, int(shown))
        except q.ItemNotFound:
            pass
    return page(request, "queue.html", {
        "queue": queue, "items": items, "count": count, "capped": count >= COUNT_CAP,
        "max_id": max_id, "filter": flt, "next_url": nxt, "limit": limit, "decided": decided,
        "here": here(request),
    }, session=s)


@router.post("/items/{item_id}/decide", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("decision", "reason", "version", "next", "request_id"))
def decide(request: Request, item_id: RowId, form: dict = Depends(csrf_form)):
    s = form["session"]
    version = form_row_id(form, "version")
    back = safe_next(form.get("next"))
    wants_json = request.headers.get("x-requested-with") == "fetch"
    try:
        r = q.decide(get_catalog(request), item_id, form.get("decision", ""), s.user, form.get("reason") or None,
                     version, form.get("request_id") or None)
    except q.AlreadyDecided as e:
        body = {"ok": False, "detail": str(e), "decided_by": e.by, "decided_at": e.at, "decision": e.decision}
        if wants_json:
            return JSONResponse(body, status_code=409)
        return RedirectResponse(with_note(back, "already", item=item_id), 303)
    except q.ItemNotFound as e:
        raise HTTPException(404, str(e)) from None
    except q.ReviewError as e:
        if wants_json:
            return JSONResponse({"ok": False, "detail": str(e)}, status_code=409)
        raise HTTPException(409, str(e)) from None
    if wants_json:
        return {"ok": True, "item_id": item_id, "status": r["status"], "repeated": r["repeated"]}
    return RedirectResponse(with_note(back, "decided"), 303)


@router.post("/items/{item_id}/undo", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("next"))
def undo(request: Request, item_id: RowId, form: dict = Depends(csrf_form)):
    """Take back one's own decision within the undo window (audited as `review.undo`)."""
    s = form["session"]
    wants_json = request.headers.get("x-requested-with") == "fetch"
    try:
        r = q.undo(get_catalog(request), item_id, s.user)
    except q.ItemNotFound as e:
        raise HTTPException(404, str(e)) from None
    except q.ReviewError as e:
        if wants_json:
            return JSONResponse({"ok": False, "detail": str(e)}, status_code=409)
        raise HTTPException(409, str(e)) from None
    uncache(request)
    if wants_json:
        return {"ok": True, "item_id": item_id, "status": r["status"], "version": r["version"]}
    return RedirectResponse(with_note(safe_next(form.get("next")), "undone"), 303)


@router.post("/queue/{queue}/bulk", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("decision", "reason", "confirm", "max_id", "signal", "track"))
def bulk(request: Request, queue: str, form: dict = Depends(csrf_form)):
    s = form["session"]
    if form.get("confirm") != "yes":
        raise HTTPException(400, "tick the confirmation box to decide every item in this filter")
    max_id = form_row_id(form, "max_id")
    if max_id is None:
        raise HTTPException(400, "the bulk form lost its max_id; reload the page")
    r = q.bulk_decide_filter(get_catalog(request), form.get("decision", ""), s.user, form.get("reason") or None,
                             queue=queue, signal_id=form.get("signal") or None, track=form.get("track") or None,
                             max_id=max_id)
    uncache(request)
    flt = {k: form[k] for k in ("signal", "track") if form.get(k)}
    return RedirectResponse(with_note(f"/queue/{queue}?" + urlencode(flt), "bulk", applied=r["applied"],
                                      skipped=r["already_decided"]), 303)


@router.get("/thumb/{item_id}", dependencies=page_guard("review:read", THUMB))
def thumb(request: Request, item_id: RowId, w: int = 256, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    try:
        item = q.get_item(catalog, item_id)
    except q.ItemNotFound as e:
        raise HTTPException(404, str(e)) from None
    path = thumbs.thumbnail(item, w, catalog)
    if path is None:
        return Response(MISSING_SVG, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


class _OneConnection:
    """The catalog for one page: its reads share one short-lived connection (opening one costs
    about a millisecond); anything else goes to the catalog itself."""

    def __init__(self, catalog):
        self._cat, self._con = catalog, None

    def execute(self, sql: str, params=()) -> list:
        if self._con is None:
            self._con = self._cat.connect()
        return self._con.execute(sql, params).fetchall()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()

    def __getattr__(self, name):
        return getattr(self._cat, name)
