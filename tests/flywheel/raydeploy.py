"""The deploy manifests' curation command and env (deploy/kuberay/, deploy/ray-cluster.yaml), which the
cluster tests run as they are, with their own input and output paths."""

from __future__ import annotations

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
INPUT, OUTPUT = "/data/input", "/data/curated"  # the manifests' paths, replaced by a test's own


def job() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / "curate-job.yaml").read_text())


def driver() -> dict:
    return job()["spec"]["template"]["spec"]["containers"][0]


def entrypoint(inp: Path | str = INPUT, out: Path | str = OUTPUT) -> list[str]:
    """The Job's command, e.g. ['flywheel', 'curate', '--recipe', 'stage1', ...], on these paths."""
    sub = {INPUT: str(inp), OUTPUT: str(out)}
    return [sub.get(a, a) for a in driver()["command"]]


def plain_env(container: dict) -> dict[str, str]:
    """The literal env of a container (secret references left out)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
