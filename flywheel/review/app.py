"""The review dashboard: server-rendered pages over the review queue.

Security posture: server-side sessions in HttpOnly, SameSite=Strict cookies (Secure unless the
server is told it runs on plain-HTTP localhost); a per-session CSRF token in every form, checked
on every POST; Jinja2 autoescaping for everything a sample or a user wrote, and a Content
Security Policy without inline scripts, so an injected `<script>` or `onerror=` cannot run even
if it slipped past escaping. Each request opens short SQLite connections (WAL): the server never
holds the catalog against curation runs and flows writing it.

The pages live in `flywheel.review.pages`, one router per page group; this module assembles them
with the security headers and the error pages.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from flywheel.review import auth
from flywheel.review.api import SESSION_COOKIE, get_catalog, review_api_router
from flywheel.review.guard import PUBLIC, STATIC, LimitsMiddleware, apply_overrides, mount, parse_proxies
from flywheel.review.pages import admin, audit, check, login, qa, queue, stats
from flywheel.review.pages.common import Forbidden, LoginRequired, page, templates

HERE = Path(__file__).parent
CSP = ("default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; object-src 'none';"
       " base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Included in this order, which is also the order routes are matched in.
PAGE_ROUTERS = (login.router, queue.router, qa.router, check.router, audit.router, stats.router, admin.router)


def check_audit_log(catalog) -> None:
    """Refuse to serve an altered audit log: reviewers' decisions would be recorded in a log that
    can no longer be trusted. Missing triggers are not recreated here; the seal does that, on the
    record."""
    from flywheel.audit import VERIFY_HINT, AuditTampered

    rep = catalog.audit_verify()
    if not rep.ok:
        raise AuditTampered(f"refusing to serve: the audit log of {catalog.where} fails verification ("
                            + "; ".join(rep.problems()) + f"); {VERIFY_HINT}")


def create_app(catalog=None, secure_cookies: bool = True, trusted_proxies=None) -> FastAPI:
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
        check_audit_log(catalog)
        catalog.audit_save_head()
        try:
            yield
        finally:
            catalog.audit_save_head()
            keeper.close()

    app = FastAPI(title="flywheel review", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.review_catalog = catalog
    app.state.secure_cookies = secure_cookies
    app.state.review_templates = templates()
    app.state.trusted_proxies = parse_proxies(trusted_proxies)
    mount(app, "/static", StaticFiles(directory=HERE / "static"), "static", PUBLIC, STATIC)
    app.include_router(review_api_router())
    for router in PAGE_ROUTERS:
        app.include_router(router)
    apply_overrides(app)
    app.add_middleware(LimitsMiddleware, fastapi_app=app)

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
        session = auth.get_session(get_catalog(request), request.cookies.get(SESSION_COOKIE))
        resp = page(request, "error.html", {"message": str(exc.detail), "title": "Request refused"},
                    status=exc.status_code, session=session)
        for k, v in (exc.headers or {}).items():  # Retry-After on a 429 page, as on the API
            resp.headers[k] = v
        return resp

    @app.exception_handler(Forbidden)
    def _forbidden(request: Request, exc):
        return page(request, "error.html", {"message": str(exc) or "You are not allowed to do that."}, status=403)

    return app
