"""`flywheel review serve` and `flywheel users ...`: the review dashboard and its accounts."""

from __future__ import annotations

import sys

import typer

review_app = typer.Typer(help="The review dashboard: reviewers approve or reject samples queued by the flywheel.",
                         no_args_is_help=True)
users_app = typer.Typer(help="Dashboard accounts (roles: reviewer, admin).", no_args_is_help=True)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@review_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; keep loopback unless a TLS proxy is in front."),
    port: int = typer.Option(8765, help="Port."),
    trusted_proxy: list[str] = typer.Option([], "--trusted-proxy", help="Address or network of the TLS proxy in front "
                                            "(repeat): its X-Forwarded-For names the client for log-in limits. Default: "
                                            "$FLYWHEEL_TRUSTED_PROXIES, else none (the header is ignored)."),
    secure_cookies: bool = typer.Option(None, "--secure-cookies/--insecure-cookies",
                                        help="Mark cookies Secure (HTTPS only). Default: on unless HOST is loopback."),
) -> None:
    """Serve the review dashboard and the review API (/api/review)."""
    import uvicorn

    from flywheel.catalog import Catalog
    from flywheel.cli import UserError
    from flywheel.review.app import create_app

    if secure_cookies is None:
        secure_cookies = host not in LOOPBACK
    cat = Catalog()
    from flywheel.audit import AuditTampered
    from flywheel.review.app import check_audit_log

    try:
        check_audit_log(cat)
    except AuditTampered as e:
        raise UserError(str(e)) from None
    if not cat.execute("SELECT 1 FROM users LIMIT 1"):
        typer.echo("note: no users yet; create one with `flywheel users add NAME --role admin`", err=True)
    typer.echo(f"review dashboard on http://{host}:{port}/ (catalog {cat.where}, Secure cookies {'on' if secure_cookies else 'off'})")
    try:
        app = create_app(cat, secure_cookies=secure_cookies, trusted_proxies=trusted_proxy or None)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning",
                    proxy_headers=False, server_header=False)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e}); pick another --port") from None


@review_app.command("recount")
def recount() -> None:
    """Rebuild the queue counts from the review items (after rows were written outside the queue API)."""
    from flywheel.catalog import Catalog
    from flywheel.loop import queue as q

    n = q.recount(Catalog())
    typer.echo(f"recounted: {n} (queue, signal, track, status) groups")


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="User name (letters, digits, _ . @ -)."),
    role: str = typer.Option("reviewer", help="reviewer or admin."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input (for scripts)."),
) -> None:
    """Add a dashboard user; asks for the password unless --password-stdin."""
    from flywheel.catalog import Catalog
    from flywheel.cli import UserError
    from flywheel.review import auth

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        auth.add_user(Catalog(), name, role, password, actor="cli")
    except auth.AuthError as e:
        raise UserError(str(e)) from None
    typer.echo(f"added {role} {name}")


@users_app.command("list")
def users_list() -> None:
    """List dashboard users."""
    from flywheel.catalog import Catalog
    from flywheel.review import auth

    for u in auth.list_users(Catalog()):
        typer.echo(f"{u['name']}\t{u['role']}\t{'disabled' if u['disabled'] else 'active'}")


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable a user and end their sessions."""
    from flywheel.catalog import Catalog
    from flywheel.cli import UserError
    from flywheel.review import auth

    try:
        auth.set_user(Catalog(), name, "cli", disabled=True)
    except auth.AuthError as e:
        raise UserError(str(e)) from None
    typer.echo(f"disabled {name}")


@users_app.command("unlock")
def users_unlock(name: str) -> None:
    """Clear a user's failed log-ins, ending the account's back-off (audited)."""
    from flywheel.catalog import Catalog
    from flywheel.cli import UserError
    from flywheel.review import auth

    try:
        n = auth.unlock_user(Catalog(), name, "cli")
    except auth.AuthError as e:
        raise UserError(str(e)) from None
    typer.echo(f"unlocked {name} ({n} failed log-ins cleared)")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.add_typer(users_app, name="users")
