"""dedup: exact copies (same sample id) and near copies (perceptual hash within a Hamming radius,
confirmed by a 16x16 thumbnail pixel distance), within the run and against datasets already in
the catalog. Report section 2.3, stage 1, "Deduplication Filter".

Scoring is per batch (`dedup__phash`, `dedup__thumb`); the decision is a `Barrier` over the whole
run and the accepted datasets of the catalog (`decide`), so results never depend on batch order or worker count. The kept member of a
family is chosen deterministically: samples already in the catalog first, then the largest short
side, then `source` order. Families are pairs confirmed against their kept member, never chains.
The confirmation matters: distinct document pages in one layout often have phashes within 6 bits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Barrier, Params, Rule, Work, register

THUMB = 16


def phash64(gray: np.ndarray) -> int:
    """imagehash's pHash (32x32 DCT, top-left 8x8 vs median) as a signed 64-bit integer."""
    import imagehash
    from PIL import Image

    h = imagehash.phash(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L"))
    bits = np.packbits(h.hash.astype(np.uint8).ravel())
    return int(np.frombuffer(bits.tobytes(), dtype=">u8")[0].astype(np.int64))


def thumb16(gray: np.ndarray) -> bytes:
    """16x16 box-averaged thumbnail, contrast-normalised: (t - mean) / std * 32 + 128.

    Normalising makes brightness and contrast edits of one photo agree (mean |difference| under
    1.6, i.e. 0.05 std, measured on re-encodes at quality 10, resizes, +15% brightness, +20%
    contrast) while distinct text pages that share one layout, whose phashes are within 6 bits,
    stay apart (5 to 7, i.e. 0.16-0.22 std). Nearly flat thumbnails (std < 3) are kept raw, so two
    different solid colours are not "copies" of each other and stay for the entropy filter."""
    from PIL import Image

    t = np.asarray(Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L").resize((THUMB, THUMB), Image.BOX),
                   dtype=np.float64)
    sd = t.std()
    if sd >= 3.0:
        t = (t - t.mean()) / sd * 32.0 + 128.0
    return np.clip(np.round(t), 0, 255).astype(np.uint8).tobytes()


class DedupParams(Params):
    radius: int = Field(6, ge=0, le=12, description="max Hamming distance between 64-bit phashes")
    max_thumb_dist: float = Field(3.2, ge=0, description="max mean |difference| of the contrast-normalised 16x16 "
                                  "thumbnails, in 1/32 std (3.2 = 0.1 std); confirms a phash match")
    against_catalog: bool = Field(True, description="also dedup against accepted datasets already in the catalog")


@register
class Dedup(Barrier):
    name = "dedup"
    Params = DedupParams
    reads = ("task",)
    writes = ("dedup__phash", "dedup__thumb")
    decided = ("dedup__kind", "dedup__dist", "dedup__of_id", "dedup__of_source")
    types = {
        "dedup__phash": pa.int64(), "dedup__thumb": pa.binary(), "dedup__kind": pa.string(),
        "dedup__dist": pa.int16(), "dedup__of_id": pa.string(), "dedup__of_source": pa.string(),
    }
    prior_columns = ("id", "source", "width", "height", "dedup__phash", "dedup__thumb")
    dataset_fields = ("dedup_of",)
    rules = (
        Rule("exact", "dedup__kind", "==", value="exact", context=("dedup__of_source",),
             detail="same bytes as kept {dedup__of_source}"),
        Rule("near", "dedup__kind", "==", value="near", context=("dedup__dist", "dedup__of_source"),
             detail="phash distance {dedup__dist} <= radius={radius} to kept {dedup__of_source}, thumbnail confirmed"),
    )
    cards = {
        "dedup__phash": "64-bit DCT perceptual hash (imagehash.phash) as int64",
        "dedup__thumb": "16x16 contrast-normalised grayscale thumbnail bytes, the near-copy confirmation",
        "dedup__dist": "Hamming distance to the kept member of the family (0 for exact copies)",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        ph, th = [], []
        tasks = batch.column("task").to_pylist() if "task" in batch.column_names else [None] * len(work)
        for w, task in zip(work, tasks):
            if w is None or task == "ti2i":  # edit pairs are deduplicated on their pair id alone
                ph.append(None), th.append(None)
            else:
                ph.append(phash64(w.gray)), th.append(thumb16(w.gray))
        return {"dedup__phash": ph, "dedup__thumb": th}

    def uses_prior(self) -> bool:
        return self.params.against_catalog

    def dataset_columns(self, table: pa.Table) -> dict[str, pa.Array]:
        from flywheel.datasets import DECISION_FIELDS

        if "dedup__of_id" not in table.column_names:
            return {}
        typ = next(f.type for f in DECISION_FIELDS if f.name == "dedup_of")
        of_id, of_src = table.column("dedup__of_id").to_pylist(), table.column("dedup__of_source").to_pylist()
        return {"dedup_of": pa.array([{"id": a, "source": b} if a else None for a, b in zip(of_id, of_src)], typ)}

    def decide(self, table: pa.Table, prior: Sequence[str] | None = None) -> dict[str, list]:
        """Barrier step. `table`: this run's rows (id, source, width, height, dedup__phash,
        dedup__thumb); `prior`: folders of accepted catalog datasets, whose rows with these
        columns are kept members ahead of this run's. Returns the `decided` columns aligned with
        `table`."""
        from flywheel.filters.dedup_index import decide_families

        p: DedupParams = self.params
        prior = self._read_prior(prior or [])
        n = table.num_rows
        out = {c: [None] * n for c in self.decided}
        self._exact_pairs(table, out)
        ph = table.column("dedup__phash").to_pylist()
        valid = [i for i, v in enumerate(ph) if v is not None]
        prior_rows = []
        if prior is not None and p.against_catalog and prior.num_rows:
            pph = prior.column("dedup__phash").to_pylist()
            prior_rows = [i for i, v in enumerate(pph) if v is not None]
        if not valid:
            return out

        def cols(t: pa.Table, idx: list[int]):
            sub = t.take(pa.array(idx, pa.int64()))
            ids = sub.column("id").to_pylist()
            srcs = sub.column("source").to_pylist()
            phs = np.array(sub.column("dedup__phash").to_pylist(), dtype=np.int64).view(np.uint64)
            th = sub.column("dedup__thumb").to_pylist()
            thumbs = np.frombuffer(b"".join(x if x and len(x) == THUMB * THUMB else bytes(THUMB * THUMB) for x in th),
                                   dtype=np.uint8).reshape(-1, THUMB * THUMB)
            w = np.array([x or 0 for x in sub.column("width").to_pylist()])
            h = np.array([x or 0 for x in sub.column("height").to_pylist()])
            return ids, srcs, phs, thumbs, np.minimum(w, h)

        parts = [cols(prior, prior_rows)] if prior_rows else []
        parts.append(cols(table, valid))
        ids = sum((list(x[0]) for x in parts), [])
        srcs = sum((list(x[1]) for x in parts), [])
        phs = np.concatenate([x[2] for x in parts])
        thumbs = np.concatenate([x[3] for x in parts])
        short = np.concatenate([x[4] for x in parts])
        k = len(prior_rows)
        dup_of, kind, dist = decide_families(ids, srcs, phs, thumbs, short, radius=p.radius,
                                             max_thumb_dist=p.max_thumb_dist, prior_count=k)
        names = {0: None, 1: "exact", 2: "near"}
        for j, i in enumerate(valid):
            jj = j + k
            if dup_of[jj] >= 0:
                out["dedup__kind"][i] = names[int(kind[jj])]
                out["dedup__dist"][i] = int(dist[jj])
                out["dedup__of_id"][i] = ids[dup_of[jj]]
                out["dedup__of_source"][i] = srcs[dup_of[jj]]
            else:
                out["dedup__dist"][i] = 0
        return out

    def _read_prior(self, paths: Sequence[str]) -> pa.Table | None:
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        tables = []
        for d in paths:
            files = sorted(str(f) for f in Path(d).glob("data/*.parquet"))
            if files and set(self.prior_columns) <= set(pq.read_schema(files[0]).names):
                tables.append(pads.dataset(files).to_table(columns=list(self.prior_columns)))
        return pa.concat_tables(tables) if tables else None

    @staticmethod
    def _exact_pairs(table: pa.Table, out: dict[str, list]) -> None:
        """Edit pairs: the same pair id twice keeps the first by `source` order."""
        if "task" not in table.column_names:
            return
        kept: dict[str, str] = {}
        rows = [(s, i, d) for i, (t, d, s) in enumerate(zip(table.column("task").to_pylist(), table.column("id").to_pylist(),
                                                             table.column("source").to_pylist())) if t == "ti2i"]
        for src, i, pid in sorted(rows):
            if pid in kept:
                out["dedup__kind"][i], out["dedup__dist"][i] = "exact", 0
                out["dedup__of_id"][i], out["dedup__of_source"][i] = pid, kept[pid]
            else:
                kept[pid] = src
                out["dedup__dist"][i] = 0
