"""What every dashboard page shares: the catalog and templates from `request.app.state`, the
logged-in session, the CSRF check on posted forms, safe redirects and the aggregate cache.

The routers hold no state of their own, so one `create_app` per catalog can include them all."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from flywheel.catalog import ROW_ID_MAX
from flywheel.loop import queue as q
from flywheel.review import auth
from flywheel.review.api import SESSION_COOKIE, get_catalog

TEMPLATES = Path(__file__).parent.parent / "templates"
NOTES = {  # flash messages by code, so a link cannot put arbitrary text on the page
    "decided": "Decision saved.", "already": "Someone else decided that item first.", "bulk": "Bulk decision applied.",
    "user_added": "User added.", "user_updated": "User updated.", "batch_closed": "QA batch closed.",
    "checked": "Second opinion recorded.", "loggedout": "You are logged out.", "undone": "Decision undone.",
}


from flywheel.review.guard import Forbidden, LoginRequired  # noqa: E402,F401 (raised by the guards too)


def templates() -> Jinja2Templates:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["ts"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else ""
    env.filters["pretty"] = _pretty
    env.globals["reasons"] = q.REASONS
    env.globals["reason_options"] = _reason_options()
    env.globals["undo_seconds"] = q.undo_window
    env.filters["cut"] = cut
    env.filters["details"] = details
    return Jinja2Templates(env=env)


def _reason_options():
    """The reason <select> of every card, rendered once (twenty cards a page)."""
    from markupsafe import Markup, escape

    approve = "".join(f'<option value="{escape(r)}">{escape(r)}</option>' for r in q.REASONS["approved"])
    reject = "".join(f'<option value="{escape(r)}">{k} {escape(r)}</option>' for k, r in enumerate(q.REASONS["rejected"], 1))
    return Markup(f'<option value="">reason…</option><optgroup label="approve">{approve}</optgroup>'
                  f'<optgroup label="reject">{reject}</optgroup>')


def _pretty(v) -> str:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    return json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)


def cut(v, n: int = 120) -> str:
    """A value shortened for display: a 1 MB user name must not take over the page."""
    v = "" if v is None else str(v)
    return v if len(v) <= n else v[:n] + f"… ({len(v):,} characters)"


def details(v, n: int = 160) -> list[tuple[str, str]]:
    """An audit row's detail JSON as (key, value) pairs, nested values flattened to one line
    and every value cut, for a readable detail column."""
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return [("", cut(v, n))]
    if not isinstance(v, dict):
        return [("", cut(v, n))]
    out = []
    for k, x in list(v.items())[:30]:
        if x is None or x == "" or x == [] or x == {}:
            continue
        if k.endswith("_at") and isinstance(x, (int, float)) and not isinstance(x, bool):
            x = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(x))  # a time, not a number
        text = json.dumps(x, ensure_ascii=False) if isinstance(x, (dict, list)) else str(x)
        out.append((cut(k, 40), cut(text, n)))
    if len(v) > 30:
        out.append(("…", f"{len(v) - 30} more keys"))
    return out


def page(request: Request, name: str, ctx: dict, status: int = 200, session=None):
    ctx = {"session": session, "note": NOTES.get(request.query_params.get("note", "")), "path": request.url.path, **ctx}
    return request.app.state.review_templates.TemplateResponse(request, name, ctx, status_code=status)


# -- auth dependencies ---------------------------------------------------------------------
def session_dep(request: Request) -> auth.Session:
    s = getattr(request.state, "session", None)  # the route's guard looked it up already
    s = s or auth.get_session(get_catalog(request), request.cookies.get(SESSION_COOKIE))
    if s is None:
        raise LoginRequired()
    return s


def admin_dep(s: auth.Session = Depends(session_dep)) -> auth.Session:
    if not s.is_admin:
        raise Forbidden("This page is for admins. Ask an admin if you need access.")
    return s


async def csrf_form(request: Request) -> dict:
    """The posted form, after checking its CSRF token against the session's."""
    s = getattr(request.state, "session", None) or auth.get_session(get_catalog(request), request.cookies.get(SESSION_COOKIE))
    if s is None:
        raise LoginRequired()
    form = await request.form()
    if not auth.csrf_ok(s, form.get("csrf")):
        raise HTTPException(403, "missing or wrong CSRF token; reload the page and submit again")
    return {"session": s, **{k: v for k, v in form.items() if isinstance(v, str)}}


def form_row_id(form: dict, key: str) -> int | None:
    """A posted id or version: None when absent or empty, else digits within the catalog's
    integer column, or a 400 (a larger number cannot even be bound to a SQLite query)."""
    value = (form.get(key) or "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > ROW_ID_MAX:
        raise HTTPException(400, f"{key} must be a whole number from 0 to {ROW_ID_MAX}; reload the page")
    return int(value)


def require_admin(form: dict) -> auth.Session:
    s = form["session"]
    if not s.is_admin:
        raise Forbidden("Only admins can do that.")
    return s


# -- links -----------------------------------------------------------------------------------
_NEXT_RE = re.compile(r"^/(?![/\\])[A-Za-z0-9/_.~%?&=+\-]*$")


def safe_next(nxt: str | None, default: str = "/queue") -> str:
    """Only same-site paths, so a crafted link cannot bounce a reviewer elsewhere (browsers drop
    tabs and newlines from URLs, so `/\t/evil.example` would become `//evil.example`: any
    character outside a plain path and query is refused)."""
    if not nxt or not _NEXT_RE.match(nxt):
        return default
    return nxt


def here(request: Request) -> str:
    """This page's URL as sent (percent-encoding kept), for forms to come back to."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")


def with_note(url: str, note: str, **extra) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"note": note, **extra})


# -- aggregate cache -------------------------------------------------------------------------
def cached(request: Request, key: str, ttl: float, fn):
    """Whole-catalog aggregates (GROUP BY over a million items) are recomputed at most every `ttl` s."""
    cache = request.app.state.__dict__.setdefault("_agg_cache", {})
    hit = cache.get(key)
    if hit and time.monotonic() - hit[0] < ttl:
        return hit[1]
    val = fn()
    cache[key] = (time.monotonic(), val)
    return val


def uncache(request: Request) -> None:
    """After a decision the statistics page shows it at once, not after the cache expires."""
    request.app.state.__dict__.get("_agg_cache", {}).clear()
