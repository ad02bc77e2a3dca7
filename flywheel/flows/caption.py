"""The captioning flow: the job's steps (`flywheel.jobs.caption`) as Prefect tasks; paths in, paths out."""

from __future__ import annotations

from typing import Callable

from prefect import flow, task

from flywheel.jobs.caption import caption_parts, finalize
from flywheel.lifecycle import Job

_PROGRESS: dict[str, Callable[[int], None]] = {}


@task(name="caption")
def caption_task(state: str) -> str:
    return caption_parts(state, _PROGRESS.get("cb"))


@task(name="caption-finalize", retries=1, retry_delay_seconds=2)
def finalize_task(state: str) -> str:
    return finalize(state)


@flow(name="caption", log_prints=False, persist_result=False)
def caption_flow(state: str, keep_state: bool = False) -> dict:
    """Caption the dataset a `prepare`d state names into a new version; returns the run's stats."""
    state = caption_task(state)
    state = finalize_task(state)
    job = Job(state)
    stats = job.read_json("result.json")
    if not keep_state:
        job.cleanup()
    return stats


@flow(name="caption-dataset", persist_result=False)
def caption_dataset_flow(input: str, output_root: str, name: str, types: list[str], backend: str = "offline",
                         backend_kwargs: dict | None = None, options: dict | None = None, workers: int = 1) -> dict:
    """What the captioning deployment runs: caption dataset `input` (name@vN or name@latest) into the
    next version of `name`, in a new folder under `output_root`."""
    from flywheel.flows.curate import run_dir
    from flywheel.jobs.caption import prepare

    state = prepare(input, run_dir(output_root, name), types=types, backend=backend, backend_kwargs=backend_kwargs,
                    options=options, name=name, workers=workers)
    return caption_flow(state)
