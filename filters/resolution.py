"""resolution: buckets every sample and rejects only below the stage's smallest bucket.

`resolution__bucket` is the largest of `buckets` the image qualifies for, by short side (default)
or by area (`by: area`: w*h >= b*b). Report section 2.3: stage 1 needs 256p, stage 4 512p/1024p,
stage 5 adds 2048p. Extreme aspect ratios (panoramas, banners) are rejected by `max_aspect`.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import pyarrow as pa
from pydantic import Field, model_validator

from flywheel.filters.base import Operator, Params, Rule, Work, register


class ResolutionParams(Params):
    buckets: list[int] = Field(default_factory=lambda: [256, 512, 1024, 2048])
    min_bucket: int = 256
    max_aspect: float = Field(6.0, gt=1.0, description="longer side / shorter side")
    by: Literal["short_side", "area"] = "short_side"

    @model_validator(mode="after")
    def _min_in_buckets(self):
        if self.min_bucket not in self.buckets:
            raise ValueError(f"min_bucket {self.min_bucket} must be one of buckets {self.buckets}")
        return self


@register
class Resolution(Operator):
    name = "resolution"
    Params = ResolutionParams
    reads = ("width", "height")
    needs_image = False
    writes = ("resolution__short_side", "resolution__bucket", "resolution__aspect")
    types = {"resolution__short_side": pa.int32(), "resolution__bucket": pa.int32()}
    rules = (
        Rule("too_small", "resolution__bucket", "<", "min_bucket", context=("resolution__short_side",),
             detail="{by} bucket={value} (short_side={resolution__short_side}) < min_bucket={threshold}"),
        Rule("aspect", "resolution__aspect", ">", "max_aspect"),
    )
    cards = {
        "resolution__short_side": "pixels of the shorter side after EXIF transpose",
        "resolution__bucket": "largest bucket reached (0: below every bucket); higher is larger",
        "resolution__aspect": "long side / short side, >= 1",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        p: ResolutionParams = self.params
        short, bucket, aspect = [], [], []
        for w, h in zip(batch.column("width").to_pylist(), batch.column("height").to_pylist()):
            if not w or not h:
                short.append(None), bucket.append(None), aspect.append(None)
                continue
            s = min(w, h)
            q = [b for b in sorted(p.buckets) if (s >= b if p.by == "short_side" else w * h >= b * b)]
            short.append(s), bucket.append(q[-1] if q else 0), aspect.append(max(w, h) / s)
        return {"resolution__short_side": short, "resolution__bucket": bucket, "resolution__aspect": aspect}
