"""Curation steps. Each step takes and returns paths (so Prefect tasks can wrap them):

  prepare  -> state dir with plan.json (recipe resolved, preflight passed, shards listed)
  score    -> state/parts/*.parquet (resumable: finished samples are never rescored)
  barrier  -> state/barrier/<op>.parquet (whole-run decisions of `Barrier` operators)
  finalize -> OUT/accepted, OUT/rejected (datasets), OUT/stats.json; catalog records
  report   -> OUT/report.html

`curate()` runs them in order; `flywheel.flows.curate.curate_flow` runs them as a Prefect flow.
The state, its parts, the run record and the datasets' registration follow the job lifecycle
(`flywheel.lifecycle.Job`) that captioning and retraining share; a shard is the unit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from flywheel import config
from flywheel.catalog import Catalog
from flywheel.datasets import storage
from flywheel.datasets.reader import read_columns
from flywheel.filters import base
from flywheel.filters.decode import Decode
from flywheel.lifecycle import Job, JobBusy

log = logging.getLogger(__name__)

ERROR_COL = Decode.writes[0]  # the decode step's verdict: null when the image decoded whole


class CurateError(Exception):
    """A user-facing failure that says what to do next."""


def _recipe(plan: dict):
    from flywheel.filters import recipe as recipes

    return recipes.load(plan["recipe"], overrides=plan.get("sets") or {}, skip=set(plan.get("skip") or []))


def prepare(recipe: str, input: str, output: str, *, name: str | None = None, workers: int = 2,
            skip: list[str] | None = None, sets: dict | None = None, image_col: str = "image",
            caption_col: str = "caption", allow_missing: bool = False, uncaptioned: str | None = "reject",
            caption_backend: str | None = None, caption_kwargs: dict | None = None, ship_inputs: bool = False) -> dict:
    """Resolve the recipe, run the preflight, list the input. Writes nothing when it fails.

    `ship_inputs`: the driver reads the input and ships it to the workers through Ray's object
    store (`engine._run_shipped`), for an input only the driver can read; by default each worker
    reads its own shards.

    `uncaptioned`: what happens to inputs without a caption when the recipe judges captions
    (`flywheel.curation.uncaptioned`): None stops the run when there are any; "caption" captions them
    first with `caption_backend`; "allow" keeps them; "reject" judges them as they are."""
    from flywheel.curation import ingest, preflight
    from flywheel.curation import uncaptioned as uncap
    from flywheel.filters import recipe as recipes

    t0 = time.perf_counter()
    if uncaptioned is not None and uncaptioned not in uncap.MODES:
        raise CurateError(f"uncaptioned={uncaptioned!r}: use one of {', '.join(uncap.MODES)}")
    if uncaptioned == "caption":
        from flywheel.captioning.backends import BACKENDS

        if caption_backend not in BACKENDS:
            raise CurateError(f"--caption {caption_backend}: unknown captioning backend; use one of {', '.join(BACKENDS)}")
    try:
        r = recipes.load(recipe, overrides=sets or {}, skip=set(skip or []))
    except (ValueError, FileNotFoundError) as e:
        raise CurateError(str(e)) from None
    missing_ops = [s.name for s in r.steps if s.op is None]
    problems = []
    if missing_ops:
        problems.append(
            f"operators not available in this install: {', '.join(missing_ops)}. "
            f"Skip them with --skip {','.join(missing_ops)} (their scores will be missing from the datasets)."
        )
    for m in preflight.missing_models(r):
        problems.append(
            f"model {m.model} (needed by {', '.join(m.operators)}) is not installed: {m.reason}. "
            f"Install it with `{m.install}`, or skip with --skip {','.join(m.operators)}."
        )
    if problems and not allow_missing:
        raise CurateError("the run cannot start:\n  - " + "\n  - ".join(problems))
    if ship_inputs:
        from flywheel.curation import engine

        models = [n for n, _ in engine.split_stages([s for s in r.steps if s.op is not None])[1]]
        if models:
            raise CurateError(f"--ship-inputs ships inputs to plain tasks only, and {', '.join(models)} run as model "
                              f"actors: skip them (--skip {','.join(models)}) or let the workers read the input "
                              "(a path or s3:// URL every node can read) without --ship-inputs")
    warnings_ = preflight.revision_warnings(r, recipe)
    remote = storage.is_remote(output)
    out = output.rstrip("/") if remote else Path(output).expanduser().resolve()
    if remote:
        # before anything starts: no credentials or no permission stops the run here, with what to set
        try:
            probe = storage.probe(out)
        except PermissionError as e:
            raise CurateError(str(e)) from None
        if not probe["conditional_put"]:
            log.warning("%s ignores If-None-Match: manifests are committed by HEAD-then-put and read back", out)
    for sub in ("accepted", "rejected"):
        if storage.exists(storage.child(out, sub) if not remote else storage.join(out, sub, storage.MANIFEST)):
            raise CurateError(f"{storage.child(out, sub)} already exists; datasets are immutable. Choose a new --output directory.")
    # `name@vN` inputs resolve through the catalog
    inp = input.rstrip("/") if storage.is_remote(input) else Path(input).expanduser()
    if not storage.is_remote(inp) and not inp.exists() and "@" in input:
        try:
            inp = Catalog().resolve_dataset(input)  # a URL string for a dataset on an object store
        except KeyError as e:
            raise CurateError(str(e)) from None
    inp_key = inp if storage.is_remote(inp) else str(inp.resolve())
    try:
        pl = ingest.plan(inp, image_col=image_col, caption_col=caption_col)
    except (FileNotFoundError, PermissionError) as e:
        raise CurateError(str(e)) from None
    if not pl.shards:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(pl.counts.items()) if v)
        raise CurateError(f"{inp} holds nothing to curate: no image files, Parquet rows, WebDataset tars or JSONL "
                          f"manifests were found{f' (not followed: {skipped})' if skipped else ''}. Point --input at a "
                          "folder of images, a .parquet, a .tar shard, a .jsonl manifest (images or edit pairs) or a dataset, "
                          "on disk or under an s3:// prefix.")
    if "ti2i" not in r.tasks and any(s["kind"] == "edits" for s in pl.shards):
        raise CurateError(f"recipe {r.name} is text-to-image only; edit pairs need a recipe with ti2i (stage2 or later)")
    col_problems = [q for s in {s["path"] for s in pl.shards if s["kind"] == "parquet" and not s.get("dataset")}
                    for q in ingest.parquet_problems(s, image_col, caption_col)]
    if col_problems:
        raise CurateError("the input's columns do not fit:\n  - " + "\n  - ".join(sorted(col_problems)))
    col_problems = preflight.column_problems(r, _input_columns(pl))
    if col_problems:
        raise CurateError("the run cannot start:\n  - " + "\n  - ".join(col_problems))
    readers = uncap.caption_readers(r)
    caps = uncap.count(pl)
    # tars on an object store are not read before the run: a policy the user named applies to
    # them; without one their rows are judged as they are (the plan says so)
    caps.update(readers=readers, mode=uncaptioned if readers and (caps["missing"] or caps["unknown_shards"]) else None)
    if caps["mode"] is None and readers and caps["missing"]:
        raise CurateError(uncap.stop_message(caps, readers))
    if caps["mode"] == "allow" and r.step("token_length"):
        # kept, not rejected: the only rule that rejects a missing caption is switched off
        sets = {**(sets or {}), "token_length": {**(sets or {}).get("token_length", {}), "reject_missing": False}}
        r = recipes.load(recipe, overrides=sets, skip=set(skip or []))
    if caps["mode"] == "caption":
        caps["backend"] = caption_backend
        caps["fill"] = {"mode": "caption", "backend": caption_backend, "backend_kwargs": caption_kwargs or {},
                        "cache_path": str(config.cache_dir("captions") / "captions.db")}
    elif caps["mode"] == "allow":
        caps["fill"] = {"mode": "allow"}
    shard_keys = [hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:16] for s in pl.shards]
    parents = []
    if pl.kind == "dataset":
        m = json.loads(storage.read_bytes(storage.child(inp, storage.MANIFEST)))
        parents = [f"{m['name']}@v{m['version']}"]
    plan = {
        "recipe": recipe, "recipe_name": r.name, "recipe_hash": r.hash,
        "recipe_resolved": r.to_dict(), "sets": sets or {}, "skip": skip or [], "input": inp_key,
        "input_kind": pl.kind, "output": str(out), "name": name or (out.rsplit("/", 1)[-1] if remote else out.name), "workers": workers,
        "shards": pl.shards, "shard_keys": shard_keys, "ingest_counts": dict(pl.counts),
        "ingest_examples": pl.examples, "rows_estimate": pl.rows_estimate, "parents": parents, "uncaptioned": caps,
        "ship_inputs": bool(ship_inputs),
        "notes": r.notes + ([f"not available, run without: {', '.join(missing_ops)}"] if missing_ops else [])
        + [f"model revision: {w}" for w in warnings_],
        "prepare_s": time.perf_counter() - t0, "created": time.time(),
    }
    # A shard is the unit of the job; rows inside a shard resume one by one from whatever parts a
    # killed run left (each part is whole: the engine writes it under a temporary name, then
    # renames it), so uncommitted parts are kept.
    key = {"input": inp_key, "recipe": r.hash, "opts": [image_col, caption_col]}
    if caps.get("fill"):  # a run that captions or keeps the uncaptioned rows is another job
        key["uncaptioned"] = [caps["mode"], caption_backend]
    try:
        job = Job.prepare("curate", key=key,
                          plan=plan, units=shard_keys, keep_uncommitted=True,
                          run={"recipe": r.name, "recipe_hash": r.hash, "input": inp_key, "output": str(out),
                               "params": {"sets": sets or {}, "skip": skip or [], "workers": workers,
                                          "uncaptioned": caps["mode"], "caption_backend": caption_backend}})
    except JobBusy as e:
        raise CurateError(str(e)) from None
    (job.state / "ingest").mkdir(exist_ok=True)
    (job.state / "barrier").mkdir(exist_ok=True)
    return job.plan


def _input_columns(pl) -> set[str]:
    """Columns every row of the input will have: the ingest schema, plus the stored columns of
    datasets this tool wrote (read through whole, scores included)."""
    from flywheel.datasets import BASE_SCHEMA

    cols = set(BASE_SCHEMA.names)
    seen = set()
    for s in pl.shards:
        if s["kind"] != "parquet" or s["path"] in seen:
            continue
        seen.add(s["path"])
        src = s["path"]
        names = pq.read_schema(storage.filesystem(src).open(storage.strip(src), "rb") if storage.is_remote(src) else src).names
        if s.get("dataset") or {"id", "source", "task"} <= set(names):
            cols |= set(names)
    return cols


def tasks_only(plan: dict) -> bool:
    """The plan's recipe runs as plain Ray tasks (no operator with setup()): see `engine.ensure_ray`."""
    from flywheel.curation import engine

    return not engine.split_stages(_recipe(plan).steps)[1]


def load_plan(state: str | Path) -> dict:
    return Job(state).plan


def score(state: str, on_progress: Callable[[int, dict], None] | None = None) -> dict:
    """Score every row not scored yet; rows already in state/parts are skipped (resume)."""
    from flywheel.curation import engine

    started_at = time.time()
    job = Job(state)
    plan = job.plan
    st = job.state
    r = _recipe(plan)
    parts = [str(p) for p in job.written_parts()]
    done_by_shard: dict[str, frozenset] = {}
    resumed = 0
    if parts:
        t = read_columns(parts, ["source"])
        done = set(t.column("source").to_pylist())
        resumed = len(done)
        done_all = frozenset(done)  # one object shared by every dataset shard (pickled once)
        for s, k in zip(plan["shards"], plan["shard_keys"]):
            done_by_shard[k] = done_all if s["kind"] == "parquet" and s.get("dataset") else frozenset(_shard_done(s, done))
    todo = [(s, k) for s, k in zip(plan["shards"], plan["shard_keys"]) if not _shard_complete(s, done_by_shard.get(k))]
    if any(s.name == "dedup" for s in r.steps):
        _warm_dedup_index()
    t_ray = engine.ensure_ray(plan["workers"], tasks_only=tasks_only(plan))
    store_before = engine.object_store_stats()
    t0 = time.perf_counter()
    blocks: list[tuple[float, int]] = []  # (time, rows) of each finished block: the steady state

    def progress(n: int, timing: dict) -> None:
        blocks.append((time.perf_counter(), n))
        if on_progress:
            on_progress(n, timing)

    with job.step("score"):
        res = engine.score_shards([s for s, _ in todo], [k for _, k in todo], r, str(job.parts_dir), str(st / "ingest"),
                                  plan["workers"], {k: done_by_shard[k] for _, k in todo if k in done_by_shard}, progress,
                                  side_root=plan["output"], caption_fill=(plan.get("uncaptioned") or {}).get("fill"),
                                  ship=bool(plan.get("ship_inputs")))
    steady = steady_rate(blocks)
    info = {"started_at": started_at, "ray_startup_s": t_ray["startup_s"], "steady_images_per_s": steady,
            "first_block_s": (blocks[0][0] - t0) if blocks else None, "score_s": time.perf_counter() - t0, "rows_scored": res["rows"],
            "rows_resumed": resumed, "timing": res["timing"],
            "blocks": [[round(t - t0, 3), n] for t, n in blocks],  # when each block was written, for benchmarks
            # the cluster and what this attempt spilled from its object store (bytes, objects, restored)
            "ray": {"address": t_ray["address"], "object_store": engine.spill_delta(store_before, engine.object_store_stats()),
                    # --ship-inputs: blocks and bytes the driver put into the object store, its read-ahead window
                    **({"shipped": res["shipped"]} if res.get("shipped") else {})}}
    info["attempts"] = job.read_json("score.json", {}).get("attempts", 0) + 1
    job.write_json("score.json", info)
    # the engine does not say which shard a part came from, so the shards are committed together
    if job.pending():
        job.commit(job.pending(), [], stats={"rows_scored": res["rows"]})
    return info


def _warm_dedup_index() -> None:
    """Load the dedup barrier's compiled (numba) code in a thread while Ray scores: numba's first
    call in a process costs seconds even from its on-disk cache, and the driver is idle then."""
    import threading

    def warm() -> None:
        import numpy as np

        from flywheel.filters import dedup_index

        try:
            dedup_index.near_pairs(np.array([0, 1, 3, 1 << 40], dtype=np.uint64), 6)
        except Exception:  # noqa: BLE001 - a warm-up only; the barrier reports real errors
            pass

    threading.Thread(target=warm, name="warm-dedup", daemon=True).start()


def steady_rate(blocks: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9) -> float | None:
    """Rows per second between the moments `lo` and `hi` of all rows were written: start-up
    (workers importing, models loading) and the tail (the last tasks finishing on fewer workers
    than started) are outside it. `blocks` are (time, rows) of finished blocks in time order."""
    total = sum(n for _, n in blocks)
    if len(blocks) < 3 or total == 0:
        return None
    t_lo = t_hi = None
    n_lo = n_hi = 0
    cum = 0
    for t, n in blocks:
        cum += n
        if t_lo is None and cum >= lo * total:
            t_lo, n_lo = t, cum
        if t_hi is None and cum >= hi * total:
            t_hi, n_hi = t, cum
    if t_lo is None or t_hi is None or t_hi <= t_lo:
        return None
    return (n_hi - n_lo) / (t_hi - t_lo)


def _shard_done(shard: dict, done: set[str]) -> set[str]:
    if shard["kind"] == "files":
        return {f[0] for f in shard["files"] if f[0] in done}
    if shard["kind"] in ("edits", "images"):
        return {ln["where"] for ln in shard["lines"] if ln["where"] in done}
    if shard["kind"] == "tar":
        pre = shard["rel"] + "!"
        return {s for s in done if s.startswith(pre)}
    if shard["kind"] == "parquet":
        pre = shard["rel"] + "#"
        return {s for s in done if s.startswith(pre)}
    return set()


def _shard_complete(shard: dict, done: frozenset | None) -> bool:
    if not done:
        return False
    if shard["kind"] == "files":
        return all(f[0] in done for f in shard["files"])
    if shard["kind"] in ("edits", "images"):
        return all(ln["where"] in done for ln in shard["lines"])
    return False  # tars and parquet row groups are re-read, skipping done rows


def barrier(state: str) -> dict:
    """Whole-run decisions of the recipe's `Barrier` operators, over the stored score columns."""
    from flywheel.filters.base import Barrier

    job = Job(state)
    plan = job.plan
    st = job.state
    r = _recipe(plan)
    out = {}
    parts = [str(p) for p in job.written_parts()]
    schema_names = pq.read_schema(parts[0]).names if parts else []
    for s in r.steps:
        op = s.instance()
        if not isinstance(op, Barrier):
            continue
        t0 = time.perf_counter()
        need = dict.fromkeys([*op.decide_reads, *op.writes, *op.reads])
        cols = [c for c in need if c in schema_names and c not in op.deferred]
        table = read_columns(parts, cols) if parts else pa.table({})  # file by file: see read_columns
        prior = _prior_datasets(plan, job.catalog) if op.uses_prior() else None
        deferred = [c for c in op.deferred if c in schema_names]
        # stored features only: the barrier never opens an image
        decided = op.decide(table, prior, rows=base.ParquetRows(parts, deferred)) if deferred else op.decide(table, prior)
        stats = getattr(op, "last_stats", None)
        dec = pa.table({"source": table.column("source"), **{c: pa.array(v, type=op.column_type(c)) for c, v in decided.items()}})
        pq.write_table(dec, st / "barrier" / f"{s.name}.parquet")
        out[s.name] = {"seconds": time.perf_counter() - t0, "rows": table.num_rows, "prior_datasets": len(prior or []),
                       **(stats or {})}
    job.write_json("barrier.json", out)
    return out


def _prior_datasets(plan: dict, cat: Catalog) -> list[str]:
    """Folders of accepted datasets already in the catalog, excluding the input's own lineage and
    earlier runs of this same job (same state key): what a barrier may compare this run against."""
    lineage = set(plan.get("parents") or [])
    frontier = list(lineage)
    rows = {f"{r['name']}@v{r['version']}": r for r in cat.datasets()}
    while frontier:
        ref = frontier.pop()
        r = rows.get(ref)
        if r is None:
            continue
        for p in json.loads(r["parents_json"] or "[]"):
            if p not in lineage:
                lineage.add(p)
                frontier.append(p)
    same_job = {r["run_id"] for r in cat.execute("SELECT run_id FROM runs WHERE state_key=?", (plan["key"],))}
    return [r["path"] for ref, r in rows.items()
            if r["kind"] == "accepted" and ref not in lineage and r["run_id"] not in same_job and r["path"]]


def finalize(state: str) -> dict:
    """Decide every row and write OUT/accepted and OUT/rejected (each row in exactly one)."""
    from flywheel.curation.report import Histograms
    from flywheel.curation.scoring import decide_table
    from flywheel.datasets import DECISION_FIELDS
    from flywheel.filters.base import Barrier

    t_start = time.perf_counter()
    job = Job(state)
    plan = job.plan
    st = job.state
    r = _recipe(plan)
    out = plan["output"] if storage.is_remote(plan["output"]) else Path(plan["output"])
    if not storage.is_remote(out):
        out.mkdir(parents=True, exist_ok=True)
    job.check_complete()
    parts = [str(p) for p in job.written_parts()]
    steps = [(s.name, s.params) for s in r.steps]
    barriers = [op for op in (s.instance() for s in r.steps) if isinstance(op, Barrier)]
    barrier_tables = {}
    for s in r.steps:
        f = st / "barrier" / f"{s.name}.parquet"
        if f.exists():
            barrier_tables[s.name] = pq.read_table(f)
    # Barrier decisions are rows in the order the barrier read the parts (the same list), so each
    # part's are a slice of them; a source -> row dict is built only if some part's rows are not where
    # the barrier saw them (a dict over 200k sources cost tens of MB for nothing).
    lookups: dict[str, dict] = {}
    offset = 0
    cat = job.catalog
    schema = _union_schema(parts, barrier_tables, DECISION_FIELDS, barriers)
    counts: Counter = Counter()
    all_reasons: Counter = Counter()
    hist = Histograms(r)
    thumbs: dict[str, list[tuple[str, bytes]]] = {}
    seen_sources: set[str] = set()
    dup_sources = 0
    common = dict(parents=plan["parents"], recipe=plan["recipe_name"], recipe_hash=plan["recipe_hash"], schema=schema)
    acc = job.dataset(storage.child(out, "accepted"), name=plan["name"], kind="accepted", **common)
    rej = job.dataset(storage.child(out, "rejected"), name=plan["name"] + ".rejected", kind="rejected", **common)
    try:
        for part in parts:
            t = pq.read_table(part)
            whole = t.column("source")
            srcs = whole.to_pylist()
            keep_rows = []
            for i, s in enumerate(srcs):
                if s in seen_sources:
                    dup_sources += 1  # a resumed run re-read a row already persisted; keep the first copy
                    continue
                seen_sources.add(s)
                keep_rows.append(i)
            if len(keep_rows) != t.num_rows:
                t = t.take(pa.array(keep_rows, pa.int64()))
                srcs = [srcs[i] for i in keep_rows]
            for name, bt in barrier_tables.items():
                sub = bt.slice(offset, len(whole))
                if sub.num_rows == len(whole) and sub.column("source").equals(whole):
                    if len(keep_rows) != len(whole):
                        sub = sub.take(pa.array(keep_rows, pa.int64()))
                else:
                    if name not in lookups:
                        bsrc = bt.column("source").to_pylist()
                        lookups[name] = dict(zip(bsrc, range(len(bsrc))))
                    pos = pa.array([lookups[name].get(s, -1) for s in srcs], pa.int64())
                    sub = bt.take(pa.compute.if_else(pa.compute.equal(pos, -1), pa.scalar(None, pa.int64()), pos))
                for c in sub.column_names:
                    if c == "source":
                        continue
                    t = t.append_column(c, sub.column(c)) if c not in t.column_names else t.set_column(t.column_names.index(c), c, sub.column(c))
            offset += len(whole)
            t = decide_table(t, steps, r.decode)
            for op in barriers:
                for c, arr in op.dataset_columns(t).items():
                    t = t.append_column(c, arr)
            t = t.append_column("run_id", pa.array([plan["run_id"]] * t.num_rows, pa.string()))
            reasons = t.column("reject_reason").to_pylist()
            hist.add(t)
            # typed: a part whose rows all repeat earlier ones (a task rerun after its worker was
            # killed) is empty here, and an untyped empty array cannot filter
            mask = pa.array([x is None for x in reasons], pa.bool_())
            acc.write(t.filter(mask))
            rej.write(t.filter(pa.compute.invert(mask)))
            for x, lst in zip(reasons, t.column("reject_reasons").to_pylist()):
                counts[x or "accepted"] += 1
                for y in lst or []:
                    all_reasons[y] += 1
            _collect_thumbs(t, thumbs)
        acc_m = acc.close(counts={"accepted": counts.get("accepted", 0)})
        rej_m = rej.close(counts={k: v for k, v in counts.items() if k != "accepted"})
    except BaseException as e:
        acc.abort()
        rej.abort()
        cat.finish_run(plan["run_id"], "failed", {"step": "finalize", "error": f"{type(e).__name__}: {e}"})
        raise
    ingest_counts = Counter(plan["ingest_counts"])
    for f in (st / "ingest").glob("*.json"):
        ingest_counts.update(json.loads(f.read_text()))
    score_info = job.read_json("score.json", {})
    barrier_info = job.read_json("barrier.json", {})
    rows = sum(counts.values())
    stats = {
        "run_id": plan["run_id"], "recipe": plan["recipe_name"], "recipe_hash": plan["recipe_hash"],
        "input": plan["input"], "output": str(out), "rows": rows,
        "accepted": counts.get("accepted", 0), "rejected": rows - counts.get("accepted", 0),
        "reject_reason": {k: v for k, v in sorted(counts.items()) if k != "accepted"},
        "reject_reasons_all": dict(sorted(all_reasons.items())),
        "ingest": {k: v for k, v in sorted(ingest_counts.items()) if v},
        "ingest_examples": plan.get("ingest_examples", {}),
        "datasets": {"accepted": acc_m.ref, "rejected": rej_m.ref},
        "operators": [Decode.name] + [s.name for s in r.steps], "notes": plan.get("notes", []),
        "histograms": hist.to_dict(),
        "timing": {
            "prepare_s": plan.get("prepare_s"), "ray_startup_s": score_info.get("ray_startup_s"),
            "score_started_at": score_info.get("started_at"),
            "score_s": score_info.get("score_s"), "barrier_s": sum(v["seconds"] for v in barrier_info.values()),
            "operator_cpu_s": score_info.get("timing", {}), "rows_scored_this_attempt": score_info.get("rows_scored"),
            "rows_resumed": score_info.get("rows_resumed"), "attempts": score_info.get("attempts"),
            "images_per_s": (score_info.get("rows_scored") or 0) / score_info["score_s"] if score_info.get("score_s") else None,
            "steady_images_per_s": score_info.get("steady_images_per_s"),
            "first_block_s": score_info.get("first_block_s"),
            "blocks": score_info.get("blocks"),  # (seconds after scoring began, rows) per block written
        },
        "ray": score_info.get("ray"),  # the cluster scored on; object_store: bytes spilled and restored
        "barrier": barrier_info,  # per barrier operator: seconds, rows and its own counts (dedup: candidate/confirmed pairs)
        "duplicate_rows_dropped_on_resume": dup_sources,
        "thumbs": {k: [(s, b.hex()) for s, b in v] for k, v in thumbs.items()},
    }
    cat.record_op_stats(plan["run_id"], {**stats["reject_reason"], "accepted": stats["accepted"]})
    stats["timing"]["finalize_s"] = time.perf_counter() - t_start
    thumbs_hex = stats.pop("thumbs")
    storage.write_bytes(storage.child(out, "stats.json"), json.dumps(stats, indent=2).encode())
    job.write_json("thumbs.json", thumbs_hex)
    job.finish({k: stats[k] for k in ("rows", "accepted", "rejected")})
    return stats


def _union_schema(parts: list[str], barrier_tables: dict, decision_fields, barriers) -> pa.Schema:
    fields: dict[str, pa.Field] = {}
    for p in parts:
        for f in pq.read_schema(p):
            if f.name not in fields or pa.types.is_null(fields[f.name].type):
                fields[f.name] = f
    for bt in barrier_tables.values():
        for f in bt.schema:
            if f.name != "source":
                fields[f.name] = f
    # dataset-contract fields a barrier fills (Barrier.dataset_fields) exist only when one of the
    # recipe's barriers fills them
    filled = {n for op in barriers for n in op.dataset_fields}
    optional = {n for cls in base.registry().values() if issubclass(cls, base.Barrier) for n in cls.dataset_fields}
    for f in decision_fields:
        if f.name not in optional or f.name in filled:
            fields[f.name] = f
    return pa.schema(list(fields.values()))


def _collect_thumbs(t: pa.Table, thumbs: dict, per_reason: int = 6) -> None:
    """Small JPEG thumbnails of a few rejects per reason for the report (decoded from the stored
    16x16 dedup thumbnail would be too small; so from the image bytes, only for these few rows)."""
    reasons = t.column("reject_reason").to_pylist()
    want = [i for i, r in enumerate(reasons) if r and len(thumbs.setdefault(r, [])) < per_reason]
    errs = t.column(ERROR_COL).to_pylist() if ERROR_COL in t.column_names else [None] * t.num_rows
    if not want:
        return
    import io

    from PIL import Image

    srcs = t.column("source").to_pylist()
    imgs = t.column("image").to_pylist() if "image" in t.column_names else [None] * t.num_rows
    for i in want:
        r = reasons[i]
        if len(thumbs[r]) >= per_reason:
            continue
        b = b""
        try:
            if imgs[i] and not errs[i]:  # never open a broken file (or a bomb) again for a preview
                im = Image.open(io.BytesIO(imgs[i]))
                im.draft("RGB", (160, 160))
                im = im.convert("RGB")
                im.thumbnail((120, 120))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=70)
                b = buf.getvalue()
        except Exception:  # noqa: BLE001 - broken files have no thumbnail; the report says so
            b = b""
        thumbs[r].append((srcs[i], b))


def report(state: str) -> str:
    from flywheel.curation.report import write_report

    job = Job(state)
    out = job.plan["output"]
    remote = storage.is_remote(out)
    out = out if remote else Path(out)
    stats = json.loads(storage.read_bytes(storage.child(out, "stats.json")))
    thumbs = job.read_json("thumbs.json", {})
    t0 = time.perf_counter()
    # on an object store the report is rendered in the job state, then uploaded whole
    path = write_report(stats, thumbs, job.state / "report.html" if remote else out / "report.html")
    if remote:
        storage.write_bytes(storage.child(out, "report.html"), Path(path).read_bytes())
        path = storage.child(out, "report.html")
    stats["timing"]["report_s"] = time.perf_counter() - t0
    storage.write_bytes(storage.child(out, "stats.json"), json.dumps(stats, indent=2).encode())
    return str(path)


def cleanup(state: str) -> None:
    Job(state).cleanup()


def curate(recipe: str, input: str, output: str, *, name: str | None = None, workers: int = 2,
           skip: list[str] | None = None, sets: dict | None = None, image_col: str = "image",
           caption_col: str = "caption", progress: bool = False, keep_state: bool = False,
           uncaptioned: str | None = "reject", caption_backend: str | None = None, ship_inputs: bool = False) -> dict:
    """The whole curation without Prefect (library use, calibration, benchmarks)."""
    plan = prepare(recipe, input, output, name=name, workers=workers, skip=skip, sets=sets,
                   image_col=image_col, caption_col=caption_col, uncaptioned=uncaptioned, caption_backend=caption_backend,
                   ship_inputs=ship_inputs)
    score(plan["state"])
    barrier(plan["state"])
    stats = finalize(plan["state"])
    report(plan["state"])
    if not keep_state:
        cleanup(plan["state"])
    return stats

