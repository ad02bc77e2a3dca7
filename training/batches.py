"""A training step's tensors: which samples (data.Batches), their conditioning and their latents.

For each sample of the step's batch: unconditional dropout (its text replaced by the empty prompt, so the
model learns the unconditional branch classifier-free guidance needs), the text encoder's embeddings of
the chosen caption (with slots for a TI2I sample's source images), and the VAE latents of the target and
source images, normalised by the VAE's latent statistics. The frozen encoders run once per sample: both
go through `cache.TensorCache`, keyed by the encoder's revision, so the second epoch encodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel.training.cache import TensorCache
from flywheel.training.data import Batches, Sample, Samples, load_image, to_pil


@dataclass
class Batch:
    samples: list[Sample]
    drop: list[bool]  # trained without its text (unconditional dropout)
    size: tuple[int, int]  # (w, h) pixels, the bucket every sample shares
    grid: tuple[int, int]  # (h, w) latent tokens
    x0: "object"  # (B, N, z) target latents, N = h * w tokens in row-major order
    cond: list  # per source image: (B, N, z) latents of TI2I sources; empty for T2I
    text: "object"  # (B, L, D) text embeddings, zero-padded to the longest
    text_mask: "object"  # (B, L) True where text is real
    slots: "object"  # (L,) True at condition-image slots, the same for every sample


class Loader:
    """`get(step, resolution, generator)` -> Batch on `device`; a pure function of (seed, step, rank)."""

    def __init__(self, samples: Samples, batches: Batches, encoder, vae, cache_root: str | Path, device,
                 uncond_dropout: float, rank: int = 0, world: int = 1):
        from flywheel.models import qwen_image as qi

        self.samples, self.batches, self.encoder, self.vae = samples, batches, encoder, vae
        self.device, self.uncond_dropout, self.rank, self.world = device, uncond_dropout, rank, world
        self.scale, self.channels = qi.vae_scale(vae), qi.image_channels(vae)
        self.lat_mean, self.lat_std = (s.to(device) for s in qi.latent_stats(vae))
        self.vae_rev = qi.revision(vae)
        self.text_cache = TensorCache(Path(cache_root) / "text")
        self.latent_cache = TensorCache(Path(cache_root) / "latents")

    def get(self, step: int, resolution: int, generator) -> Batch:
        """`generator` is the step's: dropout draws from it first, then the caller draws noise and t."""
        import torch

        from flywheel.models import qwen_image as qi

        batch = self.batches.get(step, resolution, self.rank, self.world)
        drop = (torch.rand(len(batch), generator=generator) < self.uncond_dropout).tolist()
        w, h = batch[0].size
        grid = qi.grid_for(w, h, self.scale)
        x0 = torch.stack([self.latents(s, "image", lambda: self.samples.image(s.row)) for s in batch])
        cond = [torch.stack([self.latents(s, f"source{j}", lambda: self.samples.sources(s.row)[j]) for s in batch])
                for j in range(batch[0].n_sources)]
        texts = [self.text(s, d) for s, d in zip(batch, drop)]
        L = max(t["embeds"].shape[0] for t in texts)
        text = torch.stack([_pad(t["embeds"], L) for t in texts])
        text_mask = torch.stack([torch.arange(L) < len(t["embeds"]) for t in texts])
        slots = torch.stack([_pad(t["slots"], L) for t in texts])
        if cond and not bool((slots == slots[0]).all()):
            raise RuntimeError("condition-image slots differ across the batch; the encoder must place images before the text")
        if cond and int(slots[0].sum()) * 4 != sum(c.shape[1] for c in cond):
            raise RuntimeError(f"the text encoder reserved {int(slots[0].sum())} image slots for {sum(c.shape[1] for c in cond)} "
                               "condition latents; TI2I needs a VAE with 16x downsampling (one slot per 2x2 latents)")
        d = self.device
        return Batch(batch, drop, (w, h), grid, x0.to(d), [c.to(d) for c in cond], text.to(d), text_mask.to(d), slots[0].to(d))

    def text(self, s: Sample, uncond: bool) -> dict:
        """{"embeds": (L, D), "slots": (L,)}; the unconditional entry is shared by all T2I samples."""
        ctype = "uncond" if uncond else s.caption_type
        sid = s.id if (s.task == "ti2i" or not uncond) else ""
        key = TensorCache.key(sid, ctype, self.encoder.revision, s.size if s.task == "ti2i" else "")

        def compute():
            images = None
            if s.task == "ti2i":
                if self.encoder.kind == "minilm":  # reserves slots by count only
                    images = [((s.size[0] // self.scale // 2) * (s.size[1] // self.scale // 2))] * s.n_sources
                else:
                    images = [to_pil(load_image(b, s.size, 3)) for b in self.samples.sources(s.row)]
            e = self.encoder.encode("" if uncond else s.prompt, images)
            return {"embeds": e.embeds, "slots": e.img_slots}

        return self.text_cache.get_or(key, compute)

    def latents(self, s: Sample, which: str, data):
        """(h * w, z) normalised latent tokens; `data()` gives the encoded image, read only on a cache miss."""
        import torch

        key = TensorCache.key(s.id, which, f"{s.size[0]}x{s.size[1]}", self.vae_rev)

        def compute():
            x = load_image(data(), s.size, self.channels).to(self.device)[None, :, None]  # (1, C, 1, H, W)
            with torch.no_grad():
                z = self.vae.encode(x).latent_dist.mode()  # (1, z, 1, h, w)
            z = (z - self.lat_mean) / self.lat_std
            return {"z": z[0, :, 0].flatten(1).t().contiguous()}  # (h*w, z) row-major tokens

        return self.latent_cache.get_or(key, compute)["z"]

    def cache_stats(self) -> dict:
        return dict(text_cache=(self.text_cache.hits, self.text_cache.misses),
                    latent_cache=(self.latent_cache.hits, self.latent_cache.misses))


def _pad(x, n: int):
    """Zero-pad the first dimension of x to n."""
    import torch

    return torch.cat([x, x.new_zeros(n - len(x), *x.shape[1:])])
