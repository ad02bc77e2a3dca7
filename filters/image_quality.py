"""image_quality: blocky, blurred and noisy images (report 2.3, stage 4 "image quality filter").

One measure per distortion, each judged against what the image itself holds, so clean flat
content (vector art, screenshots, smooth wallpapers) is not mistaken for a distorted photo.
All on the working copy's luma (per RGB channel for noise), reduced to `analysis_size` for blur
and noise; higher is worse only for blocking and noise:

- `image_quality__blocking`: JPEG 8x8 blocking. Mean |difference| across the JPEG block
  boundary (columns/rows 7|8 of every 8) over the largest mean |difference| at the seven
  interior positions, horizontally and vertically, the smaller of the two. ~1 for any unblocked
  image (flat content included, whatever its edges), 1.8-4 for JPEG q5-15. Comparing with the
  largest interior position, not the median, keeps 2x/4x pixel-replicated images at ~1. Only
  measured where the working copy is the file's own pixels (not resized): a resize moves the
  grid; null otherwise (compression_quality reads such files' quantisation tables).
- `image_quality__sharpness`: edge sharpness relative to the edges present. At the strongest
  edges (coarse gradient, Gaussian derivative sigma 2, at least `edge_level` luma/px and in the
  top 2%), the local maximum of the fine gradient ([1 2 1] binomial, sigma 0.71) over the coarse gradient; per axis,
  the smaller (motion blur smears one axis). A sharp edge scores high whatever its contrast, a
  blurred one ~1: flat illustrations have sharp edges, blurred photos wide ones. Null when the
  image has no strong edges (a smooth gradient wallpaper is not judged blurry).
- `image_quality__noise`: noise sigma (0-255). Per RGB channel, the MAD of the diagonal Haar
  band (HH) in 16x16 px blocks, over the 20% of unclipped blocks with the least structure
  (gradient of the smoothed half-size image), median over blocks, then the median over channels.
  Texture is in the structured blocks, so a detailed photo still reads its real noise level.
- `image_quality__brisque`: BRISQUE (natural scene statistics, the `brisque` 0.2.0 SVR, see
  `flywheel.models.brisque_features`), computed and judged only with `brisque: true`. It was
  trained on natural photos and scores clean flat regions as distorted, so it is off by default.

Thresholds calibrated on the decision set's tuning split: docs/threshold-cards/image_quality.md.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class ImageQualityParams(Params):
    max_blocking: float = Field(1.4, gt=0, description="8x8 boundary/interior difference ratio above which a row is blocky")
    min_sharpness: float = Field(1.52, gt=0, description="edge sharpness ratio below which a row is blurry")
    max_noise: float = Field(16.0, gt=0, description="noise sigma (0-255) above which a row is noisy")
    edge_level: float = Field(3.0, gt=0, description="coarse gradient (luma/px) an edge needs to be judged")
    brisque: bool = Field(False, description="also compute BRISQUE and reject above max_brisque")
    max_brisque: float = Field(60.0, description="BRISQUE above which a row is rejected (only with brisque: true)")
    analysis_size: int = Field(512, ge=64, le=2048, description="short side sharpness and noise are measured at")


def _reduce(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if min(h, w) <= size:
        return rgb
    from PIL import Image

    f = size / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))


def _luma(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def blocking(gray: np.ndarray) -> float | None:
    """JPEG-grid difference ratio (see the module doc); None when the image is under 32 px."""
    if min(gray.shape) < 32:
        return None
    out = []
    for ax in (0, 1):
        d = np.abs(np.diff(gray, axis=ax)).mean(axis=1 - ax)  # mean |difference| at each position
        n = (len(d) // 8) * 8
        d = d[:n].reshape(-1, 8).mean(axis=0)  # by position in the 8-px block; d[7]: across the boundary
        out.append(float((d[7] + 0.25) / (d[:7].max() + 0.25)))
    return min(out)


def _smooth(gray: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    out = ndimage.gaussian_filter1d(gray, sigma, axis=0, truncate=3.0)
    return ndimage.gaussian_filter1d(out, sigma, axis=1, truncate=3.0)


def _grad(a: np.ndarray, ax: int) -> np.ndarray:
    """|central difference| along `ax`, zero on the border (same shape)."""
    out = np.zeros_like(a)
    if ax == 0:
        out[1:-1] = np.abs(a[2:] - a[:-2]) * 0.5
    else:
        out[:, 1:-1] = np.abs(a[:, 2:] - a[:, :-2]) * 0.5
    return out


def _binomial(gray: np.ndarray) -> np.ndarray:
    """[1 2 1]/4 in both axes (a Gaussian of sigma 0.71), border replicated; by slicing, cheap."""
    p = np.pad(gray, 1, mode="edge")
    r = (p[:-2] + 2 * p[1:-1] + p[2:]) * 0.25
    return (r[:, :-2] + 2 * r[:, 1:-1] + r[:, 2:]) * 0.25


def sharpness(gray: np.ndarray, edge_level: float) -> float | None:
    """Edge sharpness ratio (see the module doc); None without strong edges."""
    if min(gray.shape) < 16:
        return None
    fine_s, coarse_s = _binomial(gray), _smooth(gray, 2.0)
    out = []
    for ax in (0, 1):
        coarse = _grad(coarse_s, ax)
        level = max(edge_level, float(np.percentile(coarse[::3, ::3], 98)))  # a subsample is enough for a percentile
        strong = coarse >= level
        if strong.sum() < 50:
            continue
        fine = _grad(fine_s, ax)
        peak = fine.copy()  # the fine gradient's peak within 2 px across the edge
        for k in (1, 2):
            if ax == 0:
                np.maximum(peak[k:], fine[:-k], out=peak[k:])
                np.maximum(peak[:-k], fine[k:], out=peak[:-k])
            else:
                np.maximum(peak[:, k:], fine[:, :-k], out=peak[:, k:])
                np.maximum(peak[:, :-k], fine[:, k:], out=peak[:, :-k])
        out.append(float(peak[strong].sum() / coarse[strong].sum()))
    return min(out) if out else None


def noise(rgb: np.ndarray, block: int = 8, share: float = 0.2) -> float | None:
    """Noise sigma on 0-255 (see the module doc): per RGB channel, because synthetic and sensor
    noise is mostly independent per channel and luma averages a third of it away; the blocks
    with the least structure are chosen once, on luma. None when too little is unclipped."""
    bh, bw = rgb.shape[0] // 2 // block, rgb.shape[1] // 2 // block
    if bh * bw < 8:
        return None
    c = rgb[: bh * block * 2, : bw * block * 2].astype(np.float32)
    a, b, cc, d = c[0::2, 0::2], c[0::2, 1::2], c[1::2, 0::2], c[1::2, 1::2]
    ll = (a + b + cc + d) * 0.25  # Haar LL per channel, (bh*block, bw*block, 3)
    lum = _smooth(ll @ np.array([0.299, 0.587, 0.114], np.float32), 1.0)
    act = (_grad(lum, 0) + _grad(lum, 1)).reshape(bh, block, bw, block).mean(axis=(1, 3)).ravel()
    mean = ll.reshape(bh, block, bw, block, 3).mean(axis=(1, 3)).reshape(-1, 3)
    ok = np.flatnonzero(((mean > 16) & (mean < 239)).all(axis=1))  # clipped blocks hide their noise
    if len(ok) < 8:
        return None
    pick = ok[np.argsort(act[ok])[: max(4, int(share * len(ok)))]]
    by, bx = np.divmod(pick, bw)
    rows = (by[:, None] * block + np.arange(block))[:, :, None]  # (k, block, 1)
    cols = (bx[:, None] * block + np.arange(block))[:, None, :]  # (k, 1, block)
    hh = (a[rows, cols] - b[rows, cols] - cc[rows, cols] + d[rows, cols]) * 0.5  # Haar HH of the picked blocks only
    sig = np.median(np.abs(hh.reshape(len(pick), -1, 3)), axis=1) / 0.6745  # (picked, 3)
    return float(np.median(np.median(sig, axis=0)))


@register
class ImageQuality(Operator):
    name = "image_quality"
    Params = ImageQualityParams
    writes = ("image_quality__blocking", "image_quality__sharpness", "image_quality__noise", "image_quality__brisque")
    rules = (
        Rule("blocky", "image_quality__blocking", ">", "max_blocking", calibrated=True),
        Rule("blurry", "image_quality__sharpness", "<", "min_sharpness", calibrated=True),
        Rule("noisy", "image_quality__noise", ">", "max_noise", calibrated=True),
        Rule("low_quality", "image_quality__brisque", ">", "max_brisque", when="brisque"),
    )
    resources = Resources(num_cpus=1, batch_size=32)
    cards = {
        "image_quality__blocking": "JPEG 8x8 boundary / largest interior |difference| ratio on the unresized working copy; ~1 unblocked, > 1.4 blocky (JPEG q<=15 ~1.8-4); null when resized",
        "image_quality__sharpness": "fine/coarse gradient ratio at the strongest edges, the blurrier axis; < 1.52 blurry, sharp photos 1.6-3, vector art higher; null without strong edges",
        "image_quality__noise": "noise sigma on 0-255 (Haar HH MAD over the least-structured unclipped blocks, median of RGB); clean < 6, dense texture up to ~11, > 16 noisy",
        "image_quality__brisque": "BRISQUE (brisque-0.2.0 SVR) at the analysis size, only with brisque: true; ~0 pristine .. 100+ distorted; lower is better",
    }

    def required_models(self) -> tuple[str, ...]:
        return ("brisque-svm",) if self.params.brisque else ()

    def setup(self) -> None:
        if self.params.brisque:
            from flywheel.models import store
            from flywheel.models.brisque_features import Brisque

            self.model = Brisque(store.path("brisque-svm"))

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        p: ImageQualityParams = self.params
        n = len(work)
        blk: list[float | None] = [None] * n
        shp: list[float | None] = [None] * n
        nse: list[float | None] = [None] * n
        bq: list[float | None] = [None] * n
        idx, feats = [], []
        for i, w in enumerate(work):
            if w is None or min(w.rgb.shape[:2]) < 8:
                continue
            if w.rgb.shape[1] == w.width and w.rgb.shape[0] == w.height:  # the file's own pixel grid
                blk[i] = blocking(w.gray)
            rgb = _reduce(w.rgb, p.analysis_size)
            gray = w.gray if rgb is w.rgb else _luma(rgb)
            shp[i] = sharpness(gray, p.edge_level)
            nse[i] = noise(rgb)
            if p.brisque:
                from flywheel.models.brisque_features import features

                idx.append(i)
                feats.append(features(_reduce(w.rgb, 384)))
        if idx:
            if not hasattr(self, "model"):
                self.setup()
            for i, s in zip(idx, self.model.predict(np.stack(feats))):  # one SVR call for the batch
                bq[i] = float(s)
        return {"image_quality__blocking": blk, "image_quality__sharpness": shp, "image_quality__noise": nse,
                "image_quality__brisque": bq}
