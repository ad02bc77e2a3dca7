"""An operator from another distribution: one module and an entry point in `flywheel.operators`,
installed with pip, used by a recipe line in a real `flywheel curate` run (real Ray workers find it
through the same entry point)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as pads
from PIL import Image

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")

MODULE = '''
"""grey: images with almost no colour (mean HSV saturation below `min_saturation`)."""

import numpy as np
from pydantic import Field

from flywheel.filters.base import Operator, Params, Rule


class GreyParams(Params):
    min_saturation: float = Field(0.05, ge=0, le=1)


class Grey(Operator):
    name = "grey"
    Params = GreyParams
    writes = ("grey__saturation",)
    rules = (Rule("grey", "grey__saturation", "<", "min_saturation"),)

    def score(self, batch, work):
        out = []
        for w in work:
            if w is None:
                out.append(None)
                continue
            rgb = w.rgb.astype(np.float32)
            mx, mn = rgb.max(axis=2), rgb.min(axis=2)
            out.append(float(np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0).mean()))
        return {"grey__saturation": out}
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "flywheel-op-grey"
version = "0.1"

[tool.setuptools]
py-modules = ["flywheel_op_grey"]

[project.entry-points."flywheel.operators"]
grey = "flywheel_op_grey:Grey"
'''


def test_an_installed_operator_distribution_runs_in_a_recipe(tmp_path):
    src = tmp_path / "dist"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "flywheel_op_grey.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)],
                   check=True, capture_output=True, timeout=300)
    inp = tmp_path / "in"
    inp.mkdir()
    rng = __import__("numpy").random.default_rng(0)
    grey = rng.integers(0, 255, (300, 300, 1), dtype="uint8").repeat(3, axis=2)
    colour = rng.integers(0, 255, (300, 300, 3), dtype="uint8")
    Image.fromarray(grey).save(inp / "grey.png")
    Image.fromarray(colour).save(inp / "colour.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: grey-test\noperators:\n  - grey: {min_saturation: 0.1}\n")
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(site), "COLUMNS": "200"}
    p = subprocess.run([FLYWHEEL, "curate", "--recipe", str(recipe), "--input", str(inp), "--output", str(tmp_path / "out"),
                        "--workers", "1"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rej = pads.dataset(str(tmp_path / "out" / "rejected" / "data")).to_table(
        columns=["source", "reject_reason", "reject_details"]).to_pylist()
    acc = pads.dataset(str(tmp_path / "out" / "accepted" / "data")).to_table(columns=["source", "grey__saturation"]).to_pylist()
    assert [(r["source"], r["reject_reason"]) for r in rej] == [("grey.png", "grey:grey")]
    assert rej[0]["reject_details"][0].startswith("grey__saturation=0 < min_saturation=0.1")
    assert [r["source"] for r in acc] == ["colour.png"] and acc[0]["grey__saturation"] > 0.1
    # without the distribution on the path the recipe names an unknown operator, and says so
    env.pop("PYTHONPATH")
    p = subprocess.run([FLYWHEEL, "curate", "--recipe", str(recipe), "--input", str(inp), "--output", str(tmp_path / "o2")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "grey" in p.stderr
