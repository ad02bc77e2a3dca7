"""Second opinions: a reviewer re-decides items someone else decided recently, which feeds the
agreement figures on the statistics page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.api import RowId, get_catalog
from flywheel.review.guard import FORM, form_doc, page_guard
from flywheel.review.pages.cards import decorate
from flywheel.review.pages.common import csrf_form, page, session_dep

router = APIRouter()


@router.get("/check", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def check_page(request: Request, queue: str | None = None, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    items = q.items_to_check(catalog, s.user, queue=queue or None, n=10)
    return page(request, "check.html", {"items": decorate(catalog, items), "here": request.url.path}, session=s)


@router.post("/items/{item_id}/check", dependencies=page_guard("review:write", FORM), openapi_extra=form_doc("decision", "reason"))
def check(request: Request, item_id: RowId, form: dict = Depends(csrf_form)):
    try:
        q.check(get_catalog(request), item_id, form["session"].user, form.get("decision", ""), form.get("reason") or None)
    except q.ReviewError as e:
        raise HTTPException(409, str(e)) from None
    return RedirectResponse("/check?note=checked", 303)
