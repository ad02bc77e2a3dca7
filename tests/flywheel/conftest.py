from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo's generated sample set (real photos, broken files, pages in many scripts...)."""
    from flywheel.demos.sample_data import generate

    root = tmp_path_factory.mktemp("corpus") / "input"
    generate(root, n=30)
    return root




@pytest.fixture(scope="session")
def s3server(tmp_path_factory):
    """One SeaweedFS S3 server (tests/seaweed.py) for the session's object-storage tests, killed at
    teardown even when a test failed."""
    from seaweed import SeaweedS3

    srv = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def s3env(s3server, monkeypatch):
    """The server's read-write identity in the standard AWS variables, nothing else of AWS set."""
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3server.env().items():
        monkeypatch.setenv(k, v)
    return s3server
