"""FAISS indexes per dataset version: encoder recorded, type by size, incremental reuse, search,
and CLIP side embeddings from the CLIP operator (tiny random open_clip)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from flywheel.catalog import Catalog
from flywheel.loop import index as fx

sys.path.insert(0, str(Path(__file__).parent))
from _loop_world import build, register  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("loop-world")))


def test_index_records_encoder_and_finds_neighbours(world):
    ix = fx.load(world["train"])
    assert ix.meta["encoder"] == fx.MINILM and ix.meta["type"] == "flat" and ix.meta["rows"] == ix.faiss().ntotal
    assert ix.meta["dim"] == 384 and (ix.path.parent == world["train"].parent)
    hits = fx.search("four blue squares", [world["train"]], k=5)
    assert len(hits) == 5 and hits[0]["score"] >= hits[-1]["score"]
    assert all("square" in h["text"] for h in hits[:3]) and "blue" in hits[0]["text"]
    # the planted gap: no training caption has a red triangle
    assert not any("red triangle" in t for t in ix.keys.column("text").to_pylist())


def test_index_type_follows_size(world, tmp_path):
    assert fx.choose_type(10) == "flat" and fx.choose_type(10**6) == "hnsw" and fx.choose_type(10**8) == "ivf"
    v = fx.load(world["reserve"]).text_vectors
    for kind in ("flat", "hnsw", "ivf"):
        index = fx.make_faiss(v, kind)
        D, I = index.search(v[:20], 1)
        assert index.ntotal == len(v)
        assert (D[:, 0] > 0.99).mean() >= 0.9, kind  # each vector finds itself (approximate types too)


def test_emitted_version_reuses_parent_vectors(world, tmp_path):
    from flywheel.datasets import DatasetWriter, open_dataset

    cat = Catalog()
    refs = register(cat, world)
    train = open_dataset(refs["train"], catalog=cat)
    extra = open_dataset(refs["reserve"], catalog=cat).to_table().slice(0, 7)
    with DatasetWriter(tmp_path / "train-v2", name="train", kind="emitted", catalog=cat, parents=[refs["train"]]) as w:
        w.write(train.to_table())
        w.write(extra.select(train.schema().names))
    ix = fx.build("train@v2", catalog=cat)
    new_texts = len(set(extra.column("caption").to_pylist()) - set(train.to_table().column("caption").to_pylist()))
    assert ix.meta["encoded"] == new_texts and ix.meta["reused"] == train.manifest.rows + (7 - new_texts) - 0
    # reused vectors are the parent's
    parent = fx.load(world["train"])
    assert np.allclose(ix.text_vectors[:10], parent.text_vectors[:10], atol=1e-3)
    assert fx.build("train@v2", catalog=cat).meta["built_at"] == ix.meta["built_at"]  # current: not rebuilt


def test_clip_side_embeddings_give_image_search(tmp_path):
    from builders import tiny_clip

    from flywheel.models import clip, store
    from flywheel.training import synthetic as syn

    store.add("clip-tiny", tiny_clip(tmp_path / "tiny-clip"))
    run = tmp_path / "run"
    syn.write_dataset(run / "accepted", 24, seed=3, size=32, name="pool")
    import io

    from PIL import Image

    from flywheel.datasets import Dataset

    ds = Dataset(run / "accepted")
    t = ds.to_table(columns=["id", "image", "caption"])
    m = clip.shared(store.path("clip-tiny"))
    imgs = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in t.column("image").to_pylist()]
    ids = t.column("id").to_pylist()
    clip.write_side(run / "embeddings" / "clip", ids[:20], m.images(imgs[:20]), m.texts(t.column("caption").to_pylist()[:20]),
                    "clip-tiny", "tiny-random")
    ix = fx.build(run / "accepted")
    assert ix.meta["encoder"] == "clip:clip-tiny" and ix.meta["image"] and ix.has_image()
    assert ix.meta["encoded"] <= 4  # captions the operator embedded were reused, only the rest encoded
    q = Image.open(io.BytesIO(t.column("image")[5].as_py()))
    hits = fx.search(None, [run / "accepted"], k=3, image=q)
    assert hits[0]["id"] == ids[5] and hits[0]["by"] == "image" and hits[0]["score"] > 0.99
