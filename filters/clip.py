"""clip: image-text pairs whose caption does not describe the image (report 2.3 "CLIP filter").

open_clip embeds the working copy and the original caption; `clip__similarity` is their cosine
(-1..1, higher is better aligned). Rows below `min_similarity` are rejected; rows without a
caption score null and are left to `token_length`.

Model: `model` names a model-store entry (default `clip-vit-l-14`, the backbone the aesthetic
head needs); `flywheel models check` / the curate preflight stop a run before it starts when it
is missing. Thresholds are on that model's scale: another backbone needs `flywheel calibrate`.

Embeddings side dataset: when the engine sets `side_dir` on the instance (the class attribute
`side_output`, `embeddings/clip`, is its place relative to the run output), or sets
`FLYWHEEL_RUN_OUTPUT` in the workers' environment, each worker
writes Parquet parts `id, image_emb, text_emb, model, revision` there (see
`flywheel.models.clip.write_side` / `read_side`), keyed by sample id, for the FAISS index.

`clip__embedding` (L2-normalised image embedding) is a declared column, read by `aesthetic` and
by `distribution` (`embedding: clip_image`), so nothing is embedded twice and the operators could
run in separate actors. It is stored in the output datasets like any score (about 3 KB a row for
ViT-L/14, small beside the image bytes): a later stage that reuses the stored `clip__similarity`
instead of running CLIP again still hands its readers the embedding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class ClipParams(Params):
    min_similarity: float = Field(0.20, ge=-1, le=1, description="image-caption cosine below which a row is rejected")
    model: str = Field("clip-vit-l-14", description="model-store name of an open_clip model")
    batch_size: int = Field(32, ge=1, le=1024, description="images/texts per forward pass")


@register
class Clip(Operator):
    name = "clip"
    Params = ClipParams
    reads = ("id", "caption")
    writes = ("clip__similarity", "clip__embedding")
    types = {"clip__embedding": pa.list_(pa.float32())}
    rules = (Rule("low_similarity", "clip__similarity", "<", "min_similarity", calibrated=True),)
    resources = Resources(num_cpus=1, num_gpus=0.0, batch_size=64)
    cards = {"clip__similarity": "cosine of open_clip image and caption embeddings (model param, default ViT-L-14/openai), -1..1; higher is better aligned",
             "clip__embedding": "L2-normalised open_clip image embedding of the working copy (input of aesthetic and distribution)"}
    side_output: ClassVar[str] = "embeddings/clip"
    side_dir: Path | str | None = None

    def required_models(self) -> tuple[str, ...]:
        return (self.params.model,)

    def setup(self) -> None:
        from flywheel.models import clip, store

        self.model_dir = store.path(self.params.model)
        self.revision = store.installed_revision(self.params.model) or ""
        self.clip = clip.shared(self.model_dir, self.params.batch_size)

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        from flywheel.models import clip

        if not hasattr(self, "clip"):
            self.setup()
        n = len(work)
        ids = batch.column("id").to_pylist() if "id" in batch.column_names else [None] * n
        caps = batch.column("caption").to_pylist() if "caption" in batch.column_names else [None] * n
        idx = [i for i, w in enumerate(work) if w is not None]
        img = self.clip.images([work[i].rgb for i in idx])
        tidx = [k for k, i in enumerate(idx) if caps[i] and str(caps[i]).strip()]
        txt = self.clip.texts([str(caps[idx[k]]) for k in tidx])
        sim: list[float | None] = [None] * n
        for k, t in zip(tidx, txt):
            sim[idx[k]] = float(np.dot(img[k], t))
        emb: list[list[float] | None] = [None] * n
        for k, i in enumerate(idx):
            emb[i] = img[k].astype(np.float32).tolist()
        side = self.side_dir or (os.environ.get("FLYWHEEL_RUN_OUTPUT") and Path(os.environ["FLYWHEEL_RUN_OUTPUT"]) / self.side_output)
        if side and idx:
            text_full = np.full_like(img, np.nan)
            for k, t in zip(tidx, txt):
                text_full[k] = t
            clip.write_side(side, [ids[i] or "" for i in idx], img, text_full, self.params.model, self.revision)
        return {"clip__similarity": sim, "clip__embedding": emb}
