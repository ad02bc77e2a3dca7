"""Evaluation: Wilson intervals, per-attribute scoring that follows what the generator draws (an oracle
scores like the checker on ground truth, a colour-swapping generator fails colour only), prompts
disjoint from training captions, a results dataset the flywheel mines, and `flywheel eval` on a real
(two-step) checkpoint through the trainer's sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flywheel.datasets import open_dataset
from flywheel.training import checker as ck
from flywheel.training import evaluate as ev
from flywheel.training import synthetic as syn


@pytest.fixture(scope="module")
def checker():
    import torch

    torch.set_num_threads(1)
    return ck.Checker.load()


def _renderer(color_shift: int = 0):
    """A stand-in generator that draws each eval prompt's ground truth (optionally in the wrong colour)."""
    specs = {p: s for p, s in syn.sample_prompts(400, "eval", seed=0, unique=True)}
    names = list(syn.COLORS)

    def gen(prompts, seed):
        rng = np.random.default_rng(seed)
        out = []
        for p in prompts:
            s = specs[p]
            if color_shift:
                s = syn.ShapeSpec(s.shape, names[(names.index(s.color) + color_shift) % len(names)], s.count, s.position)
            out.append(syn.render_shapes(s, 64, rng)[0])
        return out

    return gen


def test_summary_intervals_are_wilsons_and_exact_at_the_ends():
    """Per attribute and per asked value: 8/10 right gives Wilson's [0.490, 0.943]; an attribute always
    right (21/21) reaches exactly 1 and one always wrong starts at exactly 0; unscored rows are skipped."""
    rows = [{"color_ok": True, "shape_ok": i < 8, "count_ok": False, "position_ok": None, "passed": False,
             "expected_color": "red", "expected_shape": "circle" if i < 10 else "square", "expected_count": 1,
             "expected_position": None} for i in range(21)]
    s = ev.summarize(rows)
    assert "position" not in s
    assert (s["color"]["k"], s["color"]["n"], s["color"]["hi"]) == (21, 21, 1.0) and 0.84 < s["color"]["lo"] < 0.85
    assert (s["count"]["k"], s["count"]["lo"]) == (0, 0.0) and s["all"]["lo"] == 0.0
    circle = s["shape"]["by_value"]["circle"]
    assert (circle["k"], circle["n"]) == (8, 10) and circle["lo"] == pytest.approx(0.4902, abs=1e-4)
    assert circle["hi"] == pytest.approx(0.9433, abs=1e-4)
    assert s["shape"]["by_value"]["square"]["k"] == 0 and s["shape"]["by_value"]["square"]["lo"] == 0.0


def test_oracle_scores_high_and_writes_minable_results(checker, tmp_path):
    from flywheel.loop.signals import from_eval_dataset

    res = ev.evaluate(None, n_prompts=96, seeds=(0, 1), checker=checker, generate=_renderer(), out=tmp_path / "res",
                      checker_n=0, batch_size=40)
    assert len(res.rows) == 192
    for a in ck.ATTRIBUTES:
        assert res.summary[a]["acc"] >= 0.93, (a, res.summary[a])
        assert res.summary[a]["lo"] <= res.summary[a]["acc"] <= res.summary[a]["hi"]
    assert res.summary["color"]["n"] == 192 and res.summary["position"]["n"] < 192  # position only where asked
    assert set(res.summary["color"]["by_value"]) == set(syn.COLORS)
    table = res.table()
    assert "color:" in table and "chance 12.5%" in table and "[" in table
    t = open_dataset(tmp_path / "res").to_table().to_pylist()
    assert len(t) == 192 and {r["seed"] for r in t} == {0, 1}
    r = t[0]
    assert r["caption"] == r["prompt"] and r["concept"] == f"{r['expected_color']} {r['expected_shape']}"
    assert syn.prompt_split(r["prompt"]) == "eval"
    sigs = from_eval_dataset(tmp_path / "res")  # the flywheel's miner reads the failures back
    n_fail = sum(1 for x in t if not all(x[f"{a}_ok"] for a in ck.ATTRIBUTES if x[f"{a}_ok"] is not None))
    assert len(sigs) == n_fail
    assert all(s.expected.get("color") for s in sigs)


def test_wrong_colours_fail_colour_only(checker):
    res = ev.evaluate(None, n_prompts=64, seeds=(3,), checker=checker, generate=_renderer(color_shift=3), checker_n=0)
    assert res.summary["color"]["acc"] <= 0.05
    assert res.summary["shape"]["acc"] >= 0.9 and res.summary["count"]["acc"] >= 0.9
    assert res.summary["all"]["acc"] <= 0.05


def test_prompts_seen_in_training_are_dropped(tmp_path):
    import pyarrow as pa

    from flywheel.datasets import BASE_SCHEMA, DatasetWriter

    evalp, _ = ev.eval_prompts(50)
    leaked = [p for p, _ in evalp[:7]]
    with DatasetWriter(tmp_path / "train", name="t", kind="synthetic", schema=BASE_SCHEMA) as w:
        w.write(pa.Table.from_pylist([{"id": str(i), "caption": p.upper(), "task": "t2i"} for i, p in enumerate(leaked)], schema=BASE_SCHEMA))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "flywheel.json").write_text(json.dumps({"datasets": [str(tmp_path / "train")]}))
    assert ev.trained_on(ckpt) == [str(tmp_path / "train")]
    seen = ev.training_captions(ev.trained_on(ckpt))
    kept, dropped = ev.eval_prompts(50, exclude=seen)
    assert dropped == 7 and len(kept) == 50
    assert not {p.lower() for p, _ in kept} & seen


def test_flywheel_eval_on_a_trained_checkpoint(tmp_path):
    """Two training steps on the synthetic set, then `flywheel eval` through the real sampler."""
    import torch
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app
    from flywheel.training.config import TrainConfig
    from flywheel.training.trainer import main

    torch.set_num_threads(1)
    syn.write_dataset(tmp_path / "syn", n=16, seed=0, size=32)
    main(TrainConfig(datasets=[str(tmp_path / "syn")], out=str(tmp_path / "ck"), steps=2, batch_size=2, resolution=32,
                     vae="pixel:16", progress=False, cache_dir=str(tmp_path / "cache"), warmup=1))
    _register_all()
    r = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "ck"), "--n-prompts", "8", "--seeds", "0,1", "--steps", "2",
                                 "--size", "32", "--out", str(tmp_path / "res")])
    assert r.exit_code == 0, r.output
    assert "color:" in r.output and "shape:" in r.output and "n=16" in r.output
    t = open_dataset(tmp_path / "res").to_table()
    assert t.num_rows == 16 and open_dataset(tmp_path / "res").manifest.extra["ckpt"] == str(tmp_path / "ck")
    bad = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "nope")])
    assert bad.exit_code != 0

    # a checkpoint that records its training data as name@vN: the CLI resolves it through the catalog and
    # the prompts that are among its captions are not evaluated
    import pyarrow as pa

    from flywheel.catalog import Catalog
    from flywheel.datasets import BASE_SCHEMA, DatasetWriter

    leaked = [p for p, _ in ev.eval_prompts(8)[0][:3]]
    with DatasetWriter(tmp_path / "leak", name="leak", kind="synthetic", schema=BASE_SCHEMA, catalog=Catalog()) as w:
        w.write(pa.Table.from_pylist([{"id": str(i), "caption": p, "task": "t2i"} for i, p in enumerate(leaked)], schema=BASE_SCHEMA))
    meta_path = tmp_path / "ck" / "flywheel.json"
    meta = json.loads(meta_path.read_text())
    for refs, dropped in ((["leak@v1"], 3), (["gone@v9"], 0)):
        meta_path.write_text(json.dumps({**meta, "datasets": refs}))
        r = CliRunner().invoke(app, ["eval", "--ckpt", str(tmp_path / "ck"), "--n-prompts", "8", "--seeds", "0", "--steps", "2",
                                     "--size", "32"])
        assert r.exit_code == 0, r.output
        assert f"({dropped} prompts dropped: seen in training)" in r.output
        assert ("gone@v9, which is gone" in r.output) == (refs == ["gone@v9"])
