"""Near-duplicate index over 64-bit perceptual hashes, and the family decision of `dedup`.

Report section 2.3 (stage 1) applies a deduplication filter after the broken-file and resolution
filters. This module is the core of that barrier step: numpy in, numpy out, no Arrow, no Ray.

`near_pairs` finds every pair of hashes within a Hamming radius r, exactly and sub-quadratically,
by pigeonhole (multi-index hashing: Manku et al. 2007 for near-duplicate web pages, Norouzi et
al. 2012). The 64 bits are cut into m = r + s blocks; two hashes within distance r differ in at
most r blocks, so they agree exactly on at least s. Bucketing by every s-subset of blocks finds
every such pair in some bucket, and a popcount verifies it. For r = 6 and s = 2 that is 8 blocks
of 8 bits and 28 keys of 16 bits; past about 8M hashes the buckets grow and s = 3 (84 keys of
~21 bits) is cheaper (`_choose_agree`). A pair found under several keys is emitted only under
the first s blocks it agrees on, so nothing needs a global de-duplication afterwards.

Real phashes are clustered (solid fills, document layouts, biased low-frequency bits), so some
buckets are large. Two things bound the work per bucket:
- identical hashes are collapsed first (a million blank images are one hash, not 5e11 pairs to
  verify); the pairs among copies are expanded at the end, and the family decision never expands
  them at all;
- a bucket of `_SUB_INDEX_MIN` or more members is indexed again on the bits outside its key:
  within distance r those bits, cut into r + 1 sub-blocks, agree exactly on at least one, so
  the bucket is sorted by each sub-block in turn and only runs that share one are verified.

`decide_families` keeps one member per family greedily in a fixed order (rows of accepted catalog
datasets first, then the largest short side, then `source`, then `id`), so its decisions never
depend on input order, batching or workers. A near copy must match a KEPT row directly (phash
within r AND the 16x16 thumbnails within `max_thumb_dist` mean absolute difference, since
distinct document pages in one layout often have phashes within 6 bits); chains a~b~c never make
c a copy of a.

numba is imported with this module; the operator imports it inside its barrier step.
"""

from __future__ import annotations

from math import comb

import numba as nb
import numpy as np
from numba import types
from numba.extending import intrinsic

# A bucket with at least this many members is indexed again on its sub-blocks instead of
# verifying all its pairs; below it the quadratic loop is cheaper than the sub-sorts (measured
# on uniform and clustered sets of 1M and 10M hashes).
_SUB_INDEX_MIN = 256
# Keys up to this many bits are bucketed by a counting sort, wider ones by argsort.
_COUNTING_SORT_MAX_BITS = 22
_MAX_RADIUS = 20

KEPT, EXACT, NEAR = 0, 1, 2


@intrinsic
def _popcount(typingctx, x):
    """LLVM ctpop: one POPCNT instruction on x86-64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


def _blocks(radius: int, agree: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut 64 bits into radius + agree blocks as even as possible: (shift, width) per block."""
    m = radius + agree
    bounds = [(64 * k) // m for k in range(m + 1)]
    lo = np.array(bounds[:-1], dtype=np.uint64)
    width = np.array([bounds[k + 1] - bounds[k] for k in range(m)], dtype=np.uint64)
    return lo, width


def _choose_agree(n: int, radius: int) -> int:
    """How many agreeing blocks to index on: 2 up to about 8M hashes (radius 6), then 3 or 4.

    Cost model fitted to runs here at 1M and 10M hashes (ns): each level of the nested sort
    moves every hash once per block prefix (~3 ns; ~20 ns at the last level, where the runs
    are short and each one is walked), and a bucket of b hashes costs b^2/2 popcounts (~0.8 ns).
    More blocks per key make smaller buckets but more keys: C(m, s) for m = radius + s blocks.
    """
    best, best_cost = 2, float("inf")
    for s in (2, 3, 4):
        m = radius + s
        moves = 3 * sum(comb(m, level) for level in range(1, s)) + 20 * comb(m, s)
        pairs = comb(m, s) * n / 2 / 2.0 ** (64 * s / m)
        cost = n * (moves + 0.8 * pairs)
        if cost < best_cost:
            best, best_cost = s, cost
    return best


def _check_radius(radius: int) -> int:
    radius = int(radius)
    if not 0 <= radius <= _MAX_RADIUS:
        raise ValueError(f"radius={radius} is outside 0..{_MAX_RADIUS}; use a Hamming radius such as 6")
    return radius


def _as_uint64(hashes) -> np.ndarray:
    arr = np.asarray(hashes)
    if arr.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array of 64-bit integers, got shape {arr.shape}")
    if arr.dtype == np.uint64:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.int64:
        return np.ascontiguousarray(arr).view(np.uint64)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"hashes must be 64-bit integers (uint64), got dtype {arr.dtype}")
    return arr.astype(np.uint64)


@nb.njit(cache=True, nogil=True)
def _block(h, lo, w):
    return (h >> lo) & ((np.uint64(1) << w) - np.uint64(1))


@nb.njit(cache=True, nogil=True)
def _first_blocks_are(x, lo, width, chosen, s):
    """True when chosen[:s] are the first s blocks on which the xor x is zero."""
    found = 0
    for k in range(lo.shape[0]):
        if _block(x, lo[k], width[k]) == 0:
            if k != chosen[found]:
                return False
            found += 1
            if found == s:
                return True
    return False


@nb.njit(cache=True, nogil=True)
def _emit(out, count, hp, hq):
    """Write the hash pair (smaller, larger) at row count if it fits; returns count + 1.

    Callers grow `out` and redo the bucket when the count passed its capacity: reassigning
    the array inside the verification loop made that loop 2x slower.
    """
    if count < out.shape[0]:
        out[count, 0] = min(hp, hq)
        out[count, 1] = max(hp, hq)
    return count + 1


@nb.njit(cache=True, nogil=True)
def _grow(out, need):
    bigger = np.empty((max(need, 2 * out.shape[0]), 2), dtype=np.uint64)
    bigger[: out.shape[0]] = out
    return bigger


@nb.njit(cache=True, nogil=True)
def _verify_bucket(bucket, chosen, s, lo, width, r, min_sub, out, count):
    """Emit the pairs of one bucket within r whose first s agreeing blocks are chosen[:s]."""
    if bucket.shape[0] >= min_sub:
        return _sub_index(bucket, chosen, s, lo, width, r, out, count)
    for i in range(bucket.shape[0]):
        hp = bucket[i]
        for t in range(i + 1, bucket.shape[0]):
            x = hp ^ bucket[t]
            if _popcount(x) <= r and _first_blocks_are(x, lo, width, chosen, s):
                count = _emit(out, count, hp, bucket[t])
    return count


@nb.njit(cache=True, nogil=True)
def _sort_by_key(keys, bits, src, dst):
    """dst = src ordered by keys: a counting sort when the bins are few, else argsort."""
    n = keys.shape[0]
    if bits <= _COUNTING_SORT_MAX_BITS and (1 << bits) <= 4 * n + 256:
        start = np.zeros((1 << bits) + 1, dtype=np.int64)
        for i in range(n):
            start[np.int64(keys[i]) + 1] += 1
        for v in range(1 << bits):
            start[v + 1] += start[v]
        for i in range(n):
            k = np.int64(keys[i])
            dst[start[k]] = src[i]
            start[k] += 1
    else:
        perm = np.argsort(keys)
        for i in range(n):
            dst[i] = src[perm[i]]


@nb.njit(cache=True, nogil=True)
def _sort_by_block(src, lo, w, dst, keys):
    """dst = hashes src ordered by their block (lo, w); keys is scratch of src's length."""
    n = src.shape[0]
    for i in range(n):
        keys[i] = _block(src[i], lo, w)
    _sort_by_key(keys[:n], np.int64(w), src, dst)


@nb.njit(cache=True, nogil=True)
def _run_end(h, start, lo, w):
    """End of the run of hashes sharing block (lo, w) with h[start]."""
    v = _block(h[start], lo, w)
    end = start + 1
    while end < h.shape[0] and _block(h[end], lo, w) == v:
        end += 1
    return end


@nb.njit(cache=True, nogil=True)
def _near_pairs_unique(u, radius, lo, width, s, min_sub):
    """Hash pairs (smaller, larger) of distinct hashes u within `radius` bits, unsorted.

    Two hashes within r bits agree on at least s of the r + s blocks: bucket by every s-subset
    of blocks and emit a pair only under the first s blocks it agrees on. Buckets come from
    nested sorts: all hashes by one block, each run of equal values by a later block, and so on
    for s levels, so every bucket is a contiguous run that stays in cache (sorting the whole
    array once per key was 4x slower at 1M hashes, all in cache misses). The levels are an
    explicit stack: numba's cache segfaults on recursive functions.
    """
    n = u.shape[0]
    m = lo.shape[0]
    r = np.uint64(radius)
    out = np.empty((4096, 2), dtype=np.uint64)
    count = 0
    bufs = np.empty((s, n), dtype=np.uint64)  # level L holds its run sorted by chosen[L]
    keys = np.empty(n, dtype=np.uint64)
    chosen = np.full(s, -1, dtype=np.int64)  # the block each level splits on
    run_lo = np.zeros(s, dtype=np.int64)  # the level's run: [run_lo, run_hi) of the level above
    run_hi = np.zeros(s, dtype=np.int64)
    walk = np.full(s, -1, dtype=np.int64)  # next position to split in bufs[level], -1: next block
    run_hi[0] = n
    level = 0
    while level >= 0:
        size = run_hi[level] - run_lo[level]
        if walk[level] < 0 or walk[level] >= size:
            k = chosen[level] + 1
            if k > m - (s - level):
                level -= 1
                continue
            chosen[level] = k
            src = u if level == 0 else bufs[level - 1]
            _sort_by_block(src[run_lo[level] : run_hi[level]], lo[k], width[k], bufs[level, :size], keys)
            walk[level] = 0
        k = chosen[level]
        sorted_run = bufs[level, :size]
        start = walk[level]
        end = _run_end(sorted_run, start, lo[k], width[k])
        walk[level] = end
        if end - start < 2:
            continue
        if level + 1 < s:
            level += 1
            run_lo[level], run_hi[level] = start, end
            chosen[level] = k  # the next level starts at block k + 1
            walk[level] = -1
            continue
        bucket = sorted_run[start:end]
        after = _verify_bucket(bucket, chosen, s, lo, width, r, min_sub, out, count)
        if after > out.shape[0]:  # redo the bucket into a larger buffer
            out = _grow(out, after)
            after = _verify_bucket(bucket, chosen, s, lo, width, r, min_sub, out, count)
        count = after
    return out[:count]


@nb.njit(cache=True, nogil=True)
def _sub_index(bucket, chosen, s, lo, width, r, out, count):
    """Verify one large bucket (hashes agreeing on blocks chosen[:s]) through sub-blocks.

    The other bits hold the whole distance (<= r), so cut into r + 1 sub-blocks they agree on
    at least one: sort by each sub-block in turn, verify within runs, and emit a pair only under
    the first sub-block it agrees on.
    """
    size = bucket.shape[0]
    m = lo.shape[0]
    n_sub = np.int64(r) + 1
    outside = np.ones(m, dtype=np.bool_)
    rest_w = np.int64(64)
    for c in range(s):
        outside[chosen[c]] = False
        rest_w -= np.int64(width[chosen[c]])
    rest = np.empty(size, dtype=np.uint64)  # the bits outside the chosen blocks, packed
    for i in range(size):
        v = np.uint64(0)
        for k in range(m):
            if outside[k]:
                v = (v << width[k]) | _block(bucket[i], lo[k], width[k])
        rest[i] = v
    sub_lo = np.empty(n_sub, dtype=np.uint64)
    sub_w = np.empty(n_sub, dtype=np.uint64)
    for j in range(n_sub):
        s0 = (rest_w * j) // n_sub
        sub_lo[j] = np.uint64(s0)
        sub_w[j] = np.uint64((rest_w * (j + 1)) // n_sub - s0)
    keys = np.empty(size, dtype=np.uint64)
    ident = np.arange(size)
    perm = np.empty(size, dtype=np.int64)
    srest = np.empty(size, dtype=np.uint64)
    for j in range(n_sub):
        for i in range(size):
            keys[i] = _block(rest[i], sub_lo[j], sub_w[j])
        _sort_by_key(keys, np.int64(sub_w[j]), ident, perm)
        for i in range(size):
            srest[i] = rest[perm[i]]
        start = 0
        while start < size:
            end = _run_end(srest, start, sub_lo[j], sub_w[j])
            for i in range(start, end):
                rp = srest[i]
                for t in range(i + 1, end):
                    xr = rp ^ srest[t]
                    if _popcount(xr) > r:
                        continue
                    first = True
                    for jj in range(j):
                        if _block(xr, sub_lo[jj], sub_w[jj]) == 0:
                            first = False
                            break
                    hp = bucket[perm[i]]
                    hq = bucket[perm[t]]
                    if first and _first_blocks_are(hp ^ hq, lo, width, chosen, s):
                        count = _emit(out, count, hp, hq)
            start = end
    return count


@nb.njit(cache=True, nogil=True)
def _expand(pairs, group_start, group_members, dup_count):
    """Index pairs from pairs of distinct hashes plus the pairs among copies of one hash."""
    total = dup_count
    for t in range(pairs.shape[0]):
        p, q = pairs[t, 0], pairs[t, 1]
        total += (group_start[p + 1] - group_start[p]) * (group_start[q + 1] - group_start[q])
    out = np.empty((total, 2), dtype=np.int64)
    c = 0
    for g in range(group_start.shape[0] - 1):
        for s in range(group_start[g], group_start[g + 1]):
            for t in range(s + 1, group_start[g + 1]):
                out[c, 0] = min(group_members[s], group_members[t])
                out[c, 1] = max(group_members[s], group_members[t])
                c += 1
    for t in range(pairs.shape[0]):
        p, q = pairs[t, 0], pairs[t, 1]
        for s in range(group_start[p], group_start[p + 1]):
            i = group_members[s]
            for v in range(group_start[q], group_start[q + 1]):
                j = group_members[v]
                if i < j:
                    out[c, 0] = i
                    out[c, 1] = j
                else:
                    out[c, 0] = j
                    out[c, 1] = i
                c += 1
    return out


def _groups(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct hashes u, each row's group, and the rows of each group (CSR)."""
    order = np.argsort(h)
    sorted_h = h[order]
    new = np.ones(h.shape[0], dtype=bool)
    new[1:] = sorted_h[1:] != sorted_h[:-1]
    u = sorted_h[new]
    group_start = np.append(np.flatnonzero(new), h.shape[0]).astype(np.int64)
    group_of = np.empty(h.shape[0], dtype=np.int64)
    group_of[order] = np.cumsum(new) - 1
    return u, group_of, group_start, order.astype(np.int64)


def _unique_pairs(u: np.ndarray, radius: int, min_sub: int = _SUB_INDEX_MIN,
                  agree: int | None = None) -> np.ndarray:
    """Index pairs (p < q) into the sorted distinct hashes u within the radius, unsorted."""
    agree = agree or _choose_agree(len(u), radius)
    lo, width = _blocks(radius, agree)
    hash_pairs = _near_pairs_unique(u, radius, lo, width, agree, min_sub)
    return np.searchsorted(u, hash_pairs).astype(np.int64).reshape(-1, 2)


def near_pairs(hashes: np.ndarray, radius: int = 6) -> np.ndarray:
    """All index pairs (i < j) whose 64-bit hashes differ in <= radius bits.

    Returns an int64 array of shape (k, 2), sorted by (i, j). Complete within the radius
    (pigeonhole over radius + s blocks, see the module docstring) and sub-quadratic on uniform
    and on clustered hashes. Copies of one hash give every pair among them, so k can be large when
    a value repeats many times; `decide_families` never expands those.
    """
    radius = _check_radius(radius)
    h = _as_uint64(hashes)
    n = h.shape[0]
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    u, _, group_start, members = _groups(h)
    sizes = np.diff(group_start)
    dup_count = int((sizes * (sizes - 1) // 2).sum())
    pairs = _expand(_unique_pairs(u, radius), group_start, members, dup_count)
    if pairs.shape[0] == 0:
        return pairs
    codes = np.sort(pairs[:, 0] * np.int64(n) + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


@nb.njit(cache=True, nogil=True)
def _greedy(order, prior_count, id_code, n_ids, group_of, gpairs_start, gpairs_to, u, phash,
            thumbs, max_sum):
    """Walk rows in decision order; keep a row unless it copies a kept row (exact id first)."""
    n = order.shape[0]
    n_groups = u.shape[0]
    dup_of = np.full(n, -1, dtype=np.int64)
    kind = np.zeros(n, dtype=np.int8)
    dist = np.zeros(n, dtype=np.int8)
    rank = np.empty(n, dtype=np.int64)
    for pos in range(n):
        rank[order[pos]] = pos
    first_kept_of_id = np.full(n_ids, -1, dtype=np.int64)
    # kept rows of each distinct hash as linked lists, in decision order
    head = np.full(n_groups, -1, dtype=np.int64)
    tail = np.full(n_groups, -1, dtype=np.int64)
    nxt = np.full(n, -1, dtype=np.int64)
    width = thumbs.shape[1]
    for pos in range(n):
        i = order[pos]
        g = group_of[i]
        if i >= prior_count:
            kept_same = first_kept_of_id[id_code[i]]
            if kept_same >= 0:
                dup_of[i] = kept_same
                kind[i] = EXACT
                continue
            best = -1
            best_rank = n
            # candidates: kept rows of the same hash (e = start - 1), then of each neighbour hash
            for e in range(gpairs_start[g] - 1, gpairs_start[g + 1]):
                h = g if e < gpairs_start[g] else gpairs_to[e]
                j = head[h]
                while j >= 0 and rank[j] < best_rank:
                    acc = 0
                    for c in range(width):
                        acc += abs(np.int64(thumbs[i, c]) - np.int64(thumbs[j, c]))
                        if acc > max_sum:
                            break
                    if acc <= max_sum:
                        best = j
                        best_rank = rank[j]
                        break  # later kept rows of this hash come after j in order
                    j = nxt[j]
            if best >= 0:
                dup_of[i] = best
                kind[i] = NEAR
                dist[i] = np.int8(_popcount(phash[i] ^ phash[best]))
                continue
        if first_kept_of_id[id_code[i]] < 0:
            first_kept_of_id[id_code[i]] = i
        if head[g] < 0:
            head[g] = i
        else:
            nxt[tail[g]] = i
        tail[g] = i
    return dup_of, kind, dist


def _strings(values, name: str, n: int) -> list:
    values = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} hashes; give one per row")
    return values


def _first_seen_codes(values: list) -> np.ndarray:
    """Equal strings get equal codes (numbered in order of appearance)."""
    seen: dict = {}
    return np.fromiter((seen.setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values))


def _sorted_ranks(values: list) -> np.ndarray:
    """Rank of each string among the distinct strings in Python str order (code points).

    One Python sort of the row numbers: faster here than numpy's unicode or StringDType sorts
    of the same 1M strings, and no fixed-width copy.
    """
    ranks = np.empty(len(values), dtype=np.int64)
    prev, k = None, -1
    for i in sorted(range(len(values)), key=values.__getitem__):
        if values[i] != prev:
            k, prev = k + 1, values[i]
        ranks[i] = k
    return ranks


def _decision_order(ids: list, source_rank: np.ndarray, short: np.ndarray, prior_count: int) -> np.ndarray:
    """Prior rows first, then the largest short side, then `source`, then `id` (string orders)."""
    n = len(ids)
    is_new = (np.arange(n) >= prior_count).astype(np.int64)
    order = np.lexsort((source_rank, -short, is_new))
    o_new, o_short, o_src = is_new[order], short[order], source_rank[order]
    tie = (o_new[1:] == o_new[:-1]) & (o_short[1:] == o_short[:-1]) & (o_src[1:] == o_src[:-1])
    # rows tied on all three (one source listing several ids) are ordered by id, run by run
    starts = np.flatnonzero(np.diff(np.concatenate([[0], tie.astype(np.int8), [0]])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([[0], tie.astype(np.int8), [0]])) == -1) + 1
    for a, b in zip(starts.tolist(), ends.tolist()):
        order[a:b] = sorted(order[a:b].tolist(), key=ids.__getitem__)
    return order.astype(np.int64)


def decide_families(ids, sources, phash: np.ndarray, thumbs: np.ndarray, short_side: np.ndarray,
                    radius: int = 6, max_thumb_dist: float = 12.0,
                    prior_count: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick one kept member per duplicate family; prior rows (0..prior_count-1) are always kept.

    Rows 0..prior_count-1 are samples of accepted catalog datasets; the rest are this run's rows.
    `thumbs` (n, 256) uint8 are 16x16 grayscale thumbnails: a near copy needs the phash within
    `radius` AND a mean absolute pixel difference <= `max_thumb_dist`.

    Returns (dup_of int64, kind int8, dist int8): dup_of[i] is the kept row that i copies or -1;
    kind is 0 kept, 1 exact (same id), 2 near; dist the Hamming distance to its kept row (0 for
    exact). Decision order: prior rows, then largest short side, then `sources` (string order),
    then `ids`; a row copies the earliest kept row it matches, never a chain.
    """
    radius = _check_radius(radius)
    h = _as_uint64(phash)
    n = h.shape[0]
    if not 0 <= prior_count <= n:
        raise ValueError(f"prior_count={prior_count} must be between 0 and the number of rows ({n})")
    thumbs = np.ascontiguousarray(np.asarray(thumbs, dtype=np.uint8))
    if thumbs.ndim != 2 or thumbs.shape[0] != n:
        raise ValueError(f"thumbs must be (n, 256) uint8 16x16 thumbnails, got shape {thumbs.shape} for {n} rows")
    short = np.asarray(short_side, dtype=np.int64)
    if short.shape != (n,):
        raise ValueError(f"short_side has shape {short.shape} for {n} rows; give one per row")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.int8)
    ids = _strings(ids, "ids", n)
    sources = _strings(sources, "sources", n)
    id_code = _first_seen_codes(ids)
    order = _decision_order(ids, _sorted_ranks(sources), short, prior_count)

    u, group_of, _, _ = _groups(h)
    gp = _unique_pairs(u, radius)
    # neighbours of each distinct hash (CSR, both directions)
    src = np.concatenate([gp[:, 0], gp[:, 1]])
    dst = np.concatenate([gp[:, 1], gp[:, 0]])
    by_src = np.argsort(src, kind="stable")
    gpairs_to = dst[by_src].astype(np.int64)
    gpairs_start = np.zeros(u.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=u.shape[0]), out=gpairs_start[1:])
    max_sum = int(np.floor(max_thumb_dist * thumbs.shape[1] + 1e-9))
    return _greedy(order, prior_count, id_code, int(id_code.max()) + 1, group_of, gpairs_start,
                   gpairs_to, u, h, thumbs, max_sum)


def _expand_capped(pairs: np.ndarray, group_start: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Row pairs from pairs of distinct hashes, linear in the group sizes: copies of one hash are
    chained (k - 1 pairs, not k^2 / 2) and two groups are joined through each one's first member.
    Families are transitive, so a family of true copies is still found whole; a million blank
    images sharing one hash cost a million pairs to check, not 5e11."""
    sizes = np.diff(group_start)
    out = []
    multi = np.flatnonzero(sizes > 1)
    if len(multi):
        firsts = group_start[multi]
        k = sizes[multi]
        idx = np.repeat(firsts, k - 1) + (np.arange(int((k - 1).sum())) - np.repeat(np.cumsum(k - 1) - (k - 1), k - 1))
        out.append(np.stack([members[idx], members[idx + 1]], 1))
    if len(pairs):
        p, q = pairs[:, 0], pairs[:, 1]
        out.append(np.stack([members[group_start[p]], members[group_start[q]]], 1))
        for a, b in ((p, q), (q, p)):  # every other member of a to the first member of b
            extra = sizes[a] - 1
            sel = np.flatnonzero(extra > 0)
            if len(sel):
                rep = np.repeat(sel, extra[sel])
                off = np.arange(int(extra[sel].sum())) - np.repeat(np.cumsum(extra[sel]) - extra[sel], extra[sel]) + 1
                out.append(np.stack([members[group_start[a[rep]] + off], members[group_start[b[rep]]]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def view_candidates(views: np.ndarray, radius: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate row pairs from several hashes per row (views (n, v) of 64-bit hashes).

    Every hash of every row goes into one pigeonhole index (`near_pairs`' machinery); a pair of
    rows is a candidate when any of their hashes are within `radius`. Returns (i, j, vi, vj, dist),
    i < j, one entry per row pair: the closest view pair (vi of row i, vj of row j) and its
    Hamming distance. Copies of one hash are expanded linearly (`_expand_capped`).
    """
    radius = _check_radius(radius)
    v = np.ascontiguousarray(np.asarray(views))
    if v.ndim != 2:
        raise ValueError(f"views must be (n, v) 64-bit hashes, got shape {v.shape}")
    n, k = v.shape
    flat = _as_uint64(v.reshape(-1))
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty, empty, empty, empty
    u, _, group_start, members = _groups(flat)
    hp = _expand_capped(_unique_pairs(u, radius), group_start, members) if len(u) > 1 else \
        _expand_capped(np.zeros((0, 2), np.int64), group_start, members)
    if not len(hp):
        return empty, empty, empty, empty, empty
    a, b = hp[:, 0], hp[:, 1]
    ra, rb = a // k, b // k
    keep = ra != rb
    a, b, ra, rb = a[keep], b[keep], ra[keep], rb[keep]
    swap = ra > rb
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    ra, rb = np.minimum(ra, rb), np.maximum(ra, rb)
    dist = _popcounts(flat[a] ^ flat[b])
    # one entry per row pair: the closest view pair (ties: the lower view indices, whole frame first)
    code = ra * np.int64(n) + rb
    order = np.lexsort((a % k + (b % k) * k, dist, code))
    code, first = code[order], np.ones(len(order), bool)
    first[1:] = code[1:] != code[:-1]
    sel = order[first]
    return ra[sel], rb[sel], a[sel] % k, b[sel] % k, dist[sel]


@nb.njit(cache=True, nogil=True)
def _popcounts(x):
    out = np.empty(x.shape[0], dtype=np.int64)
    for i in range(x.shape[0]):
        out[i] = _popcount(x[i])
    return out


def family_tree(n: int, edges_i: np.ndarray, edges_j: np.ndarray, rank: np.ndarray,
                keep_all: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transitive families over confirmed pairs, one survivor each, and the path to it.

    `rank[i]`: decision order (lower is better: catalog rows first, then the largest, ...);
    `keep_all[i]` marks rows that always survive (rows of accepted catalog datasets). The survivor
    of a family is its best-ranked member (every `keep_all` member of a family survives; the rest
    attach to the nearest one). Returns (survivor, via, edge): survivor[i] = -1 for survivors, else
    the survivor row; via[i] the neighbour on a shortest path towards it (the member i matched);
    edge[i] the index of that confirmed pair in edges_*, so its score explains the drop.
    """
    from collections import deque

    parent = np.arange(n)

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for i, j in zip(edges_i.tolist(), edges_j.tolist()):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    survivor = np.full(n, -1, np.int64)
    via = np.full(n, -1, np.int64)
    edge = np.full(n, -1, np.int64)
    if not len(edges_i):
        return survivor, via, edge
    nodes = np.unique(np.concatenate([edges_i, edges_j]))
    adj: dict[int, list[tuple[int, int]]] = {}
    for e, (i, j) in enumerate(zip(edges_i.tolist(), edges_j.tolist())):
        adj.setdefault(i, []).append((j, e))
        adj.setdefault(j, []).append((i, e))
    comps: dict[int, list[int]] = {}
    for x in nodes.tolist():
        comps.setdefault(find(x), []).append(x)
    for members in comps.values():
        members.sort(key=lambda x: rank[x])
        roots = [x for x in members if keep_all is not None and keep_all[x]] or members[:1]
        seen = set(roots)
        q = deque(roots)
        top = {r: r for r in roots}
        while q:  # breadth first from the survivors: each member attaches through a shortest path
            x = q.popleft()
            for y, e in sorted(adj[x], key=lambda t: rank[t[0]]):
                if y not in seen:
                    seen.add(y)
                    top[y], via[y], edge[y], survivor[y] = top[x], x, e, top[x]
                    q.append(y)
    return survivor, via, edge
