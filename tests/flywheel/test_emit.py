"""Emission and lineage: the next version holds the parent's kept rows plus approved samples,
and every row is explained back to its source and, for retrieved rows, to the signal, the route
evidence and the reviewer's decision."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flywheel.catalog import Catalog
from flywheel.datasets import open_dataset
from flywheel.loop import emit as em
from flywheel.loop import queue as rq
from flywheel.loop import router as rt
from flywheel.loop import signals as sg

sys.path.insert(0, str(Path(__file__).parent))
from _loop_world import build, register  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("loop-world")))


@pytest.fixture()
def routed(world):
    cat = Catalog()
    refs = register(cat, world)
    sg.add(cat, [{"kind": "eval", "id": "gap-1", "prompt": "two red triangles", "results": {"shape": False},
                  "concept": "red triangle"}])
    rt.route(cat, rt.RouterConfig(trained_on=[refs["train"]], reserve=[refs["reserve"]], k_retrieve=10, k_reserve=3))
    items = rq.list_items(cat, queue="pretrain", limit=100)
    assert len(items) == 10
    for it in items:
        ok = "red triangle" in it["payload"]["text"]
        rq.decide(cat, it["item_id"], "approved" if ok else "rejected", "alice", None if ok else "off_concept")
    return cat, refs, items


def test_emit_adds_approved_rows_only(routed):
    cat, refs, items = routed
    approved = [i for i in items if "red triangle" in i["payload"]["text"]]
    r = em.emit(refs["train"], add_approved=True, name="train", catalog=cat)
    assert r["dataset"] == "train@v2" and r["added"] == len(approved) and r["inherited"] == 384
    ds = open_dataset("train@v2", catalog=cat)
    t = ds.to_table()
    assert t.num_rows == 384 + len(approved)
    added = [row for row in t.to_pylist() if row["lineage_item"] is not None]
    assert {(a["id"], a["source"]) for a in added} == {(i["sample_id"], i["source"]) for i in approved}
    assert all(a["lineage_signal"] == "gap-1" and "red triangle" in a["caption"] for a in added)
    m = ds.manifest
    assert m.kind == "emitted" and m.parents == [refs["train"], refs["reserve"]]
    assert m.extra["signals"] == {"gap-1": len(approved)} and len(m.extra["approvals"]) == len(approved)
    assert {a["decided_by"] for a in m.extra["approvals"]} == {"alice"} and refs["reserve"] in m.extra["recipe_hashes"]
    # the training contract columns survive, image bytes included
    assert all(a["image"] and a["captions"]["general"] for a in added)
    # immutable: emitting again is a new version, and adds nothing new
    r2 = em.emit("train@v2", add_approved=True, name="train", catalog=cat)
    assert r2["dataset"] == "train@v3" and r2["added"] == 0 and r2["skipped"]["already_in"] == len(approved)
    assert open_dataset("train@v2", catalog=cat).manifest.rows == 384 + len(approved)


def test_lineage_explains_every_sample(routed):
    cat, refs, items = routed
    em.emit(refs["train"], name="train", catalog=cat)
    t = open_dataset("train@v2", catalog=cat).to_table(columns=["id", "lineage_item"]).to_pylist()
    inherited = next(r["id"] for r in t if r["lineage_item"] is None)
    retrieved = next(r["id"] for r in t if r["lineage_item"] is not None)
    a = em.lineage(inherited, cat)
    app = {x["dataset"]: x for x in a["appearances"]}
    assert set(app) == {"train@v1", "train@v2"}
    assert app["train@v2"]["origin"]["via"] == ["train@v2", "train@v1"] and app["train@v2"]["origin"]["kind"] == "synthetic"
    b = em.lineage(retrieved[:16], cat)
    assert b["id"] == retrieved
    app = {x["dataset"]: x for x in b["appearances"]}
    assert set(app) == {"reserve@v1", "train@v2"}
    d = app["train@v2"]["added_by"]
    assert d["decision"] == "approved" and d["reviewer"] == "alice" and d["retrieved_from"] == "reserve@v1"
    assert d["signal"]["signal_id"] == "gap-1" and d["signal"]["prompt"] == "two red triangles"
    assert d["route"]["track"] == "pretrain" and "scarce" in d["route"]["reason"]
    lines = "\n".join(em.describe_lineage(b))
    assert "approved by alice" in lines and "gap-1" in lines and "routed to pretrain" in lines
    ds = em.lineage("train@v2", cat)
    assert ds["of"] == "dataset" and ds["kind"] == "emitted" and [p["dataset"] for p in ds["parents"]] == ["train@v1", "reserve@v1"]
    assert ds["reviewers"] == ["alice"]
    # every sample of the emitted dataset is explained
    for r in t[:5] + [r for r in t if r["lineage_item"] is not None]:
        info = em.lineage(r["id"], cat)
        v2 = next(x for x in info["appearances"] if x["dataset"] == "train@v2")
        assert ("added_by" in v2) == (r["lineage_item"] is not None) and ("origin" in v2) != ("added_by" in v2)
    with pytest.raises(KeyError):
        em.lineage("ab" * 32, cat)


def test_cli_lineage_and_emit(routed, monkeypatch):
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app

    cat, refs, items = routed
    _register_all()
    r = CliRunner().invoke(app, ["emit", "--from", refs["train"], "--add-approved", "--name", "train"])
    assert r.exit_code == 0, r.output
    assert "train@v2" in r.output
    r = CliRunner().invoke(app, ["lineage", "train@v2"])
    assert r.exit_code == 0 and "train@v1" in r.output and "reviewers: alice" in r.output
