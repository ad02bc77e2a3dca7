"""Run the import-linter contract of pyproject.toml over the code as installed.

setuptools maps filters/, captioning/, training/ and models/ under `flywheel.` (package-dir), but
import-linter finds a package's modules by walking its folder, so on the source tree it would
see none of the four. This script lays the tree out as it installs (a copy in a temporary
folder, `filters/` as `flywheel/filters/` ...) and runs `lint-imports` on that copy, so the
contract is checked against every module. Exit status is lint-imports' own.

    python tests/lint_imports.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout(dest: Path) -> Path:
    """Copy the packages as setuptools' package-dir maps them; returns the folder to put on sys.path."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "weights", "*.pt", "*.onnx", "static", "templates")
    for package, folder in sorted(mapping.items(), key=lambda kv: kv[0].count(".")):
        target = dest.joinpath(*package.split("."))
        shutil.copytree(ROOT / folder, target, ignore=ignore, dirs_exist_ok=True)
    return dest


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="flywheel-layers-") as tmp:
        site = layout(Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(site))
        exe = Path(sys.executable).with_name("lint-imports")
        if not exe.exists():  # a venv whose scripts live elsewhere (e.g. packages reached through a .pth)
            exe = Path(shutil.which("lint-imports") or exe)
        return subprocess.run([str(exe), str(ROOT / "pyproject.toml"), "--no-cache", *sys.argv[1:]],
                              env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
