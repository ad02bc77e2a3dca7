"""The shared job lifecycle: plan found again by key, resume after kill -9, finalize's checks, run record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from flywheel.catalog import Catalog
from flywheel.datasets import open_dataset
from flywheel.lifecycle import Job, JobError, run_record

UNITS = ["u0", "u1", "u2", "u3"]


def _rows(unit: str) -> pa.Table:
    return pa.table({"id": [f"{unit}-a", f"{unit}-b"], "source": [unit, unit]})


def _prepare(tmp_path: Path, **plan) -> Job:
    return Job.prepare("toy", {"input": "toy-input"}, {"output": str(tmp_path / "out"), **plan}, UNITS,
                       run={"input": "toy-input", "output": str(tmp_path / "out")})


def _run(job: Job, ran: list[str]) -> None:
    for u in job.pending():
        job.commit(u, [job.write_part(_rows(u))], stats={"rows": 2})
        ran.append(u)


# The child writes u0 and u1 and commits them, writes u2's part, then dies by SIGKILL before committing it.
CHILD = """
import os, signal, sys
import pyarrow as pa
from flywheel.lifecycle import Job

job = Job(sys.argv[1])
for u in job.pending():
    name = job.write_part(pa.table({"id": [u + "-a", u + "-b"], "source": [u, u]}))
    if u == "u2":
        os.kill(os.getpid(), signal.SIGKILL)
    job.commit(u, [name], stats={"rows": 2})
"""


def test_resume_after_kill_skips_committed_units(tmp_path):
    job = _prepare(tmp_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(job.state)], env=dict(os.environ), timeout=120)
    assert proc.returncode == -9
    assert len(list(job.parts_dir.glob("part-*.parquet"))) == 3  # u2's part is on disk but uncommitted

    again = _prepare(tmp_path, workers=3)  # the same command, another worker count
    assert again.state == job.state and again.run_id == job.run_id and again.plan["workers"] == 3
    assert again.pending() == ["u2", "u3"]
    assert len(list(again.parts_dir.glob("part-*.parquet"))) == 2  # the killed unit's part is gone
    ran: list[str] = []
    _run(again, ran)
    assert ran == ["u2", "u3"]
    m = again.finalize(tmp_path / "out", name="toy", kind="toy", rows=8)
    t = open_dataset(tmp_path / "out").to_table()
    assert t.column("id").to_pylist() == [f"{u}-{x}" for u in UNITS for x in "ab"]  # plan order, each row once
    assert m.run_id == job.run_id and Catalog().resolve_dataset("toy@v1") == (tmp_path / "out").resolve()


def test_another_key_is_another_job(tmp_path):
    a = _prepare(tmp_path)
    _run(a, [])
    b = Job.prepare("toy", {"input": "other-input"}, {}, UNITS)
    assert b.state != a.state and b.pending() == UNITS and a.pending() == []
    c = Job.prepare("toy", {"input": "toy-input"}, {}, UNITS[:2])  # same key, other units: start over
    assert c.state == a.state and c.pending() == UNITS[:2] and c.run_id != a.run_id


def test_finalize_refuses_a_missing_unit(tmp_path):
    job = _prepare(tmp_path)
    for u in ["u0", "u1", "u3"]:
        job.commit(u, [job.write_part(_rows(u))])
    with pytest.raises(JobError, match=r"1 of 4 units .* \(first: u2\); rerun the same command"):
        job.finalize(tmp_path / "out", name="toy", kind="toy")
    assert not (tmp_path / "out").exists() and Catalog().datasets() == []
    job.commit("u2", [job.write_part(_rows("u2").slice(0, 1))])
    with pytest.raises(JobError, match="produced 7 rows for 8 input rows"):
        job.finalize(tmp_path / "out", name="toy", kind="toy", rows=8)
    with pytest.raises(ValueError, match="not in the plan"):
        job.commit("u9", [])
    with pytest.raises(JobError, match="never written"):
        job.commit("u3", ["part-missing.parquet"])


def _run_row(run_id: str):
    return Catalog().execute("SELECT * FROM runs WHERE run_id=?", (run_id,))[0]


def test_run_record_failed_when_a_step_raises(tmp_path):
    job = _prepare(tmp_path)
    assert _run_row(job.run_id)["status"] == "running" and _run_row(job.run_id)["state_key"] == job.plan["key"]
    with pytest.raises(ZeroDivisionError):
        with job.step("score"):
            1 / 0
    row = _run_row(job.run_id)
    assert row["status"] == "failed" and '"step": "score"' in row["stats_json"] and "ZeroDivisionError" in row["stats_json"]

    again = _prepare(tmp_path)  # a rerun records the same run as running again, then succeeded
    assert _run_row(again.run_id)["status"] == "running"
    _run(again, [])
    with again.step("finalize"):
        again.finalize(tmp_path / "out", name="toy", kind="toy", rows=8)
        again.finish({"rows": 8})
    assert _run_row(again.run_id)["status"] == "succeeded" and again.read_json("result.json") == {"rows": 8}


def test_run_record_context(tmp_path):
    cat = Catalog()
    with run_record(cat, "r-ok", "retrain", input="d@v1") as stats:
        stats["steps"] = 3
    with pytest.raises(RuntimeError):
        with run_record(cat, "r-bad", "retrain", input="d@v1") as stats:
            stats["steps"] = 1
            raise RuntimeError("out of memory")
    ok, bad = _run_row("r-ok"), _run_row("r-bad")
    assert (ok["status"], ok["stats_json"], ok["input"]) == ("succeeded", '{"steps": 3}', "d@v1")
    assert bad["status"] == "failed" and "out of memory" in bad["stats_json"] and '"steps": 1' in bad["stats_json"]


def test_row_level_resume_keeps_uncommitted_parts():
    """A job that resumes row by row from whatever parts exist keeps a killed attempt's whole
    parts across prepare; half-written temp files still go."""
    job = Job.prepare("toy", {"input": "rows"}, {}, ["all"], keep_uncommitted=True)
    name = job.write_part(_rows("u0"))
    (job.parts_dir / ".part-cut.parquet.tmp").write_bytes(b"half")
    again = Job.prepare("toy", {"input": "rows"}, {}, ["all"], keep_uncommitted=True)
    assert [p.name for p in again.written_parts()] == [name] and again.parts() == []
    assert [p.name for p in again.parts_dir.iterdir()] == [name]
    again.commit("all", again.written_parts())
    assert again.committed_rows() == 2


# Another process prepares the same job (same key) and prints what happened.
OTHER = """
import sys
from flywheel.lifecycle import Job, JobBusy

try:
    Job.prepare("toy", {"input": "toy-input"}, {"output": sys.argv[1]}, %r)
    print("prepared")
except JobBusy as e:
    print("busy:", e)
""" % UNITS


def test_a_second_process_cannot_run_the_same_job_at_once(tmp_path):
    """Two runs of one key at once would share the state, sweep each other's parts and finalize
    into one output: the second is refused until the first ends (cleanup) or dies."""
    job = _prepare(tmp_path)
    other = [sys.executable, "-c", OTHER, str(tmp_path / "out2")]
    r = subprocess.run(other, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("busy: another run of this job is in progress"), r.stdout + r.stderr
    assert _prepare(tmp_path).run_id == job.run_id  # this process may prepare its own job again
    job.cleanup()
    r = subprocess.run(other, env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "prepared", r.stdout + r.stderr
