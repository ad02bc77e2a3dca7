"""What the trainer reads and writes around its loop: the networks (fresh, or from an --init checkpoint),
the resume state, the diffusers checkpoint and the per-sample losses.

Outputs in `out/`:
- `transformer/`, `vae/`, `scheduler/` (+ `text_encoder/`, `processor/`, `model_index.json` with Qwen3-VL
  conditioning: a `QwenImage21Pipeline` directory), `flywheel.json` (how to rebuild the conditioning,
  and the TrainConfig of the run);
- `state/` to resume exactly (raw weights, EMA, optimizer, step, loss history);
- `sample_losses/part-*.parquet` (loss per sample id, for the flywheel's bad-case mining).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from flywheel.training.config import TrainConfig


def load_text_encoder(cfg: TrainConfig, device):
    """As asked, else the --init checkpoint's, else MiniLM."""
    from flywheel.models import text_encoders as te

    init = Path(cfg.init) if cfg.init else None
    if cfg.text_encoder:
        return te.load_text_encoder(cfg.text_encoder, device=str(device))
    if init is not None and (init / "flywheel.json").exists():
        return te.load_from_checkpoint(init, device=str(device))
    if init is not None and (init / "text_encoder").exists():
        return te.load_text_encoder(str(init), device=str(device))
    return te.load_text_encoder("minilm", device=str(device))


def load_vae(cfg: TrainConfig):
    """As asked (preset, directory or pixel:P), else the --init checkpoint's, else the preset's."""
    from flywheel.models import qwen_image as qi

    init = Path(cfg.init) if cfg.init else None
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


def load_transformer(cfg: TrainConfig, z_dim: int, text_dim: int):
    """The --init checkpoint's transformer, else a fresh one of the preset's size."""
    from flywheel.models import qwen_image as qi

    init = Path(cfg.init) if cfg.init else None
    if init is not None and ((init / "transformer").exists() or (init / "config.json").exists()):
        return qi.load_transformer(init)
    return qi.build_transformer(cfg.arch, cfg.preset, z_dim, text_dim)


def resolve_prediction(asked: str | None, init: str | Path | None) -> str:
    """What the transformer outputs: as asked, else as the init checkpoint was trained, else "v". Asking for
    the other one than the init's is refused: its weights would be read as the wrong quantity."""
    had = None
    init = Path(init) if init else None
    if init is not None and (init / "flywheel.json").exists():
        had = json.loads((init / "flywheel.json").read_text()).get("prediction", "v")
    got = asked or had or "v"
    if got not in ("v", "x0"):
        raise ValueError(f"unknown prediction {got!r}; use v or x0")
    if had is not None and got != had:
        raise ValueError(f"{init} was trained to predict {had!r}; fine-tuning it with prediction={got!r} would misread "
                         f"its outputs. Drop --prediction (it follows the init) or start without --init.")
    return got


def load_state(state_dir: Path, raw, opt, ema, device) -> tuple[int, list[float]]:
    """(step, loss history) restored into the model, optimizer and EMA; (0, []) when there is no state."""
    import torch

    if not (state_dir / "meta.json").exists():
        return 0, []
    meta = json.loads((state_dir / "meta.json").read_text())
    raw.load_state_dict(torch.load(state_dir / "model.pt", map_location=device))
    opt.load_state_dict(torch.load(state_dir / "optim.pt", map_location=device))
    if ema is not None and (state_dir / "ema.pt").exists():
        for e, v in zip(ema, torch.load(state_dir / "ema.pt", map_location=device)):
            e.copy_(v)
    return meta["step"], meta.get("history", [])


def save_state(state_dir: Path, raw, opt, ema, step: int, history: list, cfg: TrainConfig, extra: dict | None = None) -> None:
    """Written beside, then renamed over the old state: a kill mid-write leaves the previous state whole.
    `extra`: more state dicts by name (distillation's fake-score model and its optimizer), read by `load_extra`."""
    import torch

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(raw.state_dict(), tmp / "model.pt")
    torch.save(opt.state_dict(), tmp / "optim.pt")
    if ema is not None:
        torch.save(ema, tmp / "ema.pt")
    for name, obj in (extra or {}).items():
        torch.save(obj, tmp / f"{name}.pt")
    (tmp / "meta.json").write_text(json.dumps(dict(step=step, history=history, config=cfg.model_dump(mode="json"))))
    if state_dir.exists():
        shutil.rmtree(state_dir)
    os.replace(tmp, state_dir)


def load_extra(state_dir: Path, name: str, device):
    """A state dict `save_state(extra=...)` wrote, or None."""
    import torch

    f = state_dir / f"{name}.pt"
    return torch.load(f, map_location=device) if (state_dir / "meta.json").exists() and f.exists() else None


def save_checkpoint(out: Path, raw, ema, vae, encoder, cfg: TrainConfig, step: int, prediction: str,
                    extra: dict | None = None) -> None:
    """diffusers layout, sampled from the EMA weights; with Qwen3-VL conditioning and the 2.1 models, a
    `QwenImage21Pipeline` directory. `extra` joins flywheel.json (a student's `sampling` defaults: steps, guidance)."""
    import copy

    import torch

    from flywheel.models import qwen_image as qi
    from flywheel.training import rectified_flow as rf

    arch = qi.arch_of(raw)
    model = raw
    if ema is not None:
        model = copy.deepcopy(raw)
        with torch.no_grad():
            for p, e in zip(model.parameters(), ema):
                p.copy_(e.to(p.dtype))
    model = model.to("cpu")
    vae_cpu = copy.deepcopy(vae).to("cpu")
    if encoder.kind == "qwen3vl" and arch == "2.1" and type(vae).__name__ == "AutoencoderKLQwenImage21":
        from diffusers import QwenImage21Pipeline

        pipe = QwenImage21Pipeline(scheduler=rf.make_scheduler(), vae=vae_cpu, text_encoder=encoder.model,
                                   processor=encoder.processor, transformer=model)
        pipe.save_pretrained(out)
    else:
        model.save_pretrained(out / "transformer")
        vae_cpu.save_pretrained(out / "vae")
        rf.make_scheduler().save_pretrained(out / "scheduler")
        encoder.save(out)
    meta = dict(text_encoder=dict(kind=encoder.kind, revision=encoder.revision), arch=arch, stage=cfg.stage,
                prediction=prediction, preset=cfg.preset, step=step, ema=ema is not None, resolution=cfg.resolution,
                datasets=cfg.datasets, config=cfg.model_dump(mode="json"))
    meta.update(extra or {})
    (out / "flywheel.json").write_text(json.dumps(meta, indent=2))


def write_sample_losses(out: Path, rows: list[dict], rank: int, world: int) -> None:
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
