"""The audit log (admins only), newest first, filtered by actor and action prefix; as a page of 100 rows and as
a CSV export streamed in chunks, so a long log never sits in memory."""

from __future__ import annotations

import csv
import io
import time
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from flywheel.review import auth
from flywheel.review.api import RowId, get_catalog
from flywheel.review.guard import page_guard
from flywheel.review.pages.common import admin_dep, page

router = APIRouter()


def _audit_rows(catalog, actor: str | None, action: str | None, before: int | None, limit: int) -> list[dict]:
    sql, args = "SELECT * FROM audit_log WHERE 1=1", []
    if actor:
        sql += " AND actor = ?"
        args.append(actor)
    if action:
        sql += " AND action LIKE ?"
        args.append(action.replace("%", "") + "%")
    if before is not None:
        sql += " AND seq < ?"
        args.append(before)
    return [dict(r) for r in catalog.execute(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit))]


@router.get("/audit", response_class=HTMLResponse, dependencies=page_guard("admin"))
def audit_page(request: Request, actor: str | None = None, action: str | None = None, before: RowId | None = None,
               s: auth.Session = Depends(admin_dep)):
    rows = _audit_rows(get_catalog(request), actor or None, action or None, before, 100)
    flt = {k: v for k, v in (("actor", actor), ("action", action)) if v}
    nxt = "/audit?" + urlencode({**flt, "before": rows[-1]["seq"]}) if len(rows) == 100 else None
    return page(request, "audit.html", {"rows": rows, "filter": flt, "next_url": nxt,
                                        "csv_url": "/audit.csv?" + urlencode(flt)}, session=s)


@router.get("/audit.csv", dependencies=page_guard("admin"))
def audit_csv(request: Request, actor: str | None = None, action: str | None = None,
              s: auth.Session = Depends(admin_dep)):
    catalog = get_catalog(request)

    def rows():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["seq", "at_utc", "actor", "action", "target", "detail"])
        before = None
        while True:
            chunk = _audit_rows(catalog, actor or None, action or None, before, 5000)
            for r in chunk:
                w.writerow([r["seq"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["at"])),
                            *(_csv_cell(r[k]) for k in ("actor", "action", "target", "detail_json"))])
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if len(chunk) < 5000:
                return
            before = chunk[-1]["seq"]

    return StreamingResponse(rows(), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="audit_log.csv"'})


def _csv_cell(v) -> str:
    """Neutralise spreadsheet formulas in exported text (CSV injection)."""
    v = "" if v is None else str(v)
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
