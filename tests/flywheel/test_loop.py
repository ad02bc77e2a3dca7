"""The closed loop end to end. The fast test drives the demo's routing path without training:
signals posted to the real HTTP API, routed, reviewed by the scripted reviewer over HTTP, emitted
and explained. The slow test runs `flywheel loop --demo --small` (training included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from flywheel.catalog import Catalog
from flywheel.datasets import open_dataset
from flywheel.demos import loop as ld
from flywheel.loop import emit as em
from flywheel.loop import measure
from flywheel.loop import router as rt

sys.path.insert(0, str(Path(__file__).parent))
from _loop_world import build, register  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("loop-world")))


def test_names_concept():
    assert ld.names_concept("a picture of two red triangles", "red triangle")
    assert ld.names_concept("A red triangle on the left.", "red triangle")
    assert not ld.names_concept("three orange triangles", "red triangle")


def test_concept_prompts_are_eval_split_and_disjoint():
    from flywheel.training import synthetic as syn

    a = ld.concept_prompts([("red", "triangle"), ("blue", "circle")], 20, seed=1)
    assert len(a) == 40 and all(syn.prompt_split(p) == "eval" for p, _ in a)
    assert {f"{s.color} {s.shape}" for _, s in a} == {"red triangle", "blue circle"}
    b = ld.concept_prompts([("red", "triangle")], 20, seed=2, exclude={p for p, _ in a})
    assert not ({p for p, _ in a} & {p for p, _ in b})
    rows = [{"concept": "red triangle", "seed": s, "concept_ok": ok} for s, ok in [(0, True), (0, False), (1, True), (1, True)]]
    t = ld.per_concept(rows)["red triangle"]
    assert t["acc"] == 0.75 and t["n"] == 4 and t["per_seed"] == [0.5, 1.0] and t["lo"] < 0.75 < t["hi"]


def test_before_after_table_reports_the_change_with_newcombes_interval():
    """A concept going from 1/3 to 3/3 right: the change is +66.7 points, and its interval stays inside
    [-100, +100] (Newcombe's hybrid score interval; the normal interval is [+13.3, +120.0] here)."""
    from flywheel.loop.measure import format_table, per_concept

    def rows(k, n):
        return [{"concept": "red star", "seed": 0, "concept_ok": i < k} for i in range(n)]

    line = format_table(per_concept(rows(1, 3)), per_concept(rows(3, 3)), gap="red star").splitlines()[1]
    assert line.startswith("red star *gap*") and "33.3% [ 6.1%,79.2%]" in line and "100.0% [43.8%,100.0%]" in line
    assert line.endswith("+66.7 pts [ -5.9,+93.9]"), line


def test_colour_gap_concepts():
    """A colour gap measures every colour as a concept, on prompts of any shape, and counts a
    signal's 'purple star' as the gap."""
    cfg = ld.DemoConfig(gap="purple")
    cs = ld.concept_list(cfg)
    assert cs[0] == ("purple", None) and len(cs) == 8 and all(s is None for _, s in cs)
    ps = ld.concept_prompts(cs[:2], 30, seed=3)
    assert {measure.concept_of(s, color_only=True) for _, s in ps} == {"purple", cs[1][0]}
    assert len({s.shape for _, s in ps}) >= 4
    assert ld.concept_hit("purple star", "purple") and not ld.concept_hit("red star", "purple")
    assert ld.concept_hit("red star", "red star") and not ld.concept_hit("red circle", "red star")
    assert ld._eval_cfg(cfg)["color_only"] and not ld._eval_cfg(ld.DemoConfig(gap="red-triangle"))["color_only"]


def test_routing_path_over_http(world, tmp_path):
    """Failures posted to the API -> router -> scripted reviewer over HTTP -> emit -> lineage."""
    cat = Catalog()
    refs = register(cat, world)
    token = ld.demo_token(cat, "loop-test")
    sigs = [
        {"kind": "eval", "id": f"e-rt-{i}", "prompt": p, "results": {"color": True, "shape": False}, "concept": "red triangle"}
        for i, p in enumerate(["a red triangle on the left", "two red triangles", "a drawing of a red triangle"])
    ] + [{"kind": "eval", "id": "e-bc", "prompt": "two blue circles", "results": {"count": False}, "concept": "blue circle"}]
    with ld.Server(cat) as base:
        r = httpx.post(f"{base}/api/signals", json={"signals": sigs}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201 and len(r.json()["inserted"]) == 4
        assert httpx.post(f"{base}/api/signals", json=sigs[0]).status_code == 401
        s = rt.route(cat, rt.RouterConfig(trained_on=[refs["train"]], reserve=[refs["reserve"]], k_retrieve=8, k_reserve=3))
        assert s["tracks"]["pretrain"] == 3 and s["tracks"]["rl"] == 1
        review = ld.scripted_review(base, token)
    assert review["approved"] >= 6 and review["approved"] + review["rejected"] == s["enqueued"]
    votes = cat.execute("SELECT DISTINCT reviewer FROM review_votes")
    assert [v["reviewer"] for v in votes] == ["token:loop-test"]
    e = em.emit(refs["train"], name="train", catalog=cat)
    added = [r for r in open_dataset(e["dataset"], catalog=cat).to_table().to_pylist() if r["lineage_item"] is not None]
    assert len(added) == review["approved"] and all(ld.names_concept(r["caption"], "red triangle") for r in added)
    info = em.lineage(added[0]["id"], cat)
    d = next(a for a in info["appearances"] if a["dataset"] == e["dataset"])["added_by"]
    assert d["reviewer"] == "token:loop-test" and d["signal"]["concept"] == "red triangle" and d["route"]["track"] == "pretrain"


def test_ingest_flow(prefect_harness, tmp_path):
    from flywheel.flows.loop import ingest_signals_flow

    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(json.dumps({"kind": "feedback", "id": f"f{i}", "prompt": "a cat", "rating": 1}) for i in range(3)))
    assert ingest_signals_flow(str(p)) == {"inserted": 3, "duplicate": 0}
    assert ingest_signals_flow(str(p)) == {"inserted": 0, "duplicate": 3}


@pytest.mark.slow
def test_loop_demo_small(tmp_path):
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app

    _register_all()
    r = CliRunner().invoke(app, ["loop", "--demo", "--small", "--out", str(tmp_path / "demo")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "demo" / "loop_result.json").read_text())
    assert res["target"]["gap_routed_to_pretrain"] and res["added"] > 0
    assert res["measure_disjoint_from_signals"]
    cat = Catalog()
    phases = {r["phase"] for r in cat.execute("SELECT DISTINCT phase FROM loop_evals")}
    assert phases == {"before", "after"}
    assert "*gap*" in r.output and f"planted gap {res['gap']}" in r.output


def test_prewarmed_prompts_equal_one_by_one_encoding():
    import torch

    from flywheel.models.text_encoders import MiniLMEncoder

    torch.set_num_threads(1)
    enc = measure.MemoEncoder(MiniLMEncoder())
    prompts = ["a red triangle", "three blue circles on a plain white background, minimalist", ""]
    measure.prewarm(enc, prompts)
    assert set(enc.memo) == set(prompts)
    for p in prompts:
        alone = enc.enc.encode(p).embeds
        assert enc.memo[p].embeds.shape == alone.shape and torch.allclose(enc.memo[p].embeds, alone, atol=1e-4)


@pytest.mark.slow
def test_retrain_flow_records_before_after(prefect_harness, tmp_path):
    """The retraining trigger as a Prefect flow: train from the last checkpoint on an emitted
    version, evaluate before and after, record the table (tiny budgets: mechanics, not quality)."""
    from flywheel.demos.loop import DemoConfig, train_config
    from flywheel.flows.loop import retrain_flow
    from flywheel.loop.retrain import before_after, train_step
    from flywheel.training import synthetic as syn

    cat = Catalog()
    syn.write_dataset(tmp_path / "d1", 64, seed=0, size=32, name="flow-train", catalog=cat)
    cfg = DemoConfig.small()
    base = train_config(cfg, [str(tmp_path / "d1")], tmp_path / "ck0", minutes=0.05)
    train_step(cat, "flow-train@v1", base, "train-0")
    em.emit("flow-train@v1", name="flow-train", catalog=cat)  # nothing approved: v2 = v1, still an emission
    res = retrain_flow("flow-train@v2", minutes=0.05, size=32, n_per_concept=1, seeds=1, sample_steps=2,
                       train_overrides={"batch_size": 8}, checker_images=cfg.checker_images)
    assert res["init"] == str(tmp_path / "ck0") and Path(res["ckpt"]).exists()
    table = before_after(cat, res["run_id"])
    assert len(table) == 48 and all({"before", "after"} <= set(r) for r in table)
