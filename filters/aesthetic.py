"""aesthetic: images of low aesthetic quality (report 2.3, stage 4 "aesthetic filter").

The LAION improved-aesthetic-predictor head (`flywheel.models.aesthetic`) over CLIP ViT-L/14
image embeddings; `aesthetic__score` is on the predictor's native 1-10 scale, higher is more
aesthetic. Rows below `min_score` are rejected.

Nothing is embedded twice: the head reads the `clip__embedding` column the `clip` operator
writes, so a recipe with `aesthetic` needs `clip` before it (checked when the plan is built, with
`clip.model` equal to `aesthetic.clip_model`, the CLIP the head was trained on).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class AestheticParams(Params):
    min_score: float = Field(4.5, ge=0, le=10, description="score (1-10) below which a row is rejected")
    model: str = Field("laion-aesthetic-v2", description="model-store name of the aesthetic head")
    clip_model: str = Field("clip-vit-l-14", description="model-store name of the CLIP the head was trained on")
    batch_size: int = Field(32, ge=1, le=1024, description="embeddings per forward pass of the head")


@register
class Aesthetic(Operator):
    name = "aesthetic"
    Params = AestheticParams
    reads = ("clip__embedding",)
    writes = ("aesthetic__score",)
    rules = (Rule("low_aesthetic", "aesthetic__score", "<", "min_score", calibrated=True),)
    resources = Resources(num_cpus=1, batch_size=64)
    cards = {"aesthetic__score": "LAION improved-aesthetic-predictor (sac+logos+ava1-l14-linearMSE) over CLIP ViT-L/14, native 1-10 scale; higher is more aesthetic"}

    def required_models(self) -> tuple[str, ...]:
        return (self.params.clip_model, self.params.model)

    def check_upstream(self, writers: dict) -> list[str]:
        clip = writers.get("clip__embedding")
        model = getattr(getattr(clip, "params", None), "model", None)
        if clip is not None and model is not None and model != self.params.clip_model:
            return [f"aesthetic.clip_model={self.params.clip_model} but clip__embedding comes from clip.model={model}; "
                    f"set --set aesthetic.clip_model={model} (the head must see the CLIP it was trained on)"]
        return []

    def setup(self) -> None:
        from flywheel.models import store
        from flywheel.models.aesthetic import HEAD_FILE, AestheticHead

        head_dir = store.path(self.params.model)
        files = list(store.get(self.params.model).files)
        self.head = AestheticHead(head_dir, HEAD_FILE if HEAD_FILE in files else files[0])

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        if not hasattr(self, "head"):
            self.setup()
        embs = batch.column("clip__embedding").to_pylist()  # null where clip could not embed the row
        idx = [i for i, e in enumerate(embs) if e is not None]
        out: list[float | None] = [None] * batch.num_rows
        if idx:
            x = np.asarray([embs[i] for i in idx], dtype=np.float32)
            if x.shape[1] != self.head.dim:
                raise ValueError(f"clip__embedding has {x.shape[1]} dimensions, the head {self.params.model} expects "
                                 f"{self.head.dim}: clip.model must be {self.params.clip_model}")
            bs = self.params.batch_size
            for k in range(0, len(idx), bs):
                for i, s in zip(idx[k:k + bs], self.head.score(x[k:k + bs])):
                    out[i] = float(s)
        return {"aesthetic__score": out}
