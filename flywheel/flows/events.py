"""The Prefect event a committed dataset version emits, which starts retraining.

`flywheel.catalog.commit_dataset` calls its `COMMIT_HOOKS` after the commit; `install()` adds
`on_commit` there. The event goes to the Prefect API of `PREFECT_API_URL` in the environment (a
server with deployments, or the worker that runs a deployment's flow, which passes its API URL
to the flow run): without it there is no server to hold an automation, and nothing is sent. The
retraining deployment's trigger (`deploy/deployments.yaml`, `flywheel.flows.deploy`) is an
automation on this event, so retraining starts when a version lands, not when a poll notices.

A failed emission is logged and never fails the commit: the version is committed either way, and
`retrain-on-emission` catches up on any version no retraining has used.
"""

from __future__ import annotations

import logging
import os

EVENT = "flywheel.dataset.committed"
RESOURCE_PREFIX = "flywheel.dataset."
log = logging.getLogger("flywheel.events")


def event_of(committed: dict) -> dict:
    """The event (name, resource labels, payload) for one committed version. Resource labels are
    strings (Prefect matches triggers on them); the ref is what the retraining flow takes."""
    ref = f"{committed['name']}@v{committed['version']}"
    resource = {
        "prefect.resource.id": RESOURCE_PREFIX + ref,
        "prefect.resource.name": ref,
        "flywheel.dataset.ref": ref,
        "flywheel.dataset.name": committed["name"],
        "flywheel.dataset.version": str(committed["version"]),
        "flywheel.dataset.kind": committed.get("kind") or "",
    }
    payload = {"path": committed.get("path"), "rows": committed.get("rows"), "run_id": committed.get("run_id")}
    return {"event": EVENT, "resource": resource, "payload": payload}


def enabled() -> bool:
    return bool(os.environ.get("PREFECT_API_URL")) and os.environ.get("FLYWHEEL_EVENTS", "on") != "off"


def on_commit(committed: dict) -> None:
    if not enabled():
        return
    try:
        from prefect.events import emit_event
        from prefect.events.worker import EventsWorker

        ev = emit_event(**event_of(committed))
        # the events worker sends from a thread; a short CLI process (`flywheel emit`) must not
        # exit before it has
        EventsWorker.drain_all(timeout=10)
        if ev is None:
            log.warning("Prefect sent no %s event for %s (events disabled for this API)", EVENT, committed["name"])
    except Exception as e:  # noqa: BLE001 - the version is committed; say so and go on
        log.warning("could not emit %s for %s@v%s: %s", EVENT, committed["name"], committed["version"], e)


def install() -> None:
    """Register `on_commit` with the catalog (once)."""
    from flywheel import catalog

    if on_commit not in catalog.COMMIT_HOOKS:
        catalog.COMMIT_HOOKS.append(on_commit)
