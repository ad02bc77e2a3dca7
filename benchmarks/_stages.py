"""What the three stage benchmarks (grpo_toy, distill_toy, enhancer_toy) share: the toy checkpoint they start
from, scoring a checkpoint on (prompt, spec) pairs per attribute with Wilson intervals and sampling time,
and the held-out split by attribute combination."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure_toy(toy: Path, minutes: float) -> Path:
    """benchmarks/toy_learning.py's checkpoint (seed 0) in toy/ckpt, trained here when it is missing."""
    if not (toy / "ckpt" / "transformer").exists():
        print(f"training the toy checkpoint ({minutes} CPU-minutes) into {toy}", flush=True)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "toy_learning.py"), "--out", str(toy), "--minutes", str(minutes),
                        "--n-eval", "16"], check=True)
    return toy / "ckpt"


def combo_split(spec) -> str:
    """`heldout` for one (colour, shape, count) combination in five, by hash: training never asks for these."""
    key = f"{spec.color}|{spec.shape}|{spec.count}"
    return "heldout" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 5 == 0 else "train"


def score(images, specs, prompts) -> list[dict]:
    """Rows with `<attr>_ok`, `passed` and `expected_<attr>`, as evaluate.summarize reads them."""
    from flywheel.training.checker import ATTRIBUTES, Checker

    res = Checker.load().score(images, specs)
    return [{**{f"{a}_ok": r[a] for a in ATTRIBUTES}, "passed": r["all"], "prompt": p,
             **{f"expected_{a}": getattr(s, a) for a in ATTRIBUTES}} for r, s, p in zip(res, specs, prompts)]


def evaluate(ckpt: Path, pairs: list, size: int, steps: int | None = None, guidance: float | None = None, seed: int = 1,
             batch: int = 32, render_prompts: list[str] | None = None) -> dict:
    """Generate every (prompt, spec) once (or `render_prompts`, a rewrite of each, scored against the original
    spec), score it; {summary, seconds_per_image, images (the first 16)}."""
    import torch

    from flywheel.training.evaluate import summarize
    from flywheel.training.generate import Generator

    gen = Generator(ckpt, device="cuda" if torch.cuda.is_available() else "cpu")
    prompts = render_prompts or [p for p, _ in pairs]
    images, t = [], 0.0
    for i in range(0, len(pairs), batch):
        t0 = time.perf_counter()
        images += gen(prompts[i:i + batch], width=size, height=size, steps=steps, guidance=guidance, seed=seed * 100_003 + i)
        t += time.perf_counter() - t0
    rows = score(images, [s for _, s in pairs], prompts)
    return {"summary": summarize(rows), "seconds_per_image": t / max(1, len(pairs)), "images": list(zip(prompts, images))[:16]}


def write(out: Path, name: str, arms: dict[str, dict], extra: dict) -> str:
    """Print and store the side-by-side table, the report page and the JSON."""
    from flywheel.training.report import side_by_side, write_report

    named = {k: v["summary"] for k, v in arms.items()}
    seconds = {k: v["seconds_per_image"] for k, v in arms.items()}
    table = side_by_side(named, seconds)
    write_report(out / "report", named, seconds, {k: v["images"] for k, v in arms.items()})
    (out / f"{name}.json").write_text(json.dumps({"arms": {k: {"summary": v["summary"], "seconds_per_image": v["seconds_per_image"]}
                                                           for k, v in arms.items()}, **extra}, indent=2, default=str))
    print(table, flush=True)
    return table


def delta(arms: dict, a: str, b: str, attr: str) -> float:
    """Points (percentage points) arm a is above arm b on attr."""
    return 100 * (arms[a]["summary"][attr]["acc"] - arms[b]["summary"][attr]["acc"])
