"""The trainer: one loop you can read top to bottom (nanoGPT's train.py is the model), in `main(cfg)`.

Stages follow Table 2 of the report (`config.STAGES`): pre-training (256/512px, T2I:TI2I 0.9/0.1, lr 1e-4),
continual pre-training (512-2048px, 0.7/0.3, lr 2e-5), SFT (0.7/0.3, lr 1e-5); all with AdamW, weight decay
0.001, gradient clipping 1.0 and unconditional dropout 0.1. The networks come from diffusers
(models/qwen_image.py); the objective from rectified_flow.py; the batches, their conditioning and the
encoder caches from batches.py; what is read and written around the loop from checkpoint.py.

Run on several GPUs with `torchrun --nproc_per_node N -m flywheel.training.trainer --dataset D --out O`
(the options are TrainConfig's fields); on CPU, DDP uses the gloo backend. `out/metrics.jsonl` holds
loss, lr and loss per timestep bin every `log_every` steps; the rest of `out/` is in checkpoint.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flywheel.training.config import TrainConfig

N_BINS = 10  # timestep bins of the loss log


def main(cfg: TrainConfig) -> dict:
    """Run the stage's loop: rectified flow here; RL, distillation and the enhancer in their own modules."""
    if cfg.kind == "rl":
        from flywheel.training import grpo

        return grpo.main(cfg)
    if cfg.kind == "distill":
        from flywheel.training import distill

        return distill.main(cfg)
    if cfg.kind.startswith("enhancer"):
        from flywheel.training import enhancer

        return enhancer.main(cfg)
    return _flow(cfg)


def _flow(cfg: TrainConfig) -> dict:
    import numpy as np
    import torch
    import torch.distributed as dist

    from flywheel import config as fw_config
    from flywheel.models import qwen_image as qi
    from flywheel.training import checkpoint as ck
    from flywheel.training import rectified_flow as rf
    from flywheel.training.batches import Loader
    from flywheel.training.data import Batches, Samples

    # -- setup: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK ----------------------------------------------
    plan = cfg.schedule  # lr, TI2I ratio and resolution curriculum of the stage, with this run's overrides
    device, rank, world = _distributed(cfg.device)
    master = rank == 0
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # -- model: frozen text encoder and VAE, trainable transformer ------------------------------------
    prediction = ck.resolve_prediction(cfg.prediction, cfg.init)  # v or x0; follows an --init checkpoint
    encoder = ck.load_text_encoder(cfg, device)
    vae = ck.load_vae(cfg).to(device).eval().requires_grad_(False)
    raw = ck.load_transformer(cfg, qi.z_dim(vae), encoder.dim).to(device).train()
    model = torch.compile(raw) if cfg.compile else raw
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    denoise = qi.Denoiser(model, arch=qi.arch_of(raw))
    params = [p for p in raw.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # no decay on norms' gains
    opt = torch.optim.AdamW(groups, lr=plan.lr, betas=cfg.betas, fused=device.type in ("cuda", "cpu"))
    ema = [p.detach().clone().float() for p in raw.parameters()] if cfg.ema_decay > 0 else None
    start, history = ck.load_state(out / "state", raw, opt, ema, device) if cfg.resume else (0, [])

    # -- data: deterministic batches, conditioning and latents through the caches ---------------------
    samples = Samples.load(cfg.datasets)
    batches = Batches(samples, cfg.batch_size, cfg.seed, plan.ti2i_ratio, cfg.caption_probs, multiple=2 * qi.vae_scale(vae))
    cache = Path(cfg.cache_dir) if cfg.cache_dir else fw_config.cache_dir("train")
    loader = Loader(samples, batches, encoder, vae, cache, device, cfg.uncond_dropout, rank, world)

    # -- the loop ----------------------------------------------------------------------------------
    log = _Log(cfg, out, start) if master else None
    clock = time.process_time if cfg.budget_clock == "cpu" else time.time
    t_start, sample_losses, loss = clock(), [], float("nan")
    step = start - 1
    for step in range(start, cfg.steps):
        res = plan.resolution_at(step, cfg.steps)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, rank, 1]).integers(2**62)))
        b = loader.get(step, res, gen)  # x0 (B, N, z), text (B, L, D), cond: [(B, N, z)] per source image
        noise = torch.randn(b.x0.shape, generator=gen).to(device)  # (B, N, z)
        mu = rf.calculate_shift((b.size[0] // 16) * (b.size[1] // 16))  # larger images: more high-noise steps
        t = rf.sample_t(len(b.samples), mu, gen, cfg.logit_mean, cfg.logit_std).to(device)  # (B,) in (0, 1)

        def predict(xt, t):  # (B, N, z) -> (B, N, z)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                return denoise(xt, t, b.grid, b.text, b.text_mask, b.slots, b.cond, [b.grid] * len(b.cond))

        for g in opt.param_groups:
            g["lr"] = plan.lr * min(1.0, (step + 1) / max(1, cfg.warmup))  # linear warm-up, then constant
        losses = rf.loss(predict, b.x0, noise, t, prediction)  # (B,)
        opt.zero_grad(set_to_none=True)
        losses.mean().backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            d = min(cfg.ema_decay, (1 + step) / (10 + step))  # short memory early: EMA of an untrained start is noise
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in raw.parameters()], 1 - d)

        # -- bookkeeping: loss (mean over ranks), per-sample losses, stop on the time budget ----------
        lv = losses.detach().float().cpu()
        sample_losses += [dict(id=s.id, task=s.task, caption_type="uncond" if dr else s.caption_type, step=step, t=ti,
                               loss=li, rank=rank) for s, li, ti, dr in zip(b.samples, lv.tolist(), t.tolist(), b.drop)]
        loss = _reduce(float(losses.detach().mean()), world, device)
        history.append(loss)
        out_of_time = ((cfg.max_seconds is not None and clock() - t_start > cfg.max_seconds)
                       or (cfg.deadline is not None and time.time() > cfg.deadline))
        if world > 1 and (cfg.max_seconds is not None or cfg.deadline is not None):  # all ranks stop at the same step
            out_of_time = _reduce(float(out_of_time), world, device, op="max") > 0
        last = step + 1 == cfg.steps or out_of_time
        if log is not None:
            log.step(step, t.cpu(), lv, write=(step + 1) % cfg.log_every == 0 or last, loss=loss, lr=opt.param_groups[0]["lr"],
                     grad_norm=float(gnorm), resolution=res, batch=len(b.samples),
                     img_tokens=int(b.x0.shape[1]) * (1 + len(b.cond)), txt_tokens=int(b.text.shape[1]))

        # -- checkpoint ------------------------------------------------------------------------------
        if (step + 1) % cfg.ckpt_every == 0 or last:
            ck.write_sample_losses(out, sample_losses, rank, world)
            sample_losses = []
            if master:
                ck.save_state(out / "state", raw, opt, ema, step + 1, history, cfg)
                ck.save_checkpoint(out, raw, ema, vae, encoder, cfg, step + 1, prediction)
            if world > 1:
                dist.barrier()
        if out_of_time:
            break
    if log is not None:
        log.close()
    if world > 1:
        dist.destroy_process_group()
    return dict(losses=history, step=step + 1, out=str(out), loss=loss, **loader.cache_stats())


def _distributed(asked: str | None):
    """(device, rank, world); joins the process group when torchrun started several processes."""
    import torch
    import torch.distributed as dist

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = torch.device(asked or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world


def _reduce(x: float, world: int, device, op: str = "mean") -> float:
    """x's mean (or max) over the ranks; every rank gets the same value."""
    if world == 1:
        return x
    import torch
    import torch.distributed as dist

    v = torch.tensor([x], device=device)
    dist.all_reduce(v, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(v) / (world if op == "mean" else 1)


class _Log:
    """Rank 0's progress bar and `metrics.jsonl`: one record per `log_every` steps, with the mean loss per
    timestep bin over those steps (minRF's diagnostic: which noise levels the model has not learnt) and
    wall and CPU seconds per step (benchmarks/train_step.py reads both)."""

    def __init__(self, cfg: TrainConfig, out: Path, start: int):
        self.cfg, self.path = cfg, out / "metrics.jsonl"
        self.bins: dict[int, list[float]] = {}
        self.bar = None
        if cfg.progress:
            from tqdm.auto import tqdm

            budgeted = cfg.steps >= 10**8 and (cfg.max_seconds is not None or cfg.deadline is not None)  # no step count
            self.bar = tqdm(total=None if budgeted else cfg.steps, initial=start, desc=f"train {cfg.stage}", unit="step")
        self.t_last, self.c_last = time.time(), time.process_time()

    def step(self, step: int, t, losses, write: bool, **fields) -> None:
        """t, losses: (B,) of this step; fields: the record's values (loss, lr, grad_norm, resolution, ...)."""
        from flywheel.training import rectified_flow as rf

        for b, (s, c) in rf.timestep_bins(t, losses, N_BINS).items():
            self.bins.setdefault(b, []).append(s / c)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{fields['loss']:.4f}", res=fields["resolution"])
        if not write:
            return
        now, c_now = time.time(), time.process_time()  # record to record: writing a record counts in the next
        rec = dict(step=step + 1, **fields, sec_per_step=(now - self.t_last) / self.cfg.log_every,
                   cpu_sec_per_step=(c_now - self.c_last) / self.cfg.log_every,  # this process's CPU time, all threads
                   loss_by_t_bin={f"{b / N_BINS:.1f}": sum(v) / len(v) for b, v in sorted(self.bins.items())})
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.bins.clear()
        self.t_last, self.c_last = now, c_now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cli(argv: list[str] | None = None) -> None:
    """`python -m flywheel.training.trainer ...` (what torchrun launches); `flywheel train` is the user command."""
    from flywheel.training.config import from_args

    r = main(from_args(argv, description=__doc__.splitlines()[0]))
    print(json.dumps({k: v for k, v in r.items() if k != "losses"}))


if __name__ == "__main__":
    _cli()
