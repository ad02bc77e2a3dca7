"""`flywheel synth`, `flywheel eval` and `flywheel train-vae`: synthetic scenes with known content,
GenEval-style evaluation of a checkpoint on them, and VAE training (report sections 3.1 and 4)."""

from __future__ import annotations

from pathlib import Path

import typer


def synth(
    out: Path = typer.Option(..., help="Output dataset directory (must not exist or be empty)."),
    n: int = typer.Option(1000, help="Number of scenes."),
    size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed writes the same bytes."),
    split: str = typer.Option("train", help="train | eval: prompts of that split only (they never meet)."),
    suite: str = typer.Option("shapes", help="shapes | text | mixed"),
    text_fraction: float = typer.Option(0.2, help="mixed: share of text scenes."),
    gap: str = typer.Option(None, help="Plant a gap: COLOR-SHAPE[:KEEP], e.g. red-star:0.01 keeps 1% of red stars."),
    name: str = typer.Option("synthetic", help="Catalog name; registered as NAME@vN."),
) -> None:
    """Emit a synthetic dataset of scenes whose content is known exactly (shapes, colours, counts,
    positions, words in several scripts), captioned from the ground truth."""
    from flywheel.catalog import Catalog
    from flywheel.cli import UserError
    from flywheel.training import synthetic as syn

    if split not in ("train", "eval"):
        raise UserError(f"--split {split!r}: use train or eval")
    if suite not in ("shapes", "text", "mixed"):
        raise UserError(f"--suite {suite!r}: use shapes, text or mixed")
    if n < 1 or size < 16:
        raise UserError("--n must be at least 1 and --size at least 16")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; datasets are immutable, pick a new --out")
    try:
        g = syn.Gap.parse(gap) if gap else None
    except ValueError as e:
        raise UserError(str(e)) from None
    m = syn.write_dataset(out, n=n, seed=seed, size=size, split=split, suite=suite, gap=g, text_fraction=text_fraction,
                          name=name, catalog=Catalog(), progress=True)
    typer.echo(f"wrote {m.rows} scenes to {out} as {m.ref}")


def eval_cmd(
    ckpt: list[Path] = typer.Option(..., help="A `flywheel train` output directory; repeat to compare checkpoints side by side."),
    suite: str = typer.Option("shapes", help="Evaluation suite (shapes)."),
    n_prompts: int = typer.Option(800, help="Evaluation prompts (stratified: 100 per colour at 800)."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated sampling seeds; every prompt is generated once per seed."),
    size: int = typer.Option(None, help="Image side; default: the checkpoint's training resolution, else 64."),
    steps: int = typer.Option(None, help="Euler steps; default: the checkpoint's (a distilled student's 4), else 30."),
    guidance: float = typer.Option(None, help="Classifier-free guidance scale; default: the checkpoint's, else 4."),
    batch_size: int = typer.Option(32),
    out: Path = typer.Option(None, help="Write the per-(prompt, seed) results dataset here (one subfolder per "
                                        "checkpoint when several); mine it with `flywheel signal`."),
    report: Path = typer.Option(None, help="Write a report page here: the side-by-side table and sample grids (index.html)."),
    name: str = typer.Option("eval", help="Catalog name of the results dataset."),
    device: str = typer.Option(None),
) -> None:
    """Generate held-out prompts with one or more checkpoints, score them per attribute with the checker, and
    print accuracy with 95% Wilson intervals per attribute and per asked value, and sampling time per image;
    several checkpoints are also printed side by side."""
    import json

    from flywheel.catalog import Catalog, open_dataset
    from flywheel.cli import UserError
    from flywheel.training import evaluate as ev
    from flywheel.training import report as rp

    for c in ckpt:
        if not (c / "transformer" / "config.json").exists():
            raise UserError(f"{c} holds no transformer/; pass the --out directory of `flywheel train`")
    if out is not None and out.exists() and any(out.iterdir()):
        raise UserError(f"{out} already exists and is not empty; pick a new --out")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {seeds!r}: write integers separated by commas, e.g. 0,1,2") from None
    if not seed_list:
        raise UserError("--seeds is empty; e.g. --seeds 0,1,2")
    labels = [str(c) for c in ckpt]
    if len(set(labels)) != len(labels):
        raise UserError("the same --ckpt is given twice")
    named, seconds, grids = {}, {}, {}
    for i, c in enumerate(ckpt):
        csize = size
        if csize is None:
            meta = c / "flywheel.json"
            csize = (json.loads(meta.read_text()).get("resolution") if meta.exists() else None) or 64
        trained_on = []  # the training datasets' captions are not held-out prompts
        for r in ev.trained_on(c):
            try:
                trained_on.append(open_dataset(r).path)
            except (FileNotFoundError, KeyError, ValueError):
                typer.echo(f"warning: {c} was trained on {r}, which is gone; its captions may appear among the prompts", err=True)
        cout = None if out is None else (out if len(ckpt) == 1 else out / f"{i:02d}-{c.name}")
        try:
            res = ev.evaluate(c, suite=suite, n_prompts=n_prompts, seeds=seed_list, size=csize, steps=steps, guidance=guidance,
                              batch_size=batch_size, out=cout, name=name, catalog=Catalog() if cout else None, device=device,
                              progress=True, trained_on=trained_on)
        except ValueError as e:
            raise UserError(str(e)) from None
        typer.echo(f"{c}: {n_prompts} held-out prompts x {len(seed_list)} seeds at {csize}px"
                   f" ({res.dropped_training_prompts} prompts dropped: seen in training); {res.seconds_per_image:.3f} s/image")
        typer.echo(res.table())
        if res.manifest is not None:
            typer.echo(f"results: {cout} ({res.manifest.ref})")
        named[labels[i]], seconds[labels[i]], grids[labels[i]] = res.summary, res.seconds_per_image, res.images
    if len(ckpt) > 1:
        typer.echo("\n" + rp.side_by_side(named, seconds))
    if report is not None:
        typer.echo(f"report: {rp.write_report(report, named, seconds, grids)}")


def train_vae(
    dataset: list[str] = typer.Option(..., "--dataset", help="Dataset directory or name@vN; repeat to mix."),
    out: Path = typer.Option(..., help="Output: OUT/vae (diffusers format), OUT/metrics.json."),
    preset: str = typer.Option("tiny", help="tiny | small | full (new VAE), unless --init."),
    init: Path = typer.Option(None, help="Fine-tune this VAE directory (or a pipeline directory with vae/)."),
    heldout: str = typer.Option(None, help="Held-out dataset for PSNR/SSIM; default: 5% of the training rows by id."),
    resolution: int = typer.Option(64, help="Image side (a multiple of 16)."),
    steps: int = typer.Option(200),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(1e-4),
    perceptual: str = typer.Option("ssim", help="ssim | encoder | none"),
    align_encoder: str = typer.Option(None, help="Semantic alignment against open_clip:DIR, dinov2:DIR or qwen3vl:DIR (local)."),
    align_start: float = typer.Option(1.0, help="Alignment weight early in training."),
    align_end: float = typer.Option(0.1, help="Alignment weight late in training."),
    eval_every: int = typer.Option(0, help="Held-out PSNR/SSIM every N steps (0: before and after only)."),
    device: str = typer.Option(None),
    seed: int = typer.Option(0),
) -> None:
    """Train or fine-tune the f16c64 VAE: reconstruction, perceptual, semantic alignment (no GAN)."""
    from flywheel.catalog import open_dataset
    from flywheel.cli import UserError
    from flywheel.training.vae import VAETrainConfig, main

    if preset not in ("tiny", "small", "full"):
        raise UserError(f"unknown --preset {preset!r}; use tiny, small or full")
    if perceptual not in ("ssim", "encoder", "none"):
        raise UserError(f"--perceptual {perceptual!r}: use ssim, encoder or none")
    if init is not None and not init.exists():
        raise UserError(f"--init {init} does not exist; pass a local VAE directory (weights cannot be downloaded here)")
    paths = []
    for r in [*dataset, *([heldout] if heldout else [])]:
        try:
            paths.append(str(open_dataset(r).path))
        except (FileNotFoundError, KeyError, ValueError) as e:
            raise UserError(f"dataset {r!r} not found ({e}); pass a dataset directory or name@vN") from None
    cfg = VAETrainConfig(datasets=paths[: len(dataset)], heldout=paths[-1] if heldout else None, out=str(out), preset=preset,
                         init=str(init) if init else None, resolution=resolution, steps=steps, batch_size=batch_size, lr=lr,
                         perceptual=perceptual, align_encoder=align_encoder, align_weight_start=align_start,
                         align_weight_end=align_end, eval_every=eval_every, device=device, seed=seed)
    try:
        r = main(cfg)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    b, a = r["before"], r["after"]
    typer.echo(f"held-out ({a['n']} images): PSNR {b['psnr']:.2f} -> {a['psnr']:.2f} dB, SSIM {b['ssim']:.4f} -> {a['ssim']:.4f}; "
               f"VAE in {out / 'vae'}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("eval")(eval_cmd)
    app.command("train-vae")(train_vae)
