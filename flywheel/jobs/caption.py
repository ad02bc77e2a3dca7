"""The captioning job: prepare -> caption parts -> finalize (the Prefect flow is `flywheel.flows.caption`).

The caption step runs `flywheel.captioning.annotate.Captioner` over the input dataset's Parquet
files, either as Ray actors through `flywheel.curation.engine.map_parquet` (workers >= 1; `num_gpus` per
actor for the transformers backend on GPU) or in this process (workers = 0, no Ray). Each output
block is written atomically as a part in the run's state directory; finalize checks that every
input row is there and writes the new dataset version (kind "captioned", parent = the input).

Resume: captions are written to the cache as each batch finishes, so rerunning a killed run
recomputes nothing that was cached; the parts of the killed run are discarded and rewritten from
the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import config

class CaptionError(Exception):
    """A user error (bad input, unknown type or backend); the message says what to do next."""


def prepare(input: str, output: str, *, types: list[str], backend: str, backend_kwargs: dict | None = None,
            options: dict | None = None, name: str | None = None, workers: int = 1, batch_size: int = 16,
            num_gpus: float = 0.0) -> str:
    """Validate the request and write the run's plan; returns the state directory."""
    from flywheel.captioning.backends import BACKENDS
    from flywheel.captioning.types import CaptionOptions
    from flywheel.datasets import CAPTION_TYPES
    from flywheel.catalog import open_dataset

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
    out = Path(output).resolve()
    if out.exists() and any(out.iterdir()):
        raise CaptionError(f"{out} exists and is not empty; datasets are immutable, pass a new --output directory")
    plan = {
        "input": str(ds.path), "input_ref": ds.ref, "rows": len(ds), "files": [str(f) for f in ds.files()],
        "output": str(out), "name": name or out.name, "types": list(types), "backend": backend,
        "backend_kwargs": backend_kwargs or {}, "options": options or {}, "workers": workers,
        "batch_size": batch_size, "num_gpus": num_gpus,
    }
    key = hashlib.sha256(json.dumps({k: plan[k] for k in ("input", "types", "backend", "backend_kwargs", "options")},
                                    sort_keys=True).encode()).hexdigest()[:16]
    state = config.state_dir() / f"caption-{key}"
    if state.exists():
        shutil.rmtree(state)  # a killed run's parts: the cache holds its captions
    (state / "parts").mkdir(parents=True)
    plan["run_id"] = f"caption-{key}-{uuid.uuid4().hex[:6]}"
    (state / "plan.json").write_text(json.dumps(plan, indent=2))
    return str(state)


def _captioner_kwargs(plan: dict) -> dict:
    return {"types": plan["types"], "backend": plan["backend"], "backend_kwargs": plan["backend_kwargs"],
            "options": plan["options"], "cache_path": str(config.cache_dir("captions") / "captions.db")}


def caption_parts(state: str, on_progress: Callable[[int], None] | None = None) -> str:
    """Caption every input row into parts under `state/parts`; returns the state directory."""
    from flywheel.captioning.annotate import Captioner

    plan = json.loads((Path(state) / "plan.json").read_text())
    parts = Path(state) / "parts"
    t0 = time.perf_counter()
    kwargs = _captioner_kwargs(plan)
    timing: dict = {}
    if plan["workers"] >= 1:
        from flywheel.curation import engine

        # one CPU beside the caption actors for the Parquet read tasks (else a 1-worker local run hangs)
        timing["ray_startup_s"] = engine.ensure_ray(plan["workers"] + 1)["startup_s"]
        engine.map_parquet(plan["files"], Captioner, kwargs, str(parts), batch_size=plan["batch_size"],
                           concurrency=plan["workers"], num_gpus=plan["num_gpus"], on_progress=on_progress)
        stats: dict = {}
    else:
        cap = Captioner(**kwargs)
        for f in plan["files"]:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=plan["batch_size"]):
                out = cap(pa.Table.from_batches([batch]))
                name = f"part-{uuid.uuid4().hex}.parquet"
                pq.write_table(out, parts / f".{name}.tmp", compression="zstd")
                os.replace(parts / f".{name}.tmp", parts / name)
                if on_progress:
                    on_progress(out.num_rows)
        stats = dict(cap.stats)
    timing["caption_s"] = time.perf_counter() - t0
    (Path(state) / "caption_stats.json").write_text(json.dumps({"timing": timing, "captioner": stats}))
    return state


def finalize(state: str) -> str:
    """Write the captioned dataset version from the parts; returns its directory."""
    from flywheel.catalog import Catalog
    from flywheel.datasets import DatasetWriter

    plan = json.loads((Path(state) / "plan.json").read_text())
    run = json.loads((Path(state) / "caption_stats.json").read_text())
    files = sorted((Path(state) / "parts").glob("part-*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if rows != plan["rows"]:
        raise RuntimeError(f"captioning produced {rows} rows for {plan['rows']} input rows; rerun the command "
                           "(cached captions are kept)")
    counts: dict[str, int] = {"rows": rows}
    revision = None
    cat = Catalog()
    with DatasetWriter(plan["output"], name=plan["name"], kind="captioned", catalog=cat,
                       parents=[plan["input_ref"]], run_id=plan["run_id"],
                       extra={"caption": {k: plan[k] for k in ("types", "backend", "options")}}) as w:
        for f in files:
            t = pq.read_table(f)
            for errs in t.column("caption_errors").to_pylist():
                for e in errs or []:
                    counts[e] = counts.get(e, 0) + 1
            if revision is None and t.num_rows:
                revision = t.column("caption_model_revision")[0].as_py()
            w.write(t)
        w.manifest.extra["caption"]["model_revision"] = revision
        w.manifest.counts = counts
    stats = {"rows": rows, "errors": {k: v for k, v in counts.items() if k != "rows"}, "dataset": w.manifest.ref,
             "output": plan["output"], "backend": plan["backend"], "model_revision": revision, **run}
    params = {k: plan[k] for k in ("types", "backend", "backend_kwargs", "options", "workers")}
    params["backend_kwargs"] = {k: ("***" if k == "api_key" else v) for k, v in plan["backend_kwargs"].items()}
    cat.start_run(plan["run_id"], "caption", input=plan["input_ref"], output=plan["output"], params=params,
                  code_version=config.code_version())
    cat.finish_run(plan["run_id"], "finished", stats)
    (Path(state) / "result.json").write_text(json.dumps(stats, indent=2))
    return state
