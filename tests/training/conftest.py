"""Fixtures for the trainer tests: small datasets written in the dataset contract (flywheel/datasets.py),
as `flywheel curate` emits them, and a tiny random Qwen3-VL saved with its processor."""

from __future__ import annotations

import io
import os

import pytest

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("square", "circle")


def _png(size, colour, shape, bg=(255, 255, 255)) -> bytes:
    from PIL import Image, ImageDraw

    w, h = size
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    (d.rectangle if shape == "square" else d.ellipse)(box, fill=colour)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(dest, n_t2i: int = 8, n_ti2i: int = 4, sizes=((64, 64), (96, 64))):
    """Rows in BASE_SCHEMA plus the decision columns a curated dataset carries; one rejected row that
    the trainer must skip."""
    import pyarrow as pa

    from flywheel.datasets import BASE_SCHEMA, DatasetWriter, pair_id, sample_id

    rows = []
    names = list(COLOURS)
    for i in range(n_t2i + 1):
        colour, shape, size = names[i % 4], SHAPES[(i // 4) % 2], sizes[i % len(sizes)]
        img = _png(size, COLOURS[colour], shape)
        rows.append(dict(
            id=sample_id(img), source=f"synthetic/{i}.png", task="t2i", image=img, width=size[0], height=size[1],
            format="PNG", has_alpha=False, caption=f"{colour} {shape}",
            captions={"general": f"a {colour} {shape} on a white background", "text": None,
                      "knowledge": f"a simple {shape}", "structured": f'{{"objects": [{{"shape": "{shape}", "colour": "{colour}"}}]}}'},
            reject_reason="resolution:too_small" if i == n_t2i else None,
        ))
    for i in range(n_ti2i):
        src_colour, dst_colour = names[i % 4], names[(i + 1) % 4]
        src = _png((64, 64), COLOURS[src_colour], "square")
        dst = _png((64, 64), COLOURS[dst_colour], "square")
        instruction = f"make the square {dst_colour}"
        rows.append(dict(
            id=pair_id([sample_id(src)], instruction, sample_id(dst)), source=f"edits.jsonl#{i}", task="ti2i",
            image=dst, width=64, height=64, format="PNG", has_alpha=False, caption=None,
            captions={"general": f"a {dst_colour} square", "text": None, "knowledge": None, "structured": None},
            source_ids=[sample_id(src)], source_images=[src], instruction=instruction, reject_reason=None,
        ))
    schema = BASE_SCHEMA.append(pa.field("reject_reason", pa.string())).append(pa.field("clip__score", pa.float32()))
    table = pa.Table.from_pylist(rows, schema=schema)
    with DatasetWriter(dest, name="toyset", kind="emitted") as w:
        w.write(table)
    return dest


@pytest.fixture
def toy_dataset(tmp_path):
    return write_dataset(tmp_path / "toyset")


@pytest.fixture(scope="session")
def tiny_qwen3vl(tmp_path_factory):
    from builders import tiny_qwen3vl_encoder

    return tiny_qwen3vl_encoder(tmp_path_factory.mktemp("tiny-qwen3vl"))


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield
    torch.set_num_threads(n)
