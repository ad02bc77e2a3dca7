"""rotation: images whose pixels are turned 90/180/270 degrees.

EXIF orientation is applied at decode (the working copy is upright as the camera meant) and
recorded in `rotation__exif`. The model-based detector of pixel rotation (a document orientation
model for text, a self-supervised classifier for photos) fills `rotation__angle` and
`rotation__confidence`; until its model is installed those are null and nothing is rejected.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa
from pydantic import Field

from .base import Fail, Operator, Params, Work, register


class RotationParams(Params):
    min_confidence: float = Field(0.9, ge=0, le=1, description="below: `uncertain`, recorded, not rejected")


@register
class Rotation(Operator):
    name = "rotation"
    Params = RotationParams
    reads = ("exif_orientation",)
    writes = ("rotation__exif", "rotation__angle", "rotation__confidence")
    types = {"rotation__exif": pa.int8(), "rotation__angle": pa.int16()}
    rules = ("rotated",)
    cards = {
        "rotation__exif": "EXIF orientation tag (1 = upright; 2-8 were applied at decode)",
        "rotation__angle": "detected clockwise pixel rotation 0/90/180/270 (null: no detector installed)",
        "rotation__confidence": "detector probability of that angle (0-1)",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        exif = batch.column("exif_orientation").to_pylist() if "exif_orientation" in batch.column_names else [None] * len(work)
        return {
            "rotation__exif": [None if w is None else (e or 1) for w, e in zip(work, exif)],
            "rotation__angle": [None] * len(work),
            "rotation__confidence": [None] * len(work),
        }

    def reject(self, table: pa.Table, params: RotationParams) -> list[list[Fail]]:
        out = []
        for a, c in zip(table.column("rotation__angle").to_pylist(), table.column("rotation__confidence").to_pylist()):
            if a and c is not None and c >= params.min_confidence:
                out.append([self.fail("rotated", f"rotation__angle={a} with rotation__confidence={c:.3f} >= min_confidence={params.min_confidence}")])
            else:
                out.append([])
        return out
