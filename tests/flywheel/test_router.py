"""The router: each track reached by a realistic case, with its evidence stored.

- pre-training: the planted gap (no red triangles in the training data, some in the reserve);
- RL: a failure on a concept the training data covers (blue circles);
- prompt: a user writes "crimson", a word the training captions never use; the rule-based
  enhancer maps it to the caption vocabulary and the model, given the rewrite, passes.
The "model" evaluated in the prompt-track case is a nearest-caption generator over the training
set (it answers a prompt with the image of the training caption sharing most words, ties drawn
at random): a real model that knows exactly its training vocabulary, scored by the checker's
pixel colour test.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from flywheel.catalog import Catalog
from flywheel.datasets import open_dataset
from flywheel.loop import queue as rq
from flywheel.loop import router as rt
from flywheel.loop import signals as sg

sys.path.insert(0, str(Path(__file__).parent))
from _loop_world import build, register  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("loop-world")))


@pytest.fixture()
def setup(world):
    cat = Catalog()
    refs = register(cat, world)
    cfg = rt.RouterConfig(trained_on=[refs["train"]], reserve=[refs["reserve"]], k_retrieve=12, k_reserve=3)
    return cat, refs, cfg


class NearestCaptionModel:
    def __init__(self, ds, seed=0):
        t = ds.to_table(columns=["caption", "image"])
        self.caps = [set(rt._words(c)) for c in t.column("caption").to_pylist()]
        self.images = t.column("image").to_pylist()
        self.rng = np.random.default_rng(seed)

    def __call__(self, prompts, expected):
        from PIL import Image

        from flywheel.training import checker

        out = []
        for p, e in zip(prompts, expected):
            w = set(rt._words(p))
            score = np.array([len(w & c) for c in self.caps])
            best = np.flatnonzero(score == score.max())
            img = Image.open(io.BytesIO(self.images[int(self.rng.choice(best))]))
            out.append({"color": checker.pixel_attributes(checker.to_rgb_array(img))["color"] == e["color"]})
        return out


def _route(cat, cfg, **kw):
    s = rt.route(cat, cfg, **kw)
    ev = {r["signal_id"]: (r["track"], json.loads(r["evidence_json"])) for r in cat.execute("SELECT * FROM routes")}
    return s, ev


def test_gap_goes_to_pretraining_and_covered_concept_to_rl(setup):
    cat, refs, cfg = setup
    sg.add(cat, [
        {"kind": "eval", "id": "gap-1", "prompt": "a picture of two red triangles", "results": {"color": True, "shape": False},
         "concept": "red triangle", "expected": {"color": "red", "shape": "triangle", "count": 2}},
        {"kind": "eval", "id": "cov-1", "prompt": "three blue circles on a white background", "results": {"count": False},
         "concept": "blue circle", "expected": {"color": "blue", "shape": "circle", "count": 3}},
    ])
    s, ev = _route(cat, cfg)
    assert s["tracks"] == {"prompt": 0, "pretrain": 1, "rl": 1}
    track, e = ev["gap-1"]
    assert track == "pretrain"
    d = e["density"]
    assert d["test"] == "knn_radius_ratio" and d["radius_ratio"] >= cfg.radius_ratio and d["query"] == "red triangle"
    assert "scarce" in e["reason"] and e["retrieval"]["candidates"] == 12
    assert ev["cov-1"][0] == "rl" and ev["cov-1"][1]["density"]["radius_ratio"] < cfg.radius_ratio
    # candidates: queued for review, tagged with the signal, from the reserve, never trained on
    items = rq.list_items(cat, queue="pretrain", limit=100)
    assert len(items) == 12 and {i["signal_id"] for i in items} == {"gap-1"}
    train_ids = set(open_dataset(refs["train"], catalog=cat).to_table(columns=["id"]).column("id").to_pylist())
    assert all(i["dataset"] == refs["reserve"] and i["sample_id"] not in train_ids for i in items)
    red_tri = sum("red triangle" in i["payload"]["text"] for i in items)
    assert red_tri >= 6, [i["payload"]["text"] for i in items]  # retrieval finds the missing concept
    # what the reviewer's card shows: the evidence that sent the item here and the nearest
    # training neighbours (id, source, similarity), ordered, from the training index
    for i in items:
        evd, neigh = i["payload"]["evidence"], i["payload"]["neighbours"]
        assert evd["attribute"] == "shape" and "scarce" not in evd["density"] and "NN radius" in evd["density"]
        assert evd["radius_ratio"] == d["radius_ratio"] and evd["similarity"] == i["payload"]["score"]
        assert len(neigh) == cfg.k_neighbours and all(n["id"] in train_ids and n["dataset"] == refs["train"] for n in neigh)
        sims = [n["similarity"] for n in neigh]
        assert sims == sorted(sims, reverse=True) and all(0 < x <= 1.0001 for x in sims) and neigh[0]["source"]
        assert i["sample"]["kind"] == "dataset" and i["sample"]["id"] == i["sample_id"]
    # the RL prompt set is a dataset in the contract, with the failure attribute and evidence
    rl = open_dataset(s["datasets"]["rl"], catalog=cat).to_table().to_pylist()
    assert len(rl) == 1 and rl[0]["caption"] == "three blue circles on a white background"
    assert rl[0]["failure_attribute"] == "count" and json.loads(rl[0]["evidence"])["density"]["radius_ratio"] is not None
    assert {sg.get(cat, x)["status"] for x in ("gap-1", "cov-1")} == {"routed"}


def test_second_routing_excludes_queued_and_rejected(setup):
    cat, refs, cfg = setup
    gap = {"kind": "eval", "prompt": "a red triangle on the left", "results": {"shape": False}, "concept": "red triangle"}
    sg.add(cat, [{**gap, "id": "g1"}])
    rt.route(cat, cfg)
    first = rq.list_items(cat, queue="pretrain", limit=100)
    rq.bulk_decide(cat, [i["item_id"] for i in first], "rejected", "alice", "off_concept")
    sg.add(cat, [{**gap, "id": "g2"}])
    s, ev = _route(cat, cfg)
    second = rq.list_items(cat, queue="pretrain", signal_id="g2", limit=100)
    assert second and not ({i["sample_id"] for i in second} & {i["sample_id"] for i in first})
    assert ev["g2"][1]["retrieval"]["candidates"] == len(second)
    assert rt.route(cat, cfg)["signals"] == 0  # routed signals are not routed again


def test_prompt_track_when_the_rewrite_passes(setup):
    cat, refs, cfg = setup
    sg.add(cat, [{"kind": "feedback", "id": "fb-1", "prompt": "a crimson circle", "rating": 1,
                  "text": "the circle is not crimson", "failed_attribute": "color", "expected": {"color": "red"}}])
    model = NearestCaptionModel(open_dataset(refs["train"], catalog=cat))
    s, ev = _route(cat, cfg, evaluator=model)
    track, e = ev["fb-1"]
    pt = e["prompt_track"]
    assert pt["mode"].startswith("rule-based") and pt["substitutions"] == [{"from": "crimson", "to": "red", "by": "synonym rule"}]
    assert pt["rewrite"] == "a red circle"
    assert track == "prompt", e
    assert pt["rewrite_passes"] > pt["original_passes"]
    pairs = open_dataset(s["datasets"]["prompt"], catalog=cat).to_table().to_pylist()
    assert pairs[0]["prompt"] == "a crimson circle" and pairs[0]["rewrite"] == "a red circle"


def test_llm_enhancer_with_a_tiny_random_model(setup, tmp_path):
    """The LLM mode runs end to end through transformers; with random weights its rewrite is
    noise, and the evaluation, not the enhancer, decides the track."""
    from builders import tiny_qwen3vl_captioner

    cat, refs, cfg = setup
    d = tiny_qwen3vl_captioner(tmp_path / "tiny-vl")
    enh = rt.LLMEnhancer(d, max_new_tokens=8)
    text, info = enh.rewrite("a crimson circle")
    assert isinstance(text, str) and info["mode"].startswith("llm")
    sg.add(cat, [{"kind": "eval", "id": "l1", "prompt": "a crimson circle", "results": {"color": False},
                  "expected": {"color": "red"}}])
    cfg.enhancer = f"llm:{d}"
    model = NearestCaptionModel(open_dataset(refs["train"], catalog=cat))
    s, ev = _route(cat, cfg, evaluator=model)
    e = ev["l1"][1]
    assert e["prompt_track"]["mode"].startswith("llm") and "result" in e["prompt_track"]
    assert ev["l1"][0] in rt.TRACKS


def test_rl_prompt_set_versions_accumulate(tmp_path):
    cat = Catalog()
    cfg = rt.RouterConfig(trained_on=[], reserve=[], out_dir=str(tmp_path))
    row = {"prompt": "two blue circles", "signal_id": "s1", "concept": None, "failure_attribute": "count",
           "expected": "{}", "evidence": "{}"}
    v1 = rt._append_dataset(cat, rt.RL_DATASET, "rl_prompts", [row], cfg, "r1")
    v2 = rt._append_dataset(cat, rt.RL_DATASET, "rl_prompts", [row, {**row, "prompt": "a red star", "signal_id": "s2",
                                                                    "concept": "red star"}], cfg, "r2")
    assert (v1, v2) == ("rl_prompts@v1", "rl_prompts@v2")
    ds = open_dataset(v2, catalog=cat)
    t = ds.to_table().to_pylist()
    assert [r["caption"] for r in t] == ["two blue circles", "a red star"] and t[1]["concept"] == "red star"
    assert ds.manifest.parents == ["rl_prompts@v1"] and ds.manifest.kind == "rl_prompts"
