"""`flywheel deploy`: the deployments of `deploy/deployments.yaml` registered on a Prefect server.

One file holds every deployment's flow, schedule, parameters and trigger, and the work pool they
run on (`DeploySpec`, pydantic, unknown keys refused). Flows are named by the keys of `FLOWS` and
deployed by module path (`flywheel.flows.curate:curate_stage_flow`), so a worker runs them from
the installed package wherever it is (a process worker here, a Docker or Kubernetes job from the
images of `deploy/docker/`), with no code storage to pull.

Retraining is started by an automation on the `flywheel.dataset.committed` event
(`flywheel.flows.events`), created from the deployment's `trigger:`; its parameters are Jinja
templates over the event (`{{ event.resource['flywheel.dataset.ref'] }}`), filled in by the server.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flywheel.flows import events

# flow key in the file -> "module:function"
FLOWS = {
    "curate": "flywheel.flows.curate:curate_stage_flow",
    "caption": "flywheel.flows.caption:caption_dataset_flow",
    "route": "flywheel.flows.loop:route_flow",
    "retrain": "flywheel.flows.loop:retrain_flow",
    "retrain-on-emission": "flywheel.flows.loop:retrain_on_emission_flow",
    "ingest-signals": "flywheel.flows.loop:ingest_signals_flow",
}
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "deploy" / "deployments.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Schedule(_Strict):
    cron: str
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> "Schedule":
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=self.cron, timezone=self.timezone)  # Prefect's own check of both
        return self


class Trigger(_Strict):
    """An automation that runs the deployment when `event` is seen with these resource labels."""
    event: str = events.EVENT
    match: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)  # Jinja over `event`, rendered by the server


class Concurrency(_Strict):
    limit: int = Field(ge=1)
    collision: Literal["ENQUEUE", "CANCEL_NEW"] = "ENQUEUE"


class Deployment(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    flow: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: Schedule | None = None
    trigger: Trigger | None = None
    concurrency: Concurrency | None = None
    tags: list[str] = Field(default_factory=list)
    paused: bool = False

    @field_validator("flow")
    @classmethod
    def _flow(cls, v: str) -> str:
        if v not in FLOWS:
            raise ValueError(f"unknown flow {v!r}; one of {', '.join(FLOWS)}")
        return v


class WorkPool(_Strict):
    name: str = "flywheel-process"
    type: Literal["process", "docker", "kubernetes"] = "process"
    job_variables: dict[str, Any] = Field(default_factory=dict)  # image, env, ... of the Docker/Kubernetes job


class DeploySpec(_Strict):
    work_pool: WorkPool = Field(default_factory=WorkPool)
    tags: list[str] = Field(default_factory=lambda: ["flywheel"])
    deployments: list[Deployment]

    @model_validator(mode="after")
    def _check(self) -> "DeploySpec":
        names = [d.name for d in self.deployments]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"deployment names must be unique: {dup}")
        for d in self.deployments:
            check_parameters(d)
        return self


def flow_function(key: str):
    mod, _, fn = FLOWS[key].partition(":")
    return getattr(importlib.import_module(mod), fn)


def check_parameters(d: Deployment) -> None:
    """Every parameter (static or from the trigger) is one the flow takes, and each static value
    passes the flow's type hint. A deployment with a schedule or a trigger must give every
    required one; a manual one (ingest-signals) may leave them to `prefect deployment run -p`."""
    import typing

    from pydantic import TypeAdapter

    fl = flow_function(d.flow)
    sig = inspect.signature(fl.fn)
    given = {**d.parameters, **(d.trigger.parameters if d.trigger else {})}
    unknown = sorted(set(given) - set(sig.parameters))
    if unknown:
        raise ValueError(f"{d.name}: flow {d.flow} takes no parameter {unknown}; it takes {list(sig.parameters)}")
    missing = [p for p, v in sig.parameters.items() if v.default is inspect.Parameter.empty and p not in given]
    if missing and (d.schedule or d.trigger):
        raise ValueError(f"{d.name}: flow {d.flow} needs {missing} (in parameters, or the trigger's parameters)")
    hints = typing.get_type_hints(fl.fn)
    for k, v in d.parameters.items():
        try:
            TypeAdapter(hints.get(k, typing.Any)).validate_python(v, strict=False)
        except ValueError as e:
            raise ValueError(f"{d.name}: parameter {k}={v!r} is not a {hints.get(k)}: {e}") from None


def load(path: str | Path | None = None) -> DeploySpec:
    p = Path(path) if path else DEFAULT_FILE
    return DeploySpec.model_validate(yaml.safe_load(p.read_text()))


def runner_deployments(spec: DeploySpec) -> list:
    """The spec as Prefect `RunnerDeployment`s (nothing sent yet)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.types.entrypoint import EntrypointType

    out = []
    for d in spec.deployments:
        fl = flow_function(d.flow)
        triggers = []
        if d.trigger:
            triggers.append(DeploymentEventTrigger(
                name=f"{d.name} on {d.trigger.event}", expect={d.trigger.event},
                match={"prefect.resource.id": f"{events.RESOURCE_PREFIX}*", **d.trigger.match},
                parameters=d.trigger.parameters, posture="Reactive", threshold=1))
        conc = None
        if d.concurrency:
            conc = ConcurrencyLimitConfig(limit=d.concurrency.limit,
                                          collision_strategy=ConcurrencyLimitStrategy(d.concurrency.collision))
        out.append(fl.to_deployment(
            name=d.name, description=d.description or (inspect.getdoc(fl.fn) or "").split("\n\n")[0],
            parameters=d.parameters, tags=[*spec.tags, *d.tags], triggers=triggers, paused=d.paused,
            schedules=[CronSchedule(cron=d.schedule.cron, timezone=d.schedule.timezone)] if d.schedule else None,
            concurrency_limit=conc, job_variables=spec.work_pool.job_variables or None,
            entrypoint_type=EntrypointType.MODULE_PATH))
    return out


def ensure_pool(pool: WorkPool) -> bool:
    """Create the process pool when it is missing (True when created). Docker and Kubernetes pools
    take their job template from the prefect-docker / prefect-kubernetes worker, so they must be
    created with `prefect work-pool create NAME --type docker|kubernetes` where that is installed."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as c:
        try:
            existing = c.read_work_pool(pool.name)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            if existing.type != pool.type:
                raise ValueError(f"work pool {pool.name} is of type {existing.type}, the file says {pool.type}")
            return False
        if pool.type != "process":
            raise ValueError(f"work pool {pool.name} ({pool.type}) does not exist: create it with `prefect work-pool "
                             f"create {pool.name} --type {pool.type}` (needs prefect-{pool.type}), then deploy again")
        c.create_work_pool(WorkPoolCreate(name=pool.name, type="process"))
        return True


def deploy(spec: DeploySpec, only: list[str] | None = None, api_url: str | None = None) -> list[dict]:
    """Register the spec's deployments (all, or those named in `only`) on `api_url` (default: the
    Prefect API of this process); the same call again updates them. Returns [{"name", "id",
    "flow", "schedule", "trigger"}]."""
    if only:
        unknown = sorted(set(only) - {d.name for d in spec.deployments})
        if unknown:
            raise ValueError(f"no deployment {unknown} in the file")
    if api_url:
        # Prefect reads its settings once, at import: a URL known only now goes in this way
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api_url}):
            return deploy(spec, only)
    if not api_url_of_process():
        raise ValueError("no Prefect API to deploy to: set PREFECT_API_URL")
    ensure_pool(spec.work_pool)
    rows = []
    for d, rd in zip(spec.deployments, runner_deployments(spec)):
        if only and d.name not in only:
            continue
        dep_id = rd.apply(work_pool_name=spec.work_pool.name)
        rows.append({"name": f"{rd.flow_name}/{d.name}", "id": str(dep_id), "flow": FLOWS[d.flow],
                     "schedule": d.schedule.cron if d.schedule else None,
                     "trigger": d.trigger.event if d.trigger else None})
    return rows


def api_url_of_process() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
