"""The loop's Prefect flows (report section 2.4, stage 3: "the system automatically initiates the
next training round"). Tasks pass paths, ids and small JSON, never data frames.

- `ingest_signals_flow(path)`: a JSONL file of signals into the catalog (idempotent by id).
- `retrain_flow(dataset, ...)`: train from the last checkpoint on an emitted dataset version,
  evaluate the checkpoint before and after on the same held-out prompts, and record the
  before/after table in the catalog (`loop_evals`, one row per concept, attribute and seed).
- `retrain_on_emission_flow()`: what the schedule runs (`deploy/deployments.py`): when an
  emitted dataset has no retraining yet, run `retrain_flow` on it.

`retrain()` is the plain function under `retrain_flow`, so the demo and tests can call the same
steps without a Prefect server.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from prefect import flow, task


# -- plain steps -----------------------------------------------------------------------------------
def last_checkpoint(cat) -> str | None:
    """The newest successful training run's checkpoint recorded in the catalog."""
    rows = cat.execute("SELECT output FROM runs WHERE kind IN ('train', 'retrain') AND status='succeeded' AND output IS NOT NULL"
                       " ORDER BY finished_at DESC LIMIT 1")
    return rows[0]["output"] if rows else None


def default_train_config(dataset_path: str, out: str, init: str | None, minutes: float = 10.0, size: int = 64) -> dict:
    return dict(datasets=[dataset_path], out=out, stage="pretrain", preset="tiny", vae="pixel:8", text_encoder="minilm",
                prediction=None if init else "x0", resolution=size, steps=10**9, batch_size=32, lr=5e-4 if init else 1e-3, warmup=10 if init else 50,
                ema_decay=0.995, ti2i_ratio=0.0, caption_probs={"original": 0.7, "general": 0.3}, init=init,
                max_seconds=minutes * 60 * 2, budget_clock="cpu", ckpt_every=200, log_every=50, progress=True)


def train_step(cat, dataset: str, train_cfg: dict, run_id: str) -> dict:
    from .training.trainer import TrainConfig, main as train

    cat.start_run(run_id, "retrain", input=dataset, output=train_cfg["out"], params={k: v for k, v in train_cfg.items() if k != "datasets"})
    try:
        r = train(TrainConfig(**train_cfg))
    except BaseException:
        cat.finish_run(run_id, "failed")
        raise
    cat.finish_run(run_id, "succeeded", {"steps": r["step"], "loss": r.get("loss")})
    return {"ckpt": train_cfg["out"], "steps": r["step"]}


def eval_step(cat, ckpt: str, prompts: list, seeds: list[int], eval_cfg: dict, run_id: str, phase: str, dataset: str | None,
              checker=None) -> list[dict]:
    from .loop_demo import generate_and_score, record_evals

    rows = generate_and_score(ckpt, prompts, seeds, eval_cfg["size"], eval_cfg["steps"], eval_cfg["guidance"], checker,
                              progress=f"eval {phase}", color_only=bool(eval_cfg.get("color_only")))
    record_evals(cat, run_id, phase, ckpt, dataset, rows)
    return rows


def retrain(cat, dataset: str, train_cfg: dict, measure_prompts: list, seeds: list[int], eval_cfg: dict,
            run_id: str | None = None, before_ckpt: str | None = None, checker=None) -> dict:
    """Train (from `train_cfg['init']`) on `dataset`, evaluate after (and before, when
    `before_ckpt` is given), record both in `loop_evals` under `run_id`."""
    run_id = run_id or "retrain-" + uuid.uuid4().hex[:10]
    out: dict = {"run_id": run_id}
    if before_ckpt:
        out["before_rows"] = eval_step(cat, before_ckpt, measure_prompts, seeds, eval_cfg, run_id, "before", None, checker)
    t = train_step(cat, dataset, train_cfg, f"{run_id}-train")
    out.update(t)
    out["after_rows"] = eval_step(cat, t["ckpt"], measure_prompts, seeds, eval_cfg, run_id, "after", dataset, checker)
    cat.audit("retrain", "retrain", dataset, {"run_id": run_id, "ckpt": t["ckpt"], "steps": t["steps"]})
    return out


def before_after(cat, run_id: str, attribute: str = "concept") -> list[dict]:
    """The recorded table: per concept, accuracy before and after (all seeds pooled)."""
    rows = cat.execute(
        "SELECT concept, phase, SUM(correct) AS k, SUM(n) AS n FROM loop_evals WHERE run_id=? AND attribute=?"
        " GROUP BY concept, phase ORDER BY concept", (run_id, attribute))
    table: dict[str, dict] = {}
    for r in rows:
        table.setdefault(r["concept"], {"concept": r["concept"]})[r["phase"]] = r["k"] / r["n"] if r["n"] else None
    return list(table.values())


# -- Prefect -----------------------------------------------------------------------------------------
@task(name="ingest-signals", retries=2, retry_delay_seconds=2)
def ingest_task(path: str) -> dict:
    from . import signals as sg
    from .catalog import Catalog

    res = sg.add(Catalog(), sg.read_jsonl(path), source=f"flow:{Path(path).name}")
    return {"inserted": len(res["inserted"]), "duplicate": len(res["duplicate"])}


@flow(name="ingest-signals", persist_result=False)
def ingest_signals_flow(path: str) -> dict:
    return ingest_task(path)


@task(name="train")
def train_task(dataset: str, train_cfg: dict, run_id: str) -> dict:
    from .catalog import Catalog

    return train_step(Catalog(), dataset, train_cfg, run_id)


def load_checker(n_images: int = 6000):
    """The checker (cached under FLYWHEEL_HOME/cache/checker per configuration)."""
    from .training.checker import Checker
    from .training.checker import TrainConfig as CheckerConfig

    return Checker.load(cfg=CheckerConfig(n_images=n_images, epochs=6 if n_images >= 6000 else 4))


@task(name="evaluate")
def eval_task(ckpt: str, prompts_file: str, seeds: list[int], eval_cfg: dict, run_id: str, phase: str, dataset: str | None,
              checker_images: int = 6000) -> int:
    from .catalog import Catalog
    from .training import synthetic as syn

    prompts = [(p["prompt"], syn.spec_from_dict(p["spec"])) for p in json.loads(Path(prompts_file).read_text())]
    return len(eval_step(Catalog(), ckpt, prompts, seeds, eval_cfg, run_id, phase, dataset, load_checker(checker_images)))


@flow(name="retrain", persist_result=False)
def retrain_flow(dataset: str, init: str | None = None, out: str | None = None, minutes: float = 10.0, size: int = 64,
                 n_per_concept: int = 100, seeds: int = 3, sample_steps: int = 20, guidance: float = 4.0,
                 train_overrides: dict | None = None, checker_images: int = 6000) -> dict:
    """Train from `init` (default: the last checkpoint in the catalog) on `dataset`, then evaluate
    before and after on held-out prompts of every concept; the table lands in `loop_evals`."""
    from . import config
    from .catalog import Catalog
    from .datasets import open_dataset
    from .loop_demo import concept_prompts
    from .training import synthetic as syn

    cat = Catalog()
    ds = open_dataset(dataset, catalog=cat)
    init = init or last_checkpoint(cat)
    run_id = "retrain-" + uuid.uuid4().hex[:10]
    work = Path(out) if out else config.home() / "retrain" / run_id
    work.mkdir(parents=True, exist_ok=True)
    cfg = default_train_config(str(ds.path), str(work / "ckpt"), init, minutes, size)
    cfg.update(train_overrides or {})
    prompts = concept_prompts([(c, s) for s in syn.SHAPES for c in syn.COLORS], n_per_concept, seed=202)
    pf = work / "prompts.json"
    pf.write_text(json.dumps([{"prompt": p, "spec": s.to_dict()} for p, s in prompts]))
    eval_cfg = {"size": size, "steps": sample_steps, "guidance": guidance}
    seed_list = list(range(seeds))
    if init:
        eval_task(init, str(pf), seed_list, eval_cfg, run_id, "before", None, checker_images)
    t = train_task(ds.ref, cfg, f"{run_id}-train")
    eval_task(t["ckpt"], str(pf), seed_list, eval_cfg, run_id, "after", ds.ref, checker_images)
    return {"run_id": run_id, "ckpt": t["ckpt"], "dataset": ds.ref, "init": init, "table": before_after(cat, run_id)}


@flow(name="retrain-on-emission", persist_result=False)
def retrain_on_emission_flow(minutes: float = 10.0, n_per_concept: int = 100, seeds: int = 3) -> dict | None:
    """The scheduled trigger: retrain on the newest emitted dataset that no retraining has used."""
    from .catalog import Catalog

    cat = Catalog()
    done = {r["input"] for r in cat.execute("SELECT input FROM runs WHERE kind='retrain'")}
    rows = cat.execute("SELECT name, version FROM datasets WHERE kind='emitted' AND status='ready' ORDER BY created_at DESC")
    for r in rows:
        ref = f"{r['name']}@v{r['version']}"
        if ref not in done:
            return retrain_flow(ref, minutes=minutes, n_per_concept=n_per_concept, seeds=seeds)
    return None
