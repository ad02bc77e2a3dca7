"""Ingest: every non-sidecar input is a row; what is never followed is counted under ingest:*."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flywheel.curation import ingest


def jpg(color=(200, 30, 30), size=(300, 300)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, color).save(b, "JPEG")
    return b.getvalue()


def rows_of(plan) -> pa.Table:
    tabs = [t for s in plan.shards for t in ingest.read_shard(s) if "__ingest_stats__" not in t.column_names]
    return pa.concat_tables(tabs)


def test_folder_sidecars_orphans_duplicate_stems_and_symlinks(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(jpg())
    (root / "a" / "x.txt").write_text("a red square")
    (root / "a" / "y.png").write_bytes(jpg((0, 0, 255)))  # mislabelled, still a row
    (root / "a" / "y.json").write_text(json.dumps({"caption": "blue", "title": "T"}))
    (root / "a" / "dup.jpg").write_bytes(jpg((1, 2, 3)))
    (root / "a" / "dup.png").write_bytes(jpg((3, 2, 1)))
    (root / "a" / "dup.txt").write_text("which one?")
    (root / "a" / "lonely.txt").write_text("no image")
    (root / "a" / "readme.pdf").write_bytes(b"%PDF-1.4")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpg())
    os.symlink(outside, root / "a" / "link.jpg")
    os.symlink(tmp_path, root / "a" / "dirlink")
    p = ingest.plan(root)
    t = rows_of(p)
    by_src = {r["source"]: r for r in t.to_pylist()}
    assert set(by_src) == {"a/x.jpg", "a/y.png", "a/dup.jpg", "a/dup.png", "a/readme.pdf"}
    assert by_src["a/x.jpg"]["caption"] == "a red square"
    assert by_src["a/y.png"]["caption"] == "blue" and json.loads(by_src["a/y.png"]["meta"])["title"] == "T"
    assert by_src["a/dup.jpg"]["caption"] is None  # ambiguous sidecar is never attached
    assert p.counts == {"ingest:orphan_sidecar": 1, "ingest:duplicate_stem": 1, "ingest:symlink_outside_root": 2}


def test_webdataset_tar_with_unsafe_member(tmp_path):
    buf = tmp_path / "shard.tar"
    with tarfile.open(buf, "w") as tf:
        for name, data in [("0001.jpg", jpg()), ("0001.txt", b"first"), ("0002.png", jpg()), ("0002.json", b'{"caption": "second"}'),
                           ("0003.txt", b"orphan"), ("../evil.jpg", jpg()), ("/abs.jpg", jpg())]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    p = ingest.plan(buf)
    stats = [json.loads(t.column(0)[0].as_py()) for s in p.shards for t in ingest.read_shard(s) if "__ingest_stats__" in t.column_names]
    t = rows_of(p)
    assert sorted(t.column("source").to_pylist()) == ["shard.tar!0001.jpg", "shard.tar!0002.png"]
    assert sorted(t.column("caption").to_pylist()) == ["first", "second"]
    assert stats == [{"ingest:unsafe_tar_member": 2, "ingest:orphan_sidecar": 1}]


def test_every_image_format_keeps_its_caption_in_folders_and_tars_alike(tmp_path):
    """One list of image extensions for every kind of input: an .mpo (multi-picture JPEG, as
    stereo cameras write), a .webp and a .gif in a tar keep their captions as they do in a folder."""
    frames = [Image.new("RGB", (320, 240), c) for c in ((200, 30, 30), (30, 200, 30))]
    b = io.BytesIO()
    frames[0].save(b, "MPO", save_all=True, append_images=frames[1:])
    mpo = b.getvalue()
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    others = {}
    for ext, fmt in (("webp", "WEBP"), ("gif", "GIF")):
        b = io.BytesIO()
        frames[1].save(b, fmt)
        others[ext] = b.getvalue()
    items = [("0001.mpo", mpo, "stereo pair"), ("0002.webp", others["webp"], "a webp"), ("0003.gif", others["gif"], "a gif")]
    folder = tmp_path / "folder"
    folder.mkdir()
    tar_path = tmp_path / "shard.tar"
    with tarfile.open(tar_path, "w") as tf:
        for name, data, cap in items:
            (folder / name).write_bytes(data)
            (folder / name).with_suffix(".txt").write_text(cap)
            for member, payload in ((name, data), (name.rsplit(".", 1)[0] + ".txt", cap.encode())):
                ti = tarfile.TarInfo(member)
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
    want = {name: cap for name, _, cap in items}
    from_folder = {r["source"]: r["caption"] for r in rows_of(ingest.plan(folder)).to_pylist()}
    from_tar = {r["source"].split("!")[1]: r["caption"] for r in rows_of(ingest.plan(tar_path)).to_pylist()}
    assert from_folder == want and from_tar == want


def test_parquet_bytes_paths_and_custom_columns(tmp_path):
    (tmp_path / "img.jpg").write_bytes(jpg())
    t = pa.table({"pic": [jpg(), "img.jpg", "missing.jpg"], "text": ["one", "two", None], "url": ["u1", "u2", "u3"]})
    # mixed types are not allowed in one arrow column: write bytes and paths as two files
    pq.write_table(pa.table({"pic": [jpg()], "text": ["one"]}), tmp_path / "bytes.parquet")
    pq.write_table(pa.table({"pic": ["img.jpg", "missing.jpg"], "text": ["two", None], "url": ["u2", "u3"]}), tmp_path / "paths.parquet")
    del t
    rows = []
    for f in ("bytes.parquet", "paths.parquet"):
        rows += rows_of(ingest.plan(tmp_path / f, image_col="pic", caption_col="text")).to_pylist()
    assert [r["source"] for r in rows] == ["bytes.parquet#0", "paths.parquet#0", "paths.parquet#1"]
    assert rows[0]["image"] and rows[1]["image"] and rows[2]["image"] is None  # unreadable: a row, rejected later
    assert json.loads(rows[1]["meta"]) == {"url": "u2"}
    with pytest.raises(ValueError, match="--image-col"):
        rows_of(ingest.plan(tmp_path / "bytes.parquet"))


def test_edit_pair_manifest(tmp_path):
    (tmp_path / "s.jpg").write_bytes(jpg((9, 9, 9)))
    (tmp_path / "t.jpg").write_bytes(jpg((200, 9, 9)))
    lines = [
        {"source": "s.jpg", "instruction": "make it red", "target": "t.jpg"},
        {"sources": ["s.jpg", "gone.jpg"], "instruction": "x", "target": "t.jpg"},
        {"source": "../../etc/passwd", "instruction": "x", "target": "t.jpg"},
        "not json",
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines))
    p = ingest.plan(tmp_path / "pairs.jsonl")
    rows = rows_of(p).to_pylist()
    assert len(rows) == 1 and rows[0]["task"] == "ti2i" and rows[0]["source"] == "pairs.jsonl#L1"
    from flywheel.datasets import pair_id, sample_id

    assert rows[0]["id"] == pair_id([sample_id(jpg((9, 9, 9)))], "make it red", sample_id(jpg((200, 9, 9))))
    assert p.counts == {"ingest:missing_file": 1, "ingest:path_outside_root": 1, "ingest:bad_manifest_line": 1}


def test_resume_skips_done_sources(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(jpg((i, i, i)))
    p = ingest.plan(tmp_path)
    t = pa.concat_tables([t for s in p.shards for t in ingest.read_shard(s, frozenset({"1.jpg", "3.jpg"}))])
    assert sorted(t.column("source").to_pylist()) == ["0.jpg", "2.jpg", "4.jpg"]
