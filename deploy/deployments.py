"""Prefect deployments of the loop's flows, with the retraining trigger on a schedule.

    # against a Prefect server (PREFECT_API_URL set), serve the deployments from this process:
    python deploy/deployments.py serve
    # or register them for a work pool's workers:
    python deploy/deployments.py deploy --pool flywheel-cpu

`retrain-on-emission` runs every 30 minutes (cron below): when `flywheel emit` has written a dataset
version that no retraining has used, it trains from the last checkpoint on it, evaluates before
and after, and records the table in the catalog (`loop_evals`). `ingest-signals` and `retrain`
have no schedule; start them with `prefect deployment run 'retrain/retrain' -p dataset=NAME@vN`.
The catalog and datasets come from FLYWHEEL_HOME of the process that runs the flow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RETRAIN_CRON = "*/30 * * * *"


def deployments():
    from prefect.client.schemas.schedules import CronSchedule

    from flywheel.flows.loop import ingest_signals_flow, retrain_flow, retrain_on_emission_flow

    return [
        retrain_on_emission_flow.to_deployment(
            name="scheduled", schedules=[CronSchedule(cron=RETRAIN_CRON, timezone="UTC")],
            parameters={"minutes": 10.0, "n_per_concept": 100, "seeds": 3},
            tags=["flywheel", "loop"], description="Retrain on the newest emitted dataset version not trained on yet."),
        retrain_flow.to_deployment(name="retrain", tags=["flywheel", "loop"]),
        ingest_signals_flow.to_deployment(name="ingest-signals", tags=["flywheel", "signals"]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["serve", "deploy", "show"])
    ap.add_argument("--pool", default="flywheel-cpu", help="work pool for `deploy`")
    a = ap.parse_args()
    deps = deployments()
    if a.action == "show":
        for d in deps:
            print(d.name, d.flow_name, [s.schedule.cron for s in (d.schedules or [])])
        return
    if a.action == "serve":
        from prefect import serve

        serve(*deps)
    else:
        from prefect import deploy

        deploy(*deps, work_pool_name=a.pool, build=False, push=False)


if __name__ == "__main__":
    main()
