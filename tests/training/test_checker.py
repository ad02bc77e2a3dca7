"""The checker: its accuracy on fresh ground-truth images (goal >= 95% per attribute), verdicts that
flip when the image and the prompt disagree, robustness to what generated images look like, and
the training path itself."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from flywheel.training import checker as ck
from flywheel.training import synthetic as syn


@pytest.fixture(scope="module")
def checker():
    import torch

    torch.set_num_threads(1)
    c = ck.Checker.load()  # the shipped weights for the current generator version; no training here
    assert c.meta["generator"] == syn.GENERATOR_VERSION, "checker_shapes.pt is stale: retrain it (see checker.py)"
    return c


def test_ground_truth_accuracy(checker):
    acc = ck.ground_truth_accuracy(checker, n=400, seed=777, size=64)
    for a in ck.ATTRIBUTES:
        assert acc[a] >= 0.95, acc
    acc128 = ck.ground_truth_accuracy(checker, n=200, seed=778, size=128)  # other sizes are resized to the input
    assert min(acc128[a] for a in ck.ATTRIBUTES) >= 0.93, acc128


def test_verdicts_follow_the_image_not_the_prompt(checker):
    rng = np.random.default_rng(0)
    img, _ = syn.render_shapes(syn.ShapeSpec("star", "blue", 1, "left"), 64, rng)
    right = checker.score([img], [syn.ShapeSpec("star", "blue", 1, "left")])[0]
    assert right == {"color": True, "shape": True, "count": True, "position": True, "all": True}
    wrong = checker.score([img] * 4, [syn.ShapeSpec("star", "red", 1, "left"), syn.ShapeSpec("circle", "blue", 1, "left"),
                                      syn.ShapeSpec("star", "blue", 2), syn.ShapeSpec("star", "blue", 1, "right")])
    assert [w["color"] for w in wrong] == [False, True, True, True]
    assert [w["shape"] for w in wrong] == [True, False, True, True]
    assert [w["count"] for w in wrong] == [True, True, False, True]
    assert [w["position"] for w in wrong] == [True, True, None, False]
    assert not any(w["all"] for w in wrong)
    blank = Image.new("RGB", (64, 64), "white")
    b = checker.score([blank], [{"suite": "shapes", "shape": "star", "color": "blue", "count": 1}])[0]
    assert b["color"] is False and b["shape"] is False and b["count"] is False


def test_robust_to_blur_noise_tint_and_formats(checker):
    rng = np.random.default_rng(5)
    specs, imgs = [], []
    for _, spec in syn.sample_prompts(96, "eval", seed=9):
        img, _ = syn.render_shapes(spec, 64, rng)
        a = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), np.float32)
        a = np.where((a > 245).all(-1, keepdims=True), np.array([235, 232, 225], np.float32), a)  # an off-white background
        a = np.clip(a + rng.normal(0, 6, a.shape), 0, 255)
        specs.append(spec)
        imgs.append(a / 255.0)  # float HxWx3 in [0, 1]
    acc = ck.accuracy(checker.score(imgs, specs))
    assert min(acc[a] for a in ck.ATTRIBUTES) >= 0.9, acc
    rgba = syn.render_shapes(specs[0], 64, rng)[0].convert("RGBA")  # the pipeline's 4-channel output
    assert checker.score([rgba], [specs[0]])[0]["all"]


@pytest.mark.skipif(not ck._tesseract_langs() >= {"eng", "rus"}, reason="tesseract eng/rus packs not installed")
def test_text_scenes_read_back(checker):
    rng = np.random.default_rng(2)
    en, _ = syn.render_text(syn.TextSpec("garden", "en", "blue"), 128, rng)
    ru, _ = syn.render_text(syn.TextSpec("книга", "ru", "red"), 128, rng)
    s = checker.score([en, ru, en, en], [syn.TextSpec("garden", "en", "blue"), syn.TextSpec("книга", "ru", "red"),
                                         syn.TextSpec("coffee", "en", "blue"), syn.TextSpec("garden", "en", "green")])
    assert s[0] == {"color": True, "text": True, "all": True}
    assert s[1]["text"] and s[1]["color"]
    assert s[2]["text"] is False and s[3]["color"] is False
    if "chi_sim" not in ck._tesseract_langs():  # no pack: not scored rather than failed
        assert checker.score([en], [syn.TextSpec("你好", "zh", "blue")])[0]["text"] is None


def test_training_path_trains_and_caches():
    """A 12-step run: the loss falls, the weights land in the cache keyed by the config and are reused."""
    import torch

    cfg = ck.TrainConfig(n_images=192, epochs=2, batch_size=32, threads=1)
    c = ck.Checker.load(cfg=cfg)  # not the shipped config: trains and caches
    assert c.meta["key"] == cfg.key() and c.meta["final_loss"] < c.meta["first_loss"]
    again = ck.Checker.load(cfg=cfg)  # from FLYWHEEL_HOME/cache/checker, not retrained
    assert again.meta == c.meta
    for p, q in zip(c.net.parameters(), again.net.parameters()):
        assert torch.equal(p, q)


@pytest.mark.slow
def test_short_training_beats_chance():
    """75 steps (a third of the default) already beat chance by far (measured: shape 0.90, count 0.80)."""
    cfg = ck.TrainConfig(n_images=800, epochs=3, batch_size=32, threads=1)
    c = ck.Checker.load(cfg=cfg)
    acc = ck.ground_truth_accuracy(c, n=120, seed=4)
    assert acc["shape"] > 0.6 and acc["count"] > 0.6, acc  # chance: 1/6 and 1/4
