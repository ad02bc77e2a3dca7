"""The trainer: one loop you can read top to bottom (nanoGPT's train.py is the model), in `main(cfg)`.

Stages follow Table 2 of the report: pre-training (256/512px, T2I:TI2I 0.9/0.1, lr 1e-4), continual
pre-training (512-2048px, 0.7/0.3, lr 2e-5), SFT (0.7/0.3, lr 1e-5); all with AdamW, weight decay
0.001, gradient clipping 1.0 and unconditional dropout 0.1. The networks come from diffusers
(models/qwen_image.py); the frozen text encoder and VAE run once per sample, their outputs cached.

Run on several GPUs with `torchrun --nproc_per_node N -m flywheel.training.trainer --dataset D --out O`;
on CPU, DDP uses the gloo backend. Outputs in `out/`:
- `transformer/`, `vae/`, `scheduler/` (+ `text_encoder/`, `processor/`, `model_index.json` with Qwen3-VL
  conditioning: a `QwenImage21Pipeline` directory), `flywheel.json` (how to rebuild the conditioning);
- `state/` to resume exactly (raw weights, EMA, optimizer, step);
- `metrics.jsonl` (loss, lr, loss per timestep bin), `sample_losses.parquet` (loss per sample id, for the
  flywheel's bad-case mining).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STAGES = {
    # resolutions: [(side, from fraction of the run)], the resolution curriculum
    "pretrain": dict(lr=1e-4, ti2i_ratio=0.1, resolutions=[(256, 0.0), (512, 0.5)]),
    "continual": dict(lr=2e-5, ti2i_ratio=0.3, resolutions=[(512, 0.0), (1024, 0.4), (2048, 0.8)]),
    "sft": dict(lr=1e-5, ti2i_ratio=0.3, resolutions=[(512, 0.0), (1024, 0.4), (2048, 0.8)]),
}


@dataclass
class TrainConfig:
    datasets: list[str] = field(default_factory=list)
    out: str = "out"
    stage: str = "pretrain"
    preset: str = "tiny"
    arch: str = "2.1"  # "2.1" (QwenImage21Transformer2DModel) | "1.0" (QwenImageTransformer2DModel)
    steps: int = 100
    batch_size: int = 4
    init: str | None = None  # diffusers directory (released weights or one of our checkpoints)
    text_encoder: str | None = None  # "minilm" | Qwen3-VL directory; default: the init's, else minilm
    vae: str | None = None  # preset name | directory | "pixel:P"; default: the init's, else the preset's
    resolution: int | None = None  # fixed side instead of the stage's curriculum
    lr: float | None = None  # default: the stage's
    warmup: int = 100
    weight_decay: float = 0.001
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    uncond_dropout: float = 0.1
    ti2i_ratio: float | None = None  # default: the stage's
    caption_probs: dict[str, float] | None = None
    ema_decay: float = 0.999  # 0 disables EMA
    prediction: str | None = None  # "v" (Qwen-Image; loads in the pipelines) | "x0" (pixel-space toy runs, see
    # flow.to_velocity); default: the init checkpoint's (fine-tuning must keep what the weights were trained to output), else "v"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    bf16: bool = False
    compile: bool = False
    device: str | None = None
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 10
    resume: bool = True
    max_seconds: float | None = None  # stop (and checkpoint) after this much time: toy runs with a time budget
    deadline: float | None = None  # stop (and checkpoint) at this Unix time, whatever the budget says
    budget_clock: str = "wall"  # "wall" | "cpu" (this process's CPU seconds, all threads: fair on a shared machine)
    cache_dir: str | None = None
    progress: bool = True


def main(cfg: TrainConfig) -> dict:
    import numpy as np
    import torch
    import torch.distributed as dist

    from flywheel.models import qwen_image as qi
    from flywheel.models.text_encoders import load_from_checkpoint, load_text_encoder
    from flywheel.training import flow
    from flywheel.training.cache import TensorCache
    from flywheel.training.data import Batches, Samples

    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; use one of {sorted(STAGES)}")
    stage = STAGES[cfg.stage]
    lr = cfg.lr if cfg.lr is not None else stage["lr"]
    ti2i_ratio = cfg.ti2i_ratio if cfg.ti2i_ratio is not None else stage["ti2i_ratio"]
    curriculum = [(cfg.resolution, 0.0)] if cfg.resolution else stage["resolutions"]

    # -- distributed setup: torchrun sets WORLD_SIZE/RANK/LOCAL_RANK --------------------------------
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # -- models: frozen conditioning + VAE, trainable transformer ------------------------------------
    init = Path(cfg.init) if cfg.init else None
    prediction = resolve_prediction(cfg.prediction, init)  # the caller's config is left as given
    if cfg.text_encoder:
        encoder = load_text_encoder(cfg.text_encoder, device=str(device))
    elif init is not None and (init / "flywheel.json").exists():
        encoder = load_from_checkpoint(init, device=str(device))
    elif init is not None and (init / "text_encoder").exists():
        encoder = load_text_encoder(str(init), device=str(device))
    else:
        encoder = load_text_encoder("minilm", device=str(device))
    vae = _vae(cfg, init).to(device).eval().requires_grad_(False)
    scale, channels = qi.vae_scale(vae), qi.image_channels(vae)
    lat_mean, lat_std = (s.to(device) for s in qi.latent_stats(vae))
    if init is not None and ((init / "transformer").exists() or (init / "config.json").exists()):
        model = qi.load_transformer(init)
    else:
        model = qi.build_transformer(cfg.arch, cfg.preset, qi.z_dim(vae), encoder.dim)
    arch = qi.arch_of(model)
    model.to(device).train()
    raw = model
    if cfg.compile:
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    denoise = qi.Denoiser(model, arch=arch)

    params = [p for p in raw.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # no weight decay on norms' gains
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=cfg.betas, fused=device.type in ("cuda", "cpu"))  # one kernel per group
    ema = [p.detach().clone().float() for p in raw.parameters()] if cfg.ema_decay > 0 else None

    def lr_at(step):  # linear warm-up, then constant as in the report's stages
        return lr * min(1.0, (step + 1) / max(1, cfg.warmup))

    # -- data and caches ---------------------------------------------------------------------------
    samples = Samples.load(cfg.datasets)
    batches = Batches(samples, cfg.batch_size, cfg.seed, ti2i_ratio, cfg.caption_probs, multiple=2 * scale)
    from flywheel import config as fw_config  # only for the cache location default

    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else fw_config.cache_dir("train")
    text_cache = TensorCache(cache_root / "text")
    latent_cache = TensorCache(cache_root / "latents")
    vae_rev = qi.revision(vae)

    def resolution_at(step):
        return [r for r, frac in curriculum if step >= frac * cfg.steps][-1]

    # -- resume ---------------------------------------------------------------------------------------
    start, history = 0, []
    state_dir = out / "state"
    if cfg.resume and (state_dir / "meta.json").exists():
        meta = json.loads((state_dir / "meta.json").read_text())
        raw.load_state_dict(torch.load(state_dir / "model.pt", map_location=device))
        opt.load_state_dict(torch.load(state_dir / "optim.pt", map_location=device))
        if ema is not None and (state_dir / "ema.pt").exists():
            for e, v in zip(ema, torch.load(state_dir / "ema.pt", map_location=device)):
                e.copy_(v)
        start, history = meta["step"], meta.get("history", [])
    sample_losses: list[dict] = []

    # -- one sample's conditioning and latents, through the caches -----------------------------------
    def text_of(s, uncond: bool):
        ctype = "uncond" if uncond else s.caption_type
        sid = s.id if (s.task == "ti2i" or not uncond) else ""
        key = TensorCache.key(sid, ctype, encoder.revision, s.size if s.task == "ti2i" else "")
        def compute():
            images = None
            if s.task == "ti2i":
                if encoder.kind == "minilm":
                    images = [((s.size[0] // scale // 2) * (s.size[1] // scale // 2))] * s.n_sources
                else:
                    from flywheel.training.data import load_image, to_pil
                    images = [to_pil(load_image(b, s.size, 3)) for b in samples.sources(s.row)]
            e = encoder.encode("" if uncond else s.prompt, images)
            return {"embeds": e.embeds, "slots": e.img_slots}
        return text_cache.get_or(key, compute)

    def latents_of(s, which: str, data):  # data: () -> encoded bytes, read only on a cache miss
        key = TensorCache.key(s.id, which, f"{s.size[0]}x{s.size[1]}", vae_rev)
        def compute():
            from flywheel.training.data import load_image
            x = load_image(data(), s.size, channels).to(device)[None, :, None]  # (1, C, 1, H, W)
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mode()  # (1, z, 1, h, w)
            z = (z - lat_mean) / lat_std
            return {"z": z[0, :, 0].flatten(1).t().contiguous()}  # (h*w, z) row-major tokens
        return latent_cache.get_or(key, compute)["z"]

    # -- the loop ----------------------------------------------------------------------------------------
    n_bins = 10
    bins: dict[int, list[float]] = {}
    bar = None
    if master and cfg.progress:
        from tqdm.auto import tqdm
        budgeted = cfg.steps >= 10**8 and (cfg.max_seconds is not None or cfg.deadline is not None)  # a time budget, no step count
        bar = tqdm(total=None if budgeted else cfg.steps, initial=start, desc=f"train {cfg.stage}", unit="step")
    clock = time.process_time if cfg.budget_clock == "cpu" else time.time
    t_last, c_last, t_start = time.time(), time.process_time(), clock()
    last_loss = float("nan")
    step = start - 1
    for step in range(start, cfg.steps):
        res = resolution_at(step)
        batch = batches.get(step, res, rank, world)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, step, rank, 1]).integers(2**62)))
        drop = (torch.rand(len(batch), generator=gen) < cfg.uncond_dropout).tolist()

        w, h = batch[0].size
        grid = qi.grid_for(w, h, scale)
        x0 = torch.stack([latents_of(s, "image", lambda: samples.image(s.row)) for s in batch]).to(device)  # (B, N, z)
        cond, cond_grids = [], []
        for j in range(batch[0].n_sources):
            cond.append(torch.stack([latents_of(s, f"source{j}", lambda: samples.sources(s.row)[j]) for s in batch]).to(device))
            cond_grids.append(grid)
        texts = [text_of(s, d) for s, d in zip(batch, drop)]
        L = max(t["embeds"].shape[0] for t in texts)
        text = torch.stack([torch.cat([t["embeds"], t["embeds"].new_zeros(L - len(t["embeds"]), t["embeds"].shape[1])]) for t in texts]).to(device)
        text_mask = torch.stack([torch.arange(L) < len(t["embeds"]) for t in texts]).to(device)
        slots = torch.stack([torch.cat([t["slots"], t["slots"].new_zeros(L - len(t["slots"]))]) for t in texts])
        if cond and not bool((slots == slots[0]).all()):
            raise RuntimeError("condition-image slots differ across the batch; the encoder must place images before the text")
        if cond and int(slots[0].sum()) * 4 != sum(c.shape[1] for c in cond):
            raise RuntimeError(f"the text encoder reserved {int(slots[0].sum())} image slots for {sum(c.shape[1] for c in cond)} "
                               "condition latents; TI2I needs a VAE with 16x downsampling (one slot per 2x2 latents)")

        noise = torch.randn(x0.shape, generator=gen).to(device)
        mu = flow.calculate_shift((w // 16) * (h // 16))
        t = flow.sample_t(len(batch), mu, gen, cfg.logit_mean, cfg.logit_std).to(device)
        xt = flow.interpolate(x0, noise, t)

        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            out_ = denoise(xt, t, grid, text, text_mask, slots[0].to(device), cond, cond_grids)
        pred = flow.to_velocity(out_.float(), xt, t, prediction)
        losses = flow.loss_per_sample(pred, x0, noise)  # (B,)
        loss = losses.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        if ema is not None:
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in raw.parameters()], 1 - d)

        # -- bookkeeping -----------------------------------------------------------------------------------
        lv = losses.detach().float().cpu()
        for b, (s_, c_) in flow.timestep_bins(t.cpu(), lv, n_bins).items():
            bins.setdefault(b, []).append(s_ / c_)
        for s, l_, t_, d_ in zip(batch, lv.tolist(), t.tolist(), drop):
            sample_losses.append(dict(id=s.id, task=s.task, caption_type="uncond" if d_ else s.caption_type,
                                      step=step, t=t_, loss=l_, rank=rank))
        last_loss = float(loss.detach())
        if world > 1:
            lt = torch.tensor([last_loss], device=device)
            dist.all_reduce(lt)
            last_loss = float(lt) / world
        history.append(last_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", res=res)
        out_of_time = ((cfg.max_seconds is not None and clock() - t_start > cfg.max_seconds)
                       or (cfg.deadline is not None and time.time() > cfg.deadline))
        if world > 1 and (cfg.max_seconds is not None or cfg.deadline is not None):  # all ranks stop at the same step
            flag = torch.tensor([float(out_of_time)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        last = step + 1 == cfg.steps or out_of_time
        if master and ((step + 1) % cfg.log_every == 0 or last):
            now, c_now = time.time(), time.process_time()  # record to record: writing a record counts in the next
            rec = dict(step=step + 1, loss=last_loss, lr=lr_at(step), grad_norm=float(gnorm), resolution=res,
                       batch=len(batch), img_tokens=int(x0.shape[1]) * (1 + len(cond)), txt_tokens=int(text.shape[1]),
                       sec_per_step=(now - t_last) / cfg.log_every,
                       cpu_sec_per_step=(c_now - c_last) / cfg.log_every,  # this process's CPU time, all threads
                       loss_by_t_bin={f"{b / n_bins:.1f}": sum(v) / len(v) for b, v in sorted(bins.items())})
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            bins.clear()
            t_last, c_last = now, c_now
        if (step + 1) % cfg.ckpt_every == 0 or last:
            _write_sample_losses(out, sample_losses, rank, world)
            sample_losses = []
            if master:
                _save_state(state_dir, raw, opt, ema, step + 1, history, cfg)
                _save_checkpoint(out, raw, ema, vae, encoder, cfg, step + 1, arch, prediction)
            if world > 1:
                dist.barrier()
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    if world > 1:
        dist.destroy_process_group()
    return dict(losses=history, step=step + 1, out=str(out), text_cache=(text_cache.hits, text_cache.misses),
                latent_cache=(latent_cache.hits, latent_cache.misses), loss=last_loss)


def resolve_prediction(asked: str | None, init: Path | None) -> str:
    """What the transformer outputs: as asked, else as the init checkpoint was trained, else "v". Asking for
    the other one than the init's is refused: its weights would be read as the wrong quantity."""
    had = None
    if init is not None and (init / "flywheel.json").exists():
        had = json.loads((init / "flywheel.json").read_text()).get("prediction", "v")
    got = asked or had or "v"
    if got not in ("v", "x0"):
        raise ValueError(f"unknown prediction {got!r}; use v or x0")
    if had is not None and got != had:
        raise ValueError(f"{init} was trained to predict {had!r}; fine-tuning it with prediction={got!r} would misread "
                         f"its outputs. Drop --prediction (it follows the init) or start without --init.")
    return got


def _vae(cfg: TrainConfig, init: Path | None):
    from flywheel.models import qwen_image as qi

    spec = cfg.vae
    if spec is None and init is not None and (init / "vae").exists():
        spec = str(init / "vae")
    spec = spec or cfg.preset
    if spec.startswith("pixel"):
        patch = int(spec.split(":")[1]) if ":" in spec else 16
        return qi.PixelCodec(patch=patch, in_channels=4)
    if spec in qi.PRESETS:
        return qi.build_vae(cfg.arch, spec)
    return qi.load_vae(spec)


def _save_state(state_dir: Path, raw, opt, ema, step: int, history: list, cfg: TrainConfig) -> None:
    import torch

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(raw.state_dict(), tmp / "model.pt")
    torch.save(opt.state_dict(), tmp / "optim.pt")
    if ema is not None:
        torch.save(ema, tmp / "ema.pt")
    (tmp / "meta.json").write_text(json.dumps(dict(step=step, history=history, config=asdict(cfg))))
    import shutil

    if state_dir.exists():
        shutil.rmtree(state_dir)
    os.replace(tmp, state_dir)


def _save_checkpoint(out: Path, raw, ema, vae, encoder, cfg: TrainConfig, step: int, arch: str, prediction: str) -> None:
    """diffusers layout; with Qwen3-VL conditioning and the 2.1 models, a `QwenImage21Pipeline` directory."""
    import copy

    import torch

    from flywheel.training import flow

    model = raw
    if ema is not None:  # sample from the EMA weights
        model = copy.deepcopy(raw)
        with torch.no_grad():
            for p, e in zip(model.parameters(), ema):
                p.copy_(e.to(p.dtype))
    model = model.to("cpu")
    vae_cpu = copy.deepcopy(vae).to("cpu")
    if encoder.kind == "qwen3vl" and arch == "2.1" and type(vae).__name__ == "AutoencoderKLQwenImage21":
        from diffusers import QwenImage21Pipeline

        pipe = QwenImage21Pipeline(scheduler=flow.make_scheduler(), vae=vae_cpu, text_encoder=encoder.model,
                                   processor=encoder.processor, transformer=model)
        pipe.save_pretrained(out)
    else:
        model.save_pretrained(out / "transformer")
        vae_cpu.save_pretrained(out / "vae")
        flow.make_scheduler().save_pretrained(out / "scheduler")
        encoder.save(out)
    meta = dict(text_encoder=dict(kind=encoder.kind, revision=encoder.revision), arch=arch, stage=cfg.stage,
                prediction=prediction,
                preset=cfg.preset, step=step, ema=ema is not None, resolution=cfg.resolution, datasets=cfg.datasets)
    (out / "flywheel.json").write_text(json.dumps(meta, indent=2))


def _write_sample_losses(out: Path, rows: list[dict], rank: int, world: int) -> None:
    """Append this interval's per-sample losses; ranks gather to rank 0, which writes one part file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if world > 1:
        import torch.distributed as dist

        gathered: list = [None] * world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    if rank != 0 or not rows:
        return
    d = out / "sample_losses"
    d.mkdir(exist_ok=True)
    first = min(r["step"] for r in rows)
    pq.write_table(pa.Table.from_pylist(rows), d / f"part-{first:09d}.parquet")


def _cli() -> None:
    """`python -m flywheel.training.trainer ...` (what torchrun launches); `flywheel train` is the user command."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in TrainConfig.__dataclass_fields__.values():
        name = "--" + f.name.replace("_", "-")
        if f.name == "datasets":
            p.add_argument("--dataset", dest="datasets", action="append", required=True)
        elif f.type in ("bool",):
            p.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default)
        elif f.name in ("caption_probs", "betas"):
            p.add_argument(name, type=json.loads, default=None)
        else:
            typ = float if ("float" in str(f.type)) else int if ("int" in str(f.type)) else str
            p.add_argument(name, type=typ, default=None if f.default is None else f.default)
    a = vars(p.parse_args())
    if a.get("betas") is None:
        a.pop("betas")
    print(json.dumps({k: v for k, v in main(TrainConfig(**a)).items() if k != "losses"}))


if __name__ == "__main__":
    _cli()
