"""The Ray adapter: the only module that calls `ray.data` / `map_batches`.

Operators know nothing of Ray. Here a recipe becomes a Ray Data pipeline:
  shards ─▶ [read + decode + stateless operators]  (tasks)
         ─▶ [one stage per operator with setup()]  (actors, batch sized to the device)
         ─▶ [write part]                           (each block written atomically as one Parquet part)
Local Ray by default; `RAY_ADDRESS` points at a cluster. Batches are pyarrow tables
(`batch_format="pyarrow"`): no implicit pandas/numpy conversions.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.filters import base


def ensure_ray(workers: int | None = None) -> dict:
    """Start (or join) Ray once per process. Returns {"startup_s": ..., "address": ...}."""
    import ray

    t0 = time.perf_counter()
    # Start-up notices (token auth is on, progress bars off, deprecations) are not the user's business.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*only received .* input.*")
    warnings.filterwarnings("ignore", message=".*is deprecated in Ray.*")
    warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated.*")
    if not ray.is_initialized():
        addr = os.environ.get("RAY_ADDRESS")
        kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=True,
                      logging_level=logging.WARNING)
        if addr:
            ray.init(address=addr, **kwargs)
        else:
            # A logical CPU beyond the workers: Ray Data's read tasks must never wait behind actors
            # that hold every CPU (a 1-worker run would hang otherwise).
            ray.init(num_cpus=max(workers or 1, os.cpu_count() or 1) + 1, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return {"startup_s": time.perf_counter() - t0, "address": os.environ.get("RAY_ADDRESS", "local")}


def _atomic_write(table: pa.Table, out_dir: str) -> str:
    name = f"part-{uuid.uuid4().hex}.parquet"
    tmp = Path(out_dir) / f".{name}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, Path(out_dir) / name)
    return name


def _read_score(batch: pa.Table, steps, work_size, keep_work, decode_params, done_by_shard, ingest_dir,
                parts_dir, side_root=None, caption_fill=None) -> Iterator[pa.Table]:
    """Stage 1 (a stateless task): read a shard, decode once, run the stateless operators.
    When no model stage follows, each block is written here directly (`parts_dir`)."""
    from flywheel.curation.ingest import read_shard
    from flywheel.curation.scoring import Scorer
    from flywheel.filters.decode import Decode

    scorer = Scorer(steps, work_size, decode_step=True, keep_work=keep_work, decode_params=decode_params,
                    side_root=side_root)
    fill = None
    if caption_fill:
        from flywheel.curation.uncaptioned import shared

        fill = shared(caption_fill)
    for shard_json, shard_key in zip(batch.column("shard").to_pylist(), batch.column("key").to_pylist()):
        done = done_by_shard.get(shard_key, frozenset())
        for t in read_shard(json.loads(shard_json), done, max_bytes=Decode.Params(**(decode_params or {})).max_bytes):
            if "__ingest_stats__" in t.column_names:
                (Path(ingest_dir) / f"{shard_key}.json").write_text(t.column(0)[0].as_py())
                continue
            scored = scorer(fill(t) if fill else t)
            yield _summary(scored, _atomic_write(_strip(scored), parts_dir)) if parts_dir else scored


class _ActorScore:
    """A stage for operators with setup() (models): loaded once per actor, batched."""

    def __init__(self, steps, work_size, keep_work, parts_dir, side_root=None):
        from flywheel.curation.scoring import Scorer

        self.scorer = Scorer(steps, work_size, decode_step=False, keep_work=keep_work, side_root=side_root)
        self.scorer._setup()
        self.parts_dir = parts_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        scored = self.scorer(batch)
        if self.parts_dir:
            return _summary(scored, _atomic_write(_strip(scored), self.parts_dir))
        return scored


def _strip(t: pa.Table) -> pa.Table:
    """Drop working copies; keep `_t_*` timings out of the stored parts too."""
    return t.drop_columns([c for c in t.column_names if c.startswith("_")])


def _summary(t: pa.Table, part: str) -> pa.Table:
    timing = {c[3:]: float(sum(v or 0 for v in t.column(c).to_pylist())) for c in t.column_names if c.startswith("_t_")}
    return pa.table({"rows": [t.num_rows], "part": [part], "timing": [json.dumps(timing)]})


def split_stages(steps) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(task stage, actor stage) as (name, params) lists. Operators with setup() go to the actor
    stage, and so does a stateless one that reads a column an actor-stage operator writes (it must
    run after it); each stage keeps recipe order, so every operator runs after the writers of what
    it reads, as the plan checked."""
    tasks, actors, actor_writes = [], [], set()
    for s in steps:
        op = s.instance()
        if s.op.stateful() or actor_writes & set(op.reads):
            actors.append((s.name, s.params))
            actor_writes |= set(op.writes)
        else:
            tasks.append((s.name, s.params))
    return tasks, actors


def score_shards(
    shards: list[dict],
    shard_keys: list[str],
    recipe,
    parts_dir: str,
    ingest_dir: str,
    workers: int,
    done_by_shard: dict[str, frozenset] | None = None,
    on_progress: Callable[[int, dict], None] | None = None,
    side_root: str | None = None,
    caption_fill: dict | None = None,
) -> dict:
    """Run the scoring pipeline; every finished block lands in `parts_dir` as it completes
    (which is what makes a killed run resumable at sample level). Returns timing totals."""
    import ray

    stateless, stateful = split_stages(recipe.steps)
    items = [{"shard": json.dumps(s), "key": k} for s, k in zip(shards, shard_keys)]
    if not items:
        return {"timing": {}, "rows": 0}
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _read_score,
        fn_kwargs=dict(steps=stateless, work_size=recipe.work_size, keep_work=bool(stateful), decode_params=recipe.decode,
                       done_by_shard=done_by_shard or {}, ingest_dir=ingest_dir,
                       parts_dir=None if stateful else parts_dir, side_root=side_root, caption_fill=caption_fill),
        batch_size=1, batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=max(1, workers)), num_cpus=1,
    )
    if stateful:
        # One actor stage holds every model of the recipe (loaded once per actor; they share its
        # device). Ray fuses it with the read/decode stage above, so the working copies never
        # leave the worker, and no second actor pool can starve the first of CPUs.
        ops = [base.get(n) for n, _ in stateful]
        gpus = max(op.resources.num_gpus for op in ops)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        if gpus == 0 and cluster_gpus > 0:
            # the models share the cluster's GPUs: each actor gets an equal fraction
            gpus = min(1.0, cluster_gpus / max(1, workers))
        ds = ds.map_batches(
            _ActorScore,
            fn_constructor_kwargs=dict(steps=stateful, work_size=recipe.work_size, keep_work=False, parts_dir=parts_dir,
                                       side_root=side_root),
            batch_size=min(op.resources.batch_size for op in ops), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=max(op.resources.num_cpus for op in ops), num_gpus=gpus,
            max_restarts=0,  # a lost actor fails the run, which resumes at sample level when rerun
        )
    totals: dict[str, float] = {}
    rows = 0
    for summary in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for n, timing in zip(summary.column("rows").to_pylist(), summary.column("timing").to_pylist()):
            rows += n
            for k2, v in json.loads(timing).items():
                totals[k2] = totals.get(k2, 0.0) + v
            if on_progress:
                on_progress(n, totals)
    return {"timing": totals, "rows": rows}


def map_parquet(
    files: list[str],
    fn_class: type,
    fn_kwargs: dict,
    out_dir: str,
    *,
    batch_size: int,
    concurrency: int,
    num_gpus: float = 0.0,
    columns: list[str] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Run `fn_class(**fn_kwargs)` as Ray actors (`__call__(pa.Table) -> pa.Table`) over Parquet
    files; each output block is written atomically as one part in `out_dir`. Returns part paths."""
    import ray

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if not files:
        return []
    ds = ray.data.read_parquet(files, columns=columns)
    ds = ds.map_batches(_Wrap, fn_constructor_kwargs={"cls": fn_class, "kwargs": fn_kwargs, "out_dir": out_dir},
                        batch_size=batch_size, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=max(1, concurrency)),
                        num_gpus=num_gpus)
    parts = []
    for summary in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for n, part in zip(summary.column("rows").to_pylist(), summary.column("part").to_pylist()):
            parts.append(str(Path(out_dir) / part))
            if on_progress:
                on_progress(n)
    return parts


class _Wrap:
    def __init__(self, cls, kwargs, out_dir):
        self.fn = cls(**kwargs)
        self.out_dir = out_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = self.fn(batch)
        return pa.table({"rows": [out.num_rows], "part": [_atomic_write(out, self.out_dir)]})
