"""Every operation of both apps' OpenAPI schemas, fuzzed by schemathesis with a fixed example
budget, answers 4xx to bad input and never a 5xx. Requests carry real credentials (an admin's
token with every scope, and an admin's session with its CSRF header) so the fuzzing reaches the
code behind the guard, not just the 401.

The default suite runs FAST_EXAMPLES per operation (under a minute here); `-m slow` runs
SLOW_EXAMPLES. Both are derandomized, so a run is repeatable."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from starlette.responses import JSONResponse

schemathesis = pytest.importorskip("schemathesis")

FAST_EXAMPLES = 10
SLOW_EXAMPLES = int(__import__('os').environ.get('FLYWHEEL_FUZZ_EXAMPLES', '100'))


def _world(tmp_path_factory):
    """One catalog per app: users, a token with every scope, a pool dataset with queued items."""
    import os

    from fastapi.testclient import TestClient

    from flywheel.catalog import Catalog
    from flywheel.review import auth

    from .conftest import add_users, login, make_pool, queue_pool

    os.environ["FLYWHEEL_ARGON2_PROFILE"] = "test"
    home = tmp_path_factory.mktemp("fuzz")
    cat = Catalog(home / "catalog.db")
    add_users(cat)
    ref, rows = make_pool(cat, home)
    queue_pool(cat, ref, rows)
    tok = auth.create_token(cat, "fuzz", user="root", scopes=list(auth.SCOPES), expires_in=None)
    from flywheel.review.app import create_app

    c = TestClient(create_app(cat, secure_cookies=False))
    assert login(c, "root").status_code == 303
    from .conftest import csrf_of

    csrf = csrf_of(c.get("/queue").text)
    return cat, tok, c.cookies.get("fw_session"), csrf


def _unlimited(monkeypatch):
    """The fuzzer sends hundreds of requests a minute as one principal: rates are tested elsewhere."""
    import json

    monkeypatch.setenv("FLYWHEEL_LIMITS", json.dumps({"*": {"rate": 0}}))


def _serving_schema(app):
    """The dashboard serves no schema (nothing needs it); the fuzzer reads the app's own."""
    schema = app.openapi()

    async def wrapper(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/__openapi.json":
            return await JSONResponse(schema)(scope, receive, send)
        return await app(scope, receive, send)

    return wrapper


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    _unlimited(mp)
    try:
        from flywheel.review.app import create_app
        from flywheel.review.signals_api import create_app as signals_app

        cat, tok, sid, csrf = _world(tmp_path_factory)
        dash = _serving_schema(create_app(cat, secure_cookies=False))
        api = signals_app(cat)
        yield {"dashboard": (schemathesis.openapi.from_asgi("/__openapi.json", dash), {"Authorization": f"Bearer {tok}"},
                             {"fw_session": sid}, csrf),
               "signal API": (schemathesis.openapi.from_asgi("/api/openapi.json", api), {"Authorization": f"Bearer {tok}"},
                              {}, None)}
    finally:
        mp.undo()


def _fuzz(apps, examples: int):
    import collections
    import os

    from hypothesis import given

    failures, calls, seen = [], 0, collections.Counter()
    for name, (schema, headers, cookies, csrf) in apps.items():
        for result in schema.get_all_operations():
            op = result.ok()

            @given(case=op.as_strategy())
            @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case):
                nonlocal calls
                h = dict(headers)
                if csrf and cookies:  # half the cases as the session, half as the token
                    h = {"X-CSRF-Token": csrf} if calls % 2 else h
                calls += 1
                case.headers = {**(case.headers or {}), **h}
                jar = dict(cookies) if "X-CSRF-Token" in h else {}
                if op.path == "/login" and isinstance(case.body, dict):  # past the log-in CSRF check
                    case.body["csrf"] = jar["fw_login_csrf"] = "fuzz-login-csrf"
                elif jar and isinstance(case.body, dict) and "csrf" in case.body and op.path != "/logout":
                    case.body["csrf"] = csrf  # a form post past its CSRF check (logging out would end the run's session)
                r = case.call(cookies=jar or None)
                seen[(name, case.method, op.path, r.status_code)] += 1
                if r.status_code >= 500:
                    failures.append(f"{name}: {case.method} {case.formatted_path} -> {r.status_code}: {r.text[:200]}")

            run()
    if os.environ.get("FLYWHEEL_FUZZ_REPORT"):  # what the budget reached: status codes per operation
        for k, n in sorted(seen.items()):
            print(*k, n)
    return failures, calls


def test_every_operation_answers_bad_input_with_4xx(apps):
    failures, calls = _fuzz(apps, FAST_EXAMPLES)
    assert calls > 100
    assert not failures, "\n".join(failures[:20])


@pytest.mark.slow
def test_every_operation_answers_bad_input_with_4xx_big_budget(apps):
    failures, calls = _fuzz(apps, SLOW_EXAMPLES)
    assert not failures, "\n".join(failures[:20])
