"""The Ray deploy files are what the cluster tests run (cheap, default suite): KubeRay's RayCluster and
the driver Job (deploy/kuberay/), the cluster launcher's YAML (deploy/ray-cluster.yaml). Same Ray
version as installed, `ray start` options that exist, the same real `flywheel curate` command, the same env."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import raydeploy  # noqa: E402
from raycluster import AUTH  # noqa: E402

LAUNCHER = raydeploy.DEPLOY / "ray-cluster.yaml"
RAYCLUSTER = raydeploy.DEPLOY / "kuberay" / "raycluster.yaml"


def _ray_start():
    from ray.scripts.scripts import start

    return start


def test_deploy_files_match_the_installed_ray_the_cli_and_the_tests():
    import click
    import jsonschema
    import ray
    import typer

    from flywheel.cli import _register_all, app

    for f in (raydeploy.DEPLOY / "kuberay").glob("*.yaml"):  # one document each, a Kubernetes object
        (doc,) = yaml.safe_load_all(f.read_text())
        assert doc["apiVersion"] and doc["kind"] in ("RayCluster", "Job") and doc["metadata"]["name"]
    rc = yaml.safe_load(RAYCLUSTER.read_text())
    launcher = yaml.safe_load(LAUNCHER.read_text())
    # one Ray version everywhere: the installed one
    assert rc["kind"] == "RayCluster" and rc["spec"]["rayVersion"] == ray.__version__
    pins = set(re.findall(r"ray\[data\]==([\w.]+)", LAUNCHER.read_text()))
    assert pins == {ray.__version__}
    # the launcher file is valid for Ray's own schema (what `ray up` checks)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(launcher, schema)

    # every `ray start` option used exists in this Ray, and its commands parse
    start = _ray_start()
    opts = {o.lstrip("-") for p in start.params for o in p.opts}
    groups = [rc["spec"]["headGroupSpec"], *rc["spec"]["workerGroupSpecs"]]
    for g in groups:
        assert set(g["rayStartParams"]) <= opts, set(g["rayStartParams"]) - opts
    for cmd in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]:
        argv = shlex.split(cmd.replace("$RAY_HEAD_IP", "10.0.0.1"))
        if argv[:2] == ["ray", "start"]:
            start.make_context("start", argv[2:])

    # the entrypoint is a real CLI command whose options parse, the same in both deploy files and the tests
    argv = raydeploy.entrypoint()
    assert argv[:2] == ["flywheel", "curate"]
    _register_all()  # what `flywheel` does before it parses
    group = typer.main.get_command(app)
    sub = group.get_command(click.Context(group), argv[1])
    ctx = sub.make_context(argv[1], argv[2:])
    assert ctx.params["recipe"] == "stage1" and ctx.params["workers"] >= 1
    line = next(x for x in LAUNCHER.read_text().splitlines() if x.startswith("# entrypoint: "))
    assert shlex.split(line.removeprefix("# entrypoint: ")) == argv
    from test_ray_cluster import curate_argv

    assert curate_argv(Path("/i"), Path("/o"))[3:] == raydeploy.entrypoint("/i", "/o")[1:]

    # the same env: token auth as the test nodes, no local flywheel server, no usage stats
    want = {**AUTH, "RAY_USAGE_STATS_ENABLED": "0", "FLYWHEEL_SERVER": "off"}
    driver_env = raydeploy.plain_env(raydeploy.driver())
    for g in groups:
        c = g["template"]["spec"]["containers"][0]
        assert raydeploy.plain_env(c).items() >= want.items()
        assert c["image"] == raydeploy.driver()["image"]
    assert driver_env.items() >= want.items() and driver_env["RAY_ADDRESS"].endswith(":" + groups[0]["rayStartParams"]["port"])
    exports = dict(re.findall(r"export (\w+)=([^\\\n']+)", LAUNCHER.read_text()))
    assert exports.items() >= want.items()
