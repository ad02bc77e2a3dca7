"""The Ray adapter: the only module that imports `ray`.

Operators know nothing of Ray. A recipe runs one of two ways:
- only stateless operators (stage 1 on CPU): plain Ray tasks, a few shards each, at most
  `workers` in flight; each task reads, decodes once, scores and writes its parts itself, and
  returns one-row summaries (`_run_tasks`);
- with model operators on CPU: a pool of `workers` actors, each holding every operator (models
  loaded once per actor), called with a few shards at a time as the tasks are (`_run_pool`); a
  process that runs many commands keeps the pool between runs (`KEEP_POOL`);
- with model operators on a GPU: a Ray Data pipeline, whose CPU read stage overlaps the GPU work
    shards ─▶ [read + decode + stateless operators]  (tasks)
           ─▶ [one stage per operator with setup()]  (actors, batch sized to the device)
           ─▶ [write part]                           (each block written atomically as one Parquet part)
Local Ray by default; `RAY_ADDRESS` points at a cluster. Batches are pyarrow tables
(`batch_format="pyarrow"`): no implicit pandas/numpy conversions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa

from flywheel.datasets import storage, write_parquet
from flywheel.filters import base


def ensure_ray(workers: int | None = None, tasks_only: bool = False) -> dict:
    """Start (or join) Ray once per process. Returns {"startup_s": ..., "address": ...}.

    `tasks_only`: the caller runs plain tasks, at most `workers` at once (a stateless recipe,
    `_run_tasks`): a local Ray then gets exactly `workers` CPUs. Ray prestarts one Python worker
    per logical CPU, and each spare one imports Ray for nothing while the real workers need the
    cores (on a 2-core machine, a third worker cost as much CPU as a worker's first 500 images)."""
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
            cpus = max(1, workers or 1) if tasks_only else max(workers or 1, os.cpu_count() or 1) + 1
            ray.init(num_cpus=cpus, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return {"startup_s": time.perf_counter() - t0, "address": os.environ.get("RAY_ADDRESS", "local")}


def object_store_stats() -> dict:
    """The cluster's object-store spill figures, summed over its live nodes by a raylet
    (`FormatGlobalMemoryInfo`, what `ray memory --stats-only` prints): cumulative since each node
    started, so a run reports the difference of two readings. {} when Ray cannot say."""
    import ray
    from ray._private import internal_api

    try:
        state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)
        st = internal_api.get_memory_info_reply(state, timeout_seconds=10).store_stats
    except Exception:  # noqa: BLE001 - figures for the report only; never fail a run for them
        return {}
    return {"spilled_bytes": int(st.spilled_bytes_total), "spilled_objects": int(st.spilled_objects_total),
            "restored_bytes": int(st.restored_bytes_total), "available_bytes": int(st.object_store_bytes_avail),
            "nodes": sum(1 for n in ray.nodes() if n["Alive"])}


def spill_delta(before: dict, after: dict) -> dict:
    """What one run added to the cluster's spill counters (another job on a shared cluster adds too)."""
    if not before or not after:
        return {}
    return {**{k: max(0, after[k] - before.get(k, 0)) for k in ("spilled_bytes", "spilled_objects", "restored_bytes")},
            "available_bytes": after["available_bytes"], "nodes": after["nodes"]}


def _atomic_write(table: pa.Table, out_dir: str, name: str | None = None) -> str:
    """Write one part (temp file, then rename). A `name` given makes the write idempotent: a task
    Ray reruns after its node died writes the same parts under the same names (the temp name stays
    unique: a zombie attempt and its rerun may write at once)."""
    name = name or f"part-{uuid.uuid4().hex}.parquet"
    tmp = Path(out_dir) / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    write_parquet(table, tmp)
    os.replace(tmp, Path(out_dir) / name)
    return name


def _read_score(batch: pa.Table, steps, work_size, keep_work, decode_params, done_by_shard, ingest_dir,
                parts_dir, side_root=None, caption_fill=None) -> Iterator[pa.Table]:
    """Stage 1 of the Ray Data pipeline (a stateless task ahead of the model actors): read a
    shard, decode once, run the stateless operators."""
    pairs = zip(batch.column("shard").to_pylist(), batch.column("key").to_pylist())
    yield from _score_shard_group(list(pairs), steps, work_size, keep_work, decode_params, done_by_shard,
                                  ingest_dir, parts_dir, side_root, caption_fill)


_SCORERS: dict[str, object] = {}


def _scorer(steps, work_size, keep_work, decode_params, side_root):
    """One Scorer per worker process and recipe: operators are built and set up once, not once
    per task (a worker runs hundreds of shard tasks)."""
    from flywheel.curation.scoring import Scorer

    key = json.dumps([steps, work_size, keep_work, decode_params], sort_keys=True, default=str)
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = Scorer(steps, work_size, decode_step=True, keep_work=keep_work, decode_params=decode_params)
    _SCORERS[key].set_side_root(side_root)  # the run's output; one scorer serves every run of its recipe
    return _SCORERS[key]


def _score_shard_group(pairs, steps, work_size, keep_work, decode_params, done_by_shard, ingest_dir, parts_dir,
                       side_root=None, caption_fill=None, attempt: str | None = None) -> Iterator[pa.Table]:
    """Read shards, decode once, run the stateless operators. When no model stage follows, each
    block is written here directly (`parts_dir`) and only a one-row summary leaves the worker.
    `caption_fill`: what happens to rows without a caption (`curation.uncaptioned`), before decoding."""
    from flywheel.filters.decode import Decode

    scorer = _scorer(steps, work_size, keep_work, decode_params, side_root)
    fill = _filler(caption_fill)
    max_bytes = Decode.Params(**(decode_params or {})).max_bytes
    for shard_json, shard_key in pairs:
        for i, t in _shard_blocks(json.loads(shard_json), shard_key, done_by_shard, max_bytes, ingest_dir):
            scored = scorer(fill(t) if fill else t)
            if not parts_dir:
                yield scored
                continue
            yield _write_block(scored, parts_dir, _part_name(attempt, shard_key, i) if attempt else None)


def _shard_blocks(shard: dict, shard_key: str, done_by_shard, max_bytes: int, ingest_dir) -> Iterator[tuple[int, pa.Table]]:
    """A shard's blocks as ingest cuts them, (index, rows not done yet); the shard's ingest counts
    (its last block) go to `ingest_dir` instead."""
    from flywheel.curation.ingest import read_shard

    for i, t in enumerate(read_shard(shard, done_by_shard.get(shard_key, frozenset()), max_bytes=max_bytes)):
        if "__ingest_stats__" in t.column_names:
            (Path(ingest_dir) / f"{shard_key}.json").write_text(t.column(0)[0].as_py())
            continue
        yield i, t


def _filler(caption_fill):
    """The rows-without-caption step of `curation.uncaptioned`, or None."""
    if not caption_fill:
        return None
    from flywheel.curation.uncaptioned import shared

    return shared(caption_fill)


def _write_block(scored: pa.Table, parts_dir: str, name: str | None) -> pa.Table:
    """Write a scored block as a part; its one-row summary (what leaves the worker)."""
    return _summary(scored, _atomic_write(_strip(scored), parts_dir, name))


def _score_block_task(block: pa.Table, shard_key: str, index: int, steps, work_size, decode_params, parts_dir,
                      side_root, caption_fill, attempt) -> list[pa.Table]:
    """A Ray task over one block the driver read and shipped (`_run_shipped`): scored and written
    as `_score_shard_group` does for the same block of the same shard (same part name)."""
    scorer = _scorer(steps, work_size, False, decode_params, side_root)
    fill = _filler(caption_fill)
    scored = scorer(fill(block) if fill else block)
    return [_write_block(scored, parts_dir, _part_name(attempt, shard_key, index))]


def _part_name(attempt: str, shard_key: str, block: int) -> str:
    """The name of a shard's block in one scoring attempt: the same in every rerun of the task
    within the attempt (so a rerun overwrites, never adds), new in the next attempt (a resumed run
    reads only rows not done, so its blocks differ and must not replace earlier parts)."""
    import hashlib

    return f"part-{hashlib.sha256(f'{attempt}/{shard_key}'.encode()).hexdigest()[:20]}-{block:05d}.parquet"


def _score_task(pairs, steps, work_size, decode_params, done_by_shard, ingest_dir, parts_dir, side_root, caption_fill=None,
                attempt=None):
    """A Ray task over a few shards (stateless recipes): returns the blocks' summaries only."""
    return [s for s in _score_shard_group(pairs, steps, work_size, False, decode_params, done_by_shard, ingest_dir,
                                          parts_dir, side_root, caption_fill, attempt)]


class _PoolActor:
    """A worker of the CPU pool (`_run_pool`): every operator of the recipe, the models loaded
    once when the actor starts; reads, decodes and scores a few shards per call and writes their
    parts itself, as `_score_task` does (the same part names), returning one-row summaries."""

    def __init__(self, steps, work_size, decode_params):
        self.args = (steps, work_size, decode_params)
        _scorer(steps, work_size, False, decode_params, None)._setup()  # the models load now, not in the first call

    def ready(self) -> int:
        return os.getpid()

    def score(self, pairs, done_by_shard, ingest_dir, parts_dir, side_root, caption_fill, attempt) -> list[pa.Table]:
        steps, work_size, decode_params = self.args
        return list(_score_shard_group(pairs, steps, work_size, False, decode_params, done_by_shard, ingest_dir,
                                       parts_dir, side_root, caption_fill, attempt))


# The pool of the last recipe run with models on CPU: (key, actors). A command's run ends it
# (its actors hold CPUs); a process that runs many commands (the local server's runner,
# `flywheel.cli.runner`) sets KEEP_POOL and the next run of the same operators finds the
# models loaded.
_POOL: list = []
_POOL_LOCK = threading.RLock()
KEEP_POOL = False


def end_pool() -> None:
    import ray

    with _POOL_LOCK:
        while _POOL:
            _key, actors, _spec = _POOL.pop()
            for a in actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)


def pool_spec() -> dict | None:
    """What the kept pool was made for (JSON): `warm_pool(spec)` makes the same one again (the
    runner, started again, loads the last recipe's models before a command asks for them)."""
    return dict(_POOL[0][2], workers=len(_POOL[0][1])) if _POOL else None


def warm_pool(spec: dict) -> None:
    _pool(**spec)


def _pool(steps, work_size, decode_params, num_cpus: float, workers: int, env: dict) -> list:
    with _POOL_LOCK:  # the runner warms a pool in a thread while a command may already ask for one
        return _pool_locked(steps, work_size, decode_params, num_cpus, workers, env)


def _pool_locked(steps, work_size, decode_params, num_cpus: float, workers: int, env: dict) -> list:
    import ray

    key = json.dumps([steps, work_size, decode_params, num_cpus, env], sort_keys=True, default=str)
    if _POOL and _POOL[0][0] != key:
        end_pool()
    if not _POOL:
        _POOL.append((key, [], dict(steps=steps, work_size=work_size, decode_params=decode_params, num_cpus=num_cpus,
                                    env=env)))
    actors = _POOL[0][1]
    if len(actors) < workers:
        cls = ray.remote(num_cpus=num_cpus, max_restarts=0, scheduling_strategy="SPREAD", **env)(_PoolActor)
        new = [cls.remote(steps, work_size, decode_params) for _ in range(workers - len(actors))]
        ray.get([a.ready.remote() for a in new])  # a model that cannot load fails here, before any shard is read
        actors.extend(new)
    return actors[:workers]


def _run_pool(items, steps, recipe, parts_dir, ingest_dir, workers, done_by_shard, side_root, caption_fill=None,
              num_cpus: float = 1) -> Iterator[pa.Table]:
    """Recipes with models, on CPU: `workers` actors, each holding every operator (models loaded
    once per actor), each call a few shards read, decoded, scored and written in one process,
    as `_run_tasks` does for stateless recipes. On CPU the Ray Data pipeline's separate read
    stage only moved working copies between processes that share the same cores; its actors
    were new for every run (a warm runner's second run of stage 1 on 20 images spent 4.7 s
    starting them). A lost actor fails the run (resumed at sample level when rerun), as before;
    an operator's exception fails it too."""
    import ray

    actors = _pool(steps, recipe.work_size, recipe.decode, num_cpus, max(1, workers), _remote_env(items))
    attempt = uuid.uuid4().hex
    groups = _groups(items, workers)
    pending = list(reversed(groups))
    busy: dict = {}  # ref -> actor
    free = list(actors)
    try:
        while pending or busy:
            while pending and free:
                g = pending.pop()
                pairs = [(it["shard"], it["key"]) for it in g]
                done = {k: done_by_shard[k] for _, k in pairs if k in done_by_shard}
                a = free.pop()
                busy[a.score.remote(pairs, done, ingest_dir, parts_dir, side_root, caption_fill, attempt)] = a
            ready, _ = ray.wait(list(busy), num_returns=1)
            free.append(busy.pop(ready[0]))
            yield from ray.get(ready[0])
    except BaseException:
        end_pool()  # an actor in an unknown state (or dead) is never reused
        raise
    if not KEEP_POOL:
        end_pool()


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
    ship: bool = False,
) -> dict:
    """Run the scoring pipeline; every finished block lands in `parts_dir` as it completes
    (which is what makes a killed run resumable at sample level). Returns timing totals.
    `ship`: the driver reads the inputs and ships them to the workers (`_run_shipped`)."""
    import ray

    stateless, stateful = split_stages(recipe.steps)
    items = [{"shard": json.dumps(s), "key": k} for s, k in zip(shards, shard_keys)]
    if not items:
        return {"timing": {}, "rows": 0}
    totals: dict[str, float] = {}
    rows = 0

    def add(summary: pa.Table) -> None:
        nonlocal rows
        for n, timing in zip(summary.column("rows").to_pylist(), summary.column("timing").to_pylist()):
            rows += n
            for k2, v in json.loads(timing).items():
                totals[k2] = totals.get(k2, 0.0) + v
            if on_progress:
                on_progress(n, totals)

    if ship and stateful:
        raise ValueError("inputs are shipped only to a recipe without model operators (plain tasks)")
    if stateful and not _wants_gpu(stateful, workers):
        ops = [base.get(n) for n, _ in stateful]
        for summary in _run_pool(items, stateless + stateful, recipe, parts_dir, ingest_dir, workers, done_by_shard or {},
                                 side_root, caption_fill, num_cpus=max(op.resources.num_cpus for op in ops)):
            add(summary)
        return {"timing": totals, "rows": rows}
    if not stateful:
        shipped: dict = {}
        run = _run_shipped if ship else _run_tasks
        for summary in run(items, stateless, recipe, parts_dir, ingest_dir, workers, done_by_shard or {},
                           side_root, caption_fill, **({"shipped": shipped} if ship else {})):
            add(summary)
        return {"timing": totals, "rows": rows, **({"shipped": shipped} if ship else {})}
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        _read_score,
        fn_kwargs=dict(steps=stateless, work_size=recipe.work_size, keep_work=bool(stateful), decode_params=recipe.decode,
                       done_by_shard=done_by_shard or {}, ingest_dir=ingest_dir,
                       parts_dir=None if stateful else parts_dir, side_root=side_root, caption_fill=caption_fill),
        batch_size=1, batch_format="pyarrow", compute=ray.data.TaskPoolStrategy(size=max(1, workers)), num_cpus=1,
        **_remote_env(items),
    )
    if stateful:
        # One actor stage holds every model of the recipe (loaded once per actor; they share its
        # device). Ray fuses it with the read/decode stage above, so the working copies never
        # leave the worker, and no second actor pool can starve the first of CPUs.
        ops = [base.get(n) for n, _ in stateful]
        gpus = _gpus(stateful, workers)
        ds = ds.map_batches(
            _ActorScore,
            fn_constructor_kwargs=dict(steps=stateful, work_size=recipe.work_size, keep_work=False, parts_dir=parts_dir,
                                       side_root=side_root),
            batch_size=min(op.resources.batch_size for op in ops), batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
            num_cpus=max(op.resources.num_cpus for op in ops), num_gpus=gpus,
            max_restarts=0,  # a lost actor fails the run, which resumes at sample level when rerun
        )
    for summary in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        add(summary)
    return {"timing": totals, "rows": rows}


def _groups(items: list, workers: int) -> list[list]:
    """Shards per call: SHARDS_PER_TASK, or one when there are too few shards to give every
    worker two calls (a small run's shards spread over the workers instead of queueing on one)."""
    per = SHARDS_PER_TASK if len(items) >= 2 * SHARDS_PER_TASK * max(1, workers) else 1
    return [items[i:i + per] for i in range(0, len(items), per)]


def _gpus(stateful, workers: int) -> float:
    """GPUs per model actor: what an operator asks for, or an equal share of the cluster's GPUs."""
    import ray

    gpus = max(base.get(n).resources.num_gpus for n, _ in stateful)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus == 0 and cluster_gpus > 0:
        gpus = min(1.0, cluster_gpus / max(1, workers))
    return gpus


def _wants_gpu(stateful, workers: int) -> bool:
    """Models on a GPU keep the Ray Data pipeline: its read/decode tasks on the CPUs overlap the
    actors' GPU work. On CPU (`_run_pool`) there is nothing to overlap."""
    return _gpus(stateful, workers) > 0


# Shards per Ray task: a task is ~0.3 s of work, so the driver's hand-off between tasks (a few ms)
# costs about 1% of a worker, and a lost worker costs at most two shards of work.
SHARDS_PER_TASK = 2
# Reruns of a task whose worker or node died (Ray's own retry; the run goes on without a rerun).
MAX_TASK_RETRIES = 3


def _remote_env(items) -> dict:
    """Shards on an object store: workers find credentials in their node's standard chain; only
    the pointers (profile, config files, endpoint, region) travel, never a key (a runtime_env is
    stored by Ray's GCS and shown in its logs)."""
    from flywheel.curation.ingest import reads_remote

    if any(reads_remote(json.loads(it["shard"])) for it in items):
        return {"runtime_env": {"env_vars": storage.worker_env()}}
    return {}


def _run_tasks(items, stateless, recipe, parts_dir, ingest_dir, workers, done_by_shard, side_root,
               caption_fill=None) -> Iterator[pa.Table]:
    """Stateless recipes (stage 1 on CPU): plain Ray tasks, at most `workers` in flight, each
    writing its parts itself and returning one-row summaries. Ray Data's streaming executor costs
    the driver a busy core's worth of polling on a 2-core machine for no benefit here (there is
    no second stage to stream into); `ray.wait` blocks. A task lost with its worker or node is
    rerun by Ray (`max_retries`, system failures only: an operator's exception is the same on a
    rerun and fails the run); the rerun writes its parts under the names the lost attempt used
    (`_part_name`), so what the lost attempt wrote is replaced, never counted twice."""
    import ray

    # SPREAD: a cluster's nodes share the tasks from the start instead of the driver's node first
    fn = ray.remote(num_cpus=1, max_retries=MAX_TASK_RETRIES, retry_exceptions=False,
                    scheduling_strategy="SPREAD")(_score_task)
    fn = fn.options(**_remote_env(items))
    attempt = uuid.uuid4().hex
    groups = _groups(items, workers)
    args = dict(steps=ray.put(stateless), work_size=recipe.work_size, decode_params=recipe.decode,
                ingest_dir=ingest_dir, parts_dir=parts_dir, side_root=side_root, caption_fill=caption_fill, attempt=attempt)
    pending = list(reversed(groups))
    in_flight: list = []
    while pending or in_flight:
        while pending and len(in_flight) < max(1, workers):
            g = pending.pop()
            pairs = [(it["shard"], it["key"]) for it in g]
            done = {k: done_by_shard[k] for _, k in pairs if k in done_by_shard}
            in_flight.append(fn.remote(pairs, done_by_shard=done, **args))
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        for summary in ray.get(ready[0]):
            yield summary


# --ship-inputs: blocks read ahead by the driver per worker, so a worker finishing a block finds the
# next one already in the object store (the driver reads a 64 MiB block from disk in a fraction
# of the seconds a worker scores it)
SHIP_WINDOW_PER_WORKER = 2


def _run_shipped(items, stateless, recipe, parts_dir, ingest_dir, workers, done_by_shard, side_root,
                 caption_fill=None, shipped: dict | None = None) -> Iterator[pa.Table]:
    """Inputs only the driver can read (a folder on its own disk, workers on other machines): the
    driver reads each shard's blocks (`ingest.read_shard`, cut at ROWS_PER_BLOCK rows or BLOCK_BYTES)
    and `ray.put`s them, at most SHIP_WINDOW_PER_WORKER x `workers` blocks put and not yet scored;
    one task per block scores it and writes its part under the name the block would have in a
    normal run's attempt (`_part_name`: attempt, shard, block), so a task lost with its node and
    rerun by Ray replaces its part, never adds one. A block larger than what the object store
    has free is spilled by Ray to local disk and restored for its task (reported in
    stats.json `ray.object_store`). Rows already done (a resumed run) are skipped by the driver."""
    import ray

    from flywheel.filters.decode import Decode

    fn = ray.remote(num_cpus=1, max_retries=MAX_TASK_RETRIES, retry_exceptions=False,
                    scheduling_strategy="SPREAD")(_score_block_task)
    attempt = uuid.uuid4().hex
    max_bytes = Decode.Params(**(recipe.decode or {})).max_bytes
    args = dict(steps=ray.put(stateless), work_size=recipe.work_size, decode_params=recipe.decode, parts_dir=parts_dir,
                side_root=side_root, caption_fill=caption_fill, attempt=attempt)
    window = SHIP_WINDOW_PER_WORKER * max(1, workers)
    shipped = shipped if shipped is not None else {}
    shipped.update(window=window, blocks=0, bytes=0, driver_read_s=0.0)

    def blocks() -> Iterator[tuple[str, int, pa.Table]]:
        for it in items:
            key = it["key"]
            t0 = time.perf_counter()
            for i, t in _shard_blocks(json.loads(it["shard"]), key, done_by_shard, max_bytes, ingest_dir):
                shipped["driver_read_s"] += time.perf_counter() - t0
                yield key, i, t
                t0 = time.perf_counter()

    source = blocks()
    in_flight: list = []
    more = True
    while more or in_flight:
        while more and len(in_flight) < window:
            nxt = next(source, None)
            if nxt is None:
                more = False
                break
            key, i, t = nxt
            shipped["blocks"] += 1
            shipped["bytes"] += t.nbytes
            # the driver drops its reference at once: the block lives as long as its task needs it
            in_flight.append(fn.remote(ray.put(t), key, i, **args))
            nxt = t = None
        if not in_flight:
            break
        ready, in_flight = ray.wait(in_flight, num_returns=1)
        yield from ray.get(ready[0])


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
