"""The captioning job: prepare -> caption parts -> finalize (the Prefect flow is `flywheel.flows.caption`),
on the shared job lifecycle (`flywheel.lifecycle.Job`).

The caption step runs `flywheel.captioning.annotate.Captioner` over the input dataset's Parquet
files, either as Ray actors through `flywheel.curation.engine.map_parquet` (workers >= 1; `num_gpus` per
actor for the transformers backend on GPU) or in this process (workers = 0, no Ray). A unit is one
input file: in this process each file commits as soon as its parts are written; on Ray the files of
one pass commit together when the pass ends. Finalize checks that every file is committed and every
input row is there, and writes the new dataset version (kind "captioned", parent = the input).

Resume: the same command finds the state again and skips committed files. Rows of a file cut short
by a kill are captioned again, but captions are written to the cache as each batch finishes, so
nothing that was cached is generated twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import config
from flywheel.lifecycle import Job


class CaptionError(Exception):
    """A user error (bad input, unknown type or backend); the message says what to do next."""


def prepare(input: str, output: str, *, types: list[str], backend: str, backend_kwargs: dict | None = None,
            options: dict | None = None, name: str | None = None, workers: int = 1, batch_size: int = 16,
            num_gpus: float = 0.0) -> str:
    """Validate the request and write (or find again) the run's plan; returns the state directory."""
    from flywheel.captioning.backends import BACKENDS
    from flywheel.captioning.types import CaptionOptions
    from flywheel.catalog import open_dataset
    from flywheel.datasets import CAPTION_TYPES

    bad = [t for t in types if t not in CAPTION_TYPES]
    if bad or not types:
        raise CaptionError(f"unknown caption types {bad or types}; use --types with some of {','.join(CAPTION_TYPES)}")
    if backend not in BACKENDS:
        raise CaptionError(f"unknown backend {backend!r}; use --backend {'|'.join(BACKENDS)}")
    try:
        CaptionOptions(**(options or {}))
    except ValueError as e:
        raise CaptionError(f"bad caption options: {e}") from None
    try:
        ds = open_dataset(input)
    except (FileNotFoundError, KeyError) as e:
        raise CaptionError(f"{e}") from None
    if len(ds) == 0:
        raise CaptionError(f"{ds.ref} has no rows, so there is nothing to caption and nothing was written; caption the "
                           "dataset a curation run accepted (its OUT/accepted), or check why that run accepted nothing "
                           "(`flywheel sql` over its rejected rows)")
    out = Path(output).resolve()
    if out.exists() and any(out.iterdir()):
        raise CaptionError(f"{out} exists and is not empty; datasets are immutable, pass a new --output directory")
    key = {"input": str(ds.path), "types": list(types), "backend": backend, "backend_kwargs": backend_kwargs or {},
           "options": options or {}}
    plan = {**key, "input_ref": ds.ref, "rows": len(ds), "output": str(out), "name": name or out.name,
            "workers": workers, "batch_size": batch_size, "num_gpus": num_gpus}
    params = {"types": list(types), "backend": backend, "options": options or {}, "workers": workers,
              "backend_kwargs": {k: ("***" if k == "api_key" else v) for k, v in (backend_kwargs or {}).items()}}
    job = Job.prepare("caption", key, plan, [str(f) for f in ds.files()],
                      run={"input": ds.ref, "output": str(out), "params": params})
    return str(job.state)


def _captioner_kwargs(plan: dict) -> dict:
    return {"types": plan["types"], "backend": plan["backend"], "backend_kwargs": plan["backend_kwargs"],
            "options": plan["options"], "cache_path": str(config.cache_dir("captions") / "captions.db")}


def caption_parts(state: str, on_progress: Callable[[int], None] | None = None) -> str:
    """Caption every uncommitted input file into parts; returns the state directory."""
    from flywheel.captioning.annotate import Captioner

    job = Job(state)
    plan = job.plan
    todo = job.pending()
    if on_progress and len(todo) < len(plan["units"]):
        on_progress(job.committed_rows())
    t0 = time.perf_counter()
    kwargs = _captioner_kwargs(plan)
    timing: dict = {}
    stats: dict = {}
    with job.step("caption"):
        if plan["workers"] >= 1 and todo:
            from flywheel.curation import engine

            # one CPU beside the caption actors for the Parquet read tasks (else a 1-worker local run hangs)
            timing["ray_startup_s"] = engine.ensure_ray(plan["workers"] + 1)["startup_s"]
            parts = engine.map_parquet(todo, Captioner, kwargs, str(job.parts_dir), batch_size=plan["batch_size"],
                                       concurrency=plan["workers"], num_gpus=plan["num_gpus"], on_progress=on_progress)
            job.commit(todo, parts)
        elif todo:
            cap = Captioner(**kwargs)
            for f in todo:
                names = []
                for batch in pq.ParquetFile(f).iter_batches(batch_size=plan["batch_size"]):
                    out = cap(pa.Table.from_batches([batch]))
                    names.append(job.write_part(out))
                    if on_progress:
                        on_progress(out.num_rows)
                job.commit(f, names)
            stats = dict(cap.stats)
        timing["caption_s"] = time.perf_counter() - t0
        job.write_json("caption_stats.json", {"timing": timing, "captioner": stats, "units_resumed":
                                              len(plan["units"]) - len(todo)})
    return state


def finalize(state: str) -> str:
    """Write the captioned dataset version from the committed parts; returns the state directory."""
    job = Job(state)
    plan = job.plan
    run = job.read_json("caption_stats.json", {})
    with job.step("finalize"):
        counts: dict[str, int] = {"rows": plan["rows"]}
        revision = None
        for f in job.parts():
            t = pq.read_table(f, columns=["caption_errors", "caption_model_revision"])
            for errs in t.column("caption_errors").to_pylist():
                for e in errs or []:
                    counts[e] = counts.get(e, 0) + 1
            if revision is None and t.num_rows:
                revision = t.column("caption_model_revision")[0].as_py()
        caption = {**{k: plan[k] for k in ("types", "backend", "options")}, "model_revision": revision}
        m = job.finalize(plan["output"], name=plan["name"], kind="captioned", parents=[plan["input_ref"]],
                         rows=plan["rows"], counts=counts, extra={"caption": caption})
        job.finish({"rows": m.rows, "errors": {k: v for k, v in counts.items() if k != "rows"}, "dataset": m.ref,
                    "output": plan["output"], "backend": plan["backend"], "model_revision": revision, **run})
    return state
