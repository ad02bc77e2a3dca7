"""Retraining on the job lifecycle: run records and step skipping, without training a model
(`tests/flywheel/test_loop.py::test_retrain_flow_records_before_after` trains one, marked slow)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flywheel.catalog import Catalog
from flywheel.loop import retrain as rt

BAD_CFG = {"out": "ckpt", "datasets": ["d"], "no_such_option": 1}  # the trainer's config rejects it


def _run(run_id: str):
    return Catalog().execute("SELECT * FROM runs WHERE run_id=?", (run_id,))[0]


def test_train_step_that_raises_is_recorded_failed():
    cat = Catalog()
    with pytest.raises(ValidationError, match="no_such_option"):
        rt.train_step(cat, "d@v1", BAD_CFG, "train-bad")
    row = _run("train-bad")
    assert (row["kind"], row["status"], row["input"], row["output"]) == ("retrain", "failed", "d@v1", "ckpt")
    assert "no_such_option" in json.loads(row["stats_json"])["error"]
    assert rt.last_checkpoint(cat) is None  # a failed run's checkpoint is never the next init


def test_retrain_job_fails_at_its_step_and_skips_finished_steps():
    cat = Catalog()
    key = {"train": BAD_CFG, "seeds": [0]}
    job = rt.prepare(cat, "d@v2", key, before=False, run={"input": "d@v2", "output": "ckpt"})
    assert job.plan["units"] == ["train", "eval-after"]
    with pytest.raises(ValidationError, match="no_such_option"):
        rt.train_unit(job, BAD_CFG)
    row = _run(job.run_id)
    assert row["status"] == "failed" and json.loads(row["stats_json"])["step"] == "train"

    # a finished step is not run again: the same retraining, with the training committed, returns
    # the committed result instead of calling the trainer with a config it would reject
    again = rt.prepare(cat, "d@v2", key, before=False, run={"input": "d@v2", "output": "ckpt"})
    assert again.run_id == job.run_id and _run(job.run_id)["status"] == "running"
    again.commit("train", [], {"ckpt": "ckpt", "steps": 7, "loss": 0.5})
    assert rt.train_unit(rt.prepare(cat, "d@v2", key, before=False), BAD_CFG)["steps"] == 7
    again.commit("eval-after", [], {"rows": [{"concept": "red circle", "seed": 0, "concept_ok": True}]})
    assert rt.eval_unit(again, "after", "ckpt", [], [0], {}, "d@v2") == [{"concept": "red circle", "seed": 0,
                                                                         "concept_ok": True}]
    rt.finish(again, again.committed("train"))
    assert _run(job.run_id)["status"] == "succeeded" and rt.last_checkpoint(cat) == "ckpt"
    assert not again.state.exists()
