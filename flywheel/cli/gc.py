"""`flywheel gc ROOT`: delete dataset parts no manifest names (what a killed writer left on an
object store or in a local temp directory), once older than a grace period."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("gc")
    def gc(
        root: str = typer.Argument(..., help="Where datasets live: s3://bucket/prefix, any fsspec URL, or a local directory."),
        grace_hours: float = typer.Option(24.0, "--grace-hours",
                                          help="Keep unnamed parts younger than this: a writer still running has not "
                                               "written its manifest yet."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be deleted; delete nothing."),
    ) -> None:
        """Remove orphaned parts: Parquet parts under ROOT that no manifest.json names."""
        from flywheel.cli import UserError
        from flywheel.datasets import storage

        try:
            res = storage.gc(root, grace_s=grace_hours * 3600, dry_run=dry_run)
        except (PermissionError, FileNotFoundError) as e:
            raise UserError(f"{root}: {e}") from None
        verb = "would delete" if dry_run else "deleted"
        typer.echo(f"{res['manifests']} manifests, {res['kept']} parts named by them; {res['orphans']} orphaned: "
                   f"{verb} {res['deleted']}, kept {res['young']} younger than {grace_hours:g} h")
