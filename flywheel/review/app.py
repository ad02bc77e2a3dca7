"""The review dashboard (issue 7): server-rendered pages over the review queue.

Security posture: server-side sessions in HttpOnly, SameSite=Strict cookies (Secure unless the
server is told it runs on plain-HTTP localhost); a per-session CSRF token in every form, checked
on every POST; Jinja2 autoescaping for everything a sample or a user wrote, and a Content
Security Policy without inline scripts, so an injected `<script>` or `onerror=` cannot run even
if it slipped past escaping. Each request opens short SQLite connections (WAL): the server never
holds the catalog against curation runs and flows writing it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from flywheel.review import auth, thumbs
from flywheel.review import queue as q
from flywheel.review.api import SESSION_COOKIE, review_api_router

HERE = Path(__file__).parent
LOGIN_CSRF_COOKIE = "fw_login_csrf"
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; object-src 'none';"
       " base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
MISSING_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="240" height="240" viewBox="0 0 240 240">'
               '<rect width="240" height="240" fill="#eaecf0"/><text x="120" y="125" font-family="sans-serif"'
               ' font-size="14" text-anchor="middle" fill="#667085">image not found</text></svg>')
COUNT_CAP = 1000  # a queue page says "1000+" rather than counting a million index entries
NOTES = {  # flash messages by code, so a link cannot put arbitrary text on the page
    "decided": "Decision saved.", "already": "Someone else decided that item first.", "bulk": "Bulk decision applied.",
    "user_added": "User added.", "user_updated": "User updated.", "batch_closed": "QA batch closed.",
    "checked": "Second opinion recorded.", "loggedout": "You are logged out.",
}


class LoginRequired(Exception):
    pass


class Forbidden(Exception):
    pass


def _templates() -> Jinja2Templates:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["ts"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else ""
    env.filters["pretty"] = _pretty
    env.globals["reasons"] = q.REASONS
    env.globals["reason_options"] = _reason_options()
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


_NEXT_RE = re.compile(r"^/(?![/\\])[A-Za-z0-9/_.~%?&=+\-]*$")


def _safe_next(nxt: str | None, default: str = "/queue") -> str:
    """Only same-site paths, so a crafted link cannot bounce a reviewer elsewhere (browsers drop
    tabs and newlines from URLs, so `/\t/evil.example` would become `//evil.example`: any
    character outside a plain path and query is refused)."""
    if not nxt or not _NEXT_RE.match(nxt):
        return default
    return nxt


def _here(request: Request) -> str:
    """This page's URL as sent (percent-encoding kept), for forms to come back to."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")


def _with_note(url: str, note: str, **extra) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({"note": note, **extra})


def create_app(catalog=None, secure_cookies: bool = True) -> FastAPI:
    """The dashboard app over `catalog` (default: the catalog under FLYWHEEL_HOME)."""
    if catalog is None:
        from flywheel.catalog import Catalog

        catalog = Catalog()
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # SQLite checkpoints the WAL and deletes it whenever the *last* connection to the catalog
        # closes: on a large catalog that made every short per-request connection cost ~50 ms.
        # One idle connection held for the server's life (never inside a transaction, so it
        # blocks no writer and no checkpoint) keeps per-request connections cheap.
        keeper = catalog.connect()
        keeper.execute("SELECT 1").fetchone()
        try:
            yield
        finally:
            keeper.close()

    app = FastAPI(title="flywheel review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review_catalog = catalog
    app.state.secure_cookies = secure_cookies
    tpl = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(review_api_router())

    @app.middleware("http")
    async def headers(request: Request, call_next):
        t0, c0 = time.perf_counter(), time.process_time()
        resp = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["X-Frame-Options"] = "DENY"
        if not request.url.path.startswith(("/static", "/thumb")):
            resp.headers["Cache-Control"] = "no-store"
        # app: wall time in the server; cpu: the process's CPU time meanwhile (equal to this
        # request's own work when requests come one at a time, as in benchmarks/review_load.py)
        resp.headers["Server-Timing"] = (f"app;dur={(time.perf_counter() - t0) * 1000:.1f},"
                                         f" cpu;dur={(time.process_time() - c0) * 1000:.1f}")
        return resp

    @app.exception_handler(LoginRequired)
    def _login(request: Request, exc):
        return RedirectResponse("/login?" + urlencode({"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}), 303)

    @app.exception_handler(HTTPException)
    def _http_error(request: Request, exc: HTTPException):
        """JSON for the API and for the page's own fetch calls; an HTML page for people."""
        if request.url.path.startswith("/api/") or request.headers.get("x-requested-with") == "fetch":
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        session = auth.get_session(catalog, request.cookies.get(SESSION_COOKIE))
        return page(request, "error.html", {"message": str(exc.detail), "title": "Request refused"},
                    status=exc.status_code, session=session)

    @app.exception_handler(Forbidden)
    def _forbidden(request: Request, exc):
        return page(request, "error.html", {"message": str(exc) or "You are not allowed to do that."}, status=403)

    def page(request: Request, name: str, ctx: dict, status: int = 200, session=None):
        ctx = {"session": session, "note": NOTES.get(request.query_params.get("note", "")), "path": request.url.path, **ctx}
        return tpl.TemplateResponse(request, name, ctx, status_code=status)

    # -- auth dependencies -----------------------------------------------------------------
    def session_dep(request: Request) -> auth.Session:
        s = auth.get_session(catalog, request.cookies.get(SESSION_COOKIE))
        if s is None:
            raise LoginRequired()
        return s

    def admin_dep(s: auth.Session = Depends(session_dep)) -> auth.Session:
        if not s.is_admin:
            raise Forbidden("This page is for admins. Ask an admin if you need access.")
        return s

    async def csrf_form(request: Request) -> dict:
        """The posted form, after checking its CSRF token against the session's."""
        s = auth.get_session(catalog, request.cookies.get(SESSION_COOKIE))
        if s is None:
            raise LoginRequired()
        form = await request.form()
        if not auth.csrf_ok(s, form.get("csrf")):
            raise HTTPException(403, "missing or wrong CSRF token; reload the page and submit again")
        return {"session": s, **{k: v for k, v in form.items() if isinstance(v, str)}}

    # -- login -----------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/queue", error: str | None = None):
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or uuid.uuid4().hex
        resp = page(request, "login.html", {"next": _safe_next(next), "error": error, "csrf": token})
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=app.state.secure_cookies, path="/login")
        return resp

    @app.post("/login")
    def login(request: Request, username: str = Form(""), password: str = Form(""), csrf: str = Form(""),
              next: str = Form("/queue")):
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not cookie or not csrf or cookie != csrf:  # double-submit: stops cross-site login forgery
            raise HTTPException(403, "missing or wrong CSRF token; reload the login page and try again")
        client = request.client.host if request.client else "unknown"
        try:
            user = auth.authenticate(catalog, username, password, client)
        except auth.RateLimited as e:
            resp = page(request, "login.html", {"next": _safe_next(next), "error": str(e), "csrf": csrf}, status=429)
            resp.headers["Retry-After"] = str(e.retry_after)
            return resp
        except auth.AuthError as e:
            return page(request, "login.html", {"next": _safe_next(next), "error": str(e), "csrf": csrf}, status=401)
        sid, _ = auth.create_session(catalog, user)
        resp = RedirectResponse(_safe_next(next), 303)
        resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=app.state.secure_cookies,
                        max_age=int(auth.SESSION_TTL), path="/")
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", httponly=True, samesite="strict")
        return resp

    @app.post("/logout")
    def logout(request: Request, form: dict = Depends(csrf_form)):
        auth.end_session(catalog, request.cookies.get(SESSION_COOKIE))
        resp = RedirectResponse("/login?note=loggedout", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    @app.get("/")
    def root():
        return RedirectResponse("/queue", 303)

    # -- queue pages -------------------------------------------------------------------------
    @app.get("/queue", response_class=HTMLResponse)
    def queue_index(request: Request, s: auth.Session = Depends(session_dep)):
        groups = q.groups(catalog)
        return page(request, "queue_index.html", {"groups": groups}, session=s)

    @app.get("/queue/{queue}", response_class=HTMLResponse)
    def queue_page(request: Request, queue: str, signal: str | None = None, track: str | None = None,
                   after: int | None = None, limit: int = 20, s: auth.Session = Depends(session_dep)):
        limit = max(1, min(limit, 100))
        signal, track = signal or None, track or None
        rc = _OneConnection(catalog)
        try:
            items = q.list_items(rc, queue=queue, signal_id=signal, track=track, after_id=after, limit=limit)
            count = q.count_items(rc, queue=queue, signal_id=signal, track=track, cap=COUNT_CAP)
            max_id = q.max_item_id(rc, queue=queue, signal_id=signal, track=track)
            items = _decorate(rc, items)
        finally:
            rc.close()
        flt = {k: v for k, v in (("signal", signal), ("track", track)) if v}
        nxt = f"/queue/{queue}?" + urlencode({**flt, "after": items[-1]["item_id"], "limit": limit}) if len(items) == limit else None
        decided = None
        if request.query_params.get("note") == "already" and request.query_params.get("item", "").isdigit():
            try:
                decided = q.get_item(catalog, int(request.query_params["item"]))
            except q.ItemNotFound:
                pass
        return page(request, "queue.html", {
            "queue": queue, "items": items, "count": count, "capped": count >= COUNT_CAP,
            "max_id": max_id, "filter": flt, "next_url": nxt, "limit": limit, "decided": decided,
            "here": _here(request),
        }, session=s)

    @app.post("/items/{item_id}/decide")
    def decide(request: Request, item_id: int, form: dict = Depends(csrf_form)):
        s = form["session"]
        version = form.get("version")
        back = _safe_next(form.get("next"))
        wants_json = request.headers.get("x-requested-with") == "fetch"
        try:
            r = q.decide(catalog, item_id, form.get("decision", ""), s.user, form.get("reason") or None,
                         int(version) if version and version.isdigit() else None, form.get("request_id") or None)
        except q.AlreadyDecided as e:
            body = {"ok": False, "detail": str(e), "decided_by": e.by, "decided_at": e.at, "decision": e.decision}
            if wants_json:
                return JSONResponse(body, status_code=409)
            return RedirectResponse(_with_note(back, "already", item=item_id), 303)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None
        except q.ReviewError as e:
            if wants_json:
                return JSONResponse({"ok": False, "detail": str(e)}, status_code=409)
            raise HTTPException(409, str(e)) from None
        if wants_json:
            return {"ok": True, "item_id": item_id, "status": r["status"], "repeated": r["repeated"]}
        return RedirectResponse(_with_note(back, "decided"), 303)

    @app.post("/queue/{queue}/bulk")
    def bulk(request: Request, queue: str, form: dict = Depends(csrf_form)):
        s = form["session"]
        if form.get("confirm") != "yes":
            raise HTTPException(400, "tick the confirmation box to decide every item in this filter")
        max_id = form.get("max_id", "")
        if not max_id.isdigit():
            raise HTTPException(400, "the bulk form lost its max_id; reload the page")
        r = q.bulk_decide_filter(catalog, form.get("decision", ""), s.user, form.get("reason") or None, queue=queue,
                                 signal_id=form.get("signal") or None, track=form.get("track") or None, max_id=int(max_id))
        _uncache(app)
        flt = {k: form[k] for k in ("signal", "track") if form.get(k)}
        return RedirectResponse(_with_note(f"/queue/{queue}?" + urlencode(flt), "bulk", applied=r["applied"],
                                           skipped=r["already_decided"]), 303)

    @app.get("/thumb/{item_id}")
    def thumb(item_id: int, w: int = 256, s: auth.Session = Depends(session_dep)):
        try:
            item = q.get_item(catalog, item_id)
        except q.ItemNotFound as e:
            raise HTTPException(404, str(e)) from None
        path = thumbs.thumbnail(item, w, catalog)
        if path is None:
            return Response(MISSING_SVG, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    # -- sampled QA and second opinions -------------------------------------------------------
    @app.get("/qa", response_class=HTMLResponse)
    def qa_index(request: Request, s: auth.Session = Depends(session_dep)):
        groups = q.groups(catalog)
        return page(request, "qa_index.html", {"batches": q.batches(catalog), "groups": groups}, session=s)

    @app.post("/qa")
    def qa_create(form: dict = Depends(csrf_form)):
        try:
            g = json.loads(form.get("group") or "{}")
            if not isinstance(g, dict):
                raise ValueError("pick a batch from the list")
            b = q.create_batch(catalog, form["session"].user, queue=g.get("queue") or form.get("queue") or None,
                               signal_id=g.get("signal") or form.get("signal") or None,
                               track=g.get("track") or form.get("track") or None,
                               sample_size=int(form.get("sample_size") or 20), max_error=float(form.get("max_error") or 0.1))
        except (q.ReviewError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        return RedirectResponse(f"/qa/{b['batch_id']}", 303)

    @app.get("/qa/{batch_id}", response_class=HTMLResponse)
    def qa_batch(request: Request, batch_id: str, s: auth.Session = Depends(session_dep)):
        try:
            b = q.batch_status(catalog, batch_id)
        except q.ReviewError as e:
            raise HTTPException(404, str(e)) from None
        items = [q.get_item(catalog, i) for i in b["sample"]]
        return page(request, "qa_batch.html", {"b": b, "items": _decorate(catalog, items), "here": request.url.path,
                                               "max_id": None}, session=s)

    @app.post("/qa/{batch_id}/close")
    def qa_close(batch_id: str, form: dict = Depends(csrf_form)):
        try:
            q.close_batch(catalog, batch_id, form.get("accept") == "yes", form["session"].user)
        except q.ReviewError as e:
            raise HTTPException(409, str(e)) from None
        _uncache(app)
        return RedirectResponse(f"/qa/{batch_id}?note=batch_closed", 303)

    @app.get("/check", response_class=HTMLResponse)
    def check_page(request: Request, queue: str | None = None, s: auth.Session = Depends(session_dep)):
        items = q.items_to_check(catalog, s.user, queue=queue or None, n=10)
        return page(request, "check.html", {"items": _decorate(catalog, items), "here": request.url.path}, session=s)

    @app.post("/items/{item_id}/check")
    def check(item_id: int, form: dict = Depends(csrf_form)):
        try:
            q.check(catalog, item_id, form["session"].user, form.get("decision", ""), form.get("reason") or None)
        except q.ReviewError as e:
            raise HTTPException(409, str(e)) from None
        return RedirectResponse("/check?note=checked", 303)

    # -- audit and statistics ----------------------------------------------------------------
    def _audit_rows(actor: str | None, action: str | None, before: int | None, limit: int) -> list[dict]:
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

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, actor: str | None = None, action: str | None = None, before: int | None = None,
                   s: auth.Session = Depends(session_dep)):
        rows = _audit_rows(actor or None, action or None, before, 100)
        flt = {k: v for k, v in (("actor", actor), ("action", action)) if v}
        nxt = "/audit?" + urlencode({**flt, "before": rows[-1]["seq"]}) if len(rows) == 100 else None
        return page(request, "audit.html", {"rows": rows, "filter": flt, "next_url": nxt,
                                            "csv_url": "/audit.csv?" + urlencode(flt)}, session=s)

    @app.get("/audit.csv")
    def audit_csv(actor: str | None = None, action: str | None = None, s: auth.Session = Depends(session_dep)):
        def rows():
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["seq", "at_utc", "actor", "action", "target", "detail"])
            before = None
            while True:
                chunk = _audit_rows(actor or None, action or None, before, 5000)
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

    @app.get("/stats", response_class=HTMLResponse)
    def stats_page(request: Request, s: auth.Session = Depends(session_dep)):
        return page(request, "stats.html", {"st": _cached(app, "stats", 5.0, lambda: q.stats(catalog))}, session=s)

    # -- admin -----------------------------------------------------------------------------
    @app.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, s: auth.Session = Depends(admin_dep)):
        return page(request, "admin_users.html", {"users": auth.list_users(catalog), "roles": auth.ROLES}, session=s)

    @app.post("/admin/users")
    def users_add(form: dict = Depends(csrf_form)):
        s = _require_admin(form)
        try:
            auth.add_user(catalog, form.get("name", ""), form.get("role", ""), form.get("password", ""), actor=s.user)
        except auth.AuthError as e:
            raise HTTPException(400, str(e)) from None
        return RedirectResponse("/admin/users?note=user_added", 303)

    @app.post("/admin/users/{name}")
    def users_update(name: str, form: dict = Depends(csrf_form)):
        s = _require_admin(form)
        action = form.get("action")
        try:
            if action in ("disable", "enable"):
                auth.set_user(catalog, name, s.user, disabled=action == "disable")
            elif action == "role":
                auth.set_user(catalog, name, s.user, role=form.get("role"))
            else:
                raise HTTPException(400, "action must be disable, enable or role")
        except auth.AuthError as e:
            raise HTTPException(400, str(e)) from None
        return RedirectResponse("/admin/users?note=user_updated", 303)

    @app.get("/admin/queues", response_class=HTMLResponse)
    def queues_page(request: Request, s: auth.Session = Depends(admin_dep)):
        st = q.stats(catalog)
        datasets = [f"{r['name']}@v{r['version']}" for r in catalog.datasets()]
        return page(request, "admin_queues.html", {"st": st, "datasets": datasets, "result": None, "error": None}, session=s)

    @app.post("/admin/emit", response_class=HTMLResponse)
    def emit(request: Request, form: dict = Depends(csrf_form)):
        s = _require_admin(form)
        result, error = None, None
        try:
            from flywheel.loop.emit import emit as emit_fn  # the loop's emission (issue 6); may not be installed
        except ImportError:
            emit_fn = None
            error = "Emission is not available in this install (flywheel.loop.emit.emit is missing); run `flywheel emit` once it is."
        if emit_fn is not None:
            try:
                import inspect

                accepts = inspect.signature(emit_fn).parameters
                extra = {k: v for k, v in (("catalog", catalog), ("actor", s.user)) if k in accepts}
                out = emit_fn(form.get("from_ref", ""), add_approved=True, name=form.get("name") or None, **extra)
                if isinstance(out, dict):
                    result = f"{out.get('dataset')} ({out.get('added', '?')} approved samples added, {out.get('rows', '?')} rows)"
                else:
                    result = str(getattr(out, "ref", None) or out)
                catalog.audit(s.user, "admin.emit", f"dataset:{result}", {"from": form.get("from_ref"), "name": form.get("name")})
            except Exception as e:  # shown to the admin, who can fix the input and retry
                error = f"Emission failed: {type(e).__name__}: {e}"
        st = q.stats(catalog)
        datasets = [f"{r['name']}@v{r['version']}" for r in catalog.datasets()]
        return page(request, "admin_queues.html", {"st": st, "datasets": datasets, "result": result, "error": error},
                    session=s, status=200 if error is None else 400)

    return app


def _require_admin(form: dict) -> auth.Session:
    s = form["session"]
    if not s.is_admin:
        raise Forbidden("Only admins can do that.")
    return s


def _csv_cell(v) -> str:
    """Neutralise spreadsheet formulas in exported text (CSV injection)."""
    v = "" if v is None else str(v)
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def _cached(app: FastAPI, key: str, ttl: float, fn):
    """Whole-catalog aggregates (GROUP BY over a million items) are recomputed at most every `ttl` s."""
    cache = app.state.__dict__.setdefault("_agg_cache", {})
    hit = cache.get(key)
    if hit and time.monotonic() - hit[0] < ttl:
        return hit[1]
    val = fn()
    cache[key] = (time.monotonic(), val)
    return val


def _uncache(app: FastAPI) -> None:
    app.state.__dict__.get("_agg_cache", {}).clear()


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


def _decorate(catalog, items: list[dict]) -> list[dict]:
    """Add the signal each item was retrieved for (its prompt from the catalog) and normalised
    captions, neighbours and scores for the card template."""
    sids = sorted({i["signal_id"] for i in items if i.get("signal_id")})
    signals = {}
    if sids:
        rows = catalog.execute(f"SELECT * FROM signals WHERE signal_id IN ({','.join('?' * len(sids))})", sids)
        signals = {r["signal_id"]: dict(r) for r in rows}
    out = []
    for it in items:
        p = it.get("payload") or {}
        caps = p.get("captions") if isinstance(p.get("captions"), dict) else {}
        captions = [(t, caps.get(t)) for t in ("general", "text", "knowledge", "structured")]
        if not any(c for _, c in captions) and (p.get("caption") or p.get("text")):
            captions[0] = ("general", p.get("caption") or p.get("text"))  # the router sends the row's text
        sig = dict(signals.get(it.get("signal_id")) or {})
        if isinstance(p.get("signal"), dict):
            sig = {**p["signal"], **sig}
        for key, alt in (("prompt", "prompt"), ("kind", "signal_kind"), ("concept", "concept")):
            if not sig.get(key) and p.get(alt):
                sig[key] = p[alt]
        neigh = p.get("neighbours") or p.get("neighbors") or []
        scores = dict(p["scores"]) if isinstance(p.get("scores"), dict) else {}
        if isinstance(p.get("score"), (int, float)):
            scores.setdefault("retrieval_similarity", p["score"])
        out.append({**it, "captions": captions, "signal": sig, "neighbours": neigh if isinstance(neigh, list) else [],
                    "scores": scores, "request_id": uuid.uuid4().hex})
    return out
