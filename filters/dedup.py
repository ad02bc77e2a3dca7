"""dedup: exact copies (same sample id) and near copies (crops up to 10% per side, re-encodes,
resizes, brightness and contrast changes, format changes, screenshots of one page), within the
run and against datasets already in the catalog. Report section 2.3, stage 1, "Deduplication
Filter".

Scoring is per batch and stores compact features (`flywheel.filters.dedup_match`): hashes of the
whole frame and of its centred 90% and 80% views (`dedup__views`, `dedup__phash` is the first),
16x16 contrast-normalised thumbnails of the same views (`dedup__thumb`) and up to 48 ORB keypoints as bytes
(`dedup__orb`, ~1.7 kB). The decision is a `Barrier` over those stored columns (`decide`); it
never reads an image again:

1. candidates: row pairs whose view hashes are within `radius` bits (one pigeonhole index over
   every view of every row, `dedup_index.view_candidates`);
2. confirmation of each candidate (`dedup_match.confirm`): aligned thumbnails under the view
   hypothesis, or ORB matches with a RANSAC similarity and aligned thumbnails;
3. families: confirmed pairs merge transitively; one survivor per family (samples already in the
   catalog first, then the most pixels, then `source` order, then `id`); every other member
   records the survivor (`dedup__of_source`), the member it matched on its way there
   (`dedup__via_source`) and the evidence (`dedup__match`), so each drop is explainable.

Thresholds were set on the tuning split of the real decision set (docs/decision-set.md), where
distinct pages of one document layout and one dialog with another tab are the hard negatives:
true copies at the same scale matched by ORB had inlier descriptors <= 9 of 256 bits apart,
consecutive pages 16-21; matching-view thumbnails of copies 0.02-0.06 std, pages from 0.08.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from flywheel.datasets import storage
from flywheel.filters.base import Barrier, Params, ParquetRows, Rule, Work, register
from flywheel.filters.dedup_match import VIEWS

THUMB = 16


def thumb16(gray: np.ndarray) -> bytes:
    """16x16 area-averaged thumbnail, contrast-normalised: (t - mean) / std * 32 + 128.

    Normalising makes brightness and contrast edits of one photo agree. Nearly flat thumbnails
    (std < 3) are kept raw, so two different solid colours are not "copies" of each other and stay
    for the entropy filter."""
    import cv2

    t = cv2.resize(np.ascontiguousarray(gray, dtype=np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    t = t.astype(np.float64)
    sd = t.std()
    if sd >= 3.0:
        t = (t - t.mean()) / sd * 32.0 + 128.0
    return np.clip(np.round(t), 0, 255).astype(np.uint8).tobytes()


def view_thumbs(gray: np.ndarray, small: np.ndarray | None = None) -> bytes:
    """`thumb16` of each centred view in `dedup_match.VIEWS` (whole frame first), concatenated:
    a crop is compared with the matching view of its original at the same framing, with no
    resampling between two thumbnails. Cut from the reduced copy (`dedup_match.reduced`)."""
    from flywheel.filters.dedup_match import centred, reduced

    small = reduced(gray) if small is None else small
    return b"".join(thumb16(centred(small, f)) for f in VIEWS)


class DedupParams(Params):
    radius: int = Field(6, ge=0, le=12, description="max Hamming distance between two view hashes for a candidate pair")
    max_view_diff: float = Field(0.07, ge=0, description="max mean |difference|, in std, of the thumbnails aligned "
                                 "by the matching views (same frame, or a centred crop of it)")
    min_inliers: int = Field(6, ge=3, description="ORB confirmation: min RANSAC inliers of the similarity transform")
    min_inlier_ratio: float = Field(0.4, ge=0, le=1, description="ORB confirmation: min inliers / keypoints that "
                                    "land inside the other frame (the fewer of the two)")
    max_orb_diff: float = Field(0.12, ge=0, description="ORB confirmation at the same scale: max aligned thumbnail "
                                "difference in std")
    max_orb_diff_scaled: float = Field(0.25, ge=0, description="ORB confirmation across scales (crops): max aligned "
                                       "thumbnail difference in std (16x16 resampling blurs)")
    max_orb_desc: float = Field(12.0, ge=0, le=256, description="ORB confirmation at the same scale: max mean Hamming "
                                "distance between the inliers' descriptors (of 256 bits)")
    orb_gate: float = Field(0.7, ge=0, description="candidates whose matching-view thumbnails are further apart (std) "
                            "skip the ORB test: unrelated images are ~1.1 apart, ORB-confirmed copies on the tuning "
                            "split were all below 0.5")
    against_catalog: bool = Field(True, description="also dedup against accepted datasets already in the catalog")


@register
class Dedup(Barrier):
    name = "dedup"
    Params = DedupParams
    reads = ("task",)
    writes = ("dedup__phash", "dedup__views", "dedup__thumb", "dedup__orb", "dedup__quality")
    deferred = ("dedup__thumb", "dedup__orb")
    decided = ("dedup__kind", "dedup__dist", "dedup__of_id", "dedup__of_source", "dedup__via_source", "dedup__match")
    types = {
        "dedup__phash": pa.int64(), "dedup__views": pa.list_(pa.int64()), "dedup__thumb": pa.binary(),
        "dedup__orb": pa.binary(), "dedup__quality": pa.float32(), "dedup__kind": pa.string(), "dedup__dist": pa.int16(), "dedup__of_id": pa.string(),
        "dedup__of_source": pa.string(), "dedup__via_source": pa.string(), "dedup__match": pa.string(),
    }
    prior_columns = ("id", "source", "width", "height", "dedup__views", "dedup__quality", "dedup__thumb", "dedup__orb")
    dataset_fields = ("dedup_of",)
    rules = (
        Rule("exact", "dedup__kind", "==", value="exact", context=("dedup__of_source",),
             detail="same bytes as kept {dedup__of_source}"),
        Rule("near", "dedup__kind", "==", value="near", context=("dedup__of_source", "dedup__via_source", "dedup__match"),
             detail="near copy of kept {dedup__of_source}: matched {dedup__via_source} by {dedup__match}"),
    )
    cards = {
        "dedup__phash": "64-bit DCT perceptual hash of the whole frame (32x32 area resize, 8x8 DCT vs median) as int64",
        "dedup__views": "the same hash of the whole frame and of its centred 90% and 80% views (candidate generation)",
        "dedup__thumb": "16x16 contrast-normalised grayscale thumbnails of the whole frame and its centred 90% and 80% "
                        "views (768 bytes; the confirmation compares matching views)",
        "dedup__orb": "up to 48 ORB keypoints: uint16 x, y in 1/65535 of the longer side, then 32-byte descriptors",
        "dedup__quality": "encoder quality 1-100 (JPEG from its tables, lossless 100, unknown null): picks the survivor "
                          "among copies of one size",
        "dedup__dist": "Hamming distance between the matching view hashes of the pair that joined the row to its family",
    }

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        from flywheel.filters.compression_quality import LOSSLESS, jpeg_quality
        from flywheel.filters.dedup_match import orb_features, reduced, view_hashes

        ph, vs, th, orb, q = [], [], [], [], []
        tasks = batch.column("task").to_pylist() if "task" in batch.column_names else [None] * len(work)
        for w, task in zip(work, tasks):
            if w is None or task == "ti2i":  # edit pairs are deduplicated on their pair id alone
                ph.append(None), vs.append(None), th.append(None), orb.append(None), q.append(None)
            else:
                small = reduced(w.gray)
                v = view_hashes(w.gray, small)
                ph.append(v[0]), vs.append(v), th.append(view_thumbs(w.gray, small)), orb.append(orb_features(w.rgb))
                quant, fmt = w.info.get("quantization"), w.info.get("format")
                q.append(jpeg_quality(quant[min(quant)]) if quant and fmt in ("JPEG", "MPO")
                         else 100.0 if fmt in LOSSLESS else None)
        return {"dedup__phash": ph, "dedup__views": vs, "dedup__thumb": th, "dedup__orb": orb, "dedup__quality": q}

    def uses_prior(self) -> bool:
        return self.params.against_catalog

    def dataset_columns(self, table: pa.Table) -> dict[str, pa.Array]:
        from flywheel.datasets import DECISION_FIELDS

        if "dedup__of_id" not in table.column_names:
            return {}
        typ = next(f.type for f in DECISION_FIELDS if f.name == "dedup_of")
        of_id, of_src = table.column("dedup__of_id").to_pylist(), table.column("dedup__of_source").to_pylist()
        return {"dedup_of": pa.array([{"id": a, "source": b} if a else None for a, b in zip(of_id, of_src)], typ)}

    def decide(self, table: pa.Table, prior: Sequence[str] | None = None, rows: ParquetRows | None = None
               ) -> dict[str, list]:
        """Barrier step. `table`: this run's rows (id, source, width, height, dedup__views and, when
        `rows` is None, dedup__thumb and dedup__orb); `rows`: the deferred feature columns by row
        number; `prior`: folders of accepted catalog datasets, whose rows are kept members ahead of
        this run's. Returns the `decided` columns aligned with `table`; `last_stats` holds the
        candidate and confirmed pair counts."""
        import time

        from flywheel.filters.dedup_index import family_tree, view_candidates
        from flywheel.filters.dedup_match import Thresholds, confirm, view_diffs

        p: DedupParams = self.params
        t0, c0 = time.perf_counter(), time.process_time()
        n = table.num_rows
        out: dict[str, list] = {c: [None] * n for c in self.decided}
        self._exact_pairs(table, out)
        here = _Rows.of(table, rows)
        there = self._read_prior(prior or []) if p.against_catalog else None
        valid = here.valid.tolist()
        pv = there.valid.tolist() if there else []
        self.last_stats = {"candidate_pairs": 0, "confirmed_pairs": 0}
        if not valid:
            return out
        k = len(pv)
        srcs = [(there, i) for i in pv] + [(here, i) for i in valid]  # combined row c -> (rows, row number)
        ids, sources, views, wh, qual = [], [], [], [], []
        for r, idx in ((there, pv), (here, valid)):
            if not idx:
                continue
            sub = r.table.select(["id", "source", "width", "height", "dedup__quality"]).take(pa.array(idx, pa.int64()))
            qual.append(np.nan_to_num(sub.column("dedup__quality").to_numpy(zero_copy_only=False).astype(np.float64),
                                      nan=50.0))  # unknown (lossy WebP, HEIC...): below a good JPEG
            ids += sub.column("id").chunks
            sources += sub.column("source").chunks
            views.append(r.views)
            wh.append(np.stack([np.nan_to_num(sub.column(c).to_numpy(zero_copy_only=False).astype(np.float64))
                                for c in ("width", "height")], 1).astype(np.int64))
        ids, sources = _Strings(ids), _Strings(sources)
        views = np.concatenate(views)
        wh = np.concatenate(wh)
        qual = np.concatenate(qual)
        ci, cj, vi, vj, dist = view_candidates(views, p.radius)
        # same bytes (same id) always joins a family, without a candidate
        # each later row with an earlier row's id pairs with its first occurrence; found with
        # Arrow's dictionary encoding and numpy (a Python dict over 1M ids cost ~0.7 s of CPU)
        codes = ids.arr.dictionary_encode().indices.to_numpy(zero_copy_only=False)
        first = np.full(int(codes.max()) + 1 if len(codes) else 0, len(codes), np.int64)
        np.minimum.at(first, codes, np.arange(len(codes)))
        later = np.flatnonzero(first[codes] != np.arange(len(codes)))
        ei, ej = first[codes[later]].tolist(), later.tolist()
        how = [("exact", 0)] * len(ei)
        t1, c1 = time.perf_counter(), time.process_time()
        need = np.unique(np.concatenate([ci, cj])) if len(ci) else np.zeros(0, np.int64)
        size = len(VIEWS) * THUMB * THUMB  # a row without thumbnails compares as flat (never a copy)
        thumbs = {c: np.frombuffer(v, np.uint8) if v is not None and len(v) == size else np.zeros(size, np.uint8)
                  for c, (v,) in self._stored(srcs, need, ["dedup__thumb"]).items()}
        th = Thresholds(min_inliers=p.min_inliers, min_ratio=p.min_inlier_ratio, max_diff_same_scale=p.max_orb_diff,
                        max_diff_scaled=p.max_orb_diff_scaled, max_view_diff=p.max_view_diff,
                        max_desc_same_scale=p.max_orb_desc)
        confirmed = 0
        # the view test for every candidate at once (in chunks); ORB only where it fails but the
        # thumbnails are still alike (`orb_gate`: unrelated images are ~1.1 std apart)
        # Memory: the view test needs only the thumbnails (768 B a row); the ORB features (~1.7 KB) are
        # read afterwards for the rows of the pairs that go on to ORB, usually a few.
        vd = np.zeros(len(ci))
        for s0 in range(0, len(ci), 8192):  # 8k pairs: two 8 MB stacks, not a peak that grows with the run
            sl = slice(s0, s0 + 8192)
            vd[sl] = view_diffs(_view_stack(thumbs, ci[sl], vi[sl]), _view_stack(thumbs, cj[sl], vj[sl]))
        del thumbs
        go = [(a, b, va, vb, d, x) for a, b, va, vb, d, x in zip(ci.tolist(), cj.tolist(), vi.tolist(), vj.tolist(), dist.tolist(),
                                                                vd.tolist()) if not (x > p.max_view_diff and x > p.orb_gate)]
        feats = self._features(srcs, np.unique(np.array([c for g in go for c in g[:2]], np.int64)), wh)
        for a, b, va, vb, d, x in go:
            if ids[a] == ids[b]:
                continue
            m = confirm(feats[a], feats[b], va, vb, th, view_diff=x)
            if m.ok:
                confirmed += 1
                ei.append(a), ej.append(b), how.append((m.text() + f", view hashes {d} bits apart", d))
        t2, c2 = time.perf_counter(), time.process_time()
        rank = _decision_rank(ids, sources, wh, qual, k, np.array(ei + ej, np.int64))
        keep_all = np.arange(len(srcs)) < k
        survivor, via, edge = family_tree(len(srcs), np.array(ei, np.int64), np.array(ej, np.int64), rank, keep_all)
        for c in range(k, len(srcs)):
            i = srcs[c][1]
            s = int(survivor[c])
            if s < 0:
                out["dedup__dist"][i] = 0
                continue
            text, d = how[int(edge[c])]
            exact = ids[s] == ids[c]
            out["dedup__kind"][i] = "exact" if exact else "near"
            out["dedup__dist"][i] = 0 if exact else d
            out["dedup__of_id"][i], out["dedup__of_source"][i] = ids[s], sources[s]
            if not exact:
                out["dedup__via_source"][i], out["dedup__match"][i] = sources[int(via[c])], text
        self.last_stats = {"candidate_pairs": int(len(ci)), "confirmed_pairs": confirmed,
                           "families": int(len(set(survivor[survivor >= 0].tolist()))),
                           "dropped": int((survivor[k:] >= 0).sum()), "index_s": round(t1 - t0, 3),
                           "confirm_s": round(t2 - t1, 3), "families_s": round(time.perf_counter() - t2, 3),
                           # CPU seconds of this process per phase: on a shared machine wall time
                           # measures the load, these measure the step
                           "index_cpu_s": round(c1 - c0, 3), "confirm_cpu_s": round(c2 - c1, 3),
                           "families_cpu_s": round(time.process_time() - c2, 3)}
        return out

    def _features(self, srcs: list, need: np.ndarray, wh: np.ndarray) -> dict:
        """Side features of these rows (candidates going on to ORB), read from the stored columns."""
        from flywheel.filters.dedup_match import Side

        return {c: Side.of(int(wh[c, 0]), int(wh[c, 1]), a, b)
                for c, (a, b) in self._stored(srcs, need, ["dedup__thumb", "dedup__orb"]).items()}

    @staticmethod
    def _stored(srcs: list, need: np.ndarray, columns: list[str]) -> dict[int, tuple]:
        """Combined row -> the stored binary values of `columns` (uint8 views of the columns' buffers:
        as Python bytes they were another copy of every candidate row), read from each row set."""
        got: dict[int, tuple] = {}
        groups: dict[int, tuple[Any, list[int]]] = {}
        for c in need.tolist():
            r, i = srcs[c]
            groups.setdefault(id(r), (r, []))[1].append(c)
        for r, cs in groups.values():
            cs.sort(key=lambda c: srcs[c][1])  # in file order: the reader returns them without a reordering copy
            t = r.features(np.array([srcs[c][1] for c in cs], np.int64), columns)
            for c, vals in zip(cs, zip(*(_binary_views(t.column(col)) for col in columns))):
                got[c] = vals
        return got

    def _read_prior(self, paths: Sequence[str]) -> "_Rows | None":
        import pyarrow.parquet as pq

        from flywheel.datasets.reader import read_columns

        files = []
        for d in paths:
            fs = [_local_copy(d, self.prior_columns)] if storage.is_remote(d) else sorted(str(f) for f in Path(d).glob("data/*.parquet"))
            fs = [f for f in fs if f]
            if fs and set(self.prior_columns) <= set(pq.read_schema(fs[0]).names):
                files += fs
        if not files:
            return None
        eager = [c for c in self.prior_columns if c not in self.deferred]
        return _Rows.of(read_columns(files, eager), ParquetRows(files, list(self.deferred)))

    @staticmethod
    def _exact_pairs(table: pa.Table, out: dict[str, list]) -> None:
        """Edit pairs: the same pair id twice keeps the first by `source` order."""
        if "task" not in table.column_names:
            return
        kept: dict[str, str] = {}
        # only the edit-pair rows go through Python (a loop over every row cost ~1 s of CPU at 1M)
        sel = np.flatnonzero(np.asarray(pc.equal(table.column("task"), "ti2i").fill_null(False)))
        if not len(sel):
            return
        sub = table.select(["id", "source"]).take(pa.array(sel, pa.int64()))
        rows = list(zip(sub.column("source").to_pylist(), sel.tolist(), sub.column("id").to_pylist()))
        for src, i, pid in sorted(rows):
            if pid in kept:
                out["dedup__kind"][i], out["dedup__dist"][i] = "exact", 0
                out["dedup__of_id"][i], out["dedup__of_source"][i] = pid, kept[pid]
            else:
                kept[pid] = src
                out["dedup__dist"][i] = 0


class _Rows:
    """One set of rows (this run, or the catalog's): the eager columns, the view hashes as lists,
    and where the deferred features come from."""

    def __init__(self, table: pa.Table, rows: ParquetRows | None):
        self.table, self.rows = table, rows
        # rows with their view hashes, and those hashes (valid rows in order), without Python lists
        self.valid, self.views = np.zeros(0, np.int64), np.zeros((0, len(VIEWS)), np.int64)
        if "dedup__views" in table.column_names and table.num_rows:
            col = table.column("dedup__views").combine_chunks()
            ok = np.asarray(pc.and_kleene(col.is_valid(), pc.equal(pc.list_value_length(col), len(VIEWS))).fill_null(False))
            self.valid = np.flatnonzero(ok)
            self.views = np.asarray(col.filter(pa.array(ok)).flatten()).astype(np.int64).reshape(-1, len(VIEWS))
            # Decisions must not depend on row order (the parts' order, workers, retries): the
            # candidate search and the family walk see the rows sorted by content hash, then source.
            # (Two runs over the same 4,000 images differed in 56 rows before.)
            if len(self.valid) and {"id", "source"} <= set(table.column_names):
                sub = table.select(["id", "source"]).take(pa.array(self.valid))
                order = pc.sort_indices(sub, sort_keys=[("id", "ascending"), ("source", "ascending")]).to_numpy()
                self.valid, self.views = self.valid[order], self.views[order]

    @classmethod
    def of(cls, table: pa.Table, rows: ParquetRows | None) -> "_Rows":
        return cls(table, rows)

    def features(self, idx: np.ndarray, columns: list[str]) -> pa.Table:
        if self.rows is not None:
            return self.rows.take(idx, columns)
        return self.table.select(columns).take(pa.array(idx, pa.int64()))


class _Strings:
    """A string column read by position, without a Python list of every row (the ids and sources of
    200k rows as lists were ~100 MB of the barrier's peak; it reads only candidates and families)."""

    def __init__(self, chunks: list):
        chunks = [c if c.type == pa.string() else c.cast(pa.string()) for c in chunks]
        self.arr = pa.chunked_array(chunks, pa.string()).combine_chunks() if chunks else pa.array([], pa.string())

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i: int):
        return self.arr[i].as_py()


def _view_stack(thumbs: dict, rows: np.ndarray, views: np.ndarray) -> np.ndarray:
    """(k, 256) float32: the thumbnail of view `views[j]` of row `rows[j]`."""
    k = THUMB * THUMB
    return np.stack([thumbs[c][v * k:(v + 1) * k] for c, v in zip(rows.tolist(), views.tolist())]).astype(np.float32) \
        if len(rows) else np.zeros((0, k), np.float32)


def _binary_views(col: pa.ChunkedArray) -> list:
    """Each value of a binary column as a uint8 numpy view of the column's own buffer (None when null)."""
    arr = col.combine_chunks()
    if len(arr) == 0:
        return []
    big = pa.types.is_large_binary(arr.type)
    _, off_buf, data_buf = arr.buffers()
    offs = np.frombuffer(off_buf, np.int64 if big else np.int32)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    valid = np.asarray(arr.is_valid())
    return [data[offs[i]:offs[i + 1]] if valid[i] else None for i in range(len(arr))]


def _decision_rank(ids: Sequence[str], sources: Sequence[str], wh: np.ndarray, quality: np.ndarray, prior_count: int,
                   nodes: np.ndarray) -> np.ndarray:
    """Survivor order of the rows in some family (`nodes`): catalog rows first, then the most
    pixels (the least reduced copy), then the highest encoder quality (the least compressed), then
    `source`, then `id` (string orders), so a decision never depends on row order or workers. Rows
    outside every family keep rank 0 (never consulted)."""
    nodes = np.unique(nodes)
    order = sorted(nodes.tolist(), key=lambda c: (c >= prior_count, -int(wh[c, 0]) * int(wh[c, 1]), -quality[c],
                                                  sources[c], ids[c]))
    rank = np.zeros(len(ids), np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _local_copy(url: str, columns) -> str | None:
    """The columns dedup needs of a catalog dataset on an object store, as one local Parquet file
    in the cache (datasets are immutable, so the copy is keyed by URL and manifest and never goes
    stale); the random access of `ParquetRows` then reads a local file, not ranges over the network."""
    import hashlib
    import os
    import uuid

    import pyarrow.parquet as pq

    from flywheel import config
    from flywheel.datasets import Dataset

    ds = Dataset(url)
    have = [c for c in columns if c in ds.schema().names] if ds.files() else []
    if not have or len(have) < len(list(columns)):
        return None
    key = hashlib.sha256(f"{url}|{ds.manifest.created_at}|{ds.manifest.run_id}|{sorted(have)}".encode()).hexdigest()[:24]
    dest = config.cache_dir("prior-datasets") / f"{key}.parquet"
    if not dest.exists():
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(ds.to_table(columns=have), tmp)
        os.replace(tmp, dest)
    return str(dest)
