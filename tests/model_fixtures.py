"""A pytest plugin (tests/conftest.py `pytest_plugins`) shared by tests/models and tests/filters. Tiny random-weight models (tests/builders.py)
built once per session, saved to disk; each test installs them into its own FLYWHEEL_HOME through the
store (`store.add`), the path users take."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from builders import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_aesthetic_dir(tmp_path_factory):
    from builders import tiny_aesthetic

    return tiny_aesthetic(tmp_path_factory.mktemp("tiny-aes"), dim=32)


@pytest.fixture
def tiny_models(tiny_clip_dir, tiny_aesthetic_dir):
    from flywheel.models import store

    store.add("tiny-clip", tiny_clip_dir)
    store.add("tiny-aes", tiny_aesthetic_dir)
    return {"clip": "tiny-clip", "aesthetic": "tiny-aes"}


def photos() -> dict[str, np.ndarray]:
    """Ordinary real photos shipped by installed packages (never the held-out corpus)."""
    from pathlib import Path

    import matplotlib
    import sklearn
    from PIL import Image
    from skimage import data

    out = {n: getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")}
    out["camera"] = np.stack([data.camera()] * 3, axis=-1)
    imgs = Path(sklearn.__file__).parent / "datasets" / "images"
    for f in ("china.jpg", "flower.jpg"):
        out[f] = np.asarray(Image.open(imgs / f).convert("RGB"))
    out["grace_hopper"] = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB"))
    return out
