"""Recipes with models on CPU run on a pool of actors (`engine._run_pool`): the same decisions and
scores as the Ray Data pipeline they replaced on CPU, and a process that runs many commands (the
local server's runner) keeps the pool, with its models loaded, between runs of the same operators."""

from __future__ import annotations

import glob

import pyarrow.parquet as pq
import pytest

SCORES = ("reject_reason", "reject_details", "nsfw__prob", "rotation__angle", "rotation__confidence", "rotation__method",
          "entropy__content", "dedup__kind", "dedup__of_source")


def _rows(out) -> dict:
    rows = {}
    for f in glob.glob(f"{out}/*/data/**/*.parquet", recursive=True):
        t = pq.read_table(f, columns=["source", *SCORES])
        for r in t.to_pylist():
            rows[r["source"]] = tuple(round(v, 5) if isinstance(v, float) else v for v in (r[c] for c in SCORES))
    return rows


def _pids(engine) -> list[int]:
    import ray

    return sorted(ray.get([a.ready.remote() for a in engine._POOL[0][1]])) if engine._POOL else []


def test_model_recipe_on_the_pool_decides_as_the_ray_data_pipeline(demo_corpus, ray_local, tmp_path,
                                                                     monkeypatch):
    from flywheel.curation import engine, pipeline

    pooled = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "pool"), skip=["clip"], workers=2)
    assert not engine._POOL  # a command's run ends its pool: idle actors would hold CPUs
    monkeypatch.setattr(engine, "_wants_gpu", lambda stateful, workers: True)  # the GPU path, on CPU
    piped = pipeline.curate("stage1", str(demo_corpus), str(tmp_path / "data"), skip=["clip"], workers=2)
    a, b = _rows(tmp_path / "pool"), _rows(tmp_path / "data")
    assert len(a) == pooled["rows"] == piped["rows"] > 30
    assert sum(v[2] is not None for v in a.values()) > 20  # the models scored most rows
    assert a == b
    assert pooled["timing"]["operator_cpu_s"]["rotation"] > 0


def test_a_process_that_keeps_the_pool_reuses_its_actors_and_ends_it_on_change(ray_local, tmp_path, monkeypatch):
    import ray
    from PIL import Image
    from skimage import data

    from flywheel.curation import engine, pipeline

    photos = tmp_path / "in"
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")):
        (photos / str(i % 2)).mkdir(parents=True, exist_ok=True)  # two folders: two shards, both actors busy
        Image.fromarray(getattr(data, name)()).save(photos / str(i % 2) / f"{name}.jpg")
        (photos / str(i % 2) / f"{name}.txt").write_text(f"a photo of {name}")

    monkeypatch.setattr(engine, "KEEP_POOL", True)
    try:
        first = pipeline.curate("stage1", str(photos), str(tmp_path / "a"), skip=["clip"], workers=2)
        pids = _pids(engine)
        assert len(pids) == 2
        again = pipeline.curate("stage1", str(photos), str(tmp_path / "b"), skip=["clip"], workers=2)
        assert _pids(engine) == pids  # the same actors, models loaded once
        assert _rows(tmp_path / "a") == _rows(tmp_path / "b") and first["accepted"] == again["accepted"]
        # other operator parameters: the old actors end, new ones hold the new parameters
        old = list(engine._POOL[0][1])
        pipeline.curate("stage1", str(photos), str(tmp_path / "c"), skip=["clip"], workers=2,
                        sets={"nsfw": {"max_prob": 0.5}})
        assert set(_pids(engine)).isdisjoint(pids)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(old[0].ready.remote(), timeout=60)
    finally:
        engine.end_pool()
    assert not engine._POOL
