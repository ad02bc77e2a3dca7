"""`flywheel server start|stop|status`: the local Prefect API and Ray head that commands reuse
(`flywheel.flows.server`; commands start it on first use unless FLYWHEEL_SERVER=off)."""

from __future__ import annotations

import json
import time

import typer

from flywheel.cli import UserError


def register(app: typer.Typer) -> None:
    srv = typer.Typer(help="The local Prefect API and Ray head reused by commands (started on first use).",
                      no_args_is_help=True)
    app.add_typer(srv, name="server")

    @srv.command()
    def start(services: bool = typer.Option(False, "--services", help="Run Prefect's scheduler and automations too "
                                            "(deployments' schedules and triggers, `flywheel deploy`); never stops for idleness.")) -> None:
        """Start this FLYWHEEL_HOME's server (no-op when it runs) and wait until it answers."""
        from flywheel.flows import server

        t0 = time.perf_counter()
        try:
            st = server.start(services=services)
        except RuntimeError as e:
            raise UserError(str(e)) from None
        typer.echo(f"running (pid {st['pid']}) after {time.perf_counter() - t0:.1f}s: "
                   f"prefect {st['prefect_url']}, ray {st['ray_address']}; logs in {st['dir']}/logs")

    @srv.command()
    def stop() -> None:
        """Stop this FLYWHEEL_HOME's server and everything it started."""
        from flywheel.flows import server

        typer.echo("stopped" if server.stop() else "not running")

    @srv.command()
    def status(as_json: bool = typer.Option(False, "--json")) -> None:
        """Is the server running and answering? Ports, pids, restarts, idle timeout."""
        from flywheel.flows import server

        st = server.status()
        if as_json:
            typer.echo(json.dumps(st, indent=2))
            return
        if not st["running"]:
            typer.echo(f"not running ({st['dir']}); the next command starts it (FLYWHEEL_SERVER=auto)")
            raise typer.Exit(1)
        ch = st["children"]
        stops = "with scheduler and automations, no idle stop" if st.get("services") else f"stops after {st['idle_s']:.0f}s idle"
        typer.echo(f"running (pid {st['pid']}, up {time.time() - st['started_at']:.0f}s, "
                   f"{'ready' if st['ready'] else 'starting'}; {stops})")
        typer.echo(f"  prefect {st['prefect_url']}  pid {ch['prefect']['pid']}  healthy={st['healthy']['prefect']}  "
                   f"restarts={ch['prefect']['restarts']}")
        typer.echo(f"  ray     {st['ray_address']}  pid {ch['ray']['pid']}  healthy={st['healthy']['ray']}  "
                   f"restarts={ch['ray']['restarts']}  temp {st['ray_temp_dir']}")
        if "runner" in ch:
            from pathlib import Path

            from flywheel.cli import runner

            r = runner.ping(Path(st["dir"]))
            what = (f"{'busy' if r['busy'] else 'idle'}, {r['runs']} runs" if r and r["pid"] == ch["runner"]["pid"]
                    else "starting")
            typer.echo(f"  runner  pid {ch['runner']['pid']}  {what}  restarts={ch['runner']['restarts']}  "
                       f"socket {runner.sock_path(Path(st['dir']))}")
        else:
            typer.echo("  runner  off (FLYWHEEL_RUNNER=0 when the server started, or it kept failing): commands run their own flows")
        typer.echo(f"  logs    {st['dir']}/logs")
