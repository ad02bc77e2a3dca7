"""`flywheel deploy`: the deployments file, the dataset-committed event, and (slow) a real
`prefect server start` with a process worker running the deployments."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CPU_SKIP = ["nsfw", "rotation", "clip"]


# -- cheap: the file, the flows it names, the event -------------------------------------------------
def test_the_deployments_file_validates_and_maps_to_the_real_flows():
    from prefect import Flow

    from flywheel.flows import deploy as dp
    from flywheel.flows import events

    spec = dp.load(REPO / "deploy" / "deployments.yaml")
    by_flow = {d.flow for d in spec.deployments}
    assert {"curate", "caption", "route", "retrain"} <= by_flow
    assert spec.work_pool.type == "process"
    rds = {rd.name: rd for rd in dp.runner_deployments(spec)}
    for d in spec.deployments:
        assert isinstance(dp.flow_function(d.flow), Flow)
        mod, _, fn = dp.FLOWS[d.flow].partition(":")
        assert rds[d.name].entrypoint == f"{mod}.{fn}"  # module path: no code storage to pull
    stages = {d.parameters["recipe"] for d in spec.deployments if d.flow == "curate"}
    assert {"stage1", "stage2"} <= stages
    retrain = next(d for d in spec.deployments if d.flow == "retrain")
    assert retrain.schedule is None  # started by the event, never by polling
    (trig,) = rds[retrain.name].triggers
    assert trig.expect == {events.EVENT} and trig.posture == "Reactive"
    assert trig.match.root["flywheel.dataset.kind"] == "emitted"
    assert trig.parameters == {"dataset": "{{ event.resource['flywheel.dataset.ref'] }}"}
    route = next(d for d in spec.deployments if d.flow == "route")
    assert route.schedule is not None


@pytest.mark.parametrize("bad, msg", [
    ({"flow": "curate", "parameters": {"recipe": "stage1"}, "schedule": {"cron": "0 1 * * *"}}, "needs"),
    ({"flow": "curate", "parameters": {"recipe": "stage1", "bogus": 1}}, "takes no parameter"),
    ({"flow": "curatee"}, "unknown flow"),
    ({"flow": "route", "schedule": {"cron": "every night"}}, "cron"),
    ({"flow": "route", "parameters": {"trained_on": ["a"], "reserve": ["b"], "k_retrieve": "many"}}, "k_retrieve"),
    ({"flow": "route", "retries": 3}, "Extra inputs"),
])
def test_a_bad_deployment_is_refused_with_its_reason(bad, msg):
    from pydantic import ValidationError

    from flywheel.flows import deploy as dp

    with pytest.raises(ValidationError, match=msg):
        dp.DeploySpec.model_validate({"deployments": [{"name": "x", **bad}]})


def test_a_committed_version_calls_the_hooks_with_the_event_payload(monkeypatch):
    from flywheel import catalog
    from flywheel.flows import events

    seen = []
    monkeypatch.setattr(catalog, "COMMIT_HOOKS", [*catalog.COMMIT_HOOKS, seen.append])
    assert events.on_commit in catalog.COMMIT_HOOKS  # importing flywheel.flows installed it
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # no server: the hook sends nothing
    cat = catalog.Catalog()
    v = cat.reserve_dataset("train", "emitted", run_id="r1")
    assert seen == []  # reserving is not committing
    cat.commit_dataset("train", v, "/data/train/v1", {"rows": 12})
    assert seen == [{"name": "train", "version": 1, "path": "/data/train/v1", "rows": 12, "kind": "emitted", "run_id": "r1"}]
    ev = events.event_of(seen[0])
    assert ev["event"] == "flywheel.dataset.committed"
    assert ev["resource"]["prefect.resource.id"] == "flywheel.dataset.train@v1"
    assert ev["resource"]["flywheel.dataset.ref"] == "train@v1"
    assert ev["resource"]["flywheel.dataset.kind"] == "emitted"
    assert ev["payload"] == {"path": "/data/train/v1", "rows": 12, "run_id": "r1"}
    # Prefect renders the retraining trigger's parameter from exactly these labels
    from prefect.events import Event
    from prefect.server.utilities.user_templates import render_user_template_sync

    event = Event(event=ev["event"], resource=ev["resource"], payload=ev["payload"])
    assert render_user_template_sync("{{ event.resource['flywheel.dataset.ref'] }}", {"event": event}) == "train@v1"


# -- slow: a real Prefect server and worker ------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(p: subprocess.Popen) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` (scheduler, triggers and all) on a free 127.0.0.1 port, state in tmp."""
    d = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(d / "prefect"), "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": url}
    log = open(d / "server.log", "wb")
    p = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                         env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        t = time.monotonic() + 180
        while not _healthy(url):
            assert p.poll() is None, (d / "server.log").read_text()[-3000:]
            assert time.monotonic() < t, "prefect server did not answer in 180 s"
            time.sleep(0.5)
        yield {"url": url, "dir": d}
    finally:
        _stop(p)
        log.close()


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory, demo_corpus):
    """The test's deployments file (the real schema and flows, small parameters) deployed with
    `flywheel deploy`, and a process worker polling its pool; FLYWHEEL_HOME shared by both."""
    home = tmp_path_factory.mktemp("fw-deploy-home")
    url = prefect_server["url"]
    spec = yaml.safe_load((REPO / "deploy" / "deployments.yaml").read_text())
    spec["work_pool"]["name"] = "fw-test-pool"
    stage1 = {"recipe": "stage1", "input": str(demo_corpus), "output_root": "$FLYWHEEL_HOME/curated/s1", "name": "curated-s1",
              "options": {"workers": 1, "skip": CPU_SKIP, "uncaptioned": "allow"}}
    spec["deployments"] = [
        {"name": "s1", "flow": "curate", "parameters": stage1},  # no concurrency limit: the race test's target
        {"name": "caption-s1", "flow": "caption",
         "parameters": {"input": "curated-s1@latest", "output_root": "$FLYWHEEL_HOME/captioned", "name": "captioned-s1",
                        "types": ["general"], "backend": "offline"}},
        {"name": "retrain-on-commit", "flow": "retrain",
         "trigger": {"match": {"flywheel.dataset.kind": "emitted"},
                     "parameters": {"dataset": "{{ event.resource['flywheel.dataset.ref'] }}"}},
         "parameters": {"minutes": 0.05, "n_per_concept": 1, "seeds": 1}},
    ]
    f = home / "deployments.yaml"
    f.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PREFECT_API_URL": url, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": "off", "DO_NOT_TRACK": "1",
           "PREFECT_HOME": str(prefect_server["dir"] / "client"),
           "PREFECT_WORKER_QUERY_SECONDS": "2"}  # poll every 2 s (default 10): the wait to start is the run's own
    r = subprocess.run([sys.executable, "-m", "flywheel", "deploy", "--file", str(f)], env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 deployments on" in r.stdout
    log = open(home / "worker.log", "wb")
    w = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "fw-test-pool", "--type", "process",
                          "--prefetch-seconds", "5"], env=env, stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
    try:
        yield {"url": url, "home": home, "worker_log": home / "worker.log"}
    finally:
        _stop(w)
        log.close()


@contextlib.contextmanager
def _client(url):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as c:
        yield c


def _wait_final(c, ids, log: Path, timeout=900):
    t = time.monotonic() + timeout
    runs = {}
    while time.monotonic() < t:
        runs = {i: c.read_flow_run(i) for i in ids}
        if all(r.state and r.state.is_final() for r in runs.values()):
            return runs
        time.sleep(2)
    raise AssertionError(f"runs not final after {timeout}s: {[(r.name, r.state_name) for r in runs.values()]}\n"
                         + log.read_text()[-4000:])


def _times(runs) -> str:
    return ", ".join(f"{r.name} {r.state_name}: {r.total_run_time.total_seconds():.1f}s run, "
                     f"{(r.start_time - r.expected_start_time).total_seconds():.1f}s to start" for r in runs.values())


@pytest.mark.slow
def test_deployments_run_on_a_worker_and_their_outputs_land_in_the_catalog(deployed, monkeypatch):
    from flywheel.catalog import Catalog

    monkeypatch.setenv("FLYWHEEL_HOME", str(deployed["home"]))
    with _client(deployed["url"]) as c:
        dep = c.read_deployment_by_name("curate-stage/s1")
        run = c.create_flow_run_from_deployment(dep.id)
        runs = _wait_final(c, [run.id], deployed["worker_log"])
        assert runs[run.id].state.is_completed(), deployed["worker_log"].read_text()[-4000:]
        print(f"\n[deploy timing] curate {_times(runs)}")
        cap = c.create_flow_run_from_deployment(c.read_deployment_by_name("caption-dataset/caption-s1").id)
        runs = _wait_final(c, [cap.id], deployed["worker_log"])
        assert runs[cap.id].state.is_completed(), deployed["worker_log"].read_text()[-4000:]
        print(f"[deploy timing] caption {_times(runs)}")
    cat = Catalog()
    ready = {(r["name"], r["version"]): r for r in cat.datasets()}
    assert ("curated-s1", 1) in ready and ready[("curated-s1", 1)]["rows"] > 0
    assert ("captioned-s1", 1) in ready and ready[("captioned-s1", 1)]["rows"] == ready[("curated-s1", 1)]["rows"]
    kinds = {r["kind"] for r in cat.execute("SELECT kind FROM runs WHERE status='succeeded'")}
    assert {"curate", "caption"} <= kinds, kinds

    # `flywheel emit` (outside any flow) commits a version and sends the event; the automation starts retraining on it
    env = {**os.environ, "PREFECT_API_URL": deployed["url"], "FLYWHEEL_HOME": str(deployed["home"])}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "flywheel", "emit", "--from", "curated-s1@v1", "--name", "train"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("train@v1:"), r.stdout + r.stderr
    assert "could not emit" not in r.stderr
    with _client(deployed["url"]) as c:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

        found = None
        t = time.monotonic() + 120
        while found is None and time.monotonic() < t:
            for fr in c.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retrain-on-commit"]))):
                if fr.parameters.get("dataset") == "train@v1":
                    found = fr
            time.sleep(1)
        assert found is not None, "no retraining run was started by the dataset-committed event"
        print(f"[deploy timing] event -> retraining run created after {found.created.timestamp() - t0:.1f}s")
        # the retraining itself is the loop's (tests/flywheel/test_retrain.py); stop it here
        from prefect.states import Cancelling

        c.set_flow_run_state(found.id, Cancelling(), force=True)


@pytest.mark.slow
def test_two_runs_of_one_deployment_at_once_never_write_one_version_twice(deployed, monkeypatch):
    from flywheel.catalog import Catalog

    monkeypatch.setenv("FLYWHEEL_HOME", str(deployed["home"]))
    before = {r["version"] for r in Catalog().execute("SELECT version FROM datasets WHERE name='curated-s1'")}
    with _client(deployed["url"]) as c:
        dep = c.read_deployment_by_name("curate-stage/s1")
        ids = [c.create_flow_run_from_deployment(dep.id).id for _ in range(2)]  # both scheduled now
        runs = _wait_final(c, ids, deployed["worker_log"])
        print(f"\n[deploy timing] two at once: {_times(runs)}")
    done = [r for r in runs.values() if r.state.is_completed()]
    assert done, [r.state.message for r in runs.values()]
    for r in runs.values():  # a run that did not complete was refused, not half-written
        assert r.state.is_completed() or "another run of this job is in progress" in (r.state.message or ""), r.state.message
    rows = Catalog().execute("SELECT version, path, run_id, status FROM datasets WHERE name='curated-s1' ORDER BY version")
    new = [r for r in rows if r["version"] not in before]
    assert len(new) == len(done) and all(r["status"] == "ready" for r in new)
    assert len({r["path"] for r in new}) == len(new) and len({r["run_id"] for r in new}) == len(new)
    for r in new:  # each version's manifest is the one its own run wrote
        m = json.loads((Path(r["path"]) / "manifest.json").read_text())
        assert m["version"] == r["version"] and m["name"] == "curated-s1"


@pytest.mark.slow
def test_deploy_without_an_api_url_uses_the_local_server_with_its_scheduler(tmp_path, monkeypatch):
    """`flywheel deploy` on this FLYWHEEL_HOME's `flywheel server` (started with --services), and
    refused, with the command to run, when that server runs the API only."""
    from flywheel.flows import server

    home = tmp_path / "home"
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "FLYWHEEL_SERVER": "auto", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "flywheel", "deploy", "--only", "route-nightly", "--only", "retrain-on-commit"]
    try:
        server.start(home)  # the API only, as a command starts it
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "flywheel server start --services" in " ".join(r.stderr.split()), r.stdout + r.stderr
        assert server.stop(home)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        st = server.status(home)
        assert st["running"] and st["services"] and st["prefect_url"] in r.stdout
        assert "2 deployments on" in r.stdout
        with _client(st["prefect_url"]) as c:
            dep = c.read_deployment_by_name("route/route-nightly")
            assert dep.schedules and dep.schedules[0].schedule.cron == "30 4 * * *"
            # the scheduler service runs: it creates the nightly run ahead of time
            t = time.monotonic() + 60
            while not c.read_flow_runs(limit=1) and time.monotonic() < t:
                time.sleep(1)
            assert c.read_flow_runs(limit=1), "no scheduled run: the local server has no scheduler"
            autos = c.read_automations_by_name("retrain-on-commit on flywheel.dataset.committed")
            assert autos and autos[0].enabled
    finally:
        server.stop(home)


def test_deploy_check_lists_the_file_and_refuses_a_bad_one(tmp_path):
    from typer.testing import CliRunner

    from flywheel.cli import UserError, _register_all, app

    _register_all()
    r = CliRunner().invoke(app, ["deploy", "--check"])
    assert r.exit_code == 0, r.output
    assert "retrain-on-commit" in r.output and "on flywheel.dataset.committed" in r.output
    assert "8 deployments valid; work pool flywheel-process (process)" in r.output
    bad = tmp_path / "d.yaml"
    bad.write_text("deployments:\n  - {name: x, flow: route, parameters: {trained_on: [a], reserve: [b], k: 1}}\n")
    r = CliRunner().invoke(app, ["deploy", "--check", "--file", str(bad)])
    assert isinstance(r.exception, UserError) and "takes no parameter ['k']" in str(r.exception)
