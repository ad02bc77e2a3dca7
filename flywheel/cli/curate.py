"""Curation commands: demo, curate, ops, recipes, runs, explain, sql."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional

import typer

from flywheel.cli import UserError


def _console():
    from rich.console import Console

    return Console()


def _print_plan(con, plan: dict) -> None:
    from rich.table import Table

    t = Table(title=f"run plan: {plan['recipe_name']} ({plan['recipe_hash']})", show_lines=False)
    t.add_column("#"), t.add_column("operator"), t.add_column("params")
    for i, op in enumerate(plan["recipe_resolved"]["operators"], 1):
        (name, params), = op.items()
        t.add_row(str(i), name, json.dumps(params, separators=(",", ":"))[:110])
    con.print(t)
    con.print(f"input [bold]{plan['input']}[/] ({plan['input_kind']}, ~{plan['rows_estimate']} rows in "
              f"{len(plan['shards'])} shards) -> output [bold]{plan['output']}[/]; workers={plan['workers']}")
    if plan.get("ship_inputs"):
        from flywheel.curation.engine import SHIP_WINDOW_PER_WORKER

        con.print(f"inputs: shipped (--ship-inputs): this process reads the input and puts its blocks into Ray's object "
                  f"store, up to {SHIP_WINDOW_PER_WORKER * plan['workers']} blocks ahead of the workers; they read nothing")
    for n in plan.get("notes", []):
        con.print(f"[yellow]note:[/] {n}")
    u = plan.get("uncaptioned") or {}
    if u.get("rows"):
        what = {None: "", "reject": " -> judged as they are (--reject-uncaptioned)",
                "allow": " -> kept, marked caption_origin=none (--allow-uncaptioned)",
                "caption": f" -> captioned first with the {u.get('backend')} backend (--caption)"}[u.get("mode")]
        readers = f"; read by {', '.join(u['readers'])}" if u.get("readers") else "; no operator of this run reads captions"
        con.print(f"captions: {u['missing']} of {u['rows']} inputs have none{readers}{what if u['missing'] else ''}")
    if u.get("unknown_shards") and u.get("readers"):
        con.print(f"captions: {u['unknown_shards']} tar shard(s) on the object store are not read before the run; rows "
                  "there without a caption are " + ("judged as they are (token_length:missing)" if not u.get("mode") else
                                                    f"handled as chosen ({u['mode']})"))
    if plan.get("ingest_counts"):
        con.print("ingest (not followed): " + ", ".join(f"{k}={v}" for k, v in plan["ingest_counts"].items()))


def run_curate(recipe: str, input: str, output: str, *, name: str | None, workers: int, skip: list[str],
               sets: list[str], image_col: str, caption_col: str, keep_state: bool = False,
               uncaptioned: str | None = None, caption_backend: str | None = None, ship_inputs: bool = False,
               console=None) -> dict:
    """Plan and run a curation. With no `console` (a command), the local server's runner runs it
    when it can (`flywheel.cli.runner`: warm imports, Ray driver and model actors), else this
    process does; the runner calls this with its console on the command's socket."""
    if console is None:
        from flywheel.cli import runner

        t_client = time.perf_counter()
        stats = runner.submit(dict(recipe=recipe, input=input, output=output, name=name, workers=workers, skip=skip,
                                   sets=sets, image_col=image_col, caption_col=caption_col, keep_state=keep_state,
                                   uncaptioned=uncaptioned, caption_backend=caption_backend, ship_inputs=ship_inputs))
        if stats is not None:
            stats["timing"]["command_s"] = time.perf_counter() - t_client
            return stats
    from flywheel.curation import pipeline
    from flywheel.filters import recipe as recipes
    from flywheel.flows import server

    con = console or _console()
    t0 = time.perf_counter()
    try:
        server.prestart()  # the local server (auto mode) comes up while the run is planned
        overrides = recipes.parse_sets(sets)
        plan = pipeline.prepare(recipe, input, output, name=name, workers=workers, skip=skip, sets=overrides,
                                image_col=image_col, caption_col=caption_col, uncaptioned=uncaptioned,
                                caption_backend=caption_backend, ship_inputs=ship_inputs)
    except pipeline.CurateError as e:
        raise UserError(str(e)) from None
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e)) from None
    _print_plan(con, plan)
    from flywheel.flows import curate as flows

    t_prepared = time.perf_counter()
    with contextlib.ExitStack() as runtime:
        try:
            rt = runtime.enter_context(server.session(workers=plan["workers"],
                                                                tasks_only=pipeline.tasks_only(plan)))
        except RuntimeError as e:
            raise UserError(str(e)) from None
        t_runtime = time.perf_counter()
        out, t_flow, t_flow_end = _run_flow(con, flows, plan, keep_state)
    t_end = time.perf_counter()
    stats = json.loads((Path(out) / "stats.json").read_text())
    tm = stats["timing"]
    tm["total_s"] = t_end - t0
    tm["server_mode"] = rt["mode"]
    # start-up: planning (the local server starting meanwhile), then waiting for the server or
    # starting Prefect's temporary one alongside Ray, then Ray's connection or start
    tm["plan_s"] = t_prepared - t0
    tm["runtime_s"] = t_runtime - t_prepared
    tm["server_wait_s"] = rt.get("server_s")
    tm["ray_startup_s"] = rt.get("ray_startup_s")
    tm["prefect_startup_s"] = rt.get("prefect_startup_s")
    if tm.get("score_started_at"):
        # from the flow's call to its score task: the flow run's creation on the Prefect API
        tm["flow_start_s"] = tm["score_started_at"] - t_flow
    tm["after_flow_s"] = t_end - t_flow_end  # leaving the runtime (a temporary server stopping)
    (Path(out) / "stats.json").write_text(json.dumps(stats, indent=2))
    _print_summary(con, stats)
    return stats


def _run_flow(con, flows, plan: dict, keep_state: bool) -> tuple[str, float, float]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                  TimeElapsedColumn(), console=con, transient=False) as prog:
        task = prog.add_task("score", total=plan["rows_estimate"] or None, rate="")
        start = time.perf_counter()

        def on_progress(n: int, timing: dict) -> None:
            prog.advance(task, n)
            el = time.perf_counter() - start
            prog.update(task, rate=f"{prog.tasks[0].completed / el:.1f} img/s" if el > 0 else "")

        flows._PROGRESS["cb"] = on_progress
        t_flow = time.time()
        try:
            out = flows.curate_flow(state=plan["state"], keep_state=keep_state)
        finally:
            flows._PROGRESS.pop("cb", None)
    return out, t_flow, time.perf_counter()


def _print_summary(con, stats: dict) -> None:
    from rich.table import Table

    t = Table(title=f"{stats['rows']} rows: {stats['accepted']} accepted, {stats['rejected']} rejected")
    t.add_column("reject_reason"), t.add_column("rows", justify="right")
    for k, v in stats["reject_reason"].items():
        t.add_row(k, str(v))
    con.print(t)
    if stats.get("ingest"):
        con.print("ingest: " + ", ".join(f"{k}={v}" for k, v in stats["ingest"].items()))
    tm = stats["timing"]
    ips = tm.get("images_per_s")
    con.print(f"datasets: accepted [bold]{stats['datasets']['accepted']}[/], rejected [bold]{stats['datasets']['rejected']}[/]")
    con.print(f"time: total {tm.get('total_s', 0):.1f}s (plan {tm.get('plan_s') or 0:.1f}s, "
              f"start-up {tm.get('runtime_s') or 0:.1f}s in mode {tm.get('server_mode')}, flow start {tm.get('flow_start_s') or 0:.1f}s, "
              f"scoring {tm.get('score_s') or 0:.1f}s{f' = {ips:.1f} img/s' if ips else ''}, "
              f"barrier {tm.get('barrier_s') or 0:.1f}s, finalize+report {tm.get('finalize_s', 0) + tm.get('report_s', 0):.1f}s)")
    for name, b in (stats.get("barrier") or {}).items():
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in b.items() if k not in ("seconds", "rows", "prior_datasets"))
        if counts:
            con.print(f"{name}: {counts}")
    from flywheel.datasets import storage

    out = stats["output"]
    con.print(f"report: [bold]{storage.child(out, 'report.html')}[/]   stats: {storage.child(out, 'stats.json')}")


def register(app: typer.Typer) -> None:
    @app.command()
    def curate(
        recipe: str = typer.Option(..., "--recipe", "-r", help="stage1..stage6 or a recipe .yaml"),
        input: str = typer.Option(..., "--input", "-i", help="folder, .parquet, .tar, .jsonl edit pairs, dataset dir, name@vN, or s3://bucket/prefix/ (or one object) of these"),
        output: str = typer.Option(..., "--output", "-o", help="output directory (accepted/, rejected/, stats.json, report.html)"),
        name: Optional[str] = typer.Option(None, help="dataset name in the catalog (default: the output folder's name)"),
        workers: int = typer.Option(2, help="parallel workers (Ray tasks / actors)"),
        skip: str = typer.Option("", help="operators to skip, comma-separated"),
        set_: list[str] = typer.Option([], "--set", help="override a param: OP.PARAM=VALUE (repeatable)"),
        image_col: str = typer.Option("image", help="Parquet input: image column (bytes or paths)"),
        caption_col: str = typer.Option("caption", help="Parquet input: caption column"),
        caption: Optional[str] = typer.Option(None, "--caption", metavar="BACKEND",
                                              help="caption inputs that have no caption first (offline | transformers | openai), then judge"),
        allow_uncaptioned: bool = typer.Option(False, "--allow-uncaptioned",
                                               help="keep inputs without a caption (caption_origin=none); no operator rejects them for it"),
        reject_uncaptioned: bool = typer.Option(False, "--reject-uncaptioned",
                                                help="judge inputs without a caption as they are (token_length:missing)"),
        ship_inputs: bool = typer.Option(False, "--ship-inputs",
                                         help="this process reads the input and ships it to the Ray workers through the "
                                              "object store (an input on this machine's disk, workers elsewhere); "
                                              "default: every worker reads its own shards"),
    ) -> None:
        """Curate raw image-text data with a stage recipe into accepted/rejected datasets.

        When inputs have no caption and the recipe judges captions (token_length, clip), the run stops
        before it starts unless one of --caption, --allow-uncaptioned, --reject-uncaptioned or
        --skip clip,token_length says what to do with them."""
        chosen = [f for f, on in (("--caption", caption is not None), ("--allow-uncaptioned", allow_uncaptioned),
                                  ("--reject-uncaptioned", reject_uncaptioned)) if on]
        if len(chosen) > 1:
            raise UserError(f"{' and '.join(chosen)} exclude each other: pass one")
        mode = "caption" if caption is not None else "allow" if allow_uncaptioned else "reject" if reject_uncaptioned else None
        run_curate(recipe, input, output, name=name, workers=workers, skip=[s for s in skip.split(",") if s.strip()],
                   sets=set_, image_col=image_col, caption_col=caption_col, uncaptioned=mode, caption_backend=caption,
                   ship_inputs=ship_inputs)

    @app.command()
    def demo(
        out: str = typer.Option("demo-out", help="where the sample data and the results go"),
        n: int = typer.Option(60, help="approximate number of generated samples"),
        workers: int = typer.Option(2),
    ) -> None:
        """Generate a small varied sample set and run stage 1 on it with the embedded defaults."""
        from flywheel.demos import sample_data as demo_mod
        from flywheel.flows import server

        server.prestart()  # the local server (auto mode) and its runner come up while the samples are made
        con = _console()
        root = Path(out).resolve()
        run_dir = root / time.strftime("run-%Y%m%d-%H%M%S")
        con.print(f"generating sample data in {root / 'input'} ...")
        info = demo_mod.generate(root / "input", n=n)
        con.print(f"  {info['files']} files: {', '.join(f'{k} {v}' for k, v in info['kinds'].items())}")
        skip = demo_mod.unavailable_operators("stage1")
        if skip:
            con.print(f"[yellow]model operators skipped (no weights offline / not installed):[/] {', '.join(skip)} "
                      f"(see `flywheel models list`)")
        # the sample set's missing captions are there to be seen rejected as token_length:missing
        run_curate("stage1", str(root / "input"), str(run_dir), name="demo", workers=workers, skip=skip, sets=[],
                   image_col="image", caption_col="caption", uncaptioned="reject")
        con.print(f"\nopen the report: [bold]{run_dir / 'report.html'}[/]")
        con.print("why was a sample dropped?  flywheel explain SOURCE   e.g. flywheel explain broken/truncated.jpg")

    @app.command()
    def ops() -> None:
        """List the registered operators, their params, score columns and reasons."""
        from rich.table import Table

        from flywheel.filters import base
        from flywheel.filters.decode import Decode

        t = Table(show_lines=True)
        for c in ("operator", "params (default)", "scores", "reasons (fails when)", "kind"):
            t.add_column(c)
        for name, op in [(Decode.name, Decode)] + sorted(base.registry().items()):
            params = "\n".join(f"{k}={v.default!r}" for k, v in op.Params.model_fields.items())
            if op is Decode:
                kind = "decode step (first, always)"
            else:
                kind = ("barrier " if issubclass(op, base.Barrier) else "") + ("actor (setup)" if op.stateful() else "task")
            models = op().required_models()
            if models:
                kind += "\nmodels: " + ", ".join(models)
            reasons = "\n".join(f"{name}:{r.name} ({r.text()})" for r in op.rules)
            t.add_row(name, params, "\n".join(op.writes), reasons, kind)
        _console().print(t)

    @app.command()
    def recipes() -> None:
        """List the stage recipes and their operators."""
        from flywheel.filters import recipe as rc

        con = _console()
        for r in rc.available():
            rec = rc.load(r)
            ops = ", ".join(["broken_file (decode)"] + [s.name + ("" if s.op else " (not installed)") for s in rec.steps])
            con.print(f"[bold]{r}[/] ({rec.description}; work size {rec.work_size}px; {'+'.join(rec.tasks)}): {ops}")

    @app.command()
    def runs(limit: int = typer.Option(20)) -> None:
        """Recent runs recorded in the catalog."""
        from rich.table import Table

        from flywheel.catalog import Catalog

        t = Table()
        for c in ("run_id", "kind", "recipe", "status", "started", "rows/accepted/rejected", "output"):
            t.add_column(c)
        for r in Catalog().execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,)):
            s = json.loads(r["stats_json"] or "{}")
            t.add_row(r["run_id"], r["kind"], r["recipe"] or "", r["status"],
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started_at"] or 0)),
                      f"{s.get('rows', '')}/{s.get('accepted', '')}/{s.get('rejected', '')}", r["output"] or "")
        _console().print(t)

    @app.command()
    def explain(key: str = typer.Argument(..., help="a sample id (or its prefix) or a source")) -> None:
        """Why each row of this id or source was kept or dropped: operator, rule, score, threshold."""
        from flywheel.curation.explain import explain_rows

        con = _console()
        rows = explain_rows(key)
        if not rows:
            raise UserError(f"no row with id or source {key!r} in any dataset of the catalog; "
                            f"try `flywheel sql \"SELECT id, source FROM samples LIMIT 5\"`")
        for r in rows:
            con.print(r)

    @app.command()
    def sql(query: str = typer.Argument(..., help="DuckDB SQL over the catalog tables and `samples`"),
            limit: int = typer.Option(50, help="rows to print")) -> None:
        """Query the catalog (runs, datasets, op_stats, signals, routes, review_items, audit_log, users and
        tokens without their hashes, ...) and every dataset's rows (`samples`, with a `dataset` column;
        `ds_<name>` per dataset) with DuckDB. Read-only: one SELECT over these views, nothing else."""
        from rich.table import Table

        from flywheel.catalog import Catalog

        try:
            t = Catalog().query(query)
        except Exception as e:  # noqa: BLE001 - DuckDB's message says what is wrong with the SQL
            raise UserError(f"{type(e).__name__}: {e}") from None
        tab = Table()
        for c in t.column_names:
            tab.add_column(c)
        for row in t.slice(0, limit).to_pylist():
            tab.add_row(*[_cell(v) for v in row.values()])
        con = _console()
        con.print(tab)
        if t.num_rows > limit:
            con.print(f"... {t.num_rows - limit} more rows (--limit)")


def _cell(v) -> str:
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    s = str(v) if v is not None else ""
    return s if len(s) < 200 else s[:197] + "..."
