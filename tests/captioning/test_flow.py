"""The caption flow and CLI: a new dataset version, every row kept, catalog lineage, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from flywheel.captioning.annotate import token_column
from flywheel.captioning.cache import CaptionCache
from flywheel.catalog import Catalog
from flywheel.datasets import open_dataset


def _cli():
    from flywheel.cli import _register_all, app

    _register_all()
    return app


def test_cli_writes_a_captioned_version_with_lineage(small_dataset, tmp_path, prefect_harness):
    out = tmp_path / "captioned"
    r = CliRunner().invoke(_cli(), ["caption", "--input", "pool@v1", "--output", str(out), "--types",
                                    "general,knowledge,structured", "--backend", "offline", "--workers", "0"])
    assert r.exit_code == 0, r.output
    ds = open_dataset(out)
    assert ds.manifest.kind == "captioned" and ds.manifest.parents == ["pool@v1"]
    assert ds.manifest.extra["caption"]["backend"] == "offline" and ds.manifest.rows == 4
    t = ds.to_table()
    assert sorted(zip(t.column("id").to_pylist(), t.column("source").to_pylist())) == sorted(
        zip(*(open_dataset(small_dataset).to_table(columns=["id", "source"]).column(c).to_pylist() for c in ("id", "source"))))
    assert all(c["general"] and c["structured"] for c in t.column("captions").to_pylist())
    assert all(n > 0 for n in t.column(token_column("knowledge")).to_pylist())
    got = Catalog().query("SELECT count(*) AS n FROM samples WHERE dataset = 'captioned@v1' AND captions.general LIKE '[offline]%'")
    assert got.column("n")[0].as_py() == 4
    run = Catalog().execute("SELECT kind, status, input FROM runs WHERE kind='caption'")[0]
    assert (run["status"], run["input"]) == ("succeeded", "pool@v1")


def test_cli_errors_say_what_to_do(small_dataset, tmp_path):
    app = _cli()
    r = CliRunner().invoke(app, ["caption", "--input", "pool@v1", "--output", str(tmp_path / "o"), "--types", "poem"])
    assert r.exit_code != 0 and "--types" in str(r.exception)
    r = CliRunner().invoke(app, ["caption", "--input", "pool@v1", "--output", str(tmp_path / "o"), "--backend", "transformers"])
    assert "--model" in str(r.exception)
    r = CliRunner().invoke(app, ["caption", "--input", "nothere@v3", "--output", str(tmp_path / "o")])
    assert "nothere" in str(r.exception)


def test_captioning_an_empty_dataset_says_so_and_writes_nothing(tmp_path):
    from flywheel.datasets import DatasetWriter

    with DatasetWriter(tmp_path / "empty", "empty", "accepted") as w:
        w.close()
    r = CliRunner().invoke(_cli(), ["caption", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o"),
                                    "--backend", "offline", "--workers", "0"])
    assert r.exit_code != 0 and "has no rows" in str(r.exception)
    assert not (tmp_path / "o").exists()


def test_flow_on_ray_actors(small_dataset, tmp_path, ray_local, prefect_harness):
    from flywheel.flows import caption as cf
    from flywheel.jobs import caption as fc

    state = fc.prepare(str(small_dataset), str(tmp_path / "out"), types=["knowledge", "structured"],
                       backend="offline", workers=1, batch_size=2)
    stats = cf.caption_flow(state=state)
    assert stats["rows"] == 4 and stats["errors"] == {}
    assert not Path(state).exists()
    t = open_dataset(tmp_path / "out").to_table()
    assert t.num_rows == 4 and all(c["knowledge"] for c in t.column("captions").to_pylist())


RUNNER = """
import sys
from flywheel.jobs import caption as fc
fc.caption_parts(sys.argv[1])
"""


def test_killed_run_resumes_from_the_cache(tmp_path):
    """Kill a caption run after its first input file is committed, rerun: the committed file is
    skipped, and of the rest nothing cached is generated again."""
    from cap_data import sample_table

    from flywheel.datasets import DatasetWriter
    from flywheel.jobs import caption as fc
    from flywheel.lifecycle import Job

    small_dataset = tmp_path / "pool"
    with DatasetWriter(small_dataset, name="pool", kind="accepted", catalog=Catalog(), rows_per_part=2) as w:
        w.write(sample_table().slice(0, 2))
        w.write(sample_table().slice(2))
    kw = dict(types=["text", "knowledge"], backend="offline", workers=0, batch_size=1)
    state = fc.prepare(str(small_dataset), str(tmp_path / "out"), **kw)
    assert len(Job(state).plan["units"]) == 2  # a unit is an input file
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, state], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = Path(state) / "done"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(done.glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = Job(state).committed_rows()
    written = sum(pq.ParquetFile(f).metadata.num_rows for f in (Path(state) / "parts").glob("part-*.parquet"))
    assert committed == 2 and written < 4, "the run finished before it could be killed"
    cached = CaptionCache().count()
    assert cached >= 2 * committed

    state2 = fc.prepare(str(small_dataset), str(tmp_path / "out"), **kw)  # the same command finds the run again
    assert state2 == state and Job(state).pending() == [Job(state).plan["units"][1]]
    fc.caption_parts(state)
    stats = json.loads((Path(state) / "caption_stats.json").read_text())
    assert stats["units_resumed"] == 1
    # only the two rows of the uncommitted file are captioned, and nothing cached is generated
    # again (copy/b.png there hits the captions b.png wrote in the committed file)
    cap = stats["captioner"]
    assert cap["hits"] + cap["generated"] == 2 * 2 and cap["hits"] >= cached - 2 * committed
    assert cap["generated"] == CaptionCache().count() - cached
    fc.finalize(state)
    t = open_dataset(tmp_path / "out").to_table(columns=["source"])
    assert sorted(t.column("source").to_pylist()) == sorted(
        open_dataset(small_dataset).to_table(columns=["source"]).column("source").to_pylist())
