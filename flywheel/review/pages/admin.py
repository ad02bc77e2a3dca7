"""Admin pages: users and roles, the queues' totals, and emitting a training dataset with the
approved samples added (the loop's `flywheel.loop.emit.emit`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from flywheel.loop import queue as q
from flywheel.loop.emit import emit
from flywheel.review import auth
from flywheel.review.api import get_catalog
from flywheel.review.guard import FORM, form_doc, page_guard
from flywheel.review.pages.common import admin_dep, csrf_form, page, require_admin

router = APIRouter()


@router.get("/admin/users", response_class=HTMLResponse, dependencies=page_guard("admin"))
def users_page(request: Request, s: auth.Session = Depends(admin_dep)):
    return page(request, "admin_users.html", {"users": auth.list_users(get_catalog(request)), "roles": auth.ROLES},
                session=s)


@router.post("/admin/users", dependencies=page_guard("admin", FORM), openapi_extra=form_doc("name", "role", "password"))
def users_add(request: Request, form: dict = Depends(csrf_form)):
    s = require_admin(form)
    try:
        auth.add_user(get_catalog(request), form.get("name", ""), form.get("role", ""), form.get("password", ""),
                      actor=s.user)
    except auth.AuthError as e:
        raise HTTPException(400, str(e)) from None
    return RedirectResponse("/admin/users?note=user_added", 303)


@router.post("/admin/users/{name}", dependencies=page_guard("admin", FORM), openapi_extra=form_doc("action", "role"))
def users_update(request: Request, name: str, form: dict = Depends(csrf_form)):
    s = require_admin(form)
    catalog = get_catalog(request)
    action = form.get("action")
    try:
        if action in ("disable", "enable"):
            auth.set_user(catalog, name, s.user, disabled=action == "disable")
        elif action == "role":
            auth.set_user(catalog, name, s.user, role=form.get("role"))
        elif action == "unlock":
            auth.unlock_user(catalog, name, s.user)
        else:
            raise HTTPException(400, "action must be disable, enable, role or unlock")
    except auth.AuthError as e:
        raise HTTPException(400, str(e)) from None
    return RedirectResponse("/admin/users?note=user_updated", 303)


def _queues_ctx(catalog) -> dict:
    return {"st": q.stats(catalog), "datasets": [f"{r['name']}@v{r['version']}" for r in catalog.datasets()]}


@router.get("/admin/queues", response_class=HTMLResponse, dependencies=page_guard("admin"))
def queues_page(request: Request, s: auth.Session = Depends(admin_dep)):
    return page(request, "admin_queues.html", {**_queues_ctx(get_catalog(request)), "result": None, "error": None},
                session=s)


@router.post("/admin/emit", response_class=HTMLResponse, dependencies=page_guard("admin", FORM), openapi_extra=form_doc("from_ref", "name"))
def emit_page(request: Request, form: dict = Depends(csrf_form)):
    s = require_admin(form)
    catalog = get_catalog(request)
    result, error = None, None
    try:
        out = emit(form.get("from_ref", ""), add_approved=True, name=form.get("name") or None, catalog=catalog, actor=s.user)
        result = f"{out['dataset']} ({out['added']} approved samples added, {out['rows']} rows)"
        catalog.audit(s.user, "admin.emit", f"dataset:{result}", {"from": form.get("from_ref"), "name": form.get("name")})
    except Exception as e:  # shown to the admin, who can fix the input and retry
        error = f"Emission failed: {type(e).__name__}: {e}"
    return page(request, "admin_queues.html", {**_queues_ctx(catalog), "result": result, "error": error},
                session=s, status=200 if error is None else 400)
