"""Toy learning on the synthetic shapes suite: does the trainer actually learn?

Everything the run needs is timed against one CPU budget: generating the training scenes, the caches
(MiniLM text features; pixel-space 'latents' need no VAE training), the transformer. Then images for
held-out prompts (prompt strings disjoint from training, by the generator's hash split) are scored per
attribute by the programmatic checker, whose own accuracy on ground-truth images is printed beside it.

    nice -n 10 .venv/bin/python benchmarks/toy_learning.py --minutes 25 --out runs/toy
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/toy")
    ap.add_argument("--minutes", type=float, default=30.0, help="budget for data + caches + transformer, in minutes of the 2-core machine")
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                    help="cpu: this process's CPU time, budget = minutes x threads (fair when others share the cores); wall: wall time")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-eval", type=int, default=160)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vae", default="pixel:8")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--prediction", default="x0", help="x0 for pixel space (see rectified_flow.to_velocity), v for VAE latents")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wall-limit", type=float, default=None, help="also stop training after this many wall-clock minutes")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--prompt-seed", type=int, default=1, help="held-out prompt draw; tune sampling on another seed than the one reported")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from flywheel.training import checker as chk
    from flywheel.training import synthetic as syn
    from flywheel.training.config import TrainConfig
    from flywheel.training.generate import Generator
    from flywheel.training.trainer import main as train

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = a.minutes * 60 * (a.threads if a.clock == "cpu" else 1)
    clock = time.process_time if a.clock == "cpu" else time.time
    t0, w0 = clock(), time.time()
    timings = {}
    if not a.eval_only:
        data = out / "train-data"
        if not data.exists():
            syn.write_dataset(data, a.n_train, seed=0, size=a.size, split="train", suite="shapes", name="toy-shapes")
        timings["data_s"] = clock() - t0
        cfg = TrainConfig(datasets=[str(data)], out=str(out / "ckpt"), stage="pretrain", preset=a.preset, vae=a.vae,
                          text_encoder="minilm", resolution=a.size, steps=10**9, batch_size=a.batch_size, lr=a.lr,
                          warmup=50, ema_decay=0.995, prediction=a.prediction, ti2i_ratio=0.0, caption_probs={"original": 1.0},
                          max_seconds=budget - (clock() - t0), budget_clock=a.clock,
                          deadline=None if a.wall_limit is None else w0 + a.wall_limit * 60, ckpt_every=200, log_every=20,
                          cache_dir=str(out / "cache"))
        r = train(cfg)
        timings["train_total_s"] = clock() - t0
        timings["train_wall_s"] = time.time() - w0
        timings["clock"] = a.clock
        timings["steps"] = r["step"]
        timings["final_loss"] = r["loss"]
        print(f"trained {r['step']} steps: {timings['train_total_s'] / 60:.1f} min of {a.clock} time (budget {budget / 60:.0f}), "
              f"{timings['train_wall_s'] / 60:.1f} min wall; loss {r['loss']:.4f}", flush=True)

    # -- evaluation on held-out prompts --------------------------------------------------------------------
    t1 = time.time()
    prompts = syn.sample_prompts(a.n_eval, split="eval", suite="shapes", seed=a.prompt_seed, unique=True)
    import pyarrow.parquet as pq

    train_prompts = set(pq.read_table(out / "train-data" / "data", columns=["caption"]).column("caption").to_pylist())
    gen = Generator(out / "ckpt", device="cpu")
    images = []
    for i in range(0, len(prompts), 16):
        chunk = prompts[i:i + 16]
        images += gen([p for p, _ in chunk], width=a.size, height=a.size, steps=a.sample_steps, guidance=a.guidance, seed=i)
    (out / "samples").mkdir(exist_ok=True)
    for k, im in enumerate(images[:48]):
        im.save(out / "samples" / f"{k:03d}.png")
    checker = chk.Checker.load()
    scores = checker.score(images, [s for _, s in prompts])
    acc = chk.accuracy(scores)
    gt = chk.ground_truth_accuracy(checker, n=300)
    chance = {"color": 1 / len(syn.COLORS), "shape": 1 / len(syn.SHAPES), "count": 1 / len(syn.COUNTS), "position": 1 / len(syn.POSITIONS)}
    timings["eval_s"] = time.time() - t1
    print(f"\n{'attribute':10} {'model':>8} {'checker on GT':>14} {'chance':>8}")
    for k in ("color", "shape", "count", "position", "all"):
        if k in acc:
            print(f"{k:10} {acc[k]:8.1%} {gt.get(k, float('nan')):14.1%} {chance.get(k, float('nan')):8.1%}")
    result = dict(accuracy=acc, checker_ground_truth=gt, chance=chance, timings=timings, n_eval=len(prompts),
                  config={k: v for k, v in vars(a).items()}, train_prompts_overlap=len({p for p, _ in prompts} & train_prompts))
    (out / "toy_result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(timings), f"held-out prompts seen in training: {result['train_prompts_overlap']}")


if __name__ == "__main__":
    main()
