"""distribution: balance categories in SFT data by capping each cluster (report 2.3, stage 6).

A `Barrier`, like dedup: scores are per batch, the decision needs the whole run.

- `score` (per batch) stores one embedding per row, `distribution__emb`: the caption's
  sentence embedding (`flywheel.models.sentence`: the offline MiniLM, mean-pooled, L2-normalised,
  384-d) or, with `embedding: clip_image`, the CLIP image embedding the clip operator wrote
  (`clip__embedding`, so clip must come earlier in the recipe).
- `decide(table)` (the pipeline's barrier step, once over the whole run's score table) runs k-means
  (`clusters`, k-means++ seeded by `seed`) on those embeddings and caps each cluster at
  `ceil(cap_fraction * rows)`; it returns the `decided` columns (cluster, its size, the cap,
  over_cap) and the rule fails the rows over the cap with `distribution:over_cap`, the detail
  naming the cluster, its size and the cap. Which rows of a cluster stay is decided by a hash of
  (sample id, seed), so re-running keeps the same ones.

The cap is a share of all rows of the run that have an embedding (the barrier sees every scored
row, before other operators' verdicts).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Barrier, Params, Resources, Rule, Work, register


class DistributionParams(Params):
    clusters: int = Field(64, ge=1, le=100_000, description="k-means clusters (categories)")
    cap_fraction: float = Field(0.05, gt=0, le=1, description="most of the run's rows one cluster may keep")
    embedding: Literal["text", "clip_image"] = Field("text", description="caption MiniLM embedding or CLIP image embedding")
    clip_model: str = Field("clip-vit-l-14", description="model-store CLIP (embedding: clip_image)")
    seed: int = 0
    batch_size: int = Field(64, ge=1, le=4096)


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns the cluster of each row."""
    n = len(x)
    k = min(k, n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    sq = (x ** 2).sum(1)
    centers = [x[rng.integers(n)]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1 / n)
        c = x[rng.choice(n, p=p)]
        centers.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    c = np.stack(centers)
    assign = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        dist = sq[:, None] + (c ** 2).sum(1)[None, :] - 2 * x @ c.T
        new = dist.argmin(1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            m = assign == j
            if m.any():
                c[j] = x[m].mean(0)
    return assign


@register
class Distribution(Barrier):
    name = "distribution"
    Params = DistributionParams
    needs_image = False
    writes = ("distribution__emb",)
    types = {"distribution__emb": pa.list_(pa.float32()), "distribution__cluster": pa.int32(),
             "distribution__cluster_size": pa.int64(), "distribution__cap": pa.int64(), "distribution__over_cap": pa.bool_()}
    decided = ("distribution__cluster", "distribution__cluster_size", "distribution__cap", "distribution__over_cap")
    rules = (Rule("over_cap", "distribution__over_cap", "==", value=True,
                  context=("distribution__cluster", "distribution__cluster_size", "distribution__cap"),
                  detail="distribution cluster {distribution__cluster} has {distribution__cluster_size} rows > "
                         "cap {distribution__cap} (cap_fraction={cap_fraction})"),)
    resources = Resources(num_cpus=1, batch_size=256)
    cards = {"distribution__emb": "embedding the clusters are made of: MiniLM caption sentence embedding (384-d) or CLIP image embedding; L2-normalised"}

    def required_models(self) -> tuple[str, ...]:
        return ("minilm",) if self.params.embedding == "text" else (self.params.clip_model,)

    @property
    def reads(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("id", "caption") if self.params.embedding == "text" else ("id", "clip__embedding")

    def check_upstream(self, writers: dict) -> list[str]:
        clip = writers.get("clip__embedding")
        model = getattr(getattr(clip, "params", None), "model", None)
        if self.params.embedding == "clip_image" and model is not None and model != self.params.clip_model:
            return [f"distribution.clip_model={self.params.clip_model} but clip__embedding comes from clip.model={model}; "
                    f"set --set distribution.clip_model={model}"]
        return []

    def setup(self) -> None:
        from flywheel.models import store

        if self.params.embedding == "text":
            from flywheel.models.sentence import SentenceEncoder

            self.embed = SentenceEncoder(store.path("minilm"), self.params.batch_size)

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        if self.params.embedding == "text" and not hasattr(self, "embed"):
            self.setup()
        n = batch.num_rows
        out: list[list[float] | None] = [None] * n
        if self.params.embedding == "text":
            caps = batch.column("caption").to_pylist() if "caption" in batch.column_names else [None] * n
            idx = [i for i in range(n) if caps[i] and str(caps[i]).strip() and (not work or work[i] is not None)]
            for i, e in zip(idx, self.embed([str(caps[i]) for i in idx])):
                out[i] = e.tolist()
        else:
            out = batch.column("clip__embedding").to_pylist()
        return {"distribution__emb": out}

    def assign(self, table: pa.Table) -> list[int | None]:
        """The cluster of each row (None where it has no embedding)."""
        embs = table.column("distribution__emb").to_pylist()
        idx = [i for i, e in enumerate(embs) if e is not None]
        out: list[int | None] = [None] * len(embs)
        if idx:
            for i, c in zip(idx, kmeans(np.array([embs[i] for i in idx], dtype=np.float32), self.params.clusters, self.params.seed)):
                out[i] = int(c)
        return out

    def decide(self, table: pa.Table, prior=None) -> dict[str, list]:
        """Barrier step over the whole run's score table (`id`, `distribution__emb`, ...):
        returns the `decided` columns aligned with `table`. No prior datasets: the cap is a
        share of this run."""
        params: DistributionParams = self.params
        clusters = self.assign(table)
        n = sum(c is not None for c in clusters)
        cap = max(1, math.ceil(params.cap_fraction * n))
        ids = table.column("id").to_pylist() if "id" in table.column_names else [str(i) for i in range(table.num_rows)]
        members: dict[int, list[int]] = {}
        for i, c in enumerate(clusters):
            if c is not None:
                members.setdefault(c, []).append(i)
        over = [None if c is None else False for c in clusters]
        size: list[int | None] = [None if c is None else len(members[c]) for c in clusters]
        for c, rows in members.items():
            if len(rows) > cap:
                order = sorted(rows, key=lambda i: hashlib.sha256(f"{params.seed}:{ids[i]}:{i}".encode()).hexdigest())
                for i in order[cap:]:
                    over[i] = True
        return {"distribution__cluster": clusters, "distribution__cluster_size": size,
                "distribution__cap": [None if c is None else cap for c in clusters], "distribution__over_cap": over}
