"""`flywheel audit verify|seal`: the audit log's tamper evidence (see `flywheel.audit`)."""

from __future__ import annotations

import getpass
import time

import typer

audit_app = typer.Typer(help="The audit log: verify its HMAC chain, or seal a break after investigating it.",
                        no_args_is_help=True)


def _describe(rep) -> list[str]:
    lines = [f"{rep.rows} rows, {rep.chained} chained"]
    if rep.last:
        lines.append(f"newest row: seq {rep.last['seq']}")
    if rep.head:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(rep.head.get("saved_at", 0)))
        lines.append(f"saved head: seq {rep.head.get('seq')} (saved {when})")
    for a in rep.acknowledged:
        lines.append(f"acknowledged: break at seq {a['seq']} ({a['problem']}), sealed by seq {a['sealed_by']}")
    return lines


@audit_app.command("verify")
def verify() -> None:
    """Check every audit row's HMAC link, the saved chain head and the append-only triggers;
    report the first broken link. Exit status 1 when the log was altered."""
    from flywheel.catalog import Catalog

    cat = Catalog()
    rep = cat.audit_verify()
    for line in _describe(rep):
        typer.echo(line)
    if rep.ok:
        typer.echo(f"OK: the audit log of {cat.where} verifies")
        return
    for p in rep.problems():
        typer.echo(f"BROKEN: {p}", err=True)
    typer.echo("Investigate (the rows around the break, backups), then record it and re-anchor the chain with "
               "`flywheel audit seal --reason TEXT`.", err=True)
    raise typer.Exit(1)


@audit_app.command("seal")
def seal(reason: str = typer.Option(..., "--reason", help="What happened to the log and what was done about it."),
         actor: str = typer.Option(None, help="Who seals (default: the operating-system user).")) -> None:
    """Record the breaks verification finds in a seal row (audited, itself chained), recreate
    missing append-only triggers and re-anchor the chain, so the review server starts again."""
    from flywheel.catalog import Catalog
    from flywheel.cli import UserError

    cat = Catalog()
    try:
        res = cat.audit_seal(f"cli:{actor or getpass.getuser()}", reason)
    except ValueError as e:
        raise UserError(str(e)) from None
    for p in res["problems"] or ["no problems found; sealed anyway"]:
        typer.echo(f"sealed: {p}")
    if res["triggers_recreated"]:
        typer.echo(f"recreated triggers: {', '.join(res['triggers_recreated'])}")
    typer.echo(f"seal row seq {res['seq']}; the chain continues from it (`flywheel audit verify` now passes)")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
