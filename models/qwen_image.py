"""Presets and thin wrappers around diffusers' Qwen-Image models (report section 3).

The networks are diffusers' own classes, never re-implemented here:
- arch "2.1": `QwenImage21Transformer2DModel` (single stream over text+image, MSRoPE, RMSNorm QK-norm,
  bias-free multiplicative modulation, SwiGLU) with `AutoencoderKLQwenImage21` (f16c64, residual; its
  default size is Table 1's 79M encoder / 259M decoder).
- arch "1.0": the first Qwen-Image's dual-stream MMDiT `QwenImageTransformer2DModel` with the f8c16
  `AutoencoderKLQwenImage`.

Presets: `tiny` (a few million parameters, CPU tests), `small` (one GPU), `full` (released sizes; config
only here, no weights can be downloaded). `Denoiser` hides the two transformers' calling conventions
behind one call the trainer and the sampler use: target-image tokens in, velocity for them out.

`PixelCodec` stands in for a VAE in toy runs: a 4-channel image folded into 16x16 (or 8x8) pixel
patches, no parameters to train, so a 30-minute CPU run spends its time on the transformer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ARCHS = ("2.1", "1.0")
PRESETS = ("tiny", "small", "full")

# Transformer sizes. `full` is the released configuration; `small` fits one GPU at 512px with AdamW.
TRANSFORMER_PRESETS = {
    "2.1": {
        "tiny": dict(num_layers=4, attention_head_dim=32, num_attention_heads=4, mlp_ratio=3, axes_dims_rope=(8, 12, 12)),
        "small": dict(num_layers=16, attention_head_dim=128, num_attention_heads=8, mlp_ratio=3, axes_dims_rope=(16, 56, 56)),
        "full": dict(num_layers=32, attention_head_dim=128, num_attention_heads=32, mlp_ratio=3, axes_dims_rope=(16, 56, 56)),
    },
    "1.0": {
        "tiny": dict(num_layers=2, attention_head_dim=32, num_attention_heads=4, axes_dims_rope=(8, 12, 12)),
        "small": dict(num_layers=12, attention_head_dim=128, num_attention_heads=8, axes_dims_rope=(16, 56, 56)),
        "full": dict(num_layers=60, attention_head_dim=128, num_attention_heads=24, axes_dims_rope=(16, 56, 56)),
    },
}

VAE_PRESETS = {
    "2.1": {
        "tiny": dict(base_dim=8, decoder_base_dim=8, dim_mult=[1, 2, 2, 2, 2], num_res_blocks=1),
        "small": dict(base_dim=32, decoder_base_dim=48, dim_mult=[1, 2, 4, 8, 8], num_res_blocks=2),
        "full": dict(),  # diffusers' defaults are Table 1's f16c64 VAE
    },
    "1.0": {
        "tiny": dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1),
        "small": dict(base_dim=48, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2),
        "full": dict(),
    },
}

# Pixels per latent token along each side, as the pipelines see it.
SCALE = {"2.1": 16, "1.0": 16}  # 1.0: f8 VAE and 2x2 patches


def transformer_config(arch: str, preset: str, in_channels: int, context_dim: int) -> dict:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; use one of {ARCHS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {PRESETS}")
    cfg = dict(TRANSFORMER_PRESETS[arch][preset])
    if arch == "2.1":
        cfg.update(in_channels=in_channels, out_channels=in_channels, context_in_dim=context_dim)
    else:  # 2x2 patches folded into channels
        cfg.update(in_channels=in_channels * 4, out_channels=in_channels, joint_attention_dim=context_dim)
    return cfg


def build_transformer(arch: str, preset: str, in_channels: int, context_dim: int):
    from diffusers import QwenImage21Transformer2DModel, QwenImageTransformer2DModel

    cls = QwenImage21Transformer2DModel if arch == "2.1" else QwenImageTransformer2DModel
    return cls(**transformer_config(arch, preset, in_channels, context_dim))


def load_transformer(path: str | Path):
    """A transformer saved in diffusers format (`DIR` or `DIR/transformer`); the class is read from its config."""
    import diffusers

    path = Path(path)
    if (path / "transformer" / "config.json").exists():
        path = path / "transformer"
    name = json.loads((path / "config.json").read_text())["_class_name"]
    return getattr(diffusers, name).from_pretrained(path)


def arch_of(transformer) -> str:
    return "2.1" if type(transformer).__name__ == "QwenImage21Transformer2DModel" else "1.0"


def build_vae(arch: str, preset: str):
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLQwenImage21

    cfg = dict(VAE_PRESETS[arch][preset])
    if arch == "2.1":
        return AutoencoderKLQwenImage21(**cfg)
    if "z_dim" in cfg and cfg["z_dim"] != 16:
        raise ValueError("the 1.0 VAE has 16 latent channels")
    return AutoencoderKLQwenImage(**cfg)


def load_vae(path: str | Path):
    import diffusers

    path = Path(path)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    name = json.loads((path / "config.json").read_text())["_class_name"]
    if name == "PixelCodec":
        return pixel_codec_class().from_pretrained(path)
    return getattr(diffusers, name).from_pretrained(path)


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def revision(module, extra: str = "") -> str:
    """A short fingerprint of a module's config and weights, for cache keys: a fine-tuned VAE or
    another text encoder never reuses stale cache entries. Samples a slice of every tensor so it stays
    fast for billion-parameter models."""
    import torch

    h = hashlib.sha256(extra.encode())
    cfg = getattr(module, "config", None)
    if cfg is not None:
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in module.state_dict().items():
            flat = t.detach().reshape(-1)
            h.update(name.encode() + str(tuple(t.shape)).encode())
            h.update(flat[:256].float().cpu().numpy().tobytes())
            h.update(flat[-256:].float().cpu().numpy().tobytes())
            h.update(repr(float(flat.float().sum())).encode())
    return h.hexdigest()[:16]


def _lazy_codec_base():
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config

    return ModelMixin, ConfigMixin, register_to_config


def pixel_codec_class():
    """The PixelCodec class, built on first use so importing this module stays cheap (no diffusers import)."""
    if "PixelCodec" not in globals():
        globals()["PixelCodec"] = _make_pixel_codec()
    return globals()["PixelCodec"]


def __getattr__(name):  # `qi.PixelCodec` from outside
    if name == "PixelCodec":
        return pixel_codec_class()
    raise AttributeError(name)


def _make_pixel_codec():
    import torch

    ModelMixin, ConfigMixin, register_to_config = _lazy_codec_base()

    class PixelCodec(ModelMixin, ConfigMixin):
        """Pixel space as a parameter-free 'VAE' for toy runs: (B, 4, 1, H, W) in [-1, 1] folded into
        (B, 4*p*p, 1, H/p, W/p). Same `encode(...).latent_dist` / `decode(...)` surface and
        `latents_mean`/`latents_std` config as diffusers' Qwen-Image VAEs, so the trainer and the
        sampler treat it the same way."""

        @register_to_config
        def __init__(self, patch: int = 8, in_channels: int = 4, latents_mean: list | None = None,
                     latents_std: list | None = None, z_dim: int | None = None):  # z_dim: derived, kept in config.json
            super().__init__()
            self.z_dim = in_channels * patch * patch
            self.register_to_config(z_dim=self.z_dim)
            self._dummy = torch.nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a dtype/device

        def encode(self, x, return_dict: bool = True):
            b, c, f, h, w = x.shape
            z = torch.nn.functional.pixel_unshuffle(x[:, :, 0], self.config.patch).unsqueeze(2)
            dist = _Delta(z)
            return _Out(latent_dist=dist) if return_dict else (dist,)

        def decode(self, z, return_dict: bool = True):
            x = torch.nn.functional.pixel_shuffle(z[:, :, 0], self.config.patch).unsqueeze(2)
            return _Out(sample=x) if return_dict else (x,)

    return PixelCodec


@dataclass
class _Out:
    latent_dist: object = None
    sample: object = None


class _Delta:
    def __init__(self, z):
        self.z = z

    def mode(self):
        return self.z

    def sample(self, generator=None):
        return self.z


def vae_scale(vae) -> int:
    """Pixels per latent cell."""
    if type(vae).__name__ == "PixelCodec":
        return vae.config.patch
    return getattr(vae, "spatial_compression_ratio", None) or 2 ** (len(vae.config.dim_mult) - 1)


def image_channels(vae) -> int:
    """4 (RGBA, as the 2.1 pipeline feeds its VAE) or 3 (the first Qwen-Image VAE)."""
    if type(vae).__name__ == "AutoencoderKLQwenImage":
        return 3
    return getattr(vae.config, "in_channels", 4)


def z_dim(vae) -> int:
    return vae.config.z_dim


def latent_stats(vae):
    """(mean, std) tensors shaped (1, C, 1, 1, 1) used to normalise latents, as the pipelines do."""
    import torch

    c = z_dim(vae)
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    mean = torch.tensor(mean if mean is not None and len(mean) == c else [0.0] * c)
    std = torch.tensor(std if std is not None and len(std) == c else [1.0] * c)
    return mean.view(1, c, 1, 1, 1), std.view(1, c, 1, 1, 1)


class Denoiser:
    """One call for both transformer generations: `(x, t, text) -> velocity` over target tokens.

    x: (B, N, C) target latents flattened row-major over an (h, w) grid of latent cells; cond: list of
    (B, Ni, C) condition-image latents with their grids (TI2I). text: (B, L, D) embeddings, text_mask
    (B, L) bool, img_slots (L,) bool: where the encoder reserved slots for condition images (2.1 only).
    """

    def __init__(self, transformer, arch: str | None = None):
        self.model = transformer  # may be wrapped (DDP, torch.compile): pass `arch` then
        self.arch = arch or arch_of(transformer)

    def __call__(self, x, t, grid, text, text_mask, img_slots=None, cond=None, cond_grids=None):
        import torch

        b, n, c = x.shape
        h, w = grid
        cond = cond or []
        cond_grids = cond_grids or []
        if self.arch == "2.1":
            # One VLM slot per 2x2 group of latent cells; target slots are appended after the text.
            slots = img_slots if img_slots is not None else torch.zeros(text.shape[1], dtype=torch.bool, device=x.device)
            img_mask = torch.cat([slots.to(x.device), slots.new_ones(n // 4, device=x.device)])[None].expand(b, -1)
            mask = None if text_mask is None or bool(text_mask.all()) else text_mask
            hidden = torch.cat([*cond, x], dim=1)
            shapes = [[*[(1, gh, gw) for gh, gw in cond_grids], (1, h, w)]] * b
            out = self.model(hidden_states=hidden, encoder_hidden_states=text, encoder_hidden_states_mask=mask,
                             timestep=t, img_shapes=shapes, img_mask=img_mask, return_dict=False)[0]
            return out[:, -n:]
        # 1.0: 2x2 patches of f8 latents, image tokens first (as QwenImageEditPipeline concatenates them)
        def patchify(z, gh, gw):  # (B, gh*gw, C) -> (B, gh/2*gw/2, 4C)
            z = z.view(b, gh // 2, 2, gw // 2, 2, c).permute(0, 1, 3, 5, 2, 4)
            return z.reshape(b, (gh // 2) * (gw // 2), c * 4)

        hidden = torch.cat([patchify(x, h, w)] + [patchify(z, gh, gw) for z, (gh, gw) in zip(cond, cond_grids)], dim=1)
        shapes = [[(1, h // 2, w // 2), *[(1, gh // 2, gw // 2) for gh, gw in cond_grids]]] * b
        mask = text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=torch.bool, device=x.device)
        out = self.model(hidden_states=hidden, encoder_hidden_states=text, encoder_hidden_states_mask=mask.long(),
                         timestep=t, img_shapes=shapes, return_dict=False)[0]
        out = out[:, : (h // 2) * (w // 2)]  # (B, N/4, 4C) -> (B, N, C)
        out = out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(b, n, c)


def grid_for(width: int, height: int, scale: int) -> tuple[int, int]:
    """Latent grid (h, w) for an image size; sizes must be multiples of 2*scale (2x2 slots)."""
    if width % (2 * scale) or height % (2 * scale):
        raise ValueError(f"{width}x{height} is not a multiple of {2 * scale}; pick bucket sizes that are")
    return height // scale, width // scale


def describe(transformer, vae) -> str:
    return (f"{type(transformer).__name__} {param_count(transformer) / 1e6:.2f}M params, "
            f"{type(vae).__name__} {param_count(vae) / 1e6:.2f}M params")
