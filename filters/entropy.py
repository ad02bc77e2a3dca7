"""entropy: near-blank images (solid fills, blank or nearly blank pages, near-uniform backgrounds
with at most a small mark) and noise.

Averages over the whole image do not tell these apart from minimal but intentional images: a page
with three specks and a wallpaper with one small bird have about the same edge fraction, and a
smooth illustration has fewer edges than a scanned page with dust. What differs is *where* the
content is and how big the biggest thing in the image is. So on the working copy's luma, reduced
to `analysis_size`:

- detail: |luma - Gaussian(luma, sigma 3 px)|, a band-pass that ignores smooth gradients and
  keeps strokes, outlines and texture; a pixel has detail when it is at least `detail_level`
  (0-255 luma) or 3x the image's grain level (from its quietest tiles, at most 4x detail_level),
  whichever is higher, so a grainy blank scan does not light up everywhere;
- tiles of `tile` px: a tile holds content when at least `tile_pixels` of its pixels have detail;
- `entropy__content`: fraction (0-1) of tiles holding content (the content mass);
- `entropy__extent`: the span of the largest content region (content tiles grouped when at most
  one tile apart, so the words of a line or the strands of a smooth texture form one region; the
  span is the larger side of the region's tile bounding box) as a fraction of the short side.
  A speck, a page number or a small logo spans a few tiles; a subject, a line of text or a
  textured area spans much more;
- `entropy__hist`: Shannon entropy (bits, 0-8) of the 256-bin histogram; a solid fill is ~0;
- `entropy__neighbor_corr`: correlation of horizontally adjacent pixels; real images are
  strongly correlated, white noise is not ("abnormally high information", report 2.3). Measured
  on the resampled working copy, white noise scores ~0.3 and dense real textures (grass,
  gravel) ~0.6, hence the default 0.4.

`near_blank` compares `entropy__extent` with `min_extent`: an image whose largest content region
spans less than that share of its short side is near-blank, whatever its histogram. A pure
gradient with nothing on it is near-blank too (no region at all); a smooth illustration has
soft outlines that form regions. Calibrated on the decision set's tuning split (docs/threshold-cards/entropy.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule, Work, register


class EntropyParams(Params):
    min_entropy: float = Field(0.001, ge=0, le=8, description="bits; below: one flat colour (a page with 1% ink has ~0.08, three specks ~0.003)")
    min_extent: float = Field(0.15, ge=0, le=10,
                              description="span of the largest content region / short side; below: near-blank")
    detail_level: float = Field(6.0, gt=0, description="band-pass |luma - blur| (0-255) that counts as detail")
    tile: int = Field(8, ge=2, le=64, description="tile side in px at the analysis size")
    tile_pixels: int = Field(3, ge=1, description="detail pixels that make a tile hold content")
    min_neighbor_corr: float = Field(0.4, ge=-1, le=1, description="below: noise")
    analysis_size: int = Field(256, ge=32, description="short side the measures are computed at")


def reduce_gray(g: np.ndarray, size: int) -> np.ndarray:
    """Block-mean reduction to a short side of about `size` (an integer factor: cheap, no aliasing
    of grain into false detail as plain striding would)."""
    step = max(1, min(g.shape) // size)
    if step == 1:
        return g
    h, w = (g.shape[0] // step) * step, (g.shape[1] // step) * step
    return g[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3), dtype=np.float32)


def content_map(g: np.ndarray, p: EntropyParams) -> np.ndarray:
    """Boolean tile grid: which tiles hold content (see the module doc)."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)  # one engine worker per core already; OpenCV's own threads would fight them
    t = p.tile
    h, w = g.shape[0] // t, g.shape[1] // t
    if h == 0 or w == 0:
        return np.zeros((0, 0), dtype=bool)
    # OpenCV's Gaussian (kernel 25 taps at sigma 3, edges replicated: the same filter as
    # scipy.ndimage's with mode "nearest", within 1e-4 luma) at a fifth of its cost
    blur = cv2.GaussianBlur(np.ascontiguousarray(g, dtype=np.float32), (0, 0), 3.0, borderType=cv2.BORDER_REPLICATE)
    band = np.abs(g - blur)[: h * t, : w * t].reshape(h, t, w, t)
    # Grain level: the quietest tenth of the tiles (mean |band| of Gaussian noise is 0.8 sigma).
    # Grain covers every tile evenly, content does not; a whole-image average would read a
    # densely detailed image as noise and lift the level above all of its detail.
    noise = 1.25 * float(np.percentile(band.mean(axis=(1, 3)), 10))
    # capped at 4x detail_level: grain that strong is the image (static), not a scan's texture
    counts = (band >= max(p.detail_level, min(3.0 * noise, 4.0 * p.detail_level))).sum(axis=(1, 3))
    return counts >= p.tile_pixels


def largest_extent(content: np.ndarray) -> float:
    """Span (tiles) of the largest region of content tiles, over the short side (tiles)."""
    from scipy import ndimage

    if content.size == 0 or not content.any():
        return 0.0
    eight = np.ones((3, 3), dtype=bool)
    groups, _ = ndimage.label(ndimage.binary_dilation(content, eight), structure=eight)
    groups = np.where(content, groups, 0)  # the dilation only joins; spans are of the content tiles
    span = max(max(s[0].stop - s[0].start, s[1].stop - s[1].start)
               for s in ndimage.find_objects(groups) if s is not None)
    return span / min(content.shape)


@register
class Entropy(Operator):
    name = "entropy"
    Params = EntropyParams
    writes = ("entropy__hist", "entropy__content", "entropy__extent", "entropy__neighbor_corr")
    rules = (
        Rule("flat", "entropy__hist", "<", "min_entropy"),
        Rule("near_blank", "entropy__extent", "<", "min_extent", context=("entropy__content",),
             detail="entropy__extent={value} < min_extent={threshold} (largest content region / short side; "
                    "content tiles {entropy__content})"),
        Rule("noise", "entropy__neighbor_corr", "<", "min_neighbor_corr"),
    )
    cards = {
        "entropy__hist": "grayscale histogram entropy in bits (0-8); higher is more varied tone",
        "entropy__content": "fraction (0-1) of 8 px tiles at the analysis size holding detail (band-pass >= detail_level); higher is more content",
        "entropy__extent": "span of the largest content region / short side (0-~4); < 0.15 a speck or small mark on a blank field; higher is more content",
        "entropy__neighbor_corr": "adjacent-pixel correlation (-1..1); ~0 is noise, real images > 0.5",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        p: EntropyParams = self.params
        hist, content, extent, corr = [], [], [], []
        for w in work:
            if w is None:
                hist.append(None), content.append(None), extent.append(None), corr.append(None)
                continue
            g = reduce_gray(w.gray, p.analysis_size)
            counts = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
            pr = counts[counts > 0] / counts.sum()
            hist.append(float(-(pr * np.log2(pr)).sum()) + 0.0)
            if g.shape[0] < 2 or g.shape[1] < 2:
                content.append(0.0), extent.append(0.0), corr.append(1.0)
                continue
            cm = content_map(g, p)
            content.append(float(cm.mean()) if cm.size else 0.0)
            extent.append(float(largest_extent(cm)))
            a, b = g[:, :-1].ravel(), g[:, 1:].ravel()
            sa, sb = a.std(), b.std()
            corr.append(1.0 if sa < 1e-6 or sb < 1e-6 else float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)))
        return {"entropy__hist": hist, "entropy__content": content, "entropy__extent": extent,
                "entropy__neighbor_corr": corr}
