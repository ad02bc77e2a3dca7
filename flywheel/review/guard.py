"""Every route's declared right and limits, enforced in one place.

Each route of the dashboard and of the signal API carries one `Guard` in its `dependencies`: the
scope it needs (`signals:write`, `review:read`, `review:write`, `admin`, or `public`) and its
`Limits` (body bytes, JSON depth, keys per object, items per array, string length, requests per
minute). `tests/review/test_limits.py` walks both apps' routes and fails for a route without one.

- **Who**: an API route takes `Authorization: Bearer fwt_...` (rights = the token's scopes
  intersected with its user's role) or a dashboard session (rights = the role's; a state-changing
  request must carry the session's CSRF token in `X-CSRF-Token`). A page takes the session only.
- **Refusals**: no or bad credentials 401 (an expired token says so); a missing right 403 naming
  the scope; over the rate 429 with `Retry-After`; over a size limit 413; too deep 422.
- **Sizes** are enforced by `LimitsMiddleware` before the app reads anything: `Content-Length`
  first, then the bytes as they stream (a body that lies about its length is cut off at the
  limit), then the JSON's shape with an iterative scan, so `[`*100000 is a 422, never Python's
  RecursionError.

Limits are configurable per route (`FLYWHEEL_LIMITS`, a JSON object `{"POST /api/signals":
{"body": 1048576}, "*": {"rate": 600}}`); docs/security.md lists the defaults.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable

from fastapi import Depends, HTTPException, Request
from starlette.responses import JSONResponse
from starlette.routing import Match

from flywheel.review import auth

PUBLIC = "public"
SESSION_COOKIE = "fw_session"


class LoginRequired(Exception):
    """A page without a session: the dashboard redirects to the log-in page."""


class Forbidden(Exception):
    """A page the session's role may not see: the dashboard answers 403 with this message."""


def get_catalog(request: Request):
    """The app's catalog (`app.state.review_catalog`, created on first use)."""
    cat = getattr(request.app.state, "review_catalog", None)
    if cat is None:
        from flywheel.catalog import Catalog

        cat = request.app.state.review_catalog = Catalog()
    return cat
SCOPES = auth.SCOPES
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Limits:
    body: int = 64 * KiB  # bytes of request body
    depth: int = 16  # JSON nesting
    keys: int = 200  # keys in one JSON object, or fields in a form
    items: int = 10_000  # items in one JSON array
    string: int = 64 * KiB  # characters in one JSON string or form value
    rate: int = 1200  # requests per minute per principal (token, user, or client address)

    def merged(self, override: dict | None) -> "Limits":
        if not override:
            return self
        known = {f.name for f in fields(self)}
        bad = set(override) - known
        if bad:
            raise ValueError(f"unknown limit(s) {sorted(bad)}; known: {sorted(known)}")
        return replace(self, **{k: int(v) for k, v in override.items()})


# The defaults by kind of route; routes pick one and may adjust it.
READ = Limits(body=0)
WRITE = Limits(body=256 * KiB, rate=600)
FORM = Limits(body=64 * KiB, keys=50, string=16 * KiB, rate=600)
LOGIN = Limits(body=8 * KiB, keys=10, string=2 * KiB, rate=120)
THUMB = Limits(body=0, rate=6000)
STATIC = Limits(body=0, rate=6000)


@dataclass
class Principal:
    """Who made the request, as the guard established it."""

    name: str  # a user name, `token:NAME`, or `client:ADDR` on public routes
    role: str | None
    via: str  # session | token | anonymous
    rights: frozenset = field(default_factory=frozenset)
    session: Any = None
    token_id: str | None = None


class Guard:
    """A route's declared scope and limits; as a dependency it authenticates, checks the scope
    and the rate, and leaves the `Principal` in `request.state.principal`."""

    def __init__(self, scope: str | tuple[str, ...], limits: Limits, kind: str = "api"):
        scopes = (scope,) if isinstance(scope, str) else tuple(scope)
        for s in scopes:
            if s != PUBLIC and s not in SCOPES:
                raise ValueError(f"unknown scope {s!r}; scopes: {', '.join(SCOPES)}")
        if kind not in ("api", "page"):
            raise ValueError("kind must be api or page")
        self.scopes, self.limits, self.kind = scopes, limits, kind

    def __repr__(self) -> str:
        return f"Guard({'|'.join(self.scopes)}, {self.kind})"

    @property
    def public(self) -> bool:
        return PUBLIC in self.scopes

    def __call__(self, request: Request) -> Principal:
        cat = get_catalog(request)
        if self.public:
            p = Principal(f"client:{client_address(request)}", None, "anonymous")
        elif self.kind == "page":
            p = self._session(request, cat)
        else:
            p = self._api(request, cat)
        if not self.public and not (p.rights & set(self.scopes)):
            need = " or ".join(self.scopes)
            if self.kind == "page":
                raise Forbidden("This page is for admins. Ask an admin if you need access." if self.scopes == ("admin",)
                                else f"This needs the {need} right, which your account does not have.")
            raise HTTPException(403, f"missing scope {need}: this {'token' if p.via == 'token' else 'account'} has "
                                     f"{', '.join(sorted(p.rights)) or 'no rights'}; create a token with "
                                     f"`flywheel tokens create --scope {self.scopes[0]}` (its user's role must allow it)")
        wait = _limiter(request).take((p.token_id or p.name, id(self)), self.limits.rate)
        if wait:
            raise HTTPException(429, f"too many requests: at most {self.limits.rate} a minute here; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
        request.state.principal = p
        return p

    def _session(self, request: Request, cat) -> Principal:
        s = auth.get_session(cat, request.cookies.get(SESSION_COOKIE))
        if s is None:
            if self.kind == "page":
                raise LoginRequired()
            raise HTTPException(401, "authentication required: send `Authorization: Bearer <token>` (create one with"
                                     " `flywheel tokens create`) or log in to the dashboard",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.session = s
        return Principal(s.user, s.role, "session", auth.rights_of(s.role, None), session=s)

    def _api(self, request: Request, cat) -> Principal:
        header = request.headers.get("authorization", "")
        if header:
            if not header.lower().startswith("bearer "):
                raise HTTPException(401, "the Authorization header must be `Bearer <token>`", headers={"WWW-Authenticate": "Bearer"})
            try:
                t = auth.verify_token(cat, header[7:].strip())
            except auth.TokenError as e:
                raise HTTPException(401, str(e), headers={"WWW-Authenticate": "Bearer"}) from None
            return Principal(f"token:{t.name}", t.role, "token", t.rights, token_id=t.token_id)
        p = self._session(request, cat)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not auth.csrf_ok(p.session, request.headers.get("x-csrf-token")):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header; read it from the page's <meta name=csrf-token>")
        return p


def guard(scope: str | tuple[str, ...], limits: Limits = READ, kind: str = "api") -> list:
    """`dependencies=guard(...)` for a route decorator."""
    return [Depends(Guard(scope, limits, kind))]


def page_guard(scope: str | tuple[str, ...], limits: Limits = READ) -> list:
    return guard(scope, limits, "page")


def form_doc(*names: str) -> dict:
    """`openapi_extra` for a dashboard form post: the fields it reads (all strings) and the CSRF
    field, so the schema says what the route takes and schema fuzzing sends it."""
    props = {n: {"type": "string"} for n in ("csrf", *names)}
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
        "schema": {"type": "object", "properties": props, "required": ["csrf"]}}}}}


def principal(request: Request) -> Principal:
    """The principal the route's guard established (a dependency for endpoints)."""
    p = getattr(request.state, "principal", None)
    if p is None:  # a route without a guard: refuse rather than serve unauthenticated
        raise HTTPException(500, "route has no guard")
    return p


# -- the rate --------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per (principal, route) in this process: `rate` requests a minute, in bursts
    up to `rate`. Per process on purpose: a limit that must hold across processes (log-in
    failures) is kept in the catalog instead."""

    def __init__(self, max_keys: int = 100_000):
        self._b: dict[Any, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._max = max_keys

    def take(self, key, rate: int) -> int:
        """0 when allowed, else whole seconds to wait."""
        if rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, at = self._b.get(key, (float(rate), now))
            tokens = min(float(rate), tokens + (now - at) * rate / 60.0)
            if tokens < 1.0:
                self._b[key] = (tokens, now)
                return max(1, math.ceil((1.0 - tokens) * 60.0 / rate))
            if len(self._b) >= self._max:  # bounded memory: forget the fullest buckets' history
                self._b.clear()
            self._b[key] = (tokens - 1.0, now)
            return 0


def _limiter(request: Request) -> RateLimiter:
    st = request.app.state
    lim = getattr(st, "rate_limiter", None)
    if lim is None:
        lim = st.rate_limiter = RateLimiter()
    return lim


# -- client addresses behind trusted proxies -------------------------------------------------
def parse_proxies(spec: str | Iterable[str] | None) -> tuple:
    """`10.0.0.1,10.1.0.0/16` (or a list) -> networks. An empty spec trusts nobody."""
    if spec is None:
        spec = os.environ.get("FLYWHEEL_TRUSTED_PROXIES", "")
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s and s.strip()]
    nets = []
    for s in items:
        try:
            nets.append(ipaddress.ip_network(s, strict=False))
        except ValueError:
            raise ValueError(f"trusted proxy {s!r} is not an address or network (e.g. 127.0.0.1 or 10.0.0.0/8)") from None
    return tuple(nets)


def _trusted(addr: str, nets: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_address(request: Request) -> str:
    """The client's address: the peer, unless the peer is a configured trusted proxy, in which
    case the right-most `X-Forwarded-For` hop that is not itself a trusted proxy (hops further
    left were written by the client and prove nothing). Without trusted proxies the header is
    ignored, so a client cannot pick its own address."""
    peer = request.client.host if request.client else "unknown"
    nets = getattr(request.app.state, "trusted_proxies", ())
    if not nets or not _trusted(peer, nets):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, nets):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from a proxy we trust: fall back to the proxy itself
    return peer


# -- sizes, before the app reads anything ----------------------------------------------------
class TooLarge(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def route_guards(app) -> list[tuple[Any, Guard | None]]:
    """Every route of `app` with its guard (None when it has none)."""
    try:
        from fastapi.routing import iter_route_contexts

        routes = [getattr(c, "route", c) for c in iter_route_contexts(app.routes)]
    except ImportError:  # before FastAPI 0.150 include_router copied each route into app.routes
        routes = list(app.routes)
    out = []
    for r in routes:
        g = getattr(r, "guard", None)  # a mount declares its own (see `mount`)
        dependant = getattr(r, "dependant", None)
        if g is None and dependant is not None:
            g = next((d.call for d in dependant.dependencies if isinstance(d.call, Guard)), None)
        out.append((r, g))
    return out


def mount(app, path: str, asgi_app, name: str, scope: str, limits: Limits) -> None:
    """`app.mount` with a declared scope and limits (only `public` is supported: static files)."""
    if scope != PUBLIC:
        raise ValueError("only public mounts are supported; put authenticated content behind a route")
    app.mount(path, asgi_app, name=name)
    app.router.routes[-1].guard = Guard(PUBLIC, limits, "page")


def apply_overrides(app, overrides: dict | None = None) -> None:
    """Set each guard's limits from `FLYWHEEL_LIMITS` (or `overrides`): keys `METHOD /path`,
    `/path` (every method) or `*` (every route); values are `Limits` fields."""
    if overrides is None:
        raw = os.environ.get("FLYWHEEL_LIMITS", "").strip()
        overrides = json.loads(raw) if raw else {}
    if not overrides:
        return
    for r, g in route_guards(app):
        if g is None:
            continue
        path = getattr(r, "path", "")
        methods = getattr(r, "methods", None) or {"GET"}
        lim = g.limits.merged(overrides.get("*"))
        lim = lim.merged(overrides.get(path))
        for m in methods:
            lim = lim.merged(overrides.get(f"{m} {path}"))
        g.limits = lim


class LimitsMiddleware:
    """Pure ASGI: finds the route's guard, refuses a declared or streamed body over its limit with
    413 and checks a JSON or form body's shape before the app parses it. Unmatched paths get the
    strictest limits (`READ`)."""

    def __init__(self, app, fastapi_app):
        self.app, self.fastapi_app = app, fastapi_app
        self._routes = None

    def _limits(self, scope) -> Limits:
        if self._routes is None:  # routes are fixed once the app serves
            self._routes = route_guards(self.fastapi_app)
        for r, g in self._routes:
            m, _ = r.matches(scope)
            if m == Match.FULL:
                return g.limits if g is not None else READ
        return READ

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lim = self._limits(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.strip().isdigit():
                    raise TooLarge(400, "Content-Length must be a whole number")
                if int(declared) > lim.body:
                    raise TooLarge(413, _too_big(lim.body))
            body = b""
            more = True
            while more:  # read at most the limit; a longer stream is refused when it passes it
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > lim.body:
                    raise TooLarge(413, _too_big(lim.body))
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if body and (ctype == "application/json" or ctype.endswith("+json")):
                check_json(body, lim)
            elif body and ctype == "application/x-www-form-urlencoded":
                check_form(body, lim)
        except TooLarge as e:
            resp = JSONResponse({"detail": e.detail}, status_code=e.status)
            return await resp(scope, receive, send)

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _too_big(n: int) -> str:
    return f"request body too large: at most {n} bytes here" if n else "this route takes no request body"


# a JSON string, as an unrolled loop (25x faster than `(?:[^"\\]|\\.)*` on a multi-MB base64 image)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(rb"[\[\]{}]")


def check_json(body: bytes, lim: Limits) -> None:
    """The shape of a JSON body, without recursion: nesting first (over the raw bytes, strings
    blanked), then keys per object, items per array and string lengths (iteratively over the
    parsed value). Malformed JSON is left for the route to answer."""
    depth = top = 0
    for m in _BRACKET.finditer(_STRING.sub(b'""', body)):
        if m.group() in (b"[", b"{"):
            depth += 1
            if depth > lim.depth:
                raise TooLarge(422, f"JSON nested deeper than {lim.depth} levels")
            top = max(top, depth)
        else:
            depth -= 1
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if len(v) > lim.keys:
                raise TooLarge(413, f"a JSON object with {len(v)} keys; at most {lim.keys} here")
            for k in v:
                if len(k) > lim.string:
                    raise TooLarge(413, f"a JSON key of {len(k)} characters; at most {lim.string} here")
            stack.extend(v.values())
        elif isinstance(v, list):
            if len(v) > lim.items:
                raise TooLarge(413, f"a JSON array with {len(v)} items; at most {lim.items} here")
            stack.extend(v)
        elif isinstance(v, str) and len(v) > lim.string:
            raise TooLarge(413, f"a JSON string of {len(v)} characters; at most {lim.string} here")


def check_form(body: bytes, lim: Limits) -> None:
    from urllib.parse import parse_qsl

    if body.count(b"&") + 1 > lim.keys:
        raise TooLarge(413, f"more than {lim.keys} form fields; at most {lim.keys} here")
    for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
        if len(v) > lim.string or len(k) > lim.string:
            raise TooLarge(413, f"a form field of {max(len(k), len(v))} characters; at most {lim.string} here")
