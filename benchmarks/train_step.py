"""Trainer overhead and cache speed-up, measured in one run on the same model and batch shape.

1. `flywheel train`'s step time once latents and text embeddings are cached against a bare forward +
   backward + AdamW loop over the same transformer and batch shape (goal: <= 1.1x): the median step on
   both sides (the trainer logs every step here), in paired rounds (bare, then the trainer on warm
   caches); the median ratio of CPU time is the figure (wall time is printed too: on a shared
   machine it swings with other load, CPU time of a one-thread run does not).
2. Epoch 2 against epoch 1, which encodes every sample with the VAE and the text encoder (goal: >= 3x).

    .venv/bin/python benchmarks/train_step.py [--size 128] [--batch-size 8] [--n 64]

Also `flops_per_step` / `mfu` used by benchmarks/train_gpu.sh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def flops_per_step(cfg: dict, batch: int, img_tokens: int, txt_tokens: int) -> float:
    """Training FLOPs of one step of QwenImage21Transformer2DModel (forward + backward = 3x forward):
    matmuls 2 * params-per-token * tokens, plus attention 4 * seq^2 * dim per layer."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    layers, mlp = cfg["num_layers"], cfg.get("mlp_ratio", 3)
    seq = img_tokens + txt_tokens
    per_token = layers * (4 * d * d + 3 * d * mlp * d)  # q,k,v,o + SwiGLU (gate, up, down)
    per_token += cfg["in_channels"] * d + d * cfg["out_channels"]
    linear = 2 * per_token * seq + 2 * cfg["context_in_dim"] * d * txt_tokens
    attn = layers * 4 * seq * seq * d
    return 3.0 * batch * (linear + attn)


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    return flops / seconds / (peak_tflops * 1e12)


def bare_loop(model, batch: dict, steps: int, lr: float = 1e-4) -> tuple[list[float], list[float]]:
    """The floor: forward, loss, backward, clip, AdamW; nothing else. Wall and CPU seconds per step."""
    import torch

    from flywheel.models.qwen_image import Denoiser
    from flywheel.training import rectified_flow as rf

    den = Denoiser(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.001, fused=True)  # as the trainer's
    times, cpu = [], []
    x0, text, mask, grid = batch["x0"], batch["text"], batch["mask"], batch["grid"]
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        noise = torch.randn_like(x0)
        t = torch.rand(x0.shape[0])
        loss = rf.loss(lambda xt, t: den(xt, t, grid, text, mask), x0, noise, t).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n", type=int, default=64, help="samples, i.e. n / batch-size steps per epoch")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--vae", default="tiny", help="VAE preset used for the cache (epoch 1 encodes with it)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9, help="paired (bare, trainer) measurements")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from flywheel.models import qwen_image as qi
    from flywheel.training import synthetic as syn
    from flywheel.training.config import TrainConfig
    from flywheel.training.trainer import main as train

    tmp = Path(tempfile.mkdtemp(prefix="train-step-"))
    syn.write_dataset(tmp / "data", a.n, seed=0, size=a.size, split="train", suite="shapes")
    nb = a.n // a.batch_size

    # the bare loop: same transformer config, same batch shape as the trainer builds it (MiniLM features of
    # real captions, padded with a mask), no data path, no cache, no EMA, no bookkeeping
    import pyarrow.parquet as pq

    from flywheel.models.text_encoders import load_text_encoder

    vae = qi.build_vae("2.1", a.vae) if a.vae in qi.PRESETS else qi.PixelCodec(patch=int(a.vae.split(":")[1]))
    h, w = qi.grid_for(a.size, a.size, qi.vae_scale(vae))
    enc = load_text_encoder("minilm")
    captions = pq.read_table(tmp / "data" / "data", columns=["caption"]).column("caption").to_pylist()[: a.batch_size]
    feats = [enc.encode(c).embeds for c in captions]
    L = max(len(f) for f in feats)
    text = torch.stack([torch.cat([f, f.new_zeros(L - len(f), f.shape[1])]) for f in feats])
    mask = torch.stack([torch.arange(L) < len(f) for f in feats])
    torch.manual_seed(0)
    model = qi.build_transformer("2.1", a.preset, qi.z_dim(vae), enc.dim).train()
    batch = dict(x0=torch.randn(a.batch_size, h * w, qi.z_dim(vae)), text=text, mask=mask, grid=(h, w))

    base = dict(datasets=[str(tmp / "data")], preset=a.preset, vae=a.vae, resolution=a.size, batch_size=a.batch_size,
                log_every=1, ti2i_ratio=0.0, progress=False, caption_probs={"original": 1.0}, uncond_dropout=0.0,
                cache_dir=str(tmp / "cache"), ckpt_every=10**9)

    def trainer_steps(name: str, steps: int) -> tuple[list[float], list[float]]:
        train(TrainConfig(out=str(tmp / name), steps=steps, **base))
        recs = [json.loads(line) for line in (tmp / name / "metrics.jsonl").read_text().splitlines()]
        return [r["sec_per_step"] for r in recs], [r["cpu_sec_per_step"] for r in recs]

    # 1. cache speed-up: four epochs from cold caches
    per_step, _ = trainer_steps("cold", 4 * nb)
    epoch = [statistics.fmean(per_step[e * nb:(e + 1) * nb]) for e in range(4)]
    # 2. overhead: rounds of (bare loop, trainer from warm caches); the median step of each side, the first
    #    two dropped (warm-up). Wall time and this process's CPU time: with one thread, CPU time does not
    #    count the time another process held the core, so it is the figure to trust on a shared machine.
    n_steps = max(2 * nb, 16)
    rounds = []
    for r in range(a.rounds):
        bw, bc = bare_loop(model, batch, steps=n_steps)
        tw, tc = trainer_steps(f"warm{r}", n_steps)
        rounds.append({k: statistics.median(v[2:]) for k, v in dict(bw=bw, bc=bc, tw=tw, tc=tc).items()})
    wall = sorted(r["tw"] / r["bw"] for r in rounds)
    cpu = sorted(r["tc"] / r["bc"] for r in rounds)
    print(f"model: {qi.describe(model, vae)}; {a.size}px, batch {a.batch_size}, {h * w} image + ~{L} text tokens, "
          f"{a.threads} thread(s); text padded to {L} as in the trainer")
    print(f"epoch 1 (encodes everything): {epoch[0] * 1000:8.1f} ms/step")
    print(f"epochs 2-4 (cached):          {', '.join(f'{e * 1000:.1f}' for e in epoch[1:])} ms/step (mean)")
    for i, r in enumerate(rounds):
        print(f"round {i + 1} (median of {n_steps - 2} steps): bare fwd+bwd+AdamW {r['bw'] * 1000:.1f} ms wall, "
              f"{r['bc'] * 1000:.1f} ms CPU; trainer (cached) {r['tw'] * 1000:.1f} ms wall, {r['tc'] * 1000:.1f} ms CPU")
    print(f"trainer / bare, CPU time:  {statistics.median(cpu):.2f}x median of {len(cpu)} rounds (range {cpu[0]:.2f}-{cpu[-1]:.2f}; goal <= 1.1x)")
    print(f"trainer / bare, wall time: {statistics.median(wall):.2f}x median of {len(wall)} rounds (range {wall[0]:.2f}-{wall[-1]:.2f}; "
          "swings with the machine's other load)")
    print(f"epoch 1 / epoch 2 = {epoch[0] / epoch[1]:.1f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
