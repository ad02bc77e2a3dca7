"""Captioning fixtures: the tiny random Qwen3-VL (built once per session) and small datasets."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pytest


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from flywheel.captioning.tiny_model import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl") / "model")


def png(colour, size=(96, 64), text: str | None = None) -> bytes:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, colour)
    if text:
        ImageDraw.Draw(im).text((4, 4), text, fill="black")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def sample_table() -> pa.Table:
    """Three t2i rows (one with metadata, one twice at two sources) and one edit pair."""
    from flywheel.datasets import BASE_SCHEMA, conform, pair_id, sample_id

    red, blue, green, white = png("red"), png("blue", (64, 96)), png("green"), png("white")
    rows = [
        dict(id=sample_id(red), source="a.png", task="t2i", image=red, caption="a red card", width=96, height=64,
             format="PNG", meta=json.dumps({"title": "Red card", "alt": "red rectangle"})),
        dict(id=sample_id(blue), source="b.png", task="t2i", image=blue, caption=None, width=64, height=96,
             format="PNG"),
        dict(id=sample_id(blue), source="copy/b.png", task="t2i", image=blue, caption="blue", width=64, height=96,
             format="PNG"),
        dict(id=pair_id([sample_id(white)], "please make it green ", sample_id(green)), source="pairs.jsonl#0",
             task="ti2i", image=green, source_ids=[sample_id(white)], source_images=[white],
             instruction="please make it green ", width=96, height=64, format="PNG"),
    ]
    cols = {f.name: [r.get(f.name) for r in rows] for f in BASE_SCHEMA}
    return conform(pa.table(cols, schema=BASE_SCHEMA), BASE_SCHEMA)


@pytest.fixture
def small_dataset(tmp_path):
    """`sample_table()` written as a registered dataset `pool@v1`; returns its directory."""
    from flywheel.catalog import Catalog
    from flywheel.datasets import DatasetWriter

    dest = tmp_path / "pool"
    with DatasetWriter(dest, name="pool", kind="accepted", catalog=Catalog(), rows_per_part=2) as w:
        w.write(sample_table())
    return dest
