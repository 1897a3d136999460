"""`scoutless deploy`: the scheduled deployments, served against a running Prefect server.

A deployment is served by this process (Prefect's `serve`): it polls the server for scheduled or manually
triggered runs of its deployments and runs them in subprocesses, until interrupted. Schedules need a real
server (`prefect server start`) named by PREFECT_API_URL: an ephemeral one cannot schedule.
"""

from __future__ import annotations

import os

from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from scoutless.flows.pipeline import drift_check_flow, pipeline_flow
from scoutless.params import Params, project_dir

RETRAIN_DEPLOYMENT = "nightly-retrain"
DRIFT_DEPLOYMENT = "hourly-drift-check"


class NoPrefectServerError(RuntimeError):
    """PREFECT_API_URL does not name a Prefect server."""


def deployments(params: Params) -> list:
    schedules = params.flows.schedules
    return [
        pipeline_flow.to_deployment(
            name=RETRAIN_DEPLOYMENT, schedules=[Cron(schedules.retrain, timezone=schedules.timezone)],
            tags=["scoutless"], description="The whole pipeline on the newest archive, versioned with DVC.",
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
        drift_check_flow.to_deployment(
            name=DRIFT_DEPLOYMENT, schedules=[Cron(schedules.drift_check, timezone=schedules.timezone)],
            tags=["scoutless"], description="Extract the newest tasks, check drift, retrain if the rule fires.",
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    ]


def serve_deployments(params: Params, limit: int | None = None) -> None:
    """Create (or update) both deployments and run their flow runs until interrupted."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise NoPrefectServerError(
            "PREFECT_API_URL is not set: start a server (prefect server start --host 127.0.0.1) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    os.chdir(project_dir())   # flow runs start here, so they find params.yaml
    serve(*deployments(params), limit=limit)
