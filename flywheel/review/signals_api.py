"""`flywheel api serve`: the signal API, with the review queue API mounted beside it.

- `POST /api/signals` takes one signal or `{"signals": [...]}` (pydantic-validated, the same
  models as `flywheel signal add`); the client's `id` makes it idempotent: an id sent again with
  the same content is answered `duplicate` and stored once; with other content it is a 409
  conflict and nothing of the request is stored.
- `GET /api/signals/{id}` reads one back; `GET /api/routes/{signal_id}` its routing decisions and
  evidence; `GET /api/health` needs no token.
- `/api/review/...` is the review queue's API (`flywheel.review.api`), so a scripted reviewer uses
  the same HTTP calls as the dashboard.

Every call but health needs `Authorization: Bearer <token>`; tokens come from
`flywheel tokens create --name NAME` and only their hash is stored (`flywheel.review.auth`).
Errors say what went wrong and what to do next.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

MAX_BATCH = 10_000
# The body is parsed by hand (one signal or a batch, each validated on its own, errors per index);
# this describes it for clients and for the schema fuzzing in tests/review/test_schemathesis.py.
_ONE = {"type": "object", "required": ["kind"], "properties": {
    "kind": {"enum": ["eval", "bad_case", "feedback"]}, "id": {"type": "string"}, "prompt": {"type": "string"},
    "concept": {"type": "string"}, "source": {"type": "string"}, "rating": {"type": "integer"}, "text": {"type": "string"},
    "results": {"type": "object", "additionalProperties": {"type": "boolean"}}, "origin": {"type": "string"},
    "image_b64": {"type": "string"}, "image_uri": {"type": "string"}}}
SIGNALS_BODY = {"required": True, "content": {"application/json": {"schema": {"anyOf": [
    _ONE, {"type": "object", "required": ["signals"], "properties": {"signals": {"type": "array", "items": _ONE}}}]}}}}


def create_app(cat=None, docs: bool = False, trusted_proxies=None) -> FastAPI:
    """`docs` serves Swagger UI at /api/docs. It is off by default: FastAPI's page has the browser
    load its script and styles from a CDN, which an offline or locked-down deployment must not
    depend on (and a third party's script would run next to the API). /api/openapi.json, served
    from here, describes the same API."""
    from flywheel.catalog import Catalog
    from flywheel.review.guard import PUBLIC, READ, Limits, LimitsMiddleware, apply_overrides, guard, parse_proxies, principal

    app = FastAPI(title="flywheel signal API", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review_catalog = cat or Catalog()
    from flywheel.loop.signals import MAX_IMAGE_B64

    # One request carries at most one inline feedback image (its base64 limit) plus text.
    SIGNALS = Limits(body=MAX_IMAGE_B64 + 4 * 1024 * 1024, items=MAX_BATCH, keys=200, string=MAX_IMAGE_B64, rate=120)

    def catalog() -> Any:
        return app.state.review_catalog

    def token_name(request: Request) -> str:
        return principal(request).name.removeprefix("token:")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "malformed request: " + "; ".join(errs[:20]), "errors": errs[:100]}, status_code=422)

    # FastAPI's own schema and docs routes would carry no guard: these are the same, declared.
    @app.get("/api/openapi.json", include_in_schema=False, dependencies=guard(PUBLIC, READ))
    def openapi_schema():
        return JSONResponse(app.openapi())

    if docs:
        from fastapi.openapi.docs import get_swagger_ui_html

        @app.get("/api/docs", include_in_schema=False, dependencies=guard(PUBLIC, READ))
        def swagger():
            return get_swagger_ui_html(openapi_url="/api/openapi.json", title=app.title)

    @app.get("/api/health", dependencies=guard(PUBLIC, READ))
    def health():
        return {"ok": True}

    @app.post("/api/signals", dependencies=guard("signals:write", SIGNALS), openapi_extra={"requestBody": SIGNALS_BODY})
    async def post_signals(request: Request, who: str = Depends(token_name)):
        from flywheel.loop import signals as sg

        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPException(422, "malformed request: the body is not JSON; send one signal object or {\"signals\": [...]}") from None
        raw = body.get("signals") if isinstance(body, dict) and "signals" in body and "kind" not in body else [body]
        if not isinstance(raw, list) or not raw:
            raise HTTPException(422, "malformed request: send one signal object or {\"signals\": [...]} with at least one")
        if len(raw) > MAX_BATCH:
            raise HTTPException(413, f"{len(raw)} signals in one request; send at most {MAX_BATCH} per request")
        parsed, errors = [], []
        for i, obj in enumerate(raw):
            if not isinstance(obj, dict):
                errors.append(f"signals[{i}]: not an object")
                continue
            try:
                parsed.append(sg.parse(obj))
            except ValidationError as e:
                errors.append(f"signals[{i}]: {sg.describe(e)}")
        if errors:
            return JSONResponse({"detail": "malformed signal(s): " + "; ".join(errors[:20]) +
                                 ". Kinds: eval (prompt, results), bad_case (origin, ...), feedback (prompt, rating 1-5)",
                                 "errors": errors[:100]}, status_code=422)
        try:
            res = sg.add(catalog(), parsed, source=f"api:{who}")
        except sg.SignalConflict as e:
            return JSONResponse({"detail": str(e), "conflict": e.ids}, status_code=409)
        status = 201 if res["inserted"] else 200
        return JSONResponse({"inserted": res["inserted"], "duplicate": res["duplicate"]}, status_code=status)

    @app.get("/api/signals/{signal_id}", dependencies=guard(("signals:write", "review:read"), READ))
    def get_signal(signal_id: Annotated[str, Path(max_length=200)], who: str = Depends(token_name)):
        from flywheel.loop import signals as sg

        s = sg.get(catalog(), signal_id)
        if s is None:
            raise HTTPException(404, f"no signal {signal_id!r}; send it with POST /api/signals")
        return s

    @app.get("/api/routes/{signal_id}", dependencies=guard(("signals:write", "review:read"), READ))
    def get_routes(signal_id: Annotated[str, Path(max_length=200)], who: str = Depends(token_name)):
        rows = catalog().execute("SELECT * FROM routes WHERE signal_id=? ORDER BY route_id", (signal_id,))
        if not rows:
            raise HTTPException(404, f"signal {signal_id!r} has not been routed; run `flywheel route`")
        return {"routes": [{**{k: r[k] for k in r.keys() if k != "evidence_json"}, "evidence": json.loads(r["evidence_json"] or "{}")}
                           for r in rows]}

    try:
        from flywheel.review.api import review_api_router
    except ImportError:  # the review package is optional in a trimmed install
        review_api_router = None
    if review_api_router is not None:
        app.include_router(review_api_router())
    app.state.trusted_proxies = parse_proxies(trusted_proxies)
    apply_overrides(app)
    app.add_middleware(LimitsMiddleware, fastapi_app=app)
    return app
