"""Retraining from an emitted dataset version (report section 2.4): train from the last checkpoint,
evaluate before and after on the same held-out prompts, record the table in the catalog
(`loop_evals`, one row per concept, attribute and seed). Plain functions: `flywheel.flows.loop`
wraps them as Prefect tasks, and the demo and tests call them without a server.

A retraining is a job on the shared lifecycle (`flywheel.lifecycle.Job`) whose units are its steps,
eval-before (when there is a checkpoint to compare), train and eval-after: run again with the same
arguments, it skips the steps that finished (an evaluation's rows are kept in the job's state), so
a crash during the last evaluation does not cost the training.
"""

from __future__ import annotations

import hashlib

from flywheel.lifecycle import Job, run_record


def last_checkpoint(cat) -> str | None:
    """The newest successful training run's checkpoint recorded in the catalog."""
    rows = cat.execute("SELECT output FROM runs WHERE kind IN ('train', 'retrain') AND status='succeeded' AND output IS NOT NULL"
                       " ORDER BY finished_at DESC LIMIT 1")
    return rows[0]["output"] if rows else None


def default_train_config(dataset_path: str, out: str, init: str | None, minutes: float = 10.0, size: int = 64) -> dict:
    """The retraining run's TrainConfig as a JSON-able dict (Prefect passes it between tasks; callers update
    it and build `TrainConfig(**d)`, which checks every key again)."""
    from flywheel.training.config import TrainConfig

    return TrainConfig(
        datasets=[dataset_path], out=out, stage="pretrain", preset="tiny", vae="pixel:8", text_encoder="minilm",
        prediction=None if init else "x0", resolution=size, steps=10**9, batch_size=32, lr=5e-4 if init else 1e-3,
        warmup=10 if init else 50, ema_decay=0.995, ti2i_ratio=0.0, caption_probs={"original": 0.7, "general": 0.3}, init=init,
        max_seconds=minutes * 60 * 2, budget_clock="cpu", ckpt_every=200, log_every=50, progress=True,
    ).model_dump(mode="json")


def _train_params(train_cfg: dict) -> dict:
    return {k: v for k, v in train_cfg.items() if k != "datasets"}


def _train(train_cfg: dict) -> dict:
    from flywheel.training.config import TrainConfig
    from flywheel.training.trainer import main as train

    r = train(TrainConfig(**train_cfg))
    return {"ckpt": str(train_cfg["out"]), "steps": r["step"], "loss": r.get("loss")}


def train_step(cat, dataset: str, train_cfg: dict, run_id: str) -> dict:
    """One training run on its own, recorded as a `retrain` run (failed if training raises)."""
    with run_record(cat, run_id, "retrain", input=dataset, output=str(train_cfg["out"]),
                    params=_train_params(train_cfg)) as stats:
        t = _train(train_cfg)
        stats.update(steps=t["steps"], loss=t["loss"])
    return {"ckpt": t["ckpt"], "steps": t["steps"]}


def eval_step(cat, ckpt: str, prompts: list, seeds: list[int], eval_cfg: dict, run_id: str, phase: str, dataset: str | None,
              checker=None) -> list[dict]:
    from flywheel.loop.measure import generate_and_score, record_evals

    rows = generate_and_score(ckpt, prompts, seeds, eval_cfg["size"], eval_cfg["steps"], eval_cfg["guidance"], checker,
                              progress=f"eval {phase}", color_only=bool(eval_cfg.get("color_only")))
    record_evals(cat, run_id, phase, ckpt, dataset, rows)
    return rows


def prompts_digest(prompts: list) -> str:
    """What identifies a prompt set in a job key (the prompts themselves are too many to store there)."""
    return hashlib.sha256("\n".join(p for p, _ in prompts).encode()).hexdigest()[:16]


def prepare(cat, dataset: str, key: dict, *, before: bool, run_id: str | None = None, run: dict | None = None) -> Job:
    """The retraining job for `dataset` and `key` (whatever else defines it: training config,
    prompts, seeds); found again, with its finished steps, when the same retraining runs again."""
    units = (["eval-before"] if before else []) + ["train", "eval-after"]
    if run_id:
        key = {**key, "run_id": run_id}
    return Job.prepare("retrain", {"dataset": dataset, **key}, {"dataset": dataset}, units, run_id=run_id, run=run,
                       catalog=cat)


def train_unit(job: Job, train_cfg: dict) -> dict:
    """The job's training step, unless it already finished: {"ckpt", "steps", "loss"}."""
    if job.committed("train") is None:
        with job.step("train"):
            job.commit("train", [], _train(train_cfg))
    return job.committed("train")


def eval_unit(job: Job, phase: str, ckpt: str, prompts: list, seeds: list[int], eval_cfg: dict, dataset: str | None,
              checker=None) -> list[dict]:
    """The job's evaluation of `ckpt` for `phase` (before | after), unless it already finished; its rows."""
    unit = f"eval-{phase}"
    if job.committed(unit) is None:
        with job.step(unit):
            rows = eval_step(job.catalog, ckpt, prompts, seeds, eval_cfg, job.run_id, phase, dataset, checker)
            job.commit(unit, [], {"rows": rows})
    return job.committed(unit)["rows"]


def finish(job: Job, trained: dict) -> None:
    """Record the retraining as succeeded, audit it, and drop its state."""
    with job.step("finish"):
        job.check_complete()
        job.finish({"steps": trained["steps"], "loss": trained["loss"], "ckpt": trained["ckpt"]})
        job.catalog.audit("retrain", "retrain", job.plan["dataset"],
                          {"run_id": job.run_id, "ckpt": trained["ckpt"], "steps": trained["steps"]})
    job.cleanup()


def retrain(cat, dataset: str, train_cfg: dict, measure_prompts: list, seeds: list[int], eval_cfg: dict,
            run_id: str | None = None, before_ckpt: str | None = None, checker=None) -> dict:
    """Train (from `train_cfg['init']`) on `dataset`, evaluate after (and before, when
    `before_ckpt` is given), record both in `loop_evals` under the run id (`run_id`, or the job's)."""
    key = {"train": train_cfg, "prompts": prompts_digest(measure_prompts), "seeds": list(seeds), "eval": eval_cfg,
           "before_ckpt": before_ckpt}
    job = prepare(cat, dataset, key, before=bool(before_ckpt), run_id=run_id,
                  run={"input": dataset, "output": str(train_cfg["out"]), "params": _train_params(train_cfg)})
    out: dict = {"run_id": job.run_id}
    if before_ckpt:
        out["before_rows"] = eval_unit(job, "before", before_ckpt, measure_prompts, seeds, eval_cfg, None, checker)
    t = train_unit(job, train_cfg)
    out.update(ckpt=t["ckpt"], steps=t["steps"])
    out["after_rows"] = eval_unit(job, "after", t["ckpt"], measure_prompts, seeds, eval_cfg, dataset, checker)
    finish(job, t)
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

def load_checker(n_images: int = 6000):
    """The checker (cached under FLYWHEEL_HOME/cache/checker per configuration)."""
    from flywheel.training.checker import Checker
    from flywheel.training.checker import TrainConfig as CheckerConfig

    return Checker.load(cfg=CheckerConfig(n_images=n_images, epochs=6 if n_images >= 6000 else 4))
