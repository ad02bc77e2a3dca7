"""The synthetic scene generator: the dataset contract, determinism, ground truth that matches the
pixels (checked with scikit-image's connected components, not with our checker), disjoint prompt
splits, a planted gap, and words rendered in several scripts that OCR can read back."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from flywheel.catalog import open_dataset
from flywheel.training import synthetic as syn


def _mask(img: Image.Image) -> np.ndarray:
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    return np.linalg.norm(a - np.array(syn.BACKGROUND, np.float32), axis=-1) > 60


def test_dataset_contract_and_determinism(tmp_path):
    m1 = syn.write_dataset(tmp_path / "a", n=40, seed=3, size=64)
    syn.write_dataset(tmp_path / "b", n=40, seed=3, size=64)
    syn.write_dataset(tmp_path / "c", n=40, seed=4, size=64)
    assert m1.rows == 40 and m1.kind == "synthetic" and m1.extra["seed"] == 3
    t1 = open_dataset(tmp_path / "a").to_table()
    t2 = open_dataset(tmp_path / "b").to_table()
    t3 = open_dataset(tmp_path / "c").to_table()
    assert t1.column("id").to_pylist() == t2.column("id").to_pylist()  # same seed, same bytes
    assert t1.column("id").to_pylist() != t3.column("id").to_pylist()
    for r in t1.to_pylist():
        assert r["id"] == hashlib.sha256(r["image"]).hexdigest()
        assert r["task"] == "t2i" and r["format"] == "PNG" and r["width"] == r["height"] == 64
        img = Image.open(io.BytesIO(r["image"]))
        assert img.size == (64, 64)
        meta = json.loads(r["meta"])
        spec = syn.spec_from_dict(meta["spec"])
        assert meta["split"] == "train" and syn.prompt_split(r["caption"]) == "train"
        assert spec.color in r["caption"] and (spec.shape in r["caption"] or syn.PLURAL[spec.shape] in r["caption"])
        assert all(r["captions"][t] for t in ("general", "text", "knowledge", "structured"))
        assert json.loads(r["captions"]["structured"])["entities"][0]["count"] == spec.count


def test_ground_truth_matches_pixels():
    """Counts from connected components, colours from pixel values, positions from centroids."""
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(0)
    for prompt, spec in syn.sample_prompts(120, seed=5):
        img, objects = syn.render(spec, 64, rng)
        mask = _mask(img)
        regions = regionprops(label(mask, connectivity=2))
        assert len(regions) == spec.count == len(objects), prompt
        a = np.asarray(img, np.float32)
        for reg in regions:
            cy, cx = reg.centroid
            px = a[reg.coords[:, 0], reg.coords[:, 1]]
            ink = np.linalg.norm(px - np.array(syn.BACKGROUND), axis=-1)
            core = px[ink >= np.percentile(ink, 75)]  # the rims blend with the background
            dist = np.linalg.norm(core - np.array(syn.COLORS[spec.color]), axis=-1)
            assert np.median(dist) < 30, (prompt, np.median(dist))  # the object's pixels are its colour
            if spec.position is not None:
                assert syn.position_of((cx + 0.5) / 64, (cy + 0.5) / 64) == spec.position, prompt


def test_shapes_are_distinct_silhouettes():
    """Every shape covers a different share of its bounding box, so the names mean something."""
    fills = {}
    for shape in syn.SHAPES:
        img, objs = syn.render_shapes(syn.ShapeSpec(shape, "black", 1, "center"), 128, np.random.default_rng(1))
        x0, y0, x1, y1 = (int(round(v)) for v in objs[0]["bbox"])
        fills[shape] = _mask(img)[y0:y1, x0:x1].mean()
    vals = sorted(fills.values())
    assert min(b - a for a, b in zip(vals, vals[1:])) > 0.03, fills


def test_prompt_splits_are_disjoint_and_balanced():
    train = syn.sample_prompts(3000, "train", seed=0)
    evalp = syn.sample_prompts(800, "eval", seed=1, unique=True)
    assert not {p for p, _ in train} & {p for p, _ in evalp}
    assert len({p for p, _ in evalp}) == 800
    colors = [s.color for _, s in evalp]
    shapes = [s.shape for _, s in evalp]
    assert min(colors.count(c) for c in syn.COLORS) >= 100
    assert min(shapes.count(s) for s in syn.SHAPES) >= 100
    assert {s.count for _, s in evalp} == set(syn.COUNTS)
    assert {s.position for _, s in evalp} == {None, *syn.POSITIONS}


def test_planted_gap(tmp_path):
    gap = syn.Gap("red", "star", keep=0.0)
    train = syn.sample_prompts(2000, "train", seed=0, gap=gap)
    evalp = syn.sample_prompts(2000, "eval", seed=0)
    hit = lambda rows: sum(1 for _, s in rows if s.color == "red" and s.shape == "star")  # noqa: E731
    assert hit(train) == 0
    assert hit(evalp) >= 2000 / 48 * 0.8
    assert syn.Gap.parse("red-star:0.02") == syn.Gap("red", "star", 0.02)
    with pytest.raises(ValueError, match="COLOR"):
        syn.Gap.parse("reddish-star")
    with pytest.raises(ValueError, match="shapes: circle"):
        syn.Gap.parse("red-blob")
    m = syn.write_dataset(tmp_path / "g", n=200, seed=1, gap=syn.Gap("blue", "circle", 0.0))
    assert m.extra["gap"] == {"color": "blue", "shape": "circle", "keep": 0.0}
    metas = [json.loads(x) for x in open_dataset(tmp_path / "g").to_table(columns=["meta"]).column("meta").to_pylist()]
    assert not [x for x in metas if x["spec"]["color"] == "blue" and x["spec"]["shape"] == "circle"]
    assert [x for x in metas if x["spec"]["color"] == "blue"]  # the other blue shapes are still there


def test_planted_colour_gap():
    """A colour alone is a gap too: no scene of that colour, of any shape, and the others even."""
    gap = syn.Gap.parse("purple:0")
    assert gap == syn.Gap("purple", None, 0.0) and gap.concept == "purple"
    train = syn.sample_prompts(1600, "train", seed=0, gap=gap, suite="mixed")
    colors = [s.color for _, s in train]
    assert "purple" not in colors
    assert min(colors.count(c) for c in syn.COLORS if c != "purple") >= 1600 / 8 * 0.6
    assert {s.shape for _, s in train if isinstance(s, syn.ShapeSpec)} == set(syn.SHAPES)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
@pytest.mark.parametrize("lang,tess", [("en", "eng"), ("ru", "rus"), ("el", "ell")])
def test_rendered_words_read_back_by_ocr(tmp_path, lang, tess):
    word = syn.SCRIPTS[lang][3][1]
    img, objs = syn.render_text(syn.TextSpec(word, lang, "black"), 256, np.random.default_rng(0))
    p = tmp_path / "w.png"
    img.save(p)
    out = subprocess.run(["tesseract", str(p), "stdout", "-l", tess, "--psm", "7"], capture_output=True, text=True, timeout=60)
    assert word in out.stdout.strip().lower(), out.stdout


def test_every_script_renders_ink():
    rng = np.random.default_rng(0)
    for lang, (script, _, _, words) in syn.SCRIPTS.items():
        img, objs = syn.render_text(syn.TextSpec(words[0], lang, "blue"), 96, rng)
        m = _mask(img)
        assert 0.01 < m.mean() < 0.5, (lang, m.mean())
        x0, y0, x1, y1 = objs[0]["bbox"]
        ys, xs = np.nonzero(m)
        assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2, lang


def test_mixed_suite_rows(tmp_path):
    syn.write_dataset(tmp_path / "m", n=60, seed=2, size=96, suite="mixed", text_fraction=0.5)
    t = open_dataset(tmp_path / "m").to_table(columns=["meta", "lang", "captions"]).to_pylist()
    suites = [json.loads(r["meta"])["spec"]["suite"] for r in t]
    assert 10 < suites.count("text") < 50
    for r in t:
        spec = json.loads(r["meta"])["spec"]
        if spec["suite"] == "text":
            assert r["lang"] == spec["lang"] and spec["word"] in r["captions"]["text"]


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from flywheel.catalog import Catalog
    from flywheel.cli import _register_all, app

    _register_all()
    r = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "12", "--gap", "red-star:0", "--name", "toy"])
    assert r.exit_code == 0, r.output
    assert "toy@v1" in r.output
    assert open_dataset("toy@v1").manifest.rows == 12
    assert Catalog().query("SELECT count(*) AS n FROM datasets WHERE name = 'toy'").column("n").to_pylist() == [1]
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s2"), "--gap", "mauve-blob"])
    assert bad.exit_code != 0
