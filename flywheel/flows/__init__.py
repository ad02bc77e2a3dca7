"""Prefect wrappers only: each flow chains the plain steps of a job; tasks pass paths and ids.

Importing the package registers the dataset-committed event (`events`): every process that runs
a flow, and the CLI, emits it when `PREFECT_API_URL` names a server."""

from flywheel.flows import events as _events

_events.install()
