"""The near-duplicate index (exact against brute force) and the family decision of `dedup`."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.filters.dedup_index import EXACT, KEPT, NEAR, _unique_pairs, decide_families, near_pairs


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit distance between uint64 arrays (broadcasting), by numpy's own popcount."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def brute_pairs(h: np.ndarray, radius: int) -> np.ndarray:
    d = hamming(h[:, None], h[None, :])
    i, j = np.nonzero(np.triu(d <= radius, 1))
    return np.stack([i, j], 1).astype(np.int64)


def flip_masks(rng, n: int, p: float) -> np.ndarray:
    bits = rng.random((n, 64)) < p
    return np.packbits(bits, axis=1, bitorder="little").view(np.uint64).ravel()


def with_distance(rng, h: int, d: int) -> np.uint64:
    mask = 0
    for bit in rng.choice(64, size=d, replace=False):
        mask |= 1 << int(bit)
    return np.uint64(h ^ mask)


def clustered(rng, n: int) -> np.ndarray:
    """Hashes like real phashes: biased bits, tight clusters, copies and popular flat values."""
    bias = np.where(np.arange(64) < 12, 0.85, 0.5)
    centres = np.packbits(rng.random((25, 64)) < bias, axis=1, bitorder="little").view(np.uint64).ravel()
    h = centres[rng.integers(0, len(centres), n)] ^ flip_masks(rng, n, 0.05)
    h[: n // 10] = h[n // 10 : n // 5]  # exact copies
    popular = np.array([0, 2**64 - 1, 0x8000000000000000, 0x00000000FFFFFFFF], dtype=np.uint64)
    k = n // 20
    h[-k:] = popular[rng.integers(0, len(popular), k)] ^ flip_masks(rng, k, 0.02)
    return h


@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize("radius", [0, 3, 6, 8])
def test_near_pairs_equal_brute_force(kind, radius):
    rng = np.random.default_rng(radius + (100 if kind == "clustered" else 0))
    if kind == "uniform":
        h = rng.integers(0, 2**64, 2000, dtype=np.uint64, endpoint=False)
        # plant pairs at every distance up to radius + 2 so the uniform set has true pairs too
        for d in range(radius + 3):
            h[2 * d + 1] = with_distance(rng, int(h[2 * d]), d)
    else:
        h = clustered(rng, 2000)
    got = near_pairs(h, radius)
    want = brute_pairs(h, radius)
    assert len(want) > 0
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("agree", [2, 3, 4])
@pytest.mark.parametrize("min_sub", [2, 10**9])
def test_every_index_layout_agrees_with_brute_force(agree, min_sub):
    """Keys of 2, 3 or 4 agreeing blocks, big buckets through sub-blocks or all their pairs."""
    rng = np.random.default_rng(7)
    u = np.unique(clustered(rng, 2500))
    for radius in (4, 6):
        got = _unique_pairs(u, radius, min_sub=min_sub, agree=agree)
        got = got[np.lexsort((got[:, 1], got[:, 0]))]
        np.testing.assert_array_equal(got, brute_pairs(u, radius))


def test_radius_edges_and_input_types():
    rng = np.random.default_rng(1)
    base = int(rng.integers(0, 2**63))
    h = np.array([base, int(with_distance(rng, base, 6)), int(with_distance(rng, base, 7))], dtype=np.uint64)
    np.testing.assert_array_equal(near_pairs(h, 6), [[0, 1]])
    assert {tuple(p) for p in near_pairs(h, 7).tolist()} >= {(0, 1), (0, 2)}
    # phashes stored as Arrow int64 give the same pairs through a view
    np.testing.assert_array_equal(near_pairs(h.view(np.int64), 6), [[0, 1]])
    assert near_pairs(h[:1]).shape == (0, 2)
    assert near_pairs(np.zeros(0, np.uint64)).shape == (0, 2)
    with pytest.raises(ValueError, match="radius"):
        near_pairs(h, -1)


def test_identical_hashes_give_every_pair():
    h = np.array([5, 5, 5, 9], dtype=np.uint64)  # 5 and 9 differ in 2 bits
    np.testing.assert_array_equal(near_pairs(h, 1), [[0, 1], [0, 2], [1, 2]])
    assert len(near_pairs(h, 2)) == 6


def thumb(rng) -> np.ndarray:
    return rng.integers(0, 256, 256).astype(np.uint8)


def test_non_transitive_chain():
    """a~b and b~c but not a~c: a is kept, b copies a, c stays (b is not kept)."""
    rng = np.random.default_rng(2)
    a = int(rng.integers(0, 2**63))
    b = a ^ 0b1111  # 4 bits from a
    c = b ^ (0b1111 << 8)  # 4 bits from b, 8 from a
    t = thumb(rng)
    dup_of, kind, dist = decide_families(["ia", "ib", "ic"], ["s1", "s2", "s3"],
                                         np.array([a, b, c], np.uint64), np.stack([t, t, t]),
                                         np.array([900, 800, 700]))
    assert dup_of.tolist() == [-1, 0, -1]
    assert kind.tolist() == [KEPT, NEAR, KEPT]
    assert dist.tolist() == [0, 4, 0]


def test_earliest_kept_match_and_order():
    """The kept member is the largest short side, then the smaller source string."""
    rng = np.random.default_rng(3)
    a = int(rng.integers(0, 2**63))
    t = thumb(rng)
    ph = np.array([a, a ^ 1, a ^ 3, a ^ 7], np.uint64)
    thumbs = np.stack([t, t, t, 255 - t])  # row 3 is another picture with a close phash
    # rows 0 and 2 tie on short side; "b/x" < "c/x", so row 2 is kept and row 0 copies it
    dup_of, kind, dist = decide_families(["i0", "i1", "i2", "i3"], ["c/x", "a/x", "b/x", "d/x"], ph, thumbs,
                                         np.array([500, 300, 500, 600]))
    assert dup_of.tolist() == [2, 2, -1, -1]
    assert kind.tolist() == [NEAR, NEAR, KEPT, KEPT]
    assert dist.tolist() == [2, 1, 0, 0]


def test_full_ties_are_ordered_by_id():
    """Rows tied on prior, short side and source fall back to the id string, in any input order."""
    rng = np.random.default_rng(11)
    t = thumb(rng)
    ph = np.array([40, 41, 43], np.uint64)
    for perm in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        ids = np.array(["id-c", "id-a", "id-b"])[perm]
        dup_of, kind, _ = decide_families(ids, ["same"] * 3, ph[perm], np.stack([t] * 3), np.full(3, 512))
        kept = [ids[i] for i in range(3) if dup_of[i] < 0]
        assert kept == ["id-a"]
        assert sorted(kind.tolist()) == [KEPT, NEAR, NEAR]


def test_thumbnail_confirmation_rejects_different_pages():
    rng = np.random.default_rng(4)
    a = int(rng.integers(0, 2**63))
    ph = np.array([a, a ^ 0b11, a ^ 0b110], np.uint64)  # all within 3 bits
    page = thumb(rng)
    other_page = (page.astype(int) + 60) % 256  # same layout hash, different pixels
    close = np.clip(page.astype(int) + rng.integers(-8, 9, 256), 0, 255)  # a re-encode
    thumbs = np.stack([page, other_page, close]).astype(np.uint8)
    dup_of, kind, _ = decide_families(["p", "q", "r"], ["1", "2", "3"], ph, thumbs, np.array([700, 600, 500]))
    assert dup_of.tolist() == [-1, -1, 0]
    assert kind.tolist() == [KEPT, KEPT, NEAR]
    assert np.abs(thumbs[2].astype(int) - thumbs[0]).mean() <= 12.0 < np.abs(thumbs[1].astype(int) - thumbs[0]).mean()
    # a stricter confirmation keeps the re-encode too
    dup_of, _, _ = decide_families(["p", "q", "r"], ["1", "2", "3"], ph, thumbs, np.array([700, 600, 500]),
                                   max_thumb_dist=1.0)
    assert dup_of.tolist() == [-1, -1, -1]


def test_exact_copies_keep_one_per_id():
    rng = np.random.default_rng(5)
    t = thumb(rng)
    ph = np.array([11, 11, 11, 99], np.uint64)
    dup_of, kind, dist = decide_families(["x", "x", "x", "y"], ["s/3", "s/1", "s/2", "s/0"], ph,
                                         np.stack([t, t, t, thumb(rng)]), np.array([400, 400, 400, 400]))
    assert dup_of.tolist() == [1, -1, 1, -1]
    assert kind.tolist() == [EXACT, KEPT, EXACT, KEPT]
    assert dist.tolist() == [0, 0, 0, 0]


def test_prior_rows_always_kept():
    """Rows of accepted catalog datasets are never re-decided and win over larger new rows."""
    rng = np.random.default_rng(6)
    a = int(rng.integers(0, 2**63))
    t = thumb(rng)
    ids = ["old1", "old2", "old1", "new"]
    ph = np.array([a, a ^ 1, a, a ^ 2], np.uint64)  # prior rows 0 and 1 are near copies of each other
    dup_of, kind, dist = decide_families(ids, ["p/1", "p/2", "n/1", "n/2"], ph, np.stack([t] * 4),
                                         np.array([300, 200, 2000, 2000]), prior_count=2)
    assert dup_of.tolist() == [-1, -1, 0, 0]
    assert kind.tolist() == [KEPT, KEPT, EXACT, NEAR]
    assert dist.tolist() == [0, 0, 0, 1]


def families(n: int, seed: int):
    """Rows in families of re-encodes, near-identical layouts and exact copies, plus singles."""
    rng = np.random.default_rng(seed)
    ids, sources, ph, thumbs, short = [], [], [], [], []
    for f in range(n // 6):
        base = int(rng.integers(0, 2**63))
        page = thumb(rng)
        for k in range(6):
            d = int(rng.integers(0, 9))
            ph.append(int(with_distance(rng, base, d)))
            noise = 40 if rng.random() < 0.3 else 6  # some members are distinct pages
            thumbs.append(np.clip(page.astype(int) + rng.integers(-noise, noise + 1, 256), 0, 255))
            ids.append(f"id{f}-{k}" if rng.random() < 0.8 else f"id{f}-0")
            sources.append(f"src/{rng.integers(0, 10**6)}")
            short.append(int(rng.choice([256, 512, 512, 1024])))
    return (np.array(ids, dtype=object), np.array(sources, dtype=object), np.array(ph, np.uint64),
            np.array(thumbs, np.uint8), np.array(short))


def test_decisions_do_not_depend_on_row_order():
    ids, sources, ph, thumbs, short = families(1200, seed=8)
    prior = 100
    base = decide_families(ids, sources, ph, thumbs, short, prior_count=prior)
    assert (base[1] == NEAR).sum() > 50 and (base[1] == EXACT).sum() > 20 and (base[1] == KEPT).sum() > 300

    def named(result, perm):
        dup_of, kind, dist = result
        return {(ids[perm[i]], sources[perm[i]]): (None if dup_of[i] < 0 else (ids[perm[dup_of[i]]],
                                                                             sources[perm[dup_of[i]]]),
                                                   int(kind[i]), int(dist[i]))
                for i in range(len(perm))}

    want = named(base, np.arange(len(ids)))
    rng = np.random.default_rng(9)
    for _ in range(3):
        # shuffle this run's rows (and, separately, the prior rows) like another batching would
        perm = np.concatenate([rng.permutation(prior), prior + rng.permutation(len(ids) - prior)])
        got = decide_families(ids[perm], sources[perm], ph[perm], thumbs[perm], short[perm], prior_count=prior)
        assert named(got, perm) == want


def test_every_duplicate_points_at_a_kept_row_it_matches():
    ids, sources, ph, thumbs, short = families(600, seed=10)
    dup_of, kind, dist = decide_families(ids, sources, ph, thumbs, short)
    kept = dup_of < 0
    for i in np.flatnonzero(~kept):
        j = dup_of[i]
        assert kept[j]
        assert short[j] >= short[i]
        if kind[i] == EXACT:
            assert ids[i] == ids[j] and dist[i] == 0
        else:
            assert dist[i] == hamming(ph[i], ph[j]) <= 6
            assert np.abs(thumbs[i].astype(int) - thumbs[j]).mean() <= 12.0
    # no two kept rows are a confirmed pair
    for i, j in near_pairs(ph[kept], 6):
        a, b = np.flatnonzero(kept)[[i, j]]
        assert ids[a] != ids[b]
        assert np.abs(thumbs[a].astype(int) - thumbs[b]).mean() > 12.0


def test_rejects_mismatched_inputs():
    ph = np.zeros(3, np.uint64)
    with pytest.raises(ValueError, match="thumbs"):
        decide_families(["a", "b", "c"], ["1", "2", "3"], ph, np.zeros((2, 256), np.uint8), np.ones(3))
    with pytest.raises(ValueError, match="sources"):
        decide_families(["a", "b", "c"], ["1", "2"], ph, np.zeros((3, 256), np.uint8), np.ones(3))
    empty = decide_families([], [], np.zeros(0, np.uint64), np.zeros((0, 256), np.uint8), np.zeros(0))
    assert [len(x) for x in empty] == [0, 0, 0]


def test_view_candidates_find_a_crop_through_its_matching_view():
    """Row 1's whole frame equals row 0's 80% view; rows 2 and 3 are unrelated; rows 4-6 share one
    hash (copies are chained, not paired all with all)."""
    from flywheel.filters.dedup_index import view_candidates

    rng = np.random.default_rng(0)
    v = rng.integers(0, 2**63, (7, 3), dtype=np.int64)
    v[1, 0] = v[0, 2] ^ 0b101  # 2 bits apart
    v[4:7] = v[4]
    i, j, vi, vj, d = view_candidates(v, radius=6)
    got = {(a, b): (x, y, z) for a, b, x, y, z in zip(i.tolist(), j.tolist(), vi.tolist(), vj.tolist(), d.tolist())}
    assert got[(0, 1)] == (2, 0, 2)
    assert (4, 5) in got and (5, 6) in got and got[(4, 5)] == (0, 0, 0)
    assert not any(2 in k or 3 in k for k in got)


def test_family_tree_is_transitive_with_one_survivor_and_a_path():
    from flywheel.filters.dedup_index import family_tree

    # a chain 0-1-2 and 3-4; row 2 ranks best in its family, row 3 is a catalog row
    ei, ej = np.array([0, 1, 3]), np.array([1, 2, 4])
    rank = np.array([2, 1, 0, 4, 3])
    keep = np.array([False, False, False, True, False])
    survivor, via, edge = family_tree(6, ei, ej, rank, keep)
    assert survivor.tolist() == [2, 2, -1, -1, 3, -1]
    assert via.tolist() == [1, 2, -1, -1, 3, -1]  # 0 matched 1, which matched the survivor
    assert edge.tolist() == [0, 1, -1, -1, 2, -1]
