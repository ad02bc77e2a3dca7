"""VAE training and fine-tuning (`flywheel train-vae`), after the report's section 3.1.

The network is diffusers' `AutoencoderKLQwenImage21` (f16c64, residual), built from the presets in
`flywheel.models.qwen_image` or loaded from a local directory to fine-tune. Images reach it as the
Qwen-Image 2.1 pipeline gives them: RGBA in [-1, 1], alpha 1 where the source had none
(`data.load_image`), shaped (B, 4, 1, H, W).

Objective: reconstruction (L1 over all four channels) + a perceptual term + a small KL + the
semantic alignment loss of VA-VAE (Yao et al. 2025), which the report adopts: the latent, projected
by a learned 1x1 convolution to the width of a frozen vision encoder, is pulled towards that
encoder's patch features by
- a margin cosine term: mean over positions of relu(1 - m1 - cos(z'_ij, f_ij)), and
- a distance-matrix term: mean over position pairs of relu(|cos(z'_i, z'_j) - cos(f_i, f_j)| - m2).
Its weight is strong early and relaxed later (the report: "imposing strong semantic alignment
constraints in early training is essential ..., gradually relaxing this constraint later enables a
better balance"). No adversarial loss (the report finds it redundant).

Encoders: `open_clip:DIR` (an open_clip `local-dir:` folder), `dinov2:DIR` (transformers), or
`qwen3vl:DIR` (the vision tower of a Qwen3-VL checkpoint). No such weights exist on this machine:
the tests run these losses with tiny random-weight encoders built from configs, so they check the
mechanics, not the benefit.

Held-out PSNR/SSIM (RGB, scikit-image's SSIM, independent of the training loss) are measured before
and after training and written to `OUT/metrics.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class VAETrainConfig:
    datasets: list[str]  # dataset directories; `flywheel train-vae` resolves name@vN
    out: str
    heldout: str | None = None  # a dataset directory; default: the training rows whose id hash falls in heldout_fraction
    heldout_fraction: float = 0.05
    heldout_max: int = 128
    arch: str = "2.1"
    preset: str = "tiny"  # tiny | small | full, when not fine-tuning
    init: str | None = None  # a VAE directory (or a pipeline directory with vae/) to fine-tune
    resolution: int = 64
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.001
    grad_clip: float = 1.0
    rec_weight: float = 1.0
    perceptual: str = "ssim"  # ssim | encoder (feature distance in the alignment encoder) | none
    perceptual_weight: float = 0.2
    kl_weight: float = 1e-6
    align_encoder: str | None = None  # open_clip:DIR | dinov2:DIR | qwen3vl:DIR
    align_weight_start: float = 1.0  # strong early ...
    align_weight_end: float = 0.1  # ... relaxed later
    align_relax_from: float = 0.25  # fraction of training where relaxing starts
    align_relax_to: float = 0.75  # and where it reaches align_weight_end
    margin_cos: float = 0.5  # VA-VAE's m1
    margin_dm: float = 0.25  # VA-VAE's m2
    eval_every: int = 0  # 0: only before and after
    device: str | None = None
    seed: int = 0
    threads: int | None = None
    progress: bool = True


def align_weight(step: int, steps: int, cfg: VAETrainConfig) -> float:
    """Constant, then cosine from start to end weight between the two fractions of training."""
    f = step / max(1, steps)
    if f <= cfg.align_relax_from:
        return cfg.align_weight_start
    if f >= cfg.align_relax_to:
        return cfg.align_weight_end
    u = (f - cfg.align_relax_from) / (cfg.align_relax_to - cfg.align_relax_from)
    return cfg.align_weight_end + (cfg.align_weight_start - cfg.align_weight_end) * 0.5 * (1 + math.cos(math.pi * u))


# ---------------------------------------------------------------- losses


def margin_cosine_loss(z, f, margin: float):
    """z, f: (B, D, h, w) -> mean over positions of relu(1 - margin - cos)."""
    import torch.nn.functional as F

    cos = F.cosine_similarity(z, f, dim=1)  # (B, h, w)
    return F.relu(1 - margin - cos).mean()


def distance_matrix_loss(z, f, margin: float):
    """z, f: (B, D, h, w): the latent's self-similarity structure follows the encoder's."""
    import torch
    import torch.nn.functional as F

    zn = F.normalize(z.flatten(2), dim=1)  # (B, D, N)
    fn = F.normalize(f.flatten(2), dim=1)
    sz = torch.bmm(zn.transpose(1, 2), zn)  # (B, N, N)
    sf = torch.bmm(fn.transpose(1, 2), fn)
    return F.relu((sz - sf).abs() - margin).mean()


def _gauss(size: int = 7, sigma: float = 1.5):
    import torch

    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)


def ssim_torch(a, b):
    """Differentiable SSIM of (B, C, H, W) images in [0, 1], Gaussian window (Wang et al. 2004)."""
    import torch.nn.functional as F

    c = a.shape[1]
    k = min(7, a.shape[-1], a.shape[-2])
    w = _gauss(k, 1.5 * k / 7).to(a).expand(c, 1, k, k)
    conv = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    saa = conv(a * a) - mu_a**2
    sbb = conv(b * b) - mu_b**2
    sab = conv(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean()


# ---------------------------------------------------------------- frozen vision encoders


class AlignEncoder:
    """A frozen vision encoder: RGB (B, 3, H, W) in [0, 1] -> patch features (B, D, gh, gw)."""

    def __init__(self, spec: str, device):
        import torch

        kind, _, path = spec.partition(":")
        if not path or not Path(path).exists():
            raise FileNotFoundError(f"alignment encoder {spec!r}: write open_clip:DIR, dinov2:DIR or qwen3vl:DIR with a local directory")
        self.kind, self.path, self.device = kind, Path(path), device
        if kind == "open_clip":
            import open_clip

            model = open_clip.create_model(f"local-dir:{path}")
            self.model = model.visual
            self.model.output_tokens = True
            cfg = json.loads((self.path / "open_clip_config.json").read_text())
            pp = cfg.get("preprocess_cfg", {})
            self.mean, self.std = pp.get("mean", [0.48145466, 0.4578275, 0.40821073]), pp.get("std", [0.26862954, 0.26130258, 0.27577711])
            size = self.model.image_size
            self.size = size[0] if isinstance(size, (tuple, list)) else size
            self.dim = cfg["model_cfg"]["vision_cfg"]["width"]
        elif kind == "dinov2":
            from transformers import AutoModel

            self.model = AutoModel.from_pretrained(path)
            c = self.model.config
            self.mean, self.std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
            self.size, self.dim = c.image_size, c.hidden_size
            self.skip = 1 + getattr(c, "num_register_tokens", 0)
        elif kind == "qwen3vl":
            from transformers import AutoConfig, AutoModelForImageTextToText

            full = AutoModelForImageTextToText.from_pretrained(path)
            inner = getattr(full, "model", full)
            self.model = inner.visual
            vc = AutoConfig.from_pretrained(path).vision_config
            self.patch, self.merge = vc.patch_size, vc.spatial_merge_size
            self.temporal = getattr(vc, "temporal_patch_size", 2)
            self.mean, self.std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
            self.size = self.patch * self.merge * 4
            self.dim = vc.out_hidden_size
            del full
        else:
            raise ValueError(f"unknown alignment encoder kind {kind!r}; use open_clip, dinov2 or qwen3vl")
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.mean_t = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self.std_t = torch.tensor(self.std, device=device).view(1, 3, 1, 1)

    def __call__(self, rgb):
        """Gradients flow to `rgb` (the perceptual term uses that); the weights stay frozen."""
        import torch.nn.functional as F

        x = F.interpolate(rgb, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x - self.mean_t) / self.std_t
        if self.kind == "open_clip":
            _, tokens = self.model(x)  # (B, N, D)
        elif self.kind == "dinov2":
            tokens = self.model(pixel_values=x).last_hidden_state[:, self.skip :]
        else:
            return self._qwen3vl(x)
        b, n, d = tokens.shape
        g = int(math.isqrt(n))
        return tokens.transpose(1, 2).reshape(b, d, g, g)

    def _qwen3vl(self, x):
        """Qwen3-VL's vision tower takes flattened patches (temporal x channel x patch x patch per row)
        and a (t, h, w) grid per image; it returns merged tokens (2x2 patches each)."""
        import torch

        b = x.shape[0]
        p, m, tp = self.patch, self.merge, self.temporal
        gh = gw = self.size // p
        # (B, 3, H, W) -> (B, T=tp, 3, H, W): a still image repeated over the temporal patch
        v = x.unsqueeze(1).expand(b, tp, 3, self.size, self.size)
        v = v.reshape(b, 1, tp, 3, gh // m, m, p, gw // m, m, p)
        v = v.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)  # (B, 1, gh/m, gw/m, m, m, 3, tp, p, p), the processor's order
        flat = v.reshape(b * gh * gw, 3 * tp * p * p)
        grid = torch.tensor([[1, gh, gw]] * b, device=x.device)
        tokens = self.model(flat.to(self.model.dtype), grid_thw=grid, return_dict=True).pooler_output  # after the 2x2 merger
        tokens = tokens.reshape(b, (gh // m) * (gw // m), -1).float()
        return tokens.transpose(1, 2).reshape(b, -1, gh // m, gw // m)


# ---------------------------------------------------------------- data


def _split(ids: list[str], fraction: float) -> list[bool]:
    return [int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 2**32 < fraction for i in ids]


def load_images(paths: list[str], resolution: int, channels: int, heldout: str | None, fraction: float, max_heldout: int):
    """(train tensors (N, C, H, W), held-out tensors) in [-1, 1] from dataset directories (the CLI resolves
    name@vN); rejected rows are skipped."""
    import torch

    from flywheel.datasets import open_dataset
    from flywheel.training.data import load_image

    def rows(path):
        t = open_dataset(path).to_table()
        keep = [r for r in t.to_pylist() if r.get("image") and not r.get("reject_reason")]
        return keep

    train_rows = [r for p in paths for r in rows(p)]
    if heldout:
        held_rows = rows(heldout)[:max_heldout]
    else:
        mask = _split([r["id"] for r in train_rows], fraction)
        held_rows = [r for r, m in zip(train_rows, mask) if m][:max_heldout]
        train_rows = [r for r, m in zip(train_rows, mask) if not m]
    if not train_rows or not held_rows:
        raise ValueError(f"{len(train_rows)} training and {len(held_rows)} held-out images; pass more data or --heldout DATASET")
    load = lambda rs: torch.stack([load_image(r["image"], (resolution, resolution), channels) for r in rs])  # noqa: E731
    return load(train_rows), load(held_rows)


# ---------------------------------------------------------------- metrics


def reconstruct(vae, x, batch_size: int = 16):
    """x (N, C, H, W) in [-1, 1] -> the VAE's reconstruction from the posterior mode."""
    import torch

    outs = []
    with torch.no_grad():
        for b in range(0, len(x), batch_size):
            xb = x[b : b + batch_size].to(next(vae.parameters()).device).unsqueeze(2)
            z = vae.encode(xb).latent_dist.mode()
            outs.append(vae.decode(z).sample[:, :, 0].float().clamp(-1, 1).cpu())
    return torch.cat(outs)


def psnr_ssim(x, y) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM over RGB images in [-1, 1] (alpha ignored), scikit-image's SSIM."""
    import numpy as np
    from skimage.metrics import structural_similarity

    a = ((x[:, :3].numpy() + 1) / 2).clip(0, 1)
    b = ((y[:, :3].numpy() + 1) / 2).clip(0, 1)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    ssim = [structural_similarity(ai.transpose(1, 2, 0), bi.transpose(1, 2, 0), channel_axis=2, data_range=1.0,
                                  win_size=min(7, ai.shape[1] // 2 * 2 - 1)) for ai, bi in zip(a, b)]
    return {"psnr": float(psnr.mean()), "ssim": float(np.mean(ssim)), "n": int(len(a))}


# ---------------------------------------------------------------- the loop


def build_or_load(cfg: VAETrainConfig):
    from flywheel.models import qwen_image as qi

    if cfg.init:
        return qi.load_vae(cfg.init)
    return qi.build_vae(cfg.arch, cfg.preset)


def main(cfg: VAETrainConfig) -> dict:
    import torch
    import torch.nn.functional as F

    from flywheel.models import qwen_image as qi

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    vae = build_or_load(cfg).to(device)
    if type(vae).__name__ == "PixelCodec":
        raise ValueError("a PixelCodec has no weights to train; pass a VAE preset or directory")
    channels = qi.image_channels(vae)
    scale = qi.vae_scale(vae)
    if cfg.resolution % scale:
        raise ValueError(f"--resolution {cfg.resolution} must be a multiple of the VAE's {scale}x downsampling")
    train_x, held_x = load_images(cfg.datasets, cfg.resolution, channels, cfg.heldout, cfg.heldout_fraction, cfg.heldout_max)

    enc = AlignEncoder(cfg.align_encoder, device) if cfg.align_encoder else None
    if cfg.perceptual == "encoder" and enc is None:
        raise ValueError("--perceptual encoder needs --align-encoder")
    proj = torch.nn.Conv2d(qi.z_dim(vae), enc.dim, 1).to(device) if enc else None  # latent -> encoder width
    params = list(vae.parameters()) + (list(proj.parameters()) if proj is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    metrics = {"before": psnr_ssim(held_x, reconstruct(vae, held_x)), "history": [], "evals": []}
    g = torch.Generator().manual_seed(cfg.seed)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="train-vae", unit="step")
    t0 = time.time()
    vae.train()
    for step in range(cfg.steps):
        idx = torch.randint(len(train_x), (cfg.batch_size,), generator=g)
        x = train_x[idx].to(device)  # (B, C, H, W) in [-1, 1]
        post = vae.encode(x.unsqueeze(2)).latent_dist
        z = post.sample(generator=None)  # (B, z, 1, h, w)
        xr = vae.decode(z).sample[:, :, 0]  # (B, C, H, W)
        logs = {"rec": F.l1_loss(xr, x)}
        loss = cfg.rec_weight * logs["rec"]
        logs["kl"] = post.kl().mean()
        loss = loss + cfg.kl_weight * logs["kl"]
        rgb, rgb_r = (x[:, :3] + 1) / 2, ((xr[:, :3] + 1) / 2).clamp(0, 1)
        if cfg.perceptual == "ssim":
            logs["perceptual"] = 1 - ssim_torch(rgb_r, rgb)
        elif cfg.perceptual == "encoder":
            logs["perceptual"] = F.mse_loss(F.normalize(enc(rgb_r), dim=1), F.normalize(enc(rgb), dim=1).detach())
        if "perceptual" in logs:
            loss = loss + cfg.perceptual_weight * logs["perceptual"]
        if enc is not None:
            with torch.no_grad():
                f = enc(rgb)  # (B, D, gh, gw), frozen
            zp = F.interpolate(proj(z[:, :, 0]), size=f.shape[-2:], mode="bilinear", align_corners=False)
            logs["align_mcos"] = margin_cosine_loss(zp, f, cfg.margin_cos)
            logs["align_mdms"] = distance_matrix_loss(zp, f, cfg.margin_dm)
            w = align_weight(step, cfg.steps, cfg)
            logs["align_w"] = torch.tensor(w)
            loss = loss + w * (logs["align_mcos"] + logs["align_mdms"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        rec = {"step": step + 1, "loss": loss.item(), "grad_norm": float(gn), **{k: float(v.detach()) for k, v in logs.items()}}
        metrics["history"].append(rec)
        if not math.isfinite(rec["loss"]):
            raise FloatingPointError(f"VAE loss became {rec['loss']} at step {step + 1}; lower --lr")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            vae.eval()
            metrics["evals"].append({"step": step + 1, **psnr_ssim(held_x, reconstruct(vae, held_x))})
            vae.train()
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
    if bar:
        bar.close()
    vae.eval()
    metrics["after"] = psnr_ssim(held_x, reconstruct(vae, held_x))
    metrics["train_seconds"] = time.time() - t0
    metrics["config"] = asdict(cfg)
    metrics["align_encoder_note"] = ("frozen features of " + cfg.align_encoder) if enc else "no alignment encoder: reconstruction and perceptual terms only"
    vae.to("cpu").save_pretrained(out / "vae")
    if proj is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous().cpu() for k, v in proj.state_dict().items()}, str(out / "align_proj.safetensors"))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return {"before": metrics["before"], "after": metrics["after"], "steps": cfg.steps, "out": str(out),
            "last": metrics["history"][-1] if metrics["history"] else None, "train_seconds": metrics["train_seconds"]}
