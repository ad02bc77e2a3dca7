"""The loop's Prefect flows (report section 2.4, stage 3: "the system automatically initiates the
next training round"). Tasks pass paths, ids and small JSON, never data frames; the steps are the
plain functions of `flywheel.loop.retrain`.

- `ingest_signals_flow(path)`: a JSONL file of signals into the catalog (idempotent by id).
- `retrain_flow(dataset, ...)`: train from the last checkpoint on an emitted dataset version,
  evaluate before and after on the same held-out prompts, record the table in `loop_evals`.
- `retrain_on_emission_flow()`: what the schedule runs (`deploy/deployments.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task

from flywheel.lifecycle import Job
from flywheel.loop import retrain as rt


# -----------------------------------------------------------------------------------------
@task(name="ingest-signals", retries=2, retry_delay_seconds=2)
def ingest_task(path: str) -> dict:
    from flywheel.catalog import Catalog
    from flywheel.loop import signals as sg

    res = sg.add(Catalog(), sg.read_jsonl(path), source=f"flow:{Path(path).name}")
    return {"inserted": len(res["inserted"]), "duplicate": len(res["duplicate"])}


@flow(name="ingest-signals", persist_result=False)
def ingest_signals_flow(path: str) -> dict:
    return ingest_task(path)


@task(name="train")
def train_task(state: str, train_cfg: dict) -> dict:
    return rt.train_unit(Job(state), train_cfg)


@task(name="evaluate")
def eval_task(state: str, ckpt: str, prompts_file: str, seeds: list[int], eval_cfg: dict, phase: str, dataset: str | None,
              checker_images: int = 6000) -> int:
    from flywheel.training import synthetic as syn

    job = Job(state)
    prompts = [(p["prompt"], syn.spec_from_dict(p["spec"])) for p in json.loads(Path(prompts_file).read_text())]
    checker = None if job.committed(f"eval-{phase}") else rt.load_checker(checker_images)
    return len(rt.eval_unit(job, phase, ckpt, prompts, seeds, eval_cfg, dataset, checker))


@task(name="retrain-finish")
def finish_task(state: str, trained: dict) -> str:
    job = Job(state)
    rt.finish(job, trained)
    return job.run_id


@flow(name="retrain", persist_result=False)
def retrain_flow(dataset: str, init: str | None = None, out: str | None = None, minutes: float = 10.0, size: int = 64,
                 n_per_concept: int = 100, seeds: int = 3, sample_steps: int = 20, guidance: float = 4.0,
                 train_overrides: dict | None = None, checker_images: int = 6000) -> dict:
    """Train from `init` (default: the last checkpoint in the catalog) on `dataset`, then evaluate
    before and after on held-out prompts of every concept; the table lands in `loop_evals`. The
    same call again resumes an unfinished retraining after its last finished step."""
    from flywheel import config
    from flywheel.catalog import Catalog, open_dataset
    from flywheel.loop.measure import concept_prompts
    from flywheel.training import synthetic as syn

    cat = Catalog()
    ds = open_dataset(dataset, catalog=cat)
    init = init or rt.last_checkpoint(cat)
    prompts = concept_prompts([(c, s) for s in syn.SHAPES for c in syn.COLORS], n_per_concept, seed=202)
    eval_cfg = {"size": size, "steps": sample_steps, "guidance": guidance}
    seed_list = list(range(seeds))
    key = {"init": init, "out": out, "minutes": minutes, "size": size, "prompts": rt.prompts_digest(prompts),
           "seeds": seed_list, "eval": eval_cfg, "train_overrides": train_overrides or {}, "checker_images": checker_images}
    job = rt.prepare(cat, ds.ref, key, before=bool(init))
    work = Path(out) if out else config.home() / "retrain" / job.run_id
    work.mkdir(parents=True, exist_ok=True)
    cfg = rt.default_train_config(str(ds.path), str(work / "ckpt"), init, minutes, size)
    cfg.update(train_overrides or {})
    job.start(input=ds.ref, output=cfg["out"], params={k: v for k, v in cfg.items() if k != "datasets"})
    pf = work / "prompts.json"
    pf.write_text(json.dumps([{"prompt": p, "spec": s.to_dict()} for p, s in prompts]))
    state = str(job.state)
    if init:
        eval_task(state, init, str(pf), seed_list, eval_cfg, "before", None, checker_images)
    t = train_task(state, cfg)
    eval_task(state, t["ckpt"], str(pf), seed_list, eval_cfg, "after", ds.ref, checker_images)
    run_id = finish_task(state, t)
    return {"run_id": run_id, "ckpt": t["ckpt"], "dataset": ds.ref, "init": init, "table": rt.before_after(cat, run_id)}


@flow(name="retrain-on-emission", persist_result=False)
def retrain_on_emission_flow(minutes: float = 10.0, n_per_concept: int = 100, seeds: int = 3) -> dict | None:
    """The scheduled trigger: retrain on the newest emitted dataset that no retraining has used."""
    from flywheel.catalog import Catalog

    cat = Catalog()
    done = {r["input"] for r in cat.execute("SELECT input FROM runs WHERE kind='retrain'")}
    rows = cat.execute("SELECT name, version FROM datasets WHERE kind='emitted' AND status='ready' ORDER BY created_at DESC")
    for r in rows:
        ref = f"{r['name']}@v{r['version']}"
        if ref not in done:
            return retrain_flow(ref, minutes=minutes, n_per_concept=n_per_concept, seeds=seeds)
    return None


@flow(name="route", persist_result=False)
def route_flow(trained_on: list[str], reserve: list[str], enhancer: str = "rule", radius_ratio: float = 1.4,
               k_retrieve: int = 40, limit: int | None = None) -> dict:
    """What the nightly routing deployment runs: route the new signals (`flywheel route`) to the
    prompt, pre-training or RL track; returns the run's summary without the per-signal decisions."""
    from flywheel.catalog import Catalog
    from flywheel.loop import router

    cfg = router.RouterConfig(trained_on=list(trained_on), reserve=list(reserve), enhancer=enhancer,
                              radius_ratio=radius_ratio, k_retrieve=k_retrieve, limit=limit)
    s = router.route(Catalog(), cfg)
    return {k: v for k, v in s.items() if k != "decisions"}
