"""entropy (where content is) and stage-4 image_quality (blocking, blur, noise) on real photos and
generated distortions: exact reasons, and clean non-photographic content kept."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw, ImageFilter

from flywheel.filters.decode import decode
from flywheel.filters.entropy import Entropy
from flywheel.filters.image_quality import ImageQuality
from flywheel.filters.recipe import load


def work_of(im: Image.Image, size: int, fmt: str = "PNG", **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    d = decode(b.getvalue(), fmt.lower(), size, 10**9)
    assert d.error is None
    return d.work


def verdicts(op, works) -> tuple[list[list[str]], dict]:
    s = op.score(pa.table({"x": list(range(len(works)))}), works)
    t = pa.table({k: pa.array(v, op.column_type(k)) for k, v in s.items()})
    return [[f.rule for f in row] for row in op.reject(t)], s


def stage_params(recipe: str, op: str) -> dict:
    """The thresholds a built-in recipe gives the operator (what a user's run applies)."""
    return load(recipe).step(op).params


def photos_512() -> dict[str, Image.Image]:
    """Real photos (scikit-image samples) at a 512 px short side, as stage 4 sees them."""
    from skimage import data

    out = {}
    for n in ("astronaut", "coffee", "rocket", "chelsea"):
        im = Image.fromarray(getattr(data, n)())
        f = 512 / min(im.size)
        out[n] = im.resize((round(im.size[0] * f), round(im.size[1] * f)), Image.LANCZOS)
    return out


def vector_illustration() -> Image.Image:
    """Flat colours and sharp edges, as a vector wallpaper or icon set is drawn."""
    im = Image.new("RGB", (1024, 640), (246, 242, 232))
    d = ImageDraw.Draw(im)
    d.rectangle([80, 80, 420, 560], fill=(230, 80, 60))
    d.ellipse([480, 120, 820, 460], fill=(40, 110, 190))
    d.polygon([(600, 600), (980, 600), (790, 300)], fill=(250, 190, 40))
    d.line([(0, 620), (1024, 500)], fill=(30, 30, 30), width=6)
    return im


def gradient_wallpaper(size=(1280, 800)) -> Image.Image:
    y = np.linspace(0, 1, size[1])[:, None]
    x = np.linspace(0, 1, size[0])[None, :]
    rgb = np.stack(np.broadcast_arrays(30 + 90 * y + 40 * x, 60 + 100 * y, 140 + 80 * y - 30 * x), -1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_stage4_quality_rejects_blocking_blur_and_noise_in_real_photos_with_exact_reasons():
    op = ImageQuality(stage_params("stage4", "image_quality"))
    rng = np.random.default_rng(0)
    cases: dict[str, tuple] = {}
    for name, im in photos_512().items():
        rgb = np.asarray(im).astype(np.float32)
        cases[f"{name} clean"] = (work_of(im, 512), [])
        cases[f"{name} jpeg q8"] = (work_of(im, 512, "JPEG", quality=8), ["blocky"])
        cases[f"{name} blur 3"] = (work_of(im.filter(ImageFilter.GaussianBlur(3)), 512), ["blurry"])
        noisy = np.clip(rgb + rng.normal(0, 30, rgb.shape), 0, 255).astype(np.uint8)
        cases[f"{name} noise 30"] = (work_of(Image.fromarray(noisy), 512), ["noisy"])
    cases["vector illustration"] = (work_of(vector_illustration(), 512), [])
    cases["gradient wallpaper"] = (work_of(gradient_wallpaper(), 512), [])
    got, s = verdicts(op, [w for w, _ in cases.values()])
    assert dict(zip(cases, got)) == {k: want for k, (_, want) in cases.items()}
    names = list(cases)
    # flat content is judged on the edges it has: the illustration's are sharp, the gradient has none
    assert s["image_quality__sharpness"][names.index("vector illustration")] > 1.5 * op.params.min_sharpness
    assert s["image_quality__sharpness"][names.index("gradient wallpaper")] is None
    # BRISQUE is off unless asked for: no model needed, no column filled
    assert op.required_models() == () and set(s["image_quality__brisque"]) == {None}


def test_quality_details_name_the_evidence_and_blocking_skips_resized_copies():
    op = ImageQuality()
    t = pa.table({"image_quality__blocking": [2.5, None], "image_quality__sharpness": [1.1, 2.0],
                  "image_quality__noise": [20.0, 1.0], "image_quality__brisque": pa.array([90.0, None], pa.float64())})
    fails = op.reject(t)
    assert [f.rule for f in fails[0]] == ["blocky", "blurry", "noisy"] and fails[1] == []
    assert "image_quality__blocking=2.5 > max_blocking=1.4" in fails[0][0].detail
    assert [f.rule for f in ImageQuality({"brisque": True}).reject(t)[0]][-1] == "low_quality"
    from skimage import data

    big = Image.fromarray(data.astronaut()).resize((1024, 1024))
    w = work_of(big, 512, "JPEG", quality=8)  # reduced to 512: the 8x8 grid is gone
    assert op.score(pa.table({"x": [0]}), [w])["image_quality__blocking"] == [None]


def _page_with_marks(n: int = 3, seed: int = 0) -> Image.Image:
    im = Image.new("RGB", (1700, 2200), "white")
    d = ImageDraw.Draw(im)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x, y = (int(v) for v in rng.integers(150, 1550, 2))
        d.ellipse([x, y, x + 18, y + 18], fill="black")
    return im


def _minimal_wallpaper() -> Image.Image:
    """A dark gradient with one small subject (about 10% of the width), like a distribution's
    minimal wallpaper with its mascot."""
    im = gradient_wallpaper((1920, 1080))
    d = ImageDraw.Draw(im)
    cx, cy = 1250, 480
    d.polygon([(cx, cy), (cx + 120, cy - 60), (cx + 70, cy + 10), (cx + 150, cy + 70), (cx + 20, cy + 40)],
              fill=(240, 200, 60))
    d.ellipse([cx - 40, cy - 30, cx + 20, cy + 30], fill=(250, 230, 120))
    return im


def _small_logo() -> Image.Image:
    im = Image.new("RGB", (1920, 1080), (52, 58, 64))
    ImageDraw.Draw(im).ellipse([1800, 980, 1840, 1020], fill=(200, 200, 210))  # a 2% corner badge
    return im


def test_entropy_judges_where_content_is():
    op = Entropy(stage_params("stage1", "entropy"))
    cases = {
        "page with 3 marks": (_page_with_marks(), ["near_blank"]),
        "uniform background with a small logo": (_small_logo(), ["near_blank"]),
        "minimal wallpaper with one subject": (_minimal_wallpaper(), []),
        "vector illustration": (vector_illustration(), []),
    }
    got, s = verdicts(op, [work_of(im, 256) for im, _ in cases.values()])
    assert dict(zip(cases, got)) == {k: want for k, (_, want) in cases.items()}
    extent = dict(zip(cases, s["entropy__extent"]))
    assert extent["page with 3 marks"] < 0.1 < 0.15 < extent["minimal wallpaper with one subject"]


@pytest.mark.parametrize("n", [1, 3])
def test_specks_stay_near_blank_wherever_they_fall(n):
    # (six specks: when two fall within ~1/8 of the short side of each other they join into one
    # region of ~0.19 and the page is kept; docs/threshold-cards/entropy.md, limits)
    op = Entropy()
    works = [work_of(_page_with_marks(n, seed), 256) for seed in range(4)]
    got, _ = verdicts(op, works)
    assert got == [["near_blank"]] * 4
