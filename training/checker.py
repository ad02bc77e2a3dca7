"""A programmatic checker for `shapes` scenes, GenEval-style: one boolean per asked attribute.

- colour and position come from pixels: the background is the median of the border, the
  foreground is what differs from it; the colour is the palette colour most foreground pixels
  are nearest to, the position is the foreground centroid read with the generator's own rule
  (`synthetic.position_of`).
- shape and count come from a small CNN trained on the generator's ground truth: a shape
  classifier and a density head whose sum is the count (trained on 0-5 objects, so an empty or
  crowded image is a wrong count, not a forced guess). Its input is the foreground
  map (distance to the background), so it is colour-blind and the two halves stay independent.
  Training the default config (3000 images, 192 steps) takes about 215 s of CPU time (measured;
  deterministic in the seed: a retrain reproduces the shipped final loss exactly); the
  weights trained with the default config ship as `checker_shapes.pt` (~470 KB) and are used when
  their key (generator version, checker version, training config) matches, else the checker
  trains once and caches under `FLYWHEEL_HOME/cache/checker/`. After changing the generator's
  rendering, bump `GENERATOR_VERSION`, then `Checker.load()` retrains; copy the cached file over `checker_shapes.pt`.

Text scenes (`synthetic.TextSpec`) score `color` from pixels and `text` by reading the word back with
Tesseract where its language pack is installed (None elsewhere).

`score(images, specs)` is the evaluation and the RL reward (report section 4.2, image-text
alignment); `ground_truth_accuracy()` says how far the checker itself can be trusted.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageFilter

from flywheel.training import synthetic as syn

CHECKER_VERSION = "checker/2"
INPUT = 64  # the classifier's input side; images of any size are resized to it
FG_DIST = 60.0  # RGB distance from the background above which a pixel is foreground
INK_SCALE = 150.0
ATTRIBUTES = ("color", "shape", "count", "position")
SHIPPED = Path(__file__).with_name("checker_shapes.pt")


@dataclass
class TrainConfig:
    n_images: int = 3000
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    threads: int = 2

    def key(self) -> str:
        s = json.dumps({"gen": syn.GENERATOR_VERSION, "checker": CHECKER_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(s.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- pixels


def to_rgb_array(img) -> np.ndarray:
    """PIL image, HxWx3/4 uint8 array or float array in [0,1] -> HxWx3 uint8 at INPUT x INPUT."""
    if not isinstance(img, Image.Image):
        a = np.asarray(img)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(a)
    if img.mode == "RGBA":  # composite over white, as the generator's background
        bg = Image.new("RGB", img.size, syn.BACKGROUND)
        bg.paste(img, mask=img.split()[3])
        img = bg
    img = img.convert("RGB")
    if img.size != (INPUT, INPUT):
        img = img.resize((INPUT, INPUT), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def ink(a: np.ndarray) -> np.ndarray:
    """Distance of each pixel to the background colour (median of the border), HxW float."""
    f = a.astype(np.float32)
    border = np.concatenate([f[0], f[-1], f[:, 0], f[:, -1]])
    bg = np.median(border, axis=0)
    return np.linalg.norm(f - bg, axis=-1)


_PALETTE = np.array(list(syn.COLORS.values()), dtype=np.float32)
_NAMES = list(syn.COLORS)


def pixel_attributes(a: np.ndarray) -> dict:
    """Colour and position from pixels; None where there is no foreground."""
    d = ink(a)
    fg = d > FG_DIST
    if fg.sum() < 3:
        return {"color": None, "position": None, "fg_fraction": float(fg.mean())}
    core = d > max(FG_DIST, 0.6 * np.percentile(d[fg], 90))  # drop anti-aliased rims, which blend with the background
    px = a[core].astype(np.float32)
    nearest = np.argmin(((px[:, None, :] - _PALETTE[None]) ** 2).sum(-1), axis=1)
    color = _NAMES[int(np.bincount(nearest, minlength=len(_NAMES)).argmax())]
    ys, xs = np.nonzero(fg)
    w = d[fg]
    h, wd = d.shape
    cx = float((xs + 0.5) @ w / w.sum() / wd)
    cy = float((ys + 0.5) @ w / w.sum() / h)
    return {"color": color, "position": syn.position_of(cx, cy), "centroid": (cx, cy), "fg_fraction": float(fg.mean())}


# ---------------------------------------------------------------- the classifier


def build_net():
    """A trunk at stride 4, then two heads: a density map whose sum is the count (counting by
    summing per-location densities is invariant to where objects fall on the grid and how big
    they are, which an average-pooled classifier is not), and a stride-8 shape classifier."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def block(i, o, k=3, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(block(1, 24, k=5, stride=2), block(24, 48, stride=2), block(48, 48))  # (B, 48, 16, 16)
            self.density = nn.Conv2d(48, 1, 1)
            nn.init.constant_(self.density.bias, -5.0)  # start near zero objects, not 256 * softplus(0)
            self.shape = nn.Sequential(block(48, 64, stride=2), block(64, 96),  # (B, 96, 8, 8)
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, len(syn.SHAPES)))

        def forward(self, x):  # x: (B, 1, 64, 64) foreground map
            h = self.trunk(x)
            count = F.softplus(self.density(h)).sum(dim=(1, 2, 3))  # (B,) expected number of objects
            return self.shape(h), count  # (B, n_shapes), (B,)

    torch.manual_seed(0)
    return Net()


def _augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """What generated images do to the ground truth: blur, noise, a tinted background, smaller sizes."""
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    a = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.3:  # tint the background but keep the shapes
        tint = rng.uniform(200, 255, 3)
        white = (a > 245).all(-1, keepdims=True)
        a = np.where(white, tint, a)
    if rng.random() < 0.5:
        a = a + rng.normal(0, rng.uniform(2, 12), a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ink maps (N,1,64,64) float32, shape labels, count labels) from the generator."""
    rng = np.random.default_rng([seed, 7])
    x = np.zeros((n, 1, INPUT, INPUT), np.float32)
    shapes = np.zeros(n, np.int64)
    counts = np.zeros(n, np.int64)
    for i in range(n):
        count = int(rng.integers(0, syn.MAX_COUNT + 1))
        spec = syn.ShapeSpec(syn.SHAPES[rng.integers(len(syn.SHAPES))], _NAMES[rng.integers(len(_NAMES))], count)
        if count == 1 and rng.random() < 0.5:
            spec = syn.ShapeSpec(spec.shape, spec.color, 1, syn.POSITIONS[rng.integers(len(syn.POSITIONS))])
        size = int(rng.choice([64, 96, 128]))
        img, _ = syn.render_shapes(spec, size, rng)
        x[i, 0] = ink(to_rgb_array(_augment(img, rng))) / INK_SCALE
        shapes[i], counts[i] = syn.SHAPES.index(spec.shape), count
    return np.clip(x, 0, 1.5), shapes, counts


def train(cfg: TrainConfig | None = None, progress: bool = False):
    """Train the shape/count classifier on fresh generator output; returns (net, stats)."""
    import torch
    import torch.nn.functional as F

    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        t0 = time.time()
        x, s, c = training_data(cfg.n_images, cfg.seed)
        t_data = time.time() - t0
        X, S, C = torch.from_numpy(x), torch.from_numpy(s), torch.from_numpy(c)
        net = build_net()
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
        steps = cfg.epochs * ((len(X) + cfg.batch_size - 1) // cfg.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
        g = torch.Generator().manual_seed(cfg.seed)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, desc="checker", unit="step")
        net.train()
        first_loss = None
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(X), generator=g)
            for b in range(0, len(X), cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                xb = X[idx]
                if torch.rand((), generator=g) < 0.5:  # the scenes are symmetric under flips
                    xb = xb.flip(-1)
                shape_logits, count = net(xb)
                has = C[idx] > 0  # no shape to name in an empty image
                loss = F.smooth_l1_loss(count, C[idx].float())
                if has.any():
                    loss = loss + F.cross_entropy(shape_logits[has], S[idx][has])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                first_loss = loss.item() if first_loss is None else first_loss
                if bar:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        if bar:
            bar.close()
        net.eval()
        return net, {"train_seconds": time.time() - t0, "data_seconds": t_data, "first_loss": first_loss, "final_loss": float(loss.item())}
    finally:
        torch.set_num_threads(prev_threads)


# ---------------------------------------------------------------- the checker


class Checker:
    def __init__(self, net, meta: dict | None = None):
        self.net = net
        self.meta = meta or {}

    @classmethod
    def load(cls, path: str | Path | None = None, cfg: TrainConfig | None = None, progress: bool = False) -> "Checker":
        """From `path`, else the cache (training once and caching if it is not there)."""
        import torch

        from flywheel import config

        cfg = cfg or TrainConfig()
        if path is None and SHIPPED.exists():  # trained with the default config and shipped (~400 KB)
            blob = torch.load(SHIPPED, map_location="cpu", weights_only=True)
            if json.loads(blob["meta"]).get("key") == cfg.key():
                return cls._from_blob(blob)
        path = Path(path) if path else config.cache_dir("checker") / f"shapes-{cfg.key()}.pt"
        if path.exists():
            return cls._from_blob(torch.load(path, map_location="cpu", weights_only=True))
        net, stats = train(cfg, progress=progress)
        meta = {"key": cfg.key(), "config": asdict(cfg), "generator": syn.GENERATOR_VERSION, "checker": CHECKER_VERSION, **stats}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": net.state_dict(), "meta": json.dumps(meta)}, tmp)
        tmp.replace(path)
        return cls(net, meta)

    @classmethod
    def _from_blob(cls, blob: dict) -> "Checker":
        net = build_net()
        net.load_state_dict(blob["state_dict"])
        net.eval()
        return cls(net, json.loads(blob["meta"]))

    def save(self, path: str | Path) -> None:
        import torch

        torch.save({"state_dict": self.net.state_dict(), "meta": json.dumps(self.meta)}, path)

    def predict(self, images: Sequence, batch_size: int = 256) -> list[dict]:
        """Per image: color, position (pixels), shape, count (classifier) and their probabilities."""
        import torch

        arrays = [to_rgb_array(im) for im in images]
        out: list[dict] = [pixel_attributes(a) for a in arrays]
        if not arrays:
            return out
        x = np.stack([ink(a) / INK_SCALE for a in arrays])[:, None].clip(0, 1.5).astype(np.float32)
        with torch.no_grad():
            for b in range(0, len(x), batch_size):
                shape_logits, count = self.net(torch.from_numpy(x[b : b + batch_size]))
                ps = shape_logits.softmax(-1).numpy()
                cs = count.numpy()
                for k in range(len(ps)):
                    o = out[b + k]
                    o["count"] = int(np.clip(np.rint(cs[k]), 0, syn.MAX_COUNT))
                    o["count_raw"] = float(cs[k])
                    o["shape"] = syn.SHAPES[int(ps[k].argmax())] if o["count"] > 0 else None
                    o["shape_p"] = float(ps[k].max())
        return out

    def score(self, images: Sequence, specs: Sequence) -> list[dict[str, bool | None]]:
        """One dict per image: True/False per attribute the spec asks for, None where it asks
        nothing (`position` of an unplaced spec); `all` is the prompt-level GenEval verdict."""
        return self.score_with_predictions(images, specs)[0]

    def score_with_predictions(self, images: Sequence, specs: Sequence) -> tuple[list[dict], list[dict]]:
        preds = self.predict(images)
        out = []
        for img, p, spec in zip(images, preds, specs, strict=True):
            if isinstance(spec, dict):
                spec = syn.spec_from_dict(spec)
            if isinstance(spec, syn.TextSpec):
                out.append(_score_text(p, spec, img))
                continue
            r: dict[str, bool | None] = {
                "color": p["color"] == spec.color,
                "shape": p["shape"] == spec.shape,
                "count": p["count"] == spec.count,
                "position": None if spec.position is None else p["position"] == spec.position,
            }
            r["all"] = all(v for v in r.values() if v is not None)
            out.append(r)
        return out, preds


# Tesseract language packs per generator language; scripts without an installed pack score text as None.
TESSERACT_LANGS = {"en": "eng", "es": "eng", "ru": "rus", "el": "ell", "ar": "ara", "hi": "hin", "th": "tha", "ko": "kor",
                   "zh": "chi_sim", "ja": "jpn", "he": "heb"}


@lru_cache(maxsize=1)
def _tesseract_langs() -> frozenset[str]:
    import shutil
    import subprocess

    if shutil.which("tesseract") is None:
        return frozenset()
    r = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=30)
    return frozenset(line.strip() for line in (r.stdout + r.stderr).splitlines()[1:] if line.strip())


def read_text(img, lang: str) -> str | None:
    """Tesseract's reading of one line of text, or None when no language pack for `lang` is installed."""
    import subprocess

    tl = TESSERACT_LANGS.get(lang)
    if tl is None or tl not in _tesseract_langs():
        return None
    im = img if isinstance(img, Image.Image) else Image.fromarray(to_rgb_array(img))
    im = im.convert("L")
    if im.height < 256:  # tesseract wants glyphs tens of pixels tall
        im = im.resize((im.width * 256 // im.height, 256), Image.Resampling.BICUBIC)
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    r = subprocess.run(["tesseract", "stdin", "stdout", "-l", tl, "--psm", "7"], input=buf.getvalue(), capture_output=True, timeout=60)
    return r.stdout.decode("utf-8", "replace")


def _score_text(pred: dict, spec, img) -> dict[str, bool | None]:
    """A text scene: colour from pixels; `text` is whether OCR reads the word back (None without a pack)."""
    got = read_text(img, spec.lang)
    norm = lambda s: "".join(s.casefold().split())  # noqa: E731
    r: dict[str, bool | None] = {"color": pred["color"] == spec.color, "text": None if got is None else norm(spec.word) in norm(got)}
    r["all"] = all(v for v in r.values() if v is not None)
    return r


def ground_truth_accuracy(checker: Checker, n: int = 600, seed: int = 12345, size: int = 64) -> dict[str, float]:
    """The checker's accuracy per attribute on fresh generator images (both splits, unseen seed)."""
    rows = syn.sample_prompts(n // 2, "train", seed=seed) + syn.sample_prompts(n - n // 2, "eval", seed=seed + 1)
    rng = np.random.default_rng([seed, 3])
    imgs = [syn.render(spec, size, rng)[0] for _, spec in rows]
    return accuracy(checker.score(imgs, [s for _, s in rows]))


def accuracy(scores: list[dict[str, bool | None]]) -> dict[str, float]:
    acc = {}
    for a in (*ATTRIBUTES, "all"):
        vals = [s[a] for s in scores if s.get(a) is not None]
        if vals:
            acc[a] = float(np.mean(vals))
    return acc
