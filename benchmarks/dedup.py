"""Benchmark of the dedup index: `near_pairs` over N 64-bit hashes, and `decide_families`.

Two hash sets per size, each with K planted near pairs at distances 0..radius:
- uniform: independent uniform 64-bit values;
- clustered, like real phashes: biased low-frequency bits (the DC and first AC signs of a DCT
  hash are mostly 1), tight clusters around n/300 centres (re-encodes, crops, bursts), exact
  copies of popular values, and a few near variants of structured values (flat fills, halves,
  stripes). The big buckets this makes are what a pigeonhole index has to survive.

Baselines measured in the same run on the same kind of data: brute force (numba popcount over
all pairs) on a subsample, extrapolated by (N / n_sub)^2; FAISS binary hash indices
(`IndexBinaryMultiHash` 4x16 bits with nflip=1 is complete within 6 bits by pigeonhole;
`IndexBinaryHash` 16 bits with nflip=2 is not) on a smaller set with its own planted pairs.
Wall time is printed with CPU time: on a shared machine CPU time is the steadier figure.
"peak MiB" is the rise of this process's RSS during the call (sampled every 5 ms).

    .venv/bin/python benchmarks/dedup.py --n 1000000 --n-large 10000000
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numba as nb
import numpy as np
import psutil

from flywheel.filters.dedup_index import _popcount, decide_families, near_pairs, view_candidates

STRUCTURED = [0, 2**64 - 1, 0x8000000000000000, 0xFFFFFFFF00000000, 0x00000000FFFFFFFF,
              0xFF00FF00FF00FF00, 0x0F0F0F0F0F0F0F0F, 0x3333333333333333, 0x5555555555555555,
              0xAAAAAAAAAAAAAAAA, 0xFFFF0000FFFF0000, 0x8080808080808080, 0xC000000000000000,
              0xFFFFFFFFFFFF0000, 0x00FF00FF00FF00FF, 0xF0F0F0F0F0F0F0F0]


def flips(rng, n: int, p: float) -> np.ndarray:
    """n random masks, each bit set with probability p (in chunks to bound memory)."""
    out = np.empty(n, dtype=np.uint64)
    for s in range(0, n, 1 << 20):
        k = min(n, s + (1 << 20)) - s
        out[s : s + k] = np.packbits(rng.random((k, 64)) < p, axis=1, bitorder="little").view(np.uint64).ravel()
    return out


def biased(rng, n: int) -> np.ndarray:
    prob = np.where(np.arange(64) < 12, 0.85, 0.5)
    out = np.empty(n, dtype=np.uint64)
    for s in range(0, n, 1 << 20):
        k = min(n, s + (1 << 20)) - s
        out[s : s + k] = np.packbits(rng.random((k, 64)) < prob, axis=1, bitorder="little").view(np.uint64).ravel()
    return out


def make_hashes(kind: str, n: int, planted: int, radius: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, planted pairs (k, 2) i < j)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        h = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    else:
        n_clu, n_doc, n_copy, n_var = int(n * 0.5), int(n * 0.03), int(n * 0.02), int(n * 0.002)
        n_bg = n - n_clu - n_doc - n_copy - n_var
        centres = biased(rng, max(1, n // 20))  # photo families: re-encodes, crops, bursts
        clu = centres[rng.integers(0, len(centres), n_clu)] ^ flips(rng, n_clu, 0.1)
        # document pages of one layout: 40 bits fixed by the template, 24 free
        templates = biased(rng, max(1, 30 * n // 1_000_000))
        free = np.array([sum(1 << int(b) for b in rng.choice(64, 24, replace=False)) for _ in templates],
                        dtype=np.uint64)
        t = rng.integers(0, len(templates), n_doc)
        docs = templates[t] ^ (rng.integers(0, 2**64, n_doc, dtype=np.uint64, endpoint=False) & free[t])
        popular = np.concatenate([np.array(STRUCTURED, dtype=np.uint64), biased(rng, max(1, 200 * n // 1_000_000))])
        copies = popular[rng.integers(0, len(popular), n_copy)]
        variants = np.array(STRUCTURED, dtype=np.uint64)[rng.integers(0, len(STRUCTURED), n_var)] ^ flips(rng, n_var, 0.03)
        h = np.concatenate([clu, docs, copies, variants, biased(rng, n_bg)])
        rng.shuffle(h)
    rows = rng.choice(n, size=2 * planted, replace=False)
    base, partner = rows[:planted], rows[planted:]
    for k in range(planted):
        d = k % (radius + 1)
        mask = 0
        for bit in rng.choice(64, size=d, replace=False):
            mask |= 1 << int(bit)
        h[partner[k]] = h[base[k]] ^ np.uint64(mask)
    pairs = np.sort(np.stack([base, partner], 1), axis=1).astype(np.int64)
    return h, pairs


class PeakRSS:
    """Samples this process's RSS every 5 ms (the numba kernels release the GIL)."""

    def __enter__(self):
        self.proc = psutil.Process(os.getpid())
        self.before = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def timed(fn, *args, **kw):
    with PeakRSS() as mem:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return out, wall, cpu, mem


def recall(found: np.ndarray, planted: np.ndarray, n: int) -> float:
    codes = found[:, 0] * np.int64(n) + found[:, 1]
    return float(np.isin(planted[:, 0] * np.int64(n) + planted[:, 1], codes).mean())


@nb.njit(cache=True, nogil=True)
def brute_force(h, radius):
    """Every pair, one popcount each: the quadratic baseline."""
    count = 0
    for i in range(h.shape[0]):
        hi = h[i]
        for j in range(i + 1, h.shape[0]):
            if _popcount(hi ^ h[j]) <= radius:
                count += 1
    return count


def faiss_pairs(h: np.ndarray, radius: int, index) -> np.ndarray:
    codes = np.ascontiguousarray(h).view(np.uint8).reshape(-1, 8)
    index.add(codes)
    lims, _, ids = index.range_search(codes, radius + 1)  # FAISS returns distances < radius
    q = np.repeat(np.arange(len(h)), np.diff(lims).astype(np.int64))
    keep = q < ids
    return np.stack([q[keep], ids[keep]], 1).astype(np.int64)


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def row(*cells, widths=(34, 11, 9, 9, 11, 10, 9)):
    print("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-large", type=int, default=10_000_000, help="0 to skip")
    ap.add_argument("--planted", type=int, default=10_000, help="planted near pairs per set")
    ap.add_argument("--radius", type=int, default=6)
    ap.add_argument("--brute-n", type=int, default=20_000, help="subsample for the brute-force baseline")
    ap.add_argument("--faiss-n", type=int, default=100_000, help="set size for the FAISS baselines, 0 to skip")
    ap.add_argument("--families-n", type=int, default=0, help="rows for decide_families (default --n)")
    args = ap.parse_args()
    r = args.radius
    print(f"cores={os.cpu_count()} load average={os.getloadavg()[0]:.1f} radius={r} planted={args.planted}")

    # compile (or load the numba cache) outside the timings
    warm, _ = make_hashes("clustered", 5000, 50, r, 0)
    near_pairs(warm, r), brute_force(warm[:100], r)
    decide_families([str(i) for i in range(100)], [str(i) for i in range(100)], warm[:100],
                    np.zeros((100, 256), np.uint8), np.ones(100), radius=r)

    row("near_pairs", "wall s", "cpu s", "recall", "pairs", "peak MiB", "vs brute")
    sizes = [args.n] + ([args.n_large] if args.n_large else [])
    for n in sizes:
        for kind in ("uniform", "clustered"):
            h, planted = make_hashes(kind, n, args.planted, r, seed=n + len(kind))
            found, wall, cpu, mem = timed(near_pairs, h, r)
            sub = h[: args.brute_n]
            c0 = time.process_time()
            want = brute_force(sub, r)
            brute_cpu = (time.process_time() - c0) * (n / len(sub)) ** 2
            assert len(near_pairs(sub, r)) == want, "near_pairs disagrees with brute force on the subsample"
            row(f"{kind} n={n:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{recall(found, planted, n):.2%}",
                f"{len(found):,}", mib(mem.peak - mem.before), f"{brute_cpu / cpu:,.0f}x")
            del found
        print(f"  brute force: numba popcount over all pairs of {args.brute_n:,} rows (same pair count as "
              f"near_pairs), cpu extrapolated by (n/{args.brute_n:,})^2")

    if args.faiss_n:
        import faiss

        faiss.omp_set_num_threads(1)
        n = args.faiss_n
        print(f"\nFAISS baselines, one thread, n={n:,} with {args.planted // 10:,} planted pairs")
        row("method", "wall s", "cpu s", "recall", "pairs", "peak MiB", "vs ours")
        for kind in ("uniform", "clustered"):
            h, planted = make_hashes(kind, n, args.planted // 10, r, seed=7 + len(kind))
            ours, _, ours_cpu, mem = timed(near_pairs, h, r)
            row(f"{kind}: near_pairs", "", f"{ours_cpu:.2f}", f"{recall(ours, planted, n):.2%}",
                f"{len(ours):,}", mib(mem.peak - mem.before), "1x")
            multi = faiss.IndexBinaryMultiHash(64, 4, 16)
            multi.nflip = 1
            single = faiss.IndexBinaryHash(64, 16)
            single.nflip = 2
            for name, index in (("MultiHash 4x16 nflip=1", multi), ("Hash 16 nflip=2", single)):
                got, wall, cpu, mem = timed(faiss_pairs, h, r, index)
                row(f"{kind}: {name}", f"{wall:.2f}", f"{cpu:.2f}", f"{recall(got, planted, n):.2%}",
                    f"{len(got):,}", mib(mem.peak - mem.before), f"{cpu / ours_cpu:,.0f}x slower")

    # the operator's index: three view hashes per row (whole frame, centred 90% and 80%) in one
    # pigeonhole index; a row's views are correlated (its 90% view ~8 bits from its whole frame)
    n = args.n
    h, planted = make_hashes("clustered", n, args.planted, r, seed=5)
    rng = np.random.default_rng(6)
    views = np.stack([h, h ^ flips(rng, n, 0.12), h ^ flips(rng, n, 0.25)], 1)
    crops = rng.choice(n, size=args.planted, replace=False)  # crops: whole frame = another row's 80% view
    views[crops[1:], 0] = views[crops[:-1], 2] ^ flips(rng, len(crops) - 1, 0.03)
    warm_v = views[:1000].copy()
    view_candidates(warm_v, r)
    (ci, cj, _, _, _), wall, cpu, mem = timed(view_candidates, views, r)
    codes = set((np.minimum(ci, cj) * n + np.maximum(ci, cj)).tolist())
    found = np.mean([min(a, b) * n + max(a, b) in codes for a, b in zip(crops[1:].tolist(), crops[:-1].tolist())])
    print(f"\nview_candidates n={n:,} rows x 3 views (clustered): wall {wall:.2f} s, cpu {cpu:.2f} s, "
          f"peak +{mib(mem.peak - mem.before)} MiB; {len(ci):,} candidate row pairs; planted crops found {found:.2%}")
    del views, ci, cj, codes

    n = args.families_n or args.n
    h, planted = make_hashes("clustered", n, args.planted, r, seed=3)
    rng = np.random.default_rng(4)
    thumbs = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    thumbs[planted[:, 1]] = np.clip(thumbs[planted[:, 0]].astype(np.int16) + rng.integers(-5, 6, (len(planted), 256)),
                                    0, 255)
    ids = [f"{i:064x}" for i in range(n)]
    sources = [f"shard-{i % 977:04d}/img-{i:09d}.jpg" for i in range(n)]
    short = rng.choice([256, 384, 512, 768, 1024], n)
    prior = n // 10
    (dup_of, kind, _), wall, cpu, mem = timed(decide_families, ids, sources, h, thumbs, short, radius=r,
                                              prior_count=prior)
    decided = planted[(planted >= prior).any(axis=1)]  # prior rows are never re-decided
    caught = (dup_of[decided[:, 0]] >= 0) | (dup_of[decided[:, 1]] >= 0)  # either may be kept
    print(f"\ndecide_families n={n:,} (clustered, {prior:,} prior rows, random thumbnails, planted "
          f"pairs with confirming thumbnails): wall {wall:.2f} s, cpu {cpu:.2f} s, peak +{mib(mem.peak - mem.before)} MiB; "
          f"kept {int((kind == 0).sum()):,}, near {int((kind == 2).sum()):,}, exact {int((kind == 1).sum()):,}; "
          f"planted pairs with one member dropped: {caught.mean():.2%}")


if __name__ == "__main__":
    main()
