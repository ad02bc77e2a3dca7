"""`flywheel deploy`: register the deployments of `deploy/deployments.yaml` (`flywheel.flows.deploy`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from flywheel.cli import UserError


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy_cmd(
        file: Optional[Path] = typer.Option(None, "--file", "-f", help="Deployments file (default: deploy/deployments.yaml)."),
        only: List[str] = typer.Option([], "--only", help="Register only this deployment (repeatable)."),
        pool: Optional[str] = typer.Option(None, "--pool", help="Work pool name (default: the file's work_pool.name)."),
        check: bool = typer.Option(False, "--check", help="Validate the file and print the deployments; send nothing."),
    ) -> None:
        """Register the curation, captioning, routing and retraining deployments on the Prefect server.

        The server is PREFECT_API_URL's (`prefect server start`); without it, this FLYWHEEL_HOME's
        local server (`flywheel server start --services`, started here when none runs), with the
        scheduler that runs the schedules and the automations that start retraining. Start workers
        with `prefect worker start --pool POOL`."""
        from pydantic import ValidationError

        from flywheel.flows import deploy as dp

        try:
            spec = dp.load(file)
        except (ValidationError, ValueError, FileNotFoundError) as e:
            raise UserError(f"{file or dp.DEFAULT_FILE}: {e}") from None
        if pool:
            spec.work_pool.name = pool
        if check:
            for d in spec.deployments:
                when = d.schedule.cron if d.schedule else f"on {d.trigger.event}" if d.trigger else "by hand"
                typer.echo(f"{d.name:<20} {dp.FLOWS[d.flow]:<48} {when}")
            typer.echo(f"{len(spec.deployments)} deployments valid; work pool {spec.work_pool.name} ({spec.work_pool.type})")
            return
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            from flywheel.flows import server

            try:
                url = server.start(services=True)["prefect_url"]
            except RuntimeError as e:
                raise UserError(str(e)) from None
        try:
            rows = dp.deploy(spec, only=list(only) or None, api_url=url)
        except ValueError as e:
            raise UserError(str(e)) from None
        for r in rows:
            when = r["schedule"] or (f"on {r['trigger']}" if r["trigger"] else "by hand")
            typer.echo(f"{r['name']:<36} {when:<32} {r['id']}")
        typer.echo(f"{len(rows)} deployments on {url}, work pool {spec.work_pool.name}; "
                   f"start a worker: PREFECT_API_URL={url} prefect worker start --pool {spec.work_pool.name}")
