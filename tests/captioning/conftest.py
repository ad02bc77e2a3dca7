"""Captioning fixtures: the tiny random Qwen3-VL (built once per session) and small datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cap_data, cap_pages (the suite uses --import-mode=importlib)

from cap_data import sample_table  # noqa: E402


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from builders import tiny_qwen3vl_captioner

    return tiny_qwen3vl_captioner(tmp_path_factory.mktemp("tiny-qwen3-vl") / "model")


@pytest.fixture
def small_dataset(tmp_path):
    """`sample_table()` written as a registered dataset `pool@v1`; returns its directory."""
    from flywheel.catalog import Catalog
    from flywheel.datasets import DatasetWriter

    dest = tmp_path / "pool"
    with DatasetWriter(dest, name="pool", kind="accepted", catalog=Catalog(), rows_per_part=2) as w:
        w.write(sample_table())
    return dest
