"""Prefect flows. Tasks pass paths and ids, never data frames or Ray object refs.

`flywheel curate` runs the flow inside `flywheel.flows.server.session()`: against the local
server it reuses (or Prefect's temporary server, FLYWHEEL_SERVER=off); with `PREFECT_API_URL`,
the same flow reports to that server (deployments in `deploy/`). Retries go on the I/O-bound
steps only.
"""

from __future__ import annotations

from typing import Callable

from prefect import flow, task

from flywheel.curation import pipeline


@task(name="prepare", retries=0)
def prepare_task(recipe: str, input: str, output: str, options: dict) -> str:
    return pipeline.prepare(recipe, input, output, **options)["state"]


@task(name="score", retries=0)
def score_task(state: str) -> str:
    pipeline.score(state, on_progress=_PROGRESS.get("cb"))
    return state


@task(name="barrier")
def barrier_task(state: str) -> str:
    pipeline.barrier(state)
    return state


@task(name="finalize", retries=1, retry_delay_seconds=2)
def finalize_task(state: str) -> str:
    stats = pipeline.finalize(state)
    return stats["output"]


@task(name="report", retries=1, retry_delay_seconds=2)
def report_task(state: str) -> str:
    return pipeline.report(state)


_PROGRESS: dict[str, Callable] = {}


@flow(name="curate", log_prints=False, persist_result=False)
def curate_flow(recipe: str | None = None, input: str | None = None, output: str | None = None,
                options: dict | None = None, state: str | None = None, keep_state: bool = False) -> str:
    """prepare -> score (Ray) -> barrier (dedup, distribution) -> finalize -> report.

    The CLI runs `pipeline.prepare` itself first (the preflight fails in seconds, before Prefect
    starts) and passes the prepared `state`; a deployment passes recipe/input/output instead."""
    if state is None:
        state = prepare_task(recipe, input, output, options or {})
    state = score_task(state)
    state = barrier_task(state)
    out = finalize_task(state)
    report_task(state)
    if not keep_state:
        pipeline.cleanup(state)
    return out


def run_dir(output_root: str, name: str) -> str:
    """A new output folder per deployment run under `output_root`: datasets are immutable, so a
    scheduled run never reuses one (two runs at once get two folders; the catalog numbers the
    versions)."""
    import os
    import time
    from pathlib import Path

    from prefect.runtime import flow_run

    rid = (flow_run.get_id() or os.urandom(4).hex())[:8]
    return str(Path(os.path.expandvars(output_root)).expanduser() / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{rid}")


@flow(name="curate-stage", log_prints=False, persist_result=False)
def curate_stage_flow(recipe: str, input: str, output_root: str, name: str, options: dict | None = None) -> dict:
    """What a curation deployment runs: `recipe` (stage1..stage6 or a .yaml) over `input` into a new
    folder under `output_root`; the accepted rows become the next version of dataset `name`."""
    import json
    import os
    from pathlib import Path

    out = run_dir(output_root, name)
    curate_flow(recipe=recipe, input=os.path.expandvars(input), output=out, options={**(options or {}), "name": name})
    stats = json.loads((Path(out) / "stats.json").read_text())
    return {"output": out, "datasets": stats.get("datasets"), "rows": stats.get("rows"), "accepted": stats.get("accepted")}
