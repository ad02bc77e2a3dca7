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
