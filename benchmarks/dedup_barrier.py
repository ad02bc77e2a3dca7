"""Benchmark of the whole `dedup` barrier step at scale: N stored rows with planted families.

Writes N rows of stored dedup features as Parquet parts (what scoring leaves in state/parts),
then times what `pipeline.barrier` does for dedup: read the eager columns, then `Dedup.decide`
with the deferred features (thumbnails, ORB keypoints) read by row number only for candidates.
Printed: wall and CPU time, the peak RSS of the step, candidate and confirmed pair counts, and
how many planted families were found whole with one survivor.

Rows (features are synthetic but shaped like the real ones):
- background: 64-bit view hashes with the biased low-frequency bits of real phashes, random
  smooth-field thumbnails, 48 random ORB keypoints each;
- planted families (`--family-frac` of the rows, 4 members): an original and a copy cropped 10%
  per side, a re-encode and a brightness-like change. Members' view hashes are the original's
  matching view with a few bits flipped; thumbnails of the three centred views are box-averaged
  from one 64x64 field (the crop's from its centre 80%); keypoints are the original's moved by the crop's similarity,
  with descriptor bits flipped. Half the families get thumbnail noise above the view test, so
  their pairs are confirmed by the ORB path.

    .venv/bin/python benchmarks/dedup_barrier.py --n 1000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import PeakRSS, biased, flips, make_hashes  # noqa: E402

from flywheel.filters.base import ParquetRows  # noqa: E402
from flywheel.filters.dedup import Dedup  # noqa: E402

K = 48


def _interp(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear upsampling matrix."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, n_in - 1)
    x1 = np.clip(x0 + 1, 0, n_in - 1)
    f = np.clip(x - x0, 0, 1)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), x0] += 1 - f
    m[np.arange(n_out), x1] += f
    return m


def _box(frac: float) -> np.ndarray:
    """(16, 64) matrix averaging the centred `frac` of 64 samples into 16 boxes."""
    lo = 32 - 32 * frac
    edges = lo + np.arange(17) * (64 * frac / 16)
    m = np.zeros((16, 64), np.float32)
    for a in range(16):
        for x in range(64):
            m[a, x] = max(0.0, min(edges[a + 1], x + 1) - max(edges[a], x))
    return m / m.sum(axis=1, keepdims=True)


def orb_blob(pts: np.ndarray, des: np.ndarray) -> bytes:
    q = np.clip(np.round(pts * 65535), 0, 65535).astype("<u2")
    return q.tobytes() + np.ascontiguousarray(des).tobytes()


def normalised(t: np.ndarray) -> np.ndarray:
    t = (t - t.mean(axis=(1, 2), keepdims=True)) / (t.std(axis=(1, 2), keepdims=True) + 1e-6) * 32 + 128
    return np.clip(np.round(t), 0, 255).astype(np.uint8).reshape(len(t), 256)


def fields_of(low: np.ndarray, size: int) -> np.ndarray:
    u = _interp(size, low.shape[1])
    return np.einsum("ij,njk,lk->nil", u, low, u, optimize=True)


def view_thumbs(fields: np.ndarray, frac: float) -> np.ndarray:
    b = _box(frac)
    return normalised(np.einsum("ij,njk,lk->nil", b, fields, b, optimize=True))


def make_parts(folder: Path, n: int, family_frac: float, seed: int, part_rows: int = 100_000,
               clustered: bool = False) -> tuple[list[str], np.ndarray]:
    """Parquet parts of n rows; returns (files, family id per row or -1). `clustered`: background
    whole-frame hashes from benchmarks/dedup.py's clustered set (tight clusters, copies of popular
    values), the 90% and 80% views 8 and 16 bits from it on average."""
    rng = np.random.default_rng(seed)
    if clustered:
        base, _ = make_hashes("clustered", n, 0, 6, seed + 100)
        cviews = np.stack([base, base ^ flips(rng, n, 0.12), base ^ flips(rng, n, 0.25)], 1)
    n_fam = int(n * family_frac) // 4
    fam = np.full(n, -1, np.int64)
    member = np.full(n, -1, np.int64)
    fam_rows = rng.choice(n, size=4 * n_fam, replace=False).reshape(n_fam, 4)
    fam[fam_rows.ravel()] = np.repeat(np.arange(n_fam), 4)
    member[fam_rows.ravel()] = np.tile(np.arange(4), n_fam)
    # families: the original's three views, one smooth 64x64 field, 48 keypoints
    fviews = biased(rng, 3 * n_fam).reshape(n_fam, 3)
    ffield = fields_of(rng.normal(size=(n_fam, 8, 8)).astype(np.float32), 64)
    fpts = rng.random((n_fam, K, 2)).astype(np.float32) * np.array([1.0, 0.75], np.float32)
    fdes = rng.integers(0, 256, (n_fam, K, 32), dtype=np.uint8)
    hard = rng.random(n_fam) < 0.5
    files = []
    for p0 in range(0, n, part_rows):
        rows = np.arange(p0, min(n, p0 + part_rows))
        m = len(rows)
        views = cviews[rows].copy() if clustered else biased(rng, 3 * m).reshape(m, 3)
        thumbs = normalised(fields_of(rng.normal(size=(3 * m, 8, 8)).astype(np.float32), 16)).reshape(m, 768)
        blob = rng.integers(0, 256, (m, K * 36), dtype=np.uint8)
        width, height = np.full(m, 1024), np.full(m, 768)
        blobs = [blob[k].tobytes() for k in range(m)]
        for k in np.flatnonzero(fam[rows] >= 0).tolist():
            f, j = int(fam[rows[k]]), int(member[rows[k]])
            field = ffield[f] + (rng.normal(scale=0.25, size=(64, 64)).astype(np.float32) if hard[f] and j else 0)
            pts = fpts[f] + rng.normal(scale=0.002, size=(K, 2)).astype(np.float32)
            if j == 1:  # crop 10% per side: its whole frame is the original's centred 80%
                views[k] = np.full(3, fviews[f, 2], np.uint64) ^ flips(rng, 3, 0.02)
                thumbs[k] = np.concatenate([view_thumbs(field[None], 0.8 * f)[0] for f in (1.0, 0.9, 0.8)])
                pts = (fpts[f] - np.array([0.1, 0.075], np.float32)) * 1.25
                width[k], height[k] = 819, 614
            else:
                views[k] = fviews[f] ^ flips(rng, 3, 0.02)
                thumbs[k] = np.concatenate([view_thumbs(field[None], f)[0] for f in (1.0, 0.9, 0.8)])
                if j == 2:
                    width[k], height[k] = 512, 384
            des = fdes[f] ^ np.packbits(rng.random((K, 256)) < 0.03, axis=1)
            inside = (pts >= 0).all(axis=1) & (pts[:, 0] <= 1) & (pts[:, 1] <= 0.75)
            blobs[k] = orb_blob(pts[inside], des[inside])
        t = pa.table({
            "source": [f"shard-{r % 977:04d}/img-{r:09d}.jpg" for r in rows.tolist()],
            "id": [f"{r:064x}" for r in rows.tolist()], "task": ["t2i"] * m, "width": width, "height": height,
            "dedup__phash": pa.array(views[:, 0].view(np.int64)),
            "dedup__views": pa.FixedSizeListArray.from_arrays(pa.array(views.view(np.int64).ravel()), 3).cast(
                pa.list_(pa.int64())),
            "dedup__thumb": pa.array([x.tobytes() for x in thumbs], pa.binary()),
            "dedup__orb": pa.array(blobs, pa.binary()),
            "dedup__quality": pa.array(np.full(m, 90.0, np.float32)),
        })
        f = folder / f"part-{p0 // part_rows:05d}.parquet"
        pq.write_table(t, f, row_group_size=20_000)
        files.append(str(f))
    return files, fam


def feature_cost(repeat: int = 20) -> None:
    """CPU ms per image of what `Dedup.score` adds, on scikit-image's photos decoded the way a
    stage-1 run decodes them (JPEG draft + resize to a 256 px short side)."""
    import io

    from PIL import Image
    from skimage import data

    from flywheel.filters.decode import decode
    from flywheel.filters.dedup import view_thumbs
    from flywheel.filters.dedup_match import orb_features, reduced, view_hashes

    grays, rgbs = [], []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "text", "page", "moon", "hubble_deep_field"):
        b = io.BytesIO()
        Image.fromarray(getattr(data, name)()).convert("RGB").save(b, "JPEG", quality=90)
        w = decode(b.getvalue(), "jpg", 256, 10**9).work
        grays.append(w.gray), rgbs.append(w.rgb)
    parts = {"reduced copy + 3 hashes + 3 thumbnails": lambda g: (view_hashes(g, s := reduced(g)), view_thumbs(g, s)),
             "ORB keypoints (48, 192 px)": orb_features}
    total = 0.0
    for label, fn in parts.items():
        inputs = rgbs if fn is orb_features else grays
        for g in inputs:
            fn(g)
        c0 = time.process_time()
        for _ in range(repeat):
            for g in inputs:
                fn(g)
        ms = (time.process_time() - c0) / (repeat * len(grays)) * 1000
        total += ms
        print(f"  {label:30s} {ms:.2f} ms/img (cpu)")
    print(f"  {'dedup features in all':30s} {total:.2f} ms/img (cpu), {len(grays)} images at a 256 px short side")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--family-frac", type=float, default=0.01, help="fraction of rows in planted families of 4")
    ap.add_argument("--clustered", action="store_true", help="background hashes from the clustered set")
    ap.add_argument("--parts", default=None, help="keep the generated parts in this folder and reuse them when present "
                    "(default: a temporary folder, removed)")
    ap.add_argument("--features-only", action="store_true", help="only the per-image scoring cost")
    args = ap.parse_args()
    print(f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f}: scoring cost per image")
    feature_cost()
    if args.features_only:
        return
    print(f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f} n={args.n:,} family rows {args.family_frac:.1%}")
    op = Dedup({"against_catalog": False})
    warm = tempfile.mkdtemp()
    cols = [c for c in dict.fromkeys([*op.decide_reads, *op.writes, *op.reads]) if c not in op.deferred]
    files, _ = make_parts(Path(warm), 2000, 0.05, seed=1)  # compile numba / warm cv2 outside the timing
    op.decide(pads.dataset(files).to_table(columns=cols), rows=ParquetRows(files, list(op.deferred)))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(args.parts or tmp)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cached = d / f"families-{args.n}-{args.family_frac}{'-clustered' if args.clustered else ''}.npy"
        if cached.exists():
            files, fam = sorted(str(f) for f in d.glob("part-*.parquet")), np.load(cached)
        else:
            files, fam = make_parts(d, args.n, args.family_frac, seed=2, clustered=args.clustered)
            np.save(cached, fam)
        size = sum(os.path.getsize(f) for f in files)
        print(f"{len(files)} parts, {size / 2**20:,.0f} MiB, ready in {time.perf_counter() - t0:.0f} s")
        with PeakRSS() as mem:
            w0, c0 = time.perf_counter(), time.process_time()
            table = pads.dataset(files, format="parquet").to_table(columns=cols)  # what pipeline.barrier reads
            read_s, read_c = time.perf_counter() - w0, time.process_time() - c0
            out = op.decide(table, None, rows=ParquetRows(files, list(op.deferred)))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    st = op.last_stats
    kind = np.array([k or "" for k in out["dedup__kind"]])
    of = out["dedup__of_id"]
    ids = table.column("id").to_pylist()
    whole = 0
    n_fam = int(fam.max()) + 1
    by_fam: dict[int, list[int]] = {}
    for r in np.flatnonzero(fam >= 0).tolist():
        by_fam.setdefault(int(fam[r]), []).append(r)
    for rows in by_fam.values():
        kept = [r for r in rows if kind[r] == ""]
        whole += len(kept) == 1 and all(of[r] == ids[kept[0]] for r in rows if r != kept[0])
    false = int(((kind != "") & (fam < 0)).sum())
    print(f"dedup barrier step n={args.n:,}: wall {wall:.1f} s (read {read_s:.1f} s, index {st['index_s']:.1f} s, "
          f"confirm {st['confirm_s']:.1f} s, families {st['families_s']:.1f} s), cpu {cpu:.1f} s (read {read_c:.1f} s, "
          f"index {st['index_cpu_s']:.1f} s, confirm {st['confirm_cpu_s']:.1f} s, families {st['families_cpu_s']:.1f} s), "
          f"peak RSS {mem.peak / 2**30:.2f} GiB (+{(mem.peak - mem.before) / 2**30:.2f} GiB during the step)")
    print(f"  candidate pairs {st['candidate_pairs']:,}, confirmed {st['confirmed_pairs']:,}, families {st['families']:,}, "
          f"dropped {st['dropped']:,}; planted families found whole with one survivor {whole}/{n_fam}; "
          f"background rows dropped {false}")


if __name__ == "__main__":
    main()
