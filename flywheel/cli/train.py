"""`flywheel train` and `flywheel sample`: the model stages of the report (Table 2) on emitted datasets."""

from __future__ import annotations

import re
from pathlib import Path

import typer


def _resolve_datasets(refs: list[str]) -> list[str]:
    from flywheel.cli import UserError
    from flywheel.catalog import open_dataset

    out = []
    for r in refs:
        try:
            out.append(str(open_dataset(r).path))
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(f"dataset {r!r} not found ({e}); pass a dataset directory or name@vN from `flywheel sql \"SELECT * FROM datasets\"`") from None
    return out


def _caption_probs(spec: str | None) -> dict[str, float] | None:
    from flywheel.cli import UserError

    if not spec:
        return None
    try:
        return {k.strip(): float(v) for k, v in (p.split("=") for p in spec.split(","))}
    except ValueError:
        raise UserError(f"--caption-probs {spec!r} is not TYPE=P,...; e.g. general=0.6,structured=0.2,original=0.2") from None


def train(
    dataset: list[str] = typer.Option(..., "--dataset", help="Emitted dataset directory or name@vN; repeat to mix several."),
    out: Path = typer.Option(..., help="Output directory: checkpoint (diffusers layout), state to resume, metrics, per-sample losses."),
    stage: str = typer.Option("pretrain", help="pretrain | continual | sft (learning rate, T2I/TI2I ratio, resolutions of Table 2)."),
    preset: str = typer.Option("tiny", help="tiny (CPU) | small (one GPU) | full (released sizes)."),
    steps: int = typer.Option(100, help="Optimizer steps."),
    init: Path = typer.Option(None, help="Start from local weights: a diffusers pipeline directory or a previous --out."),
    batch_size: int = typer.Option(4, help="Samples per step (per process under torchrun)."),
    text_encoder: str = typer.Option(None, help="minilm (offline) or a Qwen3-VL directory. Default: the --init's, else minilm."),
    vae: str = typer.Option(None, help="VAE preset, directory, or pixel:P (pixel space, P-pixel patches). Default: the --init's, else the preset's."),
    arch: str = typer.Option("2.1", help="2.1 (Qwen-Image 2.x single stream) or 1.0 (first Qwen-Image MMDiT)."),
    resolution: int = typer.Option(None, help="Fixed image side instead of the stage's resolution curriculum."),
    lr: float = typer.Option(None, help="Learning rate; default: the stage's."),
    warmup: int = typer.Option(100, help="Linear warm-up steps."),
    ti2i_ratio: float = typer.Option(None, help="Share of TI2I (edit) batches; default: the stage's."),
    caption_probs: str = typer.Option(None, help="Caption type probabilities, e.g. general=0.5,text=0.1,knowledge=0.1,structured=0.1,original=0.2."),
    uncond_dropout: float = typer.Option(0.1, help="Probability of training a sample without its text (for guidance)."),
    prediction: str = typer.Option(None, help="v (velocity, as Qwen-Image) or x0 (clean-sample prediction; for pixel-space --vae pixel:P); default: the --init checkpoint's, else v."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the saved weights; 0 saves the raw weights."),
    bf16: bool = typer.Option(False, help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the transformer."),
    device: str = typer.Option(None, help="cpu | cuda | cuda:N; default: cuda when available."),
    seed: int = typer.Option(0),
    ckpt_every: int = typer.Option(500, help="Write the checkpoint and resume state every N steps."),
    resume: bool = typer.Option(True, help="Continue from OUT/state when present."),
) -> None:
    """Train the transformer on emitted datasets. Several GPUs: `torchrun --nproc_per_node N -m flywheel.training.trainer ...`."""
    from flywheel.cli import UserError
    from flywheel.training.trainer import STAGES, TrainConfig, main

    if stage not in STAGES:
        raise UserError(f"unknown --stage {stage!r}; use one of {', '.join(STAGES)}")
    if preset not in ("tiny", "small", "full"):
        raise UserError(f"unknown --preset {preset!r}; use tiny, small or full")
    if prediction not in (None, "v", "x0"):
        raise UserError(f"unknown --prediction {prediction!r}; use v or x0")
    if init is not None and not init.exists():
        raise UserError(f"--init {init} does not exist; pass a local diffusers directory (weights cannot be downloaded here)")
    cfg = TrainConfig(datasets=_resolve_datasets(dataset), out=str(out), stage=stage, preset=preset, arch=arch, steps=steps,
                      batch_size=batch_size, init=str(init) if init else None, text_encoder=text_encoder, vae=vae,
                      resolution=resolution, lr=lr, warmup=warmup, ti2i_ratio=ti2i_ratio,
                      caption_probs=_caption_probs(caption_probs), uncond_dropout=uncond_dropout, ema_decay=ema_decay,
                      prediction=prediction,
                      bf16=bf16, compile=compile, device=device, seed=seed, ckpt_every=ckpt_every, resume=resume)
    try:
        r = main(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{e}") from None
    typer.echo(f"trained {r['step']} steps, last loss {r['loss']:.4f}; checkpoint in {out} "
               f"(sample it: flywheel sample --ckpt {out} --prompt \"...\" --out DIR)")


def sample(
    ckpt: Path = typer.Option(..., help="A `flywheel train` output directory or a QwenImage21Pipeline directory."),
    prompt: list[str] = typer.Option(..., help="Prompt; repeat for several."),
    out: Path = typer.Option(..., help="Directory for the PNGs."),
    width: int = typer.Option(None, help="Image width; default: the checkpoint's training resolution, else 256."),
    height: int = typer.Option(None, help="Image height; default: as width."),
    steps: int = typer.Option(30, help="Euler steps."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale (1 disables it)."),
    seed: int = typer.Option(0),
    n: int = typer.Option(1, help="Images per prompt."),
    device: str = typer.Option(None),
) -> None:
    """Generate images from a checkpoint, written as PNGs."""
    from rich.progress import track

    from flywheel.cli import UserError
    from flywheel.training.generate import Generator

    try:
        gen = Generator(ckpt, device=device)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    width = width or gen.meta.get("resolution") or 256
    height = height or width
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, p in track(list(enumerate(prompt)), description="sampling"):
        try:
            images = gen([p] * n, width=width, height=height, steps=steps, guidance=guidance, seed=seed + i)
        except ValueError as e:
            raise UserError(f"{e}; pass --width/--height as multiples of {2 * gen.scale}") from None
        slug = re.sub(r"[^a-z0-9]+", "-", p.lower()).strip("-")[:40] or "empty"
        for j, im in enumerate(images):
            path = out / f"{i:03d}-{j}-{slug}.png"
            im.save(path)
            written.append(path)
    typer.echo(f"wrote {len(written)} images to {out}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("sample")(sample)
