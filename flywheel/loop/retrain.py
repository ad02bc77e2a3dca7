"""Retraining from an emitted dataset version (report section 2.4): train from the last checkpoint,
evaluate before and after on the same held-out prompts, record the table in the catalog
(`loop_evals`, one row per concept, attribute and seed). Plain functions: `flywheel.flows.loop`
wraps them as Prefect tasks, and the demo and tests call them without a server.
"""

from __future__ import annotations

import uuid


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


def train_step(cat, dataset: str, train_cfg: dict, run_id: str) -> dict:
    from flywheel.training.config import TrainConfig
    from flywheel.training.trainer import main as train

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
    from flywheel.loop.measure import generate_and_score, record_evals

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

def load_checker(n_images: int = 6000):
    """The checker (cached under FLYWHEEL_HOME/cache/checker per configuration)."""
    from flywheel.training.checker import Checker
    from flywheel.training.checker import TrainConfig as CheckerConfig

    return Checker.load(cfg=CheckerConfig(n_images=n_images, epochs=6 if n_images >= 6000 else 4))
