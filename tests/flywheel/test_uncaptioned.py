"""Uncaptioned pools (issue 17 item 6): counted in the plan, stopped unless the user chooses what
happens to them (caption first, skip the caption operators, keep them marked, or reject them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from PIL import Image

from flywheel.curation import pipeline

CPU_SKIP = ["nsfw", "rotation", "clip"]
FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


@pytest.fixture
def pool(tmp_path):
    """Four photos, one with a caption sidecar, one with a .json sidecar without a caption."""
    from skimage import data

    d = tmp_path / "pool"
    d.mkdir()
    for i, img in enumerate((data.astronaut(), data.chelsea(), data.coffee(), data.rocket())):
        Image.fromarray(img).resize((320, 320)).save(d / f"p{i}.jpg", quality=92)
    (d / "p0.txt").write_text("an astronaut in a white suit holding a helmet in front of a flag")
    (d / "p1.json").write_text('{"url": "http://example.org/cat", "width": 320}')
    return d


def _rows(out: Path) -> list[dict]:
    cols = ["source", "caption", "reject_reason", "caption_origin"]
    rows = []
    for kind in ("accepted", "rejected"):
        ds = pads.dataset(str(out / kind / "data"))
        rows += ds.to_table(columns=[c for c in cols if c in ds.schema.names]).to_pylist()
    return rows


def _one_row_each(out: Path, pool: Path) -> list[dict]:
    rows = _rows(out)
    assert sorted(r["source"] for r in rows) == sorted(p.name for p in pool.glob("*.jpg"))
    return rows


def test_the_plan_counts_them_and_the_run_stops_saying_what_to_pass(tmp_path, pool):
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    p = subprocess.run([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(pool), "--output", str(tmp_path / "o"),
                        "--skip", ",".join(CPU_SKIP)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    err = " ".join(p.stderr.split())
    assert "3 of 4 inputs have no caption" in err and "token_length:missing" in err
    for flag in ("--caption offline", "--skip token_length", "--allow-uncaptioned", "--reject-uncaptioned"):
        assert flag in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "home" / "state").exists()
    p = subprocess.run([FLYWHEEL, "curate", "--recipe", "stage1", "--input", str(pool), "--output", str(tmp_path / "o"),
                        "--caption", "offline", "--allow-uncaptioned"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "exclude each other" in p.stderr


def test_skip_drops_the_caption_operators_and_the_key_records_it(tmp_path, pool, ray_local):
    judged = pipeline.prepare("stage1", str(pool), str(tmp_path / "judged"), skip=CPU_SKIP, uncaptioned="reject")
    stats = pipeline.curate("stage1", str(pool), str(tmp_path / "o"), skip=[*CPU_SKIP, "token_length"], workers=1,
                            uncaptioned=None)
    rows = _one_row_each(tmp_path / "o", pool)
    assert not any((r["reject_reason"] or "").startswith("token_length") for r in rows)
    assert "token_length" not in stats["operators"] and stats["rows"] == 4
    plan = pipeline.prepare("stage1", str(pool), str(tmp_path / "o2"), skip=[*CPU_SKIP, "token_length"], uncaptioned=None)
    assert plan["skip"] == [*CPU_SKIP, "token_length"] and plan["uncaptioned"]["readers"] == []
    assert plan["uncaptioned"]["missing"] == 3 and plan["key"] != judged["key"]


def test_allow_keeps_them_marked_and_nothing_rejects_them_for_it(tmp_path, pool, ray_local):
    stats = pipeline.curate("stage1", str(pool), str(tmp_path / "o"), skip=CPU_SKIP, workers=1, uncaptioned="allow")
    rows = {r["source"]: r for r in _one_row_each(tmp_path / "o", pool)}
    assert {s: r["caption_origin"] for s, r in rows.items()} == {"p0.jpg": "input", "p1.jpg": "none", "p2.jpg": "none",
                                                                 "p3.jpg": "none"}
    assert "token_length:missing" not in stats["reject_reason"]
    assert rows["p1.jpg"]["caption"] is None


def test_caption_first_then_judge(tmp_path, pool, ray_local):
    stats = pipeline.curate("stage1", str(pool), str(tmp_path / "o"), skip=CPU_SKIP, workers=1, uncaptioned="caption",
                            caption_backend="offline")
    rows = {r["source"]: r for r in _one_row_each(tmp_path / "o", pool)}
    assert rows["p0.jpg"]["caption_origin"] == "input" and rows["p0.jpg"]["caption"].startswith("an astronaut")
    for s in ("p1.jpg", "p2.jpg", "p3.jpg"):
        assert rows[s]["caption_origin"] == "generated:offline" and rows[s]["caption"].strip()
    assert not any(k.startswith("token_length") for k in stats["reject_reason"])


def test_the_captioning_backend_is_checked_before_the_run(tmp_path, pool):
    with pytest.raises(pipeline.CurateError, match="unknown captioning backend"):
        pipeline.prepare("stage1", str(pool), str(tmp_path / "o"), skip=CPU_SKIP, uncaptioned="caption",
                         caption_backend="nope")
