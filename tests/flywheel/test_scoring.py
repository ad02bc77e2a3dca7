"""Per-batch scoring: a row that breaks an operator is a rejected row, never a lost batch; edit
pairs are judged on their sources too."""

from __future__ import annotations

import io
import json
from typing import ClassVar

import pyarrow as pa
import pyarrow.dataset as pads
from PIL import Image

from flywheel.curation.scoring import Scorer, decide_table
from flywheel.filters import base
from flywheel.filters.base import Operator, Params, Rule, register


class FragileParams(Params):
    pass


@register
class Fragile(Operator):
    """Test operator: raises on images whose top-left pixel is pure green."""

    name: ClassVar[str] = "fragile_test_op"
    Params = FragileParams
    writes = ("fragile_test_op__v",)
    rules = (Rule("never", "fragile_test_op__v", "<", value=-1.0),)  # a mean pixel is never negative

    def score(self, batch, work):
        out = []
        for w in work:
            if w is not None and tuple(w.rgb[0, 0]) == (0, 255, 0):
                raise ZeroDivisionError("green")
            out.append(None if w is None else float(w.rgb.mean()))
        return {"fragile_test_op__v": out}


def png(color, size=(300, 300)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, "PNG")
    return b.getvalue()


def test_a_failing_row_becomes_a_reasoned_reject_and_the_batch_survives():
    t = pa.table({"id": ["a", "b", "c"], "source": ["a.png", "b.png", "c.png"], "task": ["t2i"] * 3,
                  "image": [png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))], "caption": ["x", "y", "z"]})
    steps = [("fragile_test_op", {}), ("token_length", {})]
    scored = Scorer(steps, 256, decode_step=True, keep_work=False)(t)
    out = decide_table(scored, steps)
    assert out.column("reject_reason").to_pylist() == [None, "fragile_test_op:error:ZeroDivisionError", None]
    assert "green" in out.column("reject_details").to_pylist()[1][0]
    assert out.column("fragile_test_op__v").to_pylist()[0] is not None
    assert out.column("token_length__tokens").to_pylist() == [1, 1, 1]


def test_broken_rows_get_null_scores_and_only_the_broken_verdict():
    t = pa.table({"id": ["a", "b"], "source": ["a.jpg", "b.jpg"], "task": ["t2i"] * 2, "image": [b"", png((9, 9, 9))],
                  "caption": [None, "c"]})
    steps = [("entropy", {}), ("token_length", {})]
    out = decide_table(Scorer(steps, 256, True, False)(t), steps)
    assert out.column("reject_reasons").to_pylist()[0] == ["broken_file:zero_bytes"]
    assert out.column("entropy__hist").to_pylist()[0] is None and out.column("token_length__tokens").to_pylist()[0] is None


def test_a_small_broken_file_is_broken_not_too_small():
    """A corrupt image that is also below the resolution floor is judged broken: its header
    size must not earn it `resolution:too_small` (which would hide that the file is unusable)."""
    import numpy as np

    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    b = io.BytesIO()
    noise.save(b, "PNG")
    small_png = b.getvalue()
    corrupt = bytearray(small_png)
    corrupt[200:260] = bytes(60)  # zeros inside IDAT: the header still says 120x90
    b = io.BytesIO()
    noise.save(b, "JPEG", quality=90)
    t = pa.table({"id": list("abc"), "source": ["t.png", "c.png", "t.jpg"], "task": ["t2i"] * 3,
                  "image": [small_png[: len(small_png) // 2], bytes(corrupt), b.getvalue()[:400]], "caption": ["x"] * 3})
    steps = [("resolution", {}), ("token_length", {})]
    out = decide_table(Scorer(steps, 256, True, False)(t), steps)
    reasons = out.column("reject_reasons").to_pylist()
    assert [r[0].split(":")[0] for r in reasons] == ["broken_file"] * 3, reasons
    assert not any("resolution:too_small" in r for r in reasons)
    assert out.column("reject_reason").to_pylist() == [r[0] for r in reasons]


def test_edit_pairs_are_judged_on_sources_with_suffix(ray_local, tmp_path):
    from skimage import data

    from flywheel.curation import pipeline

    photo = Image.fromarray(data.astronaut())
    other = Image.fromarray(data.coffee())

    def jpg(im, q=90):
        b = io.BytesIO()
        im.save(b, "JPEG", quality=q)
        return b.getvalue()

    (tmp_path / "src.jpg").write_bytes(jpg(photo))
    (tmp_path / "tgt.jpg").write_bytes(jpg(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    (tmp_path / "tiny.jpg").write_bytes(jpg(photo.resize((90, 90))))
    (tmp_path / "cut.jpg").write_bytes(jpg(other)[:5000])
    (tmp_path / "tgt2.jpg").write_bytes(jpg(other))
    lines = [
        {"source": "src.jpg", "instruction": "mirror the image", "target": "tgt.jpg"},
        {"source": "tiny.jpg", "instruction": "make it bigger", "target": "tgt2.jpg"},
        {"source": "cut.jpg", "instruction": "repair it", "target": "tgt2.jpg"},
        {"source": "src.jpg", "instruction": "", "target": "tgt2.jpg"},
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    stats = pipeline.curate("stage2", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out"),
                            skip=["nsfw", "rotation", "clip"], workers=1)
    rows = {r["source"]: r for r in pads.dataset(str(tmp_path / "out" / "rejected" / "data")).to_table(
        columns=["source", "reject_reason", "reject_reasons"]).to_pylist()}
    acc = pads.dataset(str(tmp_path / "out" / "accepted" / "data")).to_table(columns=["source", "task", "source_ids"]).to_pylist()
    assert [r["source"] for r in acc] == ["pairs.jsonl#L1"] and acc[0]["task"] == "ti2i" and len(acc[0]["source_ids"]) == 1
    assert rows["pairs.jsonl#L2"]["reject_reason"] == "resolution:too_small:source"
    assert rows["pairs.jsonl#L3"]["reject_reason"] == "broken_file:truncated:source"
    assert rows["pairs.jsonl#L4"]["reject_reason"] == "token_length:missing"  # blank instruction
    assert stats["rows"] == 4


def test_stage1_refuses_edit_pairs_with_a_clear_message(tmp_path):
    import pytest

    from flywheel.curation import pipeline

    (tmp_path / "a.jpg").write_bytes(png((1, 2, 3)))
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"source": "a.jpg", "instruction": "x", "target": "a.jpg"}))
    with pytest.raises(pipeline.CurateError, match="stage2"):
        pipeline.prepare("stage1", str(tmp_path / "pairs.jsonl"), str(tmp_path / "o"), skip=["nsfw", "rotation", "clip"])


_ = base
