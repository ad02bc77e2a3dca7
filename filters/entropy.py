"""entropy: low-information images (solid fills, near-blank scans, smooth gradients) and noise.

A histogram alone is not enough: a smooth gradient has a full histogram (high entropy) and no
content, and a sparse text page has a nearly two-valued histogram (low entropy) and is full of
information. So three measures on the working copy's luma:
- `entropy__hist`: Shannon entropy (bits, 0-8) of the 256-bin histogram; a solid fill is ~0;
- `entropy__edges`: fraction of pixels whose gradient |dx|+|dy| exceeds `edge_level`; solid
  fills, gradients and blank scans have ~none, a page with one line of text has some;
- `entropy__neighbor_corr`: correlation of horizontally adjacent pixels; real images are
  strongly correlated, white noise is not ("abnormally high information", report 2.3). Measured
  on the resampled working copy, white noise scores ~0.3 and dense real textures (grass,
  gravel) ~0.6, hence the default 0.4.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule, Work, register


class EntropyParams(Params):
    min_entropy: float = Field(0.1, ge=0, le=8, description="bits; below: one flat colour")
    min_edges: float = Field(0.0015, ge=0, le=1, description="fraction of edge pixels; below: no content")
    edge_level: float = Field(24.0, gt=0, description="|dx|+|dy| on 0-255 luma that counts as an edge")
    min_neighbor_corr: float = Field(0.4, ge=-1, le=1, description="below: noise")
    analysis_size: int = Field(256, ge=32, description="short side the measures are computed at")


@register
class Entropy(Operator):
    name = "entropy"
    Params = EntropyParams
    writes = ("entropy__hist", "entropy__edges", "entropy__neighbor_corr")
    rules = (
        Rule("flat", "entropy__hist", "<", "min_entropy"),
        Rule("low_detail", "entropy__edges", "<", "min_edges"),
        Rule("noise", "entropy__neighbor_corr", "<", "min_neighbor_corr"),
    )
    cards = {
        "entropy__hist": "grayscale histogram entropy in bits (0-8); higher is more varied tone",
        "entropy__edges": "fraction (0-1) of pixels on an edge at the analysis size; higher is more detail",
        "entropy__neighbor_corr": "adjacent-pixel correlation (-1..1); ~0 is noise, real images > 0.5",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        p: EntropyParams = self.params
        hist, edges, corr = [], [], []
        for w in work:
            if w is None:
                hist.append(None), edges.append(None), corr.append(None)
                continue
            g = w.gray
            step = max(1, min(g.shape) // p.analysis_size)
            g = g[::step, ::step]
            counts = np.bincount(np.clip(g, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
            pr = counts[counts > 0] / counts.sum()
            hist.append(float(-(pr * np.log2(pr)).sum()) + 0.0)
            if g.shape[0] < 2 or g.shape[1] < 2:
                edges.append(0.0), corr.append(1.0)
                continue
            dx = np.abs(np.diff(g, axis=1))[:-1, :]
            dy = np.abs(np.diff(g, axis=0))[:, :-1]
            edges.append(float(((dx + dy) > p.edge_level).mean()))
            a, b = g[:, :-1].ravel(), g[:, 1:].ravel()
            sa, sb = a.std(), b.std()
            corr.append(1.0 if sa < 1e-6 or sb < 1e-6 else float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)))
        return {"entropy__hist": hist, "entropy__edges": edges, "entropy__neighbor_corr": corr}
