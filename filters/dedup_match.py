"""Features `dedup` stores per image, and the pair confirmation its barrier runs on them.

Scored once per image on the working copy (the barrier never reads an image again):
- `view_hashes`: a 64-bit DCT hash of the whole frame and of its centred 90% and 80% views. A copy
  cropped by up to 10% per side is (close to) the 80% view of its original, so one of the nine
  view pairs is within a few bits even when the whole-frame hashes are 8-26 bits apart.
- `orb_features`: up to `ORB_N` ORB keypoints (Rublee et al. 2011), packed as bytes: positions as
  uint16 in units of the longer side, then the 32-byte descriptors (36 bytes a keypoint).
- `dedup.view_thumbs`: the 16x16 contrast-normalised thumbnail of each of those views (768 bytes).

`confirm` decides one candidate pair (a, b) from those columns; either test confirms:
- local features: mutual-nearest Hamming matches, a RANSAC similarity (rotation, one scale,
  translation) with at least `min_inliers` inliers that also make at least `min_ratio` of the
  keypoints lying inside the other frame, no rotation, a scale within 0.5-2, and the thumbnails
  agreeing once aligned by that transform; at the same scale the inliers' descriptors must also
  be nearly equal (distinct pages of one layout match glyph for glyph, but not bit for bit);
- the view hypothesis: the view pair whose hashes matched says where one frame lies in the other
  (same frame, or a centred crop of it); the stored thumbnails of those two views agree within
  `max_view_diff` standard deviations. This carries images with too few keypoints (smooth
  wallpapers) and centred crops of text pages, where ORB finds glyphs but not one transform.
Thumbnail agreement is measured where the frames overlap, each side z-normalised there, as the
mean absolute difference in standard deviations.

Thresholds were set on the tuning split of the real decision set (docs/decision-set.md):
consecutive document pages in one layout and one dialog with another tab are the hard negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VIEWS = (1.0, 0.9, 0.8)  # centred views hashed per image: whole frame, 90%, 80% of each side
ORB_N = 48
_DESC = 32
THUMB = 16


def dct_hash(gray: np.ndarray) -> int:
    """pHash layout (32x32 area-resize, 8x8 low DCT block vs its median) as a signed int64; cv2
    throughout, ~0.1 ms, so the three views cost less than imagehash's one."""
    import cv2

    t = cv2.resize(np.ascontiguousarray(gray, dtype=np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    d = cv2.dct(t)[:8, :8].ravel()
    bits = np.packbits(d > np.median(d))
    return int(np.frombuffer(bits.tobytes(), dtype=">u8")[0].astype(np.int64))


def centred(gray: np.ndarray, frac: float) -> np.ndarray:
    """The centred view keeping `frac` of each side."""
    h, w = gray.shape
    hh, ww = max(1, round(h * frac)), max(1, round(w * frac))
    y0, x0 = (h - hh) // 2, (w - ww) // 2
    return gray[y0:y0 + hh, x0:x0 + ww]


SMALL = 128  # short side of the one reduced copy every view hash and thumbnail is cut from


def reduced(gray: np.ndarray) -> np.ndarray:
    """The working copy area-averaged once to a SMALL px short side (float32): the views and
    their hashes and thumbnails come from it, six small resizes instead of six of the whole copy."""
    import cv2

    h, w = gray.shape
    f = SMALL / min(h, w)
    g = np.ascontiguousarray(gray, dtype=np.float32)
    if f >= 1:
        return g
    return cv2.resize(g, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def view_hashes(gray: np.ndarray, small: np.ndarray | None = None) -> list[int]:
    small = reduced(gray) if small is None else small
    return [dct_hash(centred(small, f)) for f in VIEWS]


_orb = None


ORB_SIDE = 192  # short side ORB runs at: a 256 px working copy costs ~1.5 ms, 192 px ~1.2 ms


def orb_features(rgb: np.ndarray) -> bytes:
    """Up to ORB_N keypoints of the working copy (H, W, 3 uint8) reduced to an ORB_SIDE short
    side: n x (uint16 x, uint16 y) in 1/65535 of the longer side, then n x 32 descriptor bytes.
    A low FAST threshold so smooth images still get some keypoints; 3 pyramid levels (1.25 apart)
    cover the 1.25x scale of a 10%/side crop decoded to the same working size. OpenCV runs
    single-threaded here: the engine already runs one worker per core."""
    import cv2

    global _orb
    if _orb is None:
        cv2.setNumThreads(1)
        _orb = cv2.ORB_create(nfeatures=ORB_N, scaleFactor=1.25, nlevels=3, edgeThreshold=19, patchSize=19,
                              fastThreshold=8)
    g8 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = g8.shape
    f = ORB_SIDE / min(h, w)
    if f < 1:
        g8 = cv2.resize(g8, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    kps, des = _orb.detectAndCompute(g8, None)
    if des is None or not kps:
        return b""
    side = float(max(g8.shape))
    xy = np.array([k.pt for k in kps], dtype=np.float64) / side
    q = np.clip(np.round(xy * 65535), 0, 65535).astype("<u2")
    return q.tobytes() + np.ascontiguousarray(des, dtype=np.uint8).tobytes()


def unpack(blob: bytes | None) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 2) float32 in units of the longer side, descriptors (n, 32) uint8)."""
    if blob is None or not len(blob):  # bytes, or a uint8 view of a stored column
        return np.zeros((0, 2), np.float32), np.zeros((0, _DESC), np.uint8)
    n = len(blob) // (4 + _DESC)
    pts = np.frombuffer(blob, dtype="<u2", count=2 * n).reshape(n, 2).astype(np.float32) / 65535.0
    des = np.frombuffer(blob, dtype=np.uint8, offset=4 * n).reshape(n, _DESC)
    return pts, des


@dataclass(frozen=True)
class Side:
    """One image's stored features, as the barrier holds them."""

    w: float  # frame size in units of its longer side
    h: float
    thumbs8: np.ndarray  # (len(VIEWS), 16, 16) uint8 as stored: one per centred view, whole frame first
    pts: np.ndarray
    des: np.ndarray

    @property
    def thumbs(self) -> np.ndarray:
        """The thumbnails as float32, made on use: a Side kept them as float32 before, 3 KB a row held
        for every row the barrier confirms against (uint8: 768 B)."""
        return self.thumbs8.astype(np.float32)

    @classmethod
    def of(cls, width: int, height: int, thumb: bytes | None, orb: bytes | None) -> "Side":
        m = float(max(width, height, 1))
        k = len(VIEWS) * THUMB * THUMB
        t = np.frombuffer(thumb, np.uint8).reshape(len(VIEWS), THUMB, THUMB) if thumb is not None and len(thumb) == k \
            else np.zeros((len(VIEWS), THUMB, THUMB), np.uint8)
        pts, des = unpack(orb)
        return cls(max(width, 1) / m, max(height, 1) / m, t, pts, des)


@dataclass(frozen=True)
class Match:
    ok: bool
    how: str  # "orb" | "views" | ""
    inliers: int
    scale: float
    diff: float  # thumbnail difference after alignment, in standard deviations
    desc: float = 0.0  # ORB: mean Hamming distance (of 256 bits) between the inliers' descriptors

    def text(self) -> str:
        if self.how == "orb":
            return (f"{self.inliers} ORB inliers ({self.desc:.0f} of 256 bits apart), scale {self.scale:.2f}, aligned "
                    f"thumbnails {self.diff:.2f} std apart")
        return f"matching centred views at scale {self.scale:.2f}, aligned thumbnails {self.diff:.2f} std apart"


def _sample(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 16x16 thumbnail at thumbnail coordinates (pixel centres at i + 0.5)."""
    x = np.clip(x - 0.5, 0, THUMB - 1)
    y = np.clip(y - 0.5, 0, THUMB - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, THUMB - 1), np.minimum(y0 + 1, THUMB - 1)
    fx, fy = x - x0, y - y0
    return (t[y0, x0] * (1 - fx) * (1 - fy) + t[y0, x1] * fx * (1 - fy) + t[y1, x0] * (1 - fx) * fy
            + t[y1, x1] * fx * fy)


def aligned_diff(a: Side, b: Side, m: np.ndarray) -> float:
    """Mean |difference| (std units) of the thumbnails where b's pixels fall inside a under the
    similarity m (a -> b, 2x3, frame units); inf when under 3/16 of b overlaps a, or b is flat."""
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    u, v = np.meshgrid(np.arange(THUMB) + 0.5, np.arange(THUMB) + 0.5)
    xb, yb = u / THUMB * b.w, v / THUMB * b.h
    ua = (inv[0, 0] * xb + inv[0, 1] * yb + inv[0, 2]) / a.w * THUMB
    va = (inv[1, 0] * xb + inv[1, 1] * yb + inv[1, 2]) / a.h * THUMB
    inside = (ua >= 0.25) & (ua <= THUMB - 0.25) & (va >= 0.25) & (va <= THUMB - 0.25)
    if inside.sum() < 3 * THUMB:
        return float("inf")
    return _zdiff(_sample(a.thumbs[0], ua[inside], va[inside]), b.thumbs[0][inside])


def _zdiff(q: np.ndarray, p: np.ndarray) -> float:
    """Mean |difference| of two samples each z-normalised; inf when either is flat (no structure
    to compare: two solid colours are not copies)."""
    if p.std() < 3 or q.std() < 3:
        return float("inf")
    q, p = (q - q.mean()) / q.std(), (p - p.mean()) / p.std()
    return float(np.abs(q - p).mean())


def view_transform(a: Side, b: Side, va: int, vb: int) -> np.ndarray:
    """a -> b when the centred view VIEWS[va] of a is the centred view VIEWS[vb] of b."""
    s = 0.5 * (VIEWS[vb] * b.w / (VIEWS[va] * a.w) + VIEWS[vb] * b.h / (VIEWS[va] * a.h))
    return np.array([[s, 0, b.w / 2 - s * a.w / 2], [0, s, b.h / 2 - s * a.h / 2]])


@dataclass(frozen=True)
class Thresholds:
    min_keypoints: int = 8
    min_inliers: int = 6
    min_ratio: float = 0.4
    max_diff_same_scale: float = 0.12
    max_diff_scaled: float = 0.25
    max_desc_same_scale: float = 12.0
    max_view_diff: float = 0.07


def view_diffs(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """`_zdiff` of many thumbnail pairs at once: ta, tb (k, 256) float32 -> (k,) float64."""
    sa, sb = ta.std(axis=1), tb.std(axis=1)
    flat = (sa < 3) | (sb < 3)
    za = (ta - ta.mean(axis=1, keepdims=True)) / np.maximum(sa, 1e-6)[:, None]
    zb = (tb - tb.mean(axis=1, keepdims=True)) / np.maximum(sb, 1e-6)[:, None]
    d = np.abs(za - zb).mean(axis=1).astype(np.float64)
    d[flat] = np.inf
    return d


def confirm(a: Side, b: Side, va: int, vb: int, th: Thresholds, view_diff: float | None = None) -> Match:
    """Is b a copy of a? (va, vb): the views whose hashes matched (indices into VIEWS);
    `view_diff`: their thumbnails' difference when already computed (`view_diffs`)."""
    scale = float(view_transform(a, b, va, vb)[0, 0])
    d = _zdiff(a.thumbs[va].ravel(), b.thumbs[vb].ravel()) if view_diff is None else view_diff  # same framing
    best = Match(d <= th.max_view_diff, "views", 0, scale, d)
    if best.ok or len(a.des) < th.min_keypoints or len(b.des) < th.min_keypoints:
        return best
    import cv2

    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a.des, b.des)
    matches = [x for x in matches if x.distance <= 64]
    if len(matches) < th.min_inliers:
        return best
    src = a.pts[[x.queryIdx for x in matches]]
    dst = b.pts[[x.trainIdx for x in matches]]
    m, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=0.012, maxIters=500,
                                         confidence=0.99)
    if m is None:
        return best
    n_in = int(inl.sum())
    scale, rot = float(np.hypot(m[0, 0], m[1, 0])), float(np.arctan2(m[1, 0], m[0, 0]))
    if n_in < th.min_inliers or not 0.5 <= scale <= 2.0 or abs(rot) > 0.05:
        return best
    # keypoints that could match at all: those landing inside the other frame
    pa = a.pts @ m[:, :2].T + m[:, 2]
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    pb = b.pts @ inv[:, :2].T + inv[:, 2]
    na = int(((pa[:, 0] >= 0) & (pa[:, 0] <= b.w) & (pa[:, 1] >= 0) & (pa[:, 1] <= b.h)).sum())
    nb = int(((pb[:, 0] >= 0) & (pb[:, 0] <= a.w) & (pb[:, 1] >= 0) & (pb[:, 1] <= a.h)).sum())
    if n_in < th.min_ratio * max(1, min(na, nb)):
        return best
    d = aligned_diff(a, b, m)
    desc = float(np.mean([x.distance for x, ok in zip(matches, inl.ravel()) if ok]))
    same = abs(scale - 1) < 0.03
    ok = d <= (th.max_diff_same_scale if same else th.max_diff_scaled) and (not same or desc <= th.max_desc_same_scale)
    return Match(True, "orb", n_in, scale, d, desc) if ok else best
