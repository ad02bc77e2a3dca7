"""`flywheel train` and `flywheel sample`: the model stages of the report (Table 2) on emitted datasets."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Optional

import typer


def _resolve_datasets(refs: list[str]) -> list[str]:
    from flywheel.catalog import open_dataset
    from flywheel.cli import UserError

    out = []
    for r in refs:
        try:
            out.append(str(open_dataset(r).path))
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(f"dataset {r!r} not found ({e}); pass a dataset directory or name@vN from `flywheel sql \"SELECT * FROM datasets\"`") from None
    return out


def train(**given) -> None:
    """Train the transformer on emitted datasets. Several GPUs: `torchrun --nproc_per_node N -m flywheel.training.trainer ...`."""
    from pydantic import ValidationError

    from flywheel.cli import UserError
    from flywheel.models.store import ModelMissing
    from flywheel.training.config import TrainConfig, explain
    from flywheel.training.trainer import main

    for flag in ("init", "teacher", "image_model"):
        if given.get(flag) and not Path(given[flag]).exists():
            raise UserError(f"--{flag.replace('_', '-')} {given[flag]} does not exist; pass a local directory "
                            "(weights cannot be downloaded here)")
    given["datasets"] = _resolve_datasets(given.get("datasets") or [])
    if given.get("prompts") and not Path(given["prompts"]).exists():  # rl_prompts@vN, prompt_enhancer_pairs@vN
        given["prompts"] = _resolve_datasets([given["prompts"]])[0]
    try:
        cfg = TrainConfig(**given)
        r = main(cfg)
    except ValidationError as e:
        raise UserError(explain(e)) from None
    except (FileNotFoundError, ValueError, ModelMissing) as e:
        raise UserError(f"{e}") from None
    use = (f"flywheel enhance --model {cfg.out} \"...\"" if cfg.kind.startswith("enhancer")
           else f"flywheel sample --ckpt {cfg.out} --prompt \"...\" --out DIR")
    typer.echo(f"trained {r['step']} steps ({cfg.stage}), last loss {r['loss']:.4f}; checkpoint in {cfg.out} (use it: {use})")


def _train_signature() -> inspect.Signature:
    """`train`'s options, one per TrainConfig field (training/config.py holds names, types, defaults, help)."""
    from typing import Literal

    from flywheel.training.config import options

    params = []
    for o in options():
        typ = Literal[o.choices] if o.choices else o.type
        if o.multiple:
            typ = list[typ]
        elif o.nargs > 1:
            typ = tuple[(typ,) * o.nargs]
        decls = [f"{o.flag}/--no-{o.flag[2:]}"] if o.type is bool else [o.flag]
        opt = typer.Option(... if o.required else o.default, *decls, help=o.help, show_default=o.default is not None)
        params.append(inspect.Parameter(o.field, inspect.Parameter.KEYWORD_ONLY, default=opt,
                                        annotation=typ if o.required else Optional[typ]))
    return inspect.Signature(params)


def sample(
    ckpt: Path = typer.Option(..., help="A `flywheel train` output directory or a QwenImage21Pipeline directory."),
    prompt: list[str] = typer.Option(..., help="Prompt; repeat for several."),
    out: Path = typer.Option(..., help="Directory for the PNGs."),
    width: int = typer.Option(None, help="Image width; default: the checkpoint's training resolution, else 256."),
    height: int = typer.Option(None, help="Image height; default: as width."),
    steps: int = typer.Option(None, help="Euler steps; default: the checkpoint's (a distilled student's 4), else 30."),
    guidance: float = typer.Option(None, help="Classifier-free guidance scale (1 disables it); default: the checkpoint's, else 4."),
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


def enhance(
    prompt: list[str] = typer.Argument(..., help="Prompt(s) to rewrite."),
    model: Path = typer.Option(..., help="An enhancer directory (`flywheel train --stage enhancer-sft/-rl` output, or local Qwen3 weights)."),
    max_new_tokens: int = typer.Option(32),
    device: str = typer.Option("cpu"),
) -> None:
    """Rewrite prompts with the prompt enhancer (report section 3.3); one rewrite per line."""
    from flywheel.cli import UserError
    from flywheel.training.enhancer import Enhancer

    if not (model / "config.json").exists():
        raise UserError(f"{model} holds no config.json; pass the --out of an enhancer stage or a local Qwen3 directory")
    for r in Enhancer.load(model, device).rewrite(list(prompt), max_new_tokens):
        typer.echo(r)


def register(app: typer.Typer) -> None:
    train.__signature__ = _train_signature()
    app.command("train")(train)
    app.command("sample")(sample)
    app.command("enhance")(enhance)
