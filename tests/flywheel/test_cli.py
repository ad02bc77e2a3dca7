"""The `flywheel` command as a user meets it: help, listings, and errors that say what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FLYWHEEL = str(Path(sys.executable).parent / "flywheel")


def run(*args, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "COLUMNS": "200"}
    p = subprocess.run([FLYWHEEL, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_help_lists_the_commands(tmp_path):
    out = run("--help", home=tmp_path).stdout
    for cmd in ("curate", "demo", "ops", "recipes", "runs", "explain", "sql"):
        assert cmd in out


def test_ops_and_recipes(tmp_path):
    out = run("ops", home=tmp_path).stdout
    assert "entropy:near_blank" in out and "broken_file:truncated" in out and "min_extent" in out
    out = run("recipes", home=tmp_path).stdout
    for i in range(1, 7):
        assert f"stage{i}" in out


@pytest.fixture
def photo_dir(tmp_path):
    from PIL import Image
    from skimage import data

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(data.astronaut()).save(d / "a.jpg")
    return d


def test_unknown_skip_lists_known_operators_and_writes_nothing(tmp_path, photo_dir):
    home = tmp_path / "home"
    p = run("curate", "--recipe", "stage1", "--input", str(photo_dir), "--output", str(tmp_path / "o"),
            "--skip", "nsfw,rotaton", home=home, check=False)
    assert p.returncode == 2
    assert "--skip rotaton: unknown operator; known:" in p.stderr and "rotation" in p.stderr
    assert not (tmp_path / "o").exists() and not (home / "state").exists()


def test_bad_set_names_the_param(tmp_path, photo_dir):
    p = run("curate", "--recipe", "stage1", "--input", str(photo_dir), "--output", str(tmp_path / "o"),
            "--skip", "nsfw,rotation,clip", "--set", "entropy.min_edgez=0.1", home=tmp_path / "h", check=False)
    assert p.returncode == 2 and "entropy" in p.stderr and "min_edgez" in p.stderr
    p = run("curate", "--recipe", "stage1", "--input", str(photo_dir), "--output", str(tmp_path / "o"),
            "--set", "entropy=3", home=tmp_path / "h", check=False)
    assert p.returncode == 2 and "OPERATOR.PARAM=VALUE" in p.stderr


def test_missing_model_stops_before_anything_starts(tmp_path, photo_dir):
    home = tmp_path / "home"
    p = run("curate", "--recipe", "stage1", "--input", str(photo_dir), "--output", str(tmp_path / "o"),
            home=home, check=False)
    assert p.returncode == 2
    assert "cannot start" in p.stderr and "--skip" in p.stderr and "clip" in p.stderr
    assert not (tmp_path / "o").exists() and not (home / "state").exists()


def test_sql_over_an_empty_catalog_and_a_bad_query(tmp_path):
    out = run("sql", "SELECT count(*) AS n FROM runs", home=tmp_path).stdout
    assert "0" in out
    p = run("sql", "SELECT * FROM no_such_table", home=tmp_path, check=False)
    assert p.returncode == 2 and "no_such_table" in p.stderr


def test_train_rotation_reads_a_dataset_by_name_and_installs_the_head(tmp_path, monkeypatch):
    """`flywheel models train rotation --input name@vN`: the catalog resolves the name, curation's decoder
    reads the images, the head lands in the model store under --name."""
    import numpy as np

    from flywheel.catalog import Catalog
    from flywheel.models import rotation as R
    from flywheel.training import synthetic as syn

    home = tmp_path / "home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))  # the catalog the command will read
    syn.write_dataset(tmp_path / "upright", 4, seed=1, size=48, name="upright", catalog=Catalog())
    p = run("models", "train", "rotation", "--input", "upright@v1", "--name", "rot-cli", "--crops", "1",
            "--head", "linear", home=home)
    assert "trained on 4 photos (16 examples); installed rot-cli" in p.stdout.replace("\n", " "), p.stdout
    installed = home / "models" / "rot-cli" / R.HEAD_FILE
    head = R.Head.load(installed)
    assert head.w.shape == (R.PhotoFeatures.dim, 4) and head.w1 is None and np.isfinite(head.w).all()
    p = run("models", "train", "rotation", "--input", "upright@v1", "--head", "mlpp", home=home, check=False)
    assert p.returncode == 2 and "mlpp" in p.stderr
