"""`flywheel catalog migrate --to postgresql://…`: move a SQLite catalog into PostgreSQL."""

from __future__ import annotations

import typer

catalog_app = typer.Typer(help="The catalog itself: where it lives, and moving it.", no_args_is_help=True)


@catalog_app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="the target, postgresql://user:pass@host:port/db (an empty database)"),
    source: str = typer.Option(None, "--from", help="the SQLite catalog to copy (default: FLYWHEEL_HOME/catalog.db)"),
) -> None:
    """Copy every table of a SQLite catalog into an empty PostgreSQL database (sequences set past
    the highest ids, the audit chain and its saved head carried over, then verified). The source
    is left as it is; point FLYWHEEL_CATALOG at the target afterwards."""
    from flywheel import config
    from flywheel.catalog import Catalog, copy_catalog
    from flywheel.catalog_pg import CatalogUnavailable, is_url, redact, scrub

    from . import UserError

    if not is_url(to):
        raise UserError("--to takes a postgresql://user:pass@host:port/db URL")
    src_loc = source or str(config.catalog_path())
    if is_url(src_loc):
        raise UserError("--from takes a SQLite catalog file")
    try:
        src, dst = Catalog(src_loc), Catalog(to)
        copied = copy_catalog(src, dst)
    except (CatalogUnavailable, ValueError) as e:
        raise UserError(scrub(str(e), to)) from None
    for t, n in copied.items():
        typer.echo(f"{t}: {n} rows")
    rep = dst.audit_verify()
    if not rep.ok:
        for p in rep.problems():
            typer.echo(f"BROKEN: {p}", err=True)
        raise typer.Exit(1)
    typer.echo(f"copied {sum(copied.values())} rows from {src.where} to {redact(to)}; the audit log verifies "
               f"({rep.rows} rows). Set FLYWHEEL_CATALOG to the target URL to use it.")


def register(app: typer.Typer) -> None:
    app.add_typer(catalog_app, name="catalog")
