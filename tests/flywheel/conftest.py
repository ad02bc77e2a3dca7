from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo's generated sample set (real photos, broken files, pages in many scripts...)."""
    from flywheel.demos.sample_data import generate

    root = tmp_path_factory.mktemp("corpus") / "input"
    generate(root, n=30)
    return root


