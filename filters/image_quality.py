"""image_quality: distorted and blurred images (report 2.3, stage 4 "image quality filter").

Two stored scores on the working copy's luma:
- `image_quality__brisque`: BRISQUE (natural scene statistics of MSCN coefficients, fitted SVR
  from the `brisque` 0.2.0 wheel, see `flywheel.models.brisque_features`); ~0 pristine, 100+
  heavily distorted; lower is better. Catches noise, blocking and blur together.
- `image_quality__sharpness`: variance of the 3x3 Laplacian on 0-255 luma at the analysis size
  (Pech-Pacheco et al. 2000); a heavily blurred photo is < 15, a sharp one in the hundreds;
  higher is sharper. Flat images (a blank page) are low too: the entropy operator names those.

Both depend on the scale they are computed at, so they are measured at `analysis_size` (short
side; the working copy is reduced to it when larger), the same for every stage.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class ImageQualityParams(Params):
    max_brisque: float = Field(60.0, description="BRISQUE above which a row is rejected (lower is better)")
    min_sharpness: float = Field(15.0, ge=0, description="Laplacian variance below which a row is rejected")
    analysis_size: int = Field(384, ge=64, le=2048, description="short side both scores are measured at")


def _reduce(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if min(h, w) <= size:
        return rgb
    from PIL import Image

    f = size / min(h, w)
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR))


def laplacian_variance(gray: np.ndarray) -> float:
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    return float(lap.var())


@register
class ImageQuality(Operator):
    name = "image_quality"
    Params = ImageQualityParams
    writes = ("image_quality__brisque", "image_quality__sharpness")
    rules = (
        Rule("low_quality", "image_quality__brisque", ">", "max_brisque", calibrated=True),
        Rule("blurry", "image_quality__sharpness", "<", "min_sharpness", calibrated=True),
    )
    resources = Resources(num_cpus=1, batch_size=32)
    cards = {
        "image_quality__brisque": "BRISQUE (brisque-0.2.0 SVR, our features) at the analysis size; ~0 pristine .. 100+ distorted; lower is better",
        "image_quality__sharpness": "variance of the 3x3 Laplacian of 0-255 luma at the analysis size; < 15 heavily blurred; higher is sharper",
    }

    def required_models(self) -> tuple[str, ...]:
        return ("brisque-svm",)

    def setup(self) -> None:
        from flywheel.models import store
        from flywheel.models.brisque_features import Brisque

        self.model = Brisque(store.path("brisque-svm"))

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        from flywheel.models.brisque_features import features, to_gray

        if not hasattr(self, "model"):
            self.setup()
        size = self.params.analysis_size
        idx, feats, sharp = [], [], []
        for i, w in enumerate(work):
            if w is None or min(w.rgb.shape[:2]) < 8:
                continue
            rgb = _reduce(w.rgb, size)
            idx.append(i)
            feats.append(features(rgb))
            sharp.append(laplacian_variance(to_gray(rgb) * 255.0))
        bq: list[float | None] = [None] * len(work)
        sh: list[float | None] = [None] * len(work)
        if idx:
            scores = self.model.predict(np.stack(feats))  # one SVR call for the batch
            for i, s, v in zip(idx, scores, sharp):
                bq[i], sh[i] = float(s), v
        return {"image_quality__brisque": bq, "image_quality__sharpness": sh}
