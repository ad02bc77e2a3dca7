"""Sample rows for the captioning tests (imported by name: conftest puts this folder on sys.path,
since the suite runs with --import-mode=importlib)."""

from __future__ import annotations

import io
import json

import pyarrow as pa


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
