"""A small synthetic world for the loop's tests: a training set with a planted gap (no red
triangles) and a reserve pool drawn without it, both indexed with the offline MiniLM encoder.
Built once per test process (the encoder load dominates) and registered into each test's own
catalog, so tests never share catalog state."""

from __future__ import annotations

import functools
import json
from pathlib import Path

N_TRAIN = 384
N_RESERVE = 384


@functools.cache
def build(root: str) -> dict[str, Path]:
    import torch

    torch.set_num_threads(1)
    from flywheel.loop import index as fx
    from flywheel.training import synthetic as syn

    root = Path(root)
    paths = {
        "train": root / "train",
        "reserve": root / "reserve",
    }
    syn.write_dataset(paths["train"], N_TRAIN, seed=0, size=32, gap=syn.Gap("red", "triangle", 0.0), name="train")
    syn.write_dataset(paths["reserve"], N_RESERVE, seed=1, size=32, name="reserve")
    for p in paths.values():
        fx.build(p)
    return paths


def register(cat, paths: dict[str, Path]) -> dict[str, str]:
    """Register the world's datasets in `cat` (a fresh catalog numbers them v1, as their manifests say)."""
    refs = {}
    for key, p in paths.items():
        m = json.loads((p / "manifest.json").read_text())
        v = cat.reserve_dataset(m["name"], m["kind"])
        assert v == m["version"], "register the world into a fresh catalog"
        cat.commit_dataset(m["name"], v, str(p), m)
        refs[key] = f"{m['name']}@v{v}"
    return refs
