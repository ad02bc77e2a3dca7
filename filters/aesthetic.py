"""aesthetic: images of low aesthetic quality (report 2.3, stage 4 "aesthetic filter").

The LAION improved-aesthetic-predictor head (`flywheel.models.aesthetic`) over CLIP ViT-L/14
image embeddings; `aesthetic__score` is on the predictor's native 1-10 scale, higher is more
aesthetic. Rows below `min_score` are rejected.

Nothing is embedded twice in a worker: the head first takes the image embedding the `clip`
operator left in the process-wide cache (same CLIP model folder, same sample id) and embeds only
the rest, through the same shared CLIP instance.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Fail, Operator, Params, Resources, Work, below, register


class AestheticParams(Params):
    min_score: float = Field(4.5, ge=0, le=10, description="score (1-10) below which a row is rejected")
    model: str = Field("laion-aesthetic-v2", description="model-store name of the aesthetic head")
    clip_model: str = Field("clip-vit-l-14", description="model-store name of the CLIP the head was trained on")
    batch_size: int = Field(32, ge=1, le=1024)


@register
class Aesthetic(Operator):
    name = "aesthetic"
    Params = AestheticParams
    reads = ("id",)
    writes = ("aesthetic__score",)
    rules = ("low_aesthetic",)
    models = ("clip-vit-l-14", "laion-aesthetic-v2")
    resources = Resources(num_cpus=1, batch_size=64)
    cards = {"aesthetic__score": "LAION improved-aesthetic-predictor (sac+logos+ava1-l14-linearMSE) over CLIP ViT-L/14, native 1-10 scale; higher is more aesthetic"}

    @classmethod
    def required_models(cls, params: dict) -> tuple[str, ...]:
        p = AestheticParams(**params)
        return (p.clip_model, p.model)

    def setup(self) -> None:
        from flywheel.models import clip, store
        from flywheel.models.aesthetic import HEAD_FILE, AestheticHead

        head_dir = store.path(self.params.model)
        files = list(store.get(self.params.model).files)
        self.head = AestheticHead(head_dir, HEAD_FILE if HEAD_FILE in files else files[0])
        self.clip_dir = store.path(self.params.clip_model)
        self.clip = clip.shared(self.clip_dir, self.params.batch_size)

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        from flywheel.models import clip

        if not hasattr(self, "head"):
            self.setup()
        n = len(work)
        ids = batch.column("id").to_pylist() if "id" in batch.column_names else [None] * n
        idx = [i for i, w in enumerate(work) if w is not None]
        key = str(self.clip_dir)
        embs: dict[int, np.ndarray] = {}
        todo = []
        for i in idx:
            e = clip.IMAGE_CACHE.get(key, ids[i]) if ids[i] else None
            if e is None:
                todo.append(i)
            else:
                embs[i] = e
        if todo:
            for i, e in zip(todo, self.clip.images([work[i].rgb for i in todo])):
                embs[i] = e
        out: list[float | None] = [None] * n
        if idx:
            scores = self.head.score(np.stack([embs[i] for i in idx]))
            for i, s in zip(idx, scores):
                out[i] = float(s)
        self.last_reused = len(idx) - len(todo)  # for tests and the benchmark
        return {"aesthetic__score": out}

    def reject(self, table: pa.Table, params: AestheticParams) -> list[list[Fail]]:
        return [
            [f] if (f := self.check("low_aesthetic", below(v, params.min_score, "aesthetic__score", "min_score"))) else []
            for v in table.column("aesthetic__score").to_pylist()
        ]
