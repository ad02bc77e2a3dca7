"""Signals: validation, idempotent storage, mining from eval datasets and per-sample losses."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from flywheel.catalog import Catalog
from flywheel.datasets import DatasetWriter
from flywheel.loop import signals as sg


def test_parse_kinds_and_reject_malformed():
    e = sg.parse({"kind": "eval", "id": "e1", "prompt": "a red star", "results": {"color": True, "shape": False}})
    assert isinstance(e, sg.EvalSignal) and e.failed == ["shape"] and e.attribute == "shape"
    f = sg.parse({"kind": "feedback", "prompt": "a cat", "rating": 1, "text": "no cat"})
    assert isinstance(f, sg.FeedbackSignal) and sg.is_failure(f)
    assert not sg.is_failure(sg.parse({"kind": "feedback", "prompt": "a cat", "rating": 5}))
    bad = [
        {"kind": "nope", "prompt": "x"},
        {"kind": "eval", "prompt": "x", "results": {}},
        {"kind": "feedback", "prompt": "x", "rating": 9},
        {"kind": "feedback", "prompt": "x", "rating": 2, "image_b64": "not base64!"},
        {"kind": "bad_case", "origin": "loss_outlier"},
        {"kind": "eval", "prompt": "x", "results": {"color": False}, "surprise": 1},
        {"kind": "eval", "id": "has space", "prompt": "x", "results": {"color": False}},
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            sg.parse(b)


def test_add_is_idempotent_by_id_and_by_content():
    cat = Catalog()
    s = {"kind": "eval", "id": "e1", "prompt": "a red star", "results": {"shape": False}, "concept": "red star"}
    assert sg.add(cat, [s])["inserted"] == ["e1"]
    assert sg.add(cat, [s])["duplicate"] == ["e1"]
    anon = {"kind": "feedback", "prompt": "a blue cat", "rating": 1}
    a = sg.add(cat, [anon, anon])  # no id: the content hash is the id
    assert len(a["inserted"]) == 1 and a["duplicate"] == a["inserted"]
    rows = cat.execute("SELECT signal_id, status, concept, attribute FROM signals ORDER BY signal_id")
    assert len(rows) == 2
    e1 = sg.get(cat, "e1")
    assert e1["status"] == "new" and e1["concept"] == "red star" and e1["attribute"] == "shape"
    # a passing eval is stored as evidence but never routed
    sg.add(cat, [{"kind": "eval", "id": "ok", "prompt": "a red star", "results": {"shape": True}}])
    assert sg.get(cat, "ok")["status"] == "passed"
    assert {p["signal_id"] for p in sg.pending(cat)} == {"e1", a["inserted"][0]}


def test_read_jsonl_names_bad_lines(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"kind": "feedback", "prompt": "x", "rating": 2}) + "\n{oops\n"
                 + json.dumps({"kind": "feedback", "prompt": "x", "rating": 0}) + "\n")
    with pytest.raises(ValueError) as ei:
        sg.read_jsonl(p)
    msg = str(ei.value)
    assert "line 2: not JSON" in msg and "line 3: feedback.rating" in msg


def test_from_eval_dataset_keeps_failures_with_concept(tmp_path):
    cat = Catalog()
    t = pa.table({
        "id": ["p1", "p2", "p3"], "prompt": ["a red star", "two blue circles", "a green cross on the left"],
        "concept": ["red star", "blue circle", "green cross"], "seed": [0, 0, 1],
        "color_ok": [True, True, False], "shape_ok": [False, True, True], "count_ok": [True, True, None],
        "color": ["red", "blue", "green"],
    })
    with DatasetWriter(tmp_path / "ev", name="eval", kind="eval", catalog=cat, extra={"ckpt": "/ck"}) as w:
        w.write(t)
    sigs = sg.from_eval_dataset("eval@v1", catalog=cat)
    assert [s.prompt for s in sigs] == ["a red star", "a green cross on the left"]
    assert sigs[0].failed == ["shape"] and sigs[0].concept == "red star" and sigs[0].ckpt == "/ck"
    assert sigs[1].failed == ["color"] and sigs[1].expected["color"] == "green" and sigs[1].seed == 1
    assert sg.add(cat, sigs)["inserted"] == [s.id for s in sigs]
    assert sg.add(cat, sg.from_eval_dataset("eval@v1", catalog=cat))["inserted"] == []  # mined twice, stored once


def test_from_loss_parquet_finds_outliers(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(200)]
    loss = rng.normal(1.0, 0.05, 200)
    loss[[7, 42]] = [2.5, 3.0]
    rows = {"id": ids * 2, "loss": list(loss) + list(loss + rng.normal(0, 0.01, 200)), "caption": [f"cap {i}" for i in ids] * 2}
    pq.write_table(pa.table(rows), tmp_path / "loss.parquet")
    sigs = sg.from_loss_parquet(tmp_path / "loss.parquet", z=5)
    assert [s.sample_id for s in sigs] == ["s42", "s7"]
    assert sigs[0].origin == "loss_outlier" and sigs[0].zscore > 5 and sigs[0].prompt == "cap s42"
