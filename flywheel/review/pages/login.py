"""Login and logout. The login form is protected by a double-submit cookie (there is no session
yet to hold a CSRF token); the session cookie is HttpOnly and SameSite=Strict."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from flywheel.review import auth
from flywheel.review.api import SESSION_COOKIE, get_catalog
from flywheel.review.guard import FORM, LOGIN, PUBLIC, client_address, form_doc, page_guard
from flywheel.review.pages.common import csrf_form, page, safe_next

LOGIN_CSRF_COOKIE = "fw_login_csrf"
DEVICE_COOKIE = "fw_device"

router = APIRouter()


@router.get("/login", response_class=HTMLResponse, dependencies=page_guard(PUBLIC))
def login_page(request: Request, next: str = "/queue", error: str | None = None):
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or uuid.uuid4().hex
    resp = page(request, "login.html", {"next": safe_next(next), "error": error, "csrf": token})
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.app.state.secure_cookies,
                    path="/login")
    return resp


@router.post("/login", dependencies=page_guard(PUBLIC, LOGIN))
def login(request: Request, username: str = Form(""), password: str = Form(""), csrf: str = Form(""),
          next: str = Form("/queue")):
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not cookie or not csrf or cookie != csrf:  # double-submit: stops cross-site login forgery
        raise HTTPException(403, "missing or wrong CSRF token; reload the login page and try again")
    catalog = get_catalog(request)
    client = client_address(request)
    device = request.cookies.get(DEVICE_COOKIE)
    live = auth.get_session(catalog, request.cookies.get(SESSION_COOKIE))
    try:
        user = auth.authenticate(catalog, username, password, client, device=device,
                                 session_user=live.user if live else None)
    except auth.RateLimited as e:
        resp = page(request, "login.html", {"next": safe_next(next), "error": str(e), "csrf": csrf}, status=429)
        resp.headers["Retry-After"] = str(e.retry_after)
        return resp
    except auth.AuthError as e:
        return page(request, "login.html", {"next": safe_next(next), "error": str(e), "csrf": csrf}, status=401)
    sid, _ = auth.create_session(catalog, user)
    resp = RedirectResponse(safe_next(next), 303)
    resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict", secure=request.app.state.secure_cookies,
                    max_age=int(auth.SESSION_TTL), path="/")
    # the device cookie marks this browser as one `user` logged in from: its correct password
    # passes the account's back-off later (only /login ever sees it)
    resp.set_cookie(DEVICE_COOKIE, auth.remember_device(catalog, user, device), httponly=True, samesite="strict",
                    secure=request.app.state.secure_cookies, max_age=int(auth.DEVICE_TTL), path="/login")
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", httponly=True, samesite="strict")
    return resp


@router.post("/logout", dependencies=page_guard("review:read", FORM), openapi_extra=form_doc())
def logout(request: Request, form: dict = Depends(csrf_form)):
    auth.end_session(get_catalog(request), request.cookies.get(SESSION_COOKIE))
    resp = RedirectResponse("/login?note=loggedout", 303)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp


@router.get("/", dependencies=page_guard(PUBLIC))
def root():
    return RedirectResponse("/queue", 303)
