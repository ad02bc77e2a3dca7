"""Review statistics: throughput, decisions per reviewer and agreement with second opinions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.api import get_catalog
from flywheel.review.guard import page_guard
from flywheel.review.pages.common import cached, page, session_dep

router = APIRouter()


@router.get("/stats", response_class=HTMLResponse, dependencies=page_guard("review:read"))
def stats_page(request: Request, s: auth.Session = Depends(session_dep)):
    catalog = get_catalog(request)
    return page(request, "stats.html", {"st": cached(request, "stats", 5.0, lambda: q.stats(catalog))}, session=s)
