"""The flows an operator schedules: the whole pipeline, the retrain, and the drift check.

How they relate to DVC: dvc.yaml runs the same stage functions (through the `scoutless` commands) and is
what `make run` and `dvc repro` reproduce from params.yaml. The flows add what a schedule needs
(incremental extraction, retries, concurrent training, artifacts, the drift-triggered retrain) and end by
versioning their outputs with DVC (`dvc commit` + `dvc push`, flows.version_with_dvc), so every scheduled
run is recorded in dvc.lock and the remote like a `dvc repro`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.stages import (
    backtest_flow,
    extract_flow,
    features_flow,
    history_flow,
    monitor_flow,
    package_flow,
    select_flow,
    stage_params,
    train_flow,
    validate_flow,
)
from scoutless.params import EMBEDDED_ARCHIVE_URL


@task
def simulate_embedded_archive_task() -> dict | None:
    """Simulate the embedded default archive when it is the one configured and it is missing."""
    from dataclasses import asdict

    from archive.stages import run_simulate, sqlite_file

    params = stage_params()
    if params.archive.url != EMBEDDED_ARCHIVE_URL:
        return None
    embedded = sqlite_file(EMBEDDED_ARCHIVE_URL)
    if embedded is None or embedded.exists():
        return None
    get_run_logger().info("no archive at %s: simulating the embedded default", embedded)
    return asdict(run_simulate(params, progress=False))


@task
def version_task() -> dict:
    from scoutless.versioning import version_outputs

    if not stage_params().flows.version_with_dvc:
        return {"versioned": False, "why": "flows.version_with_dvc is false"}
    return version_outputs()


@task
def locations_task() -> dict:
    from scoutless.outputs import output_locations

    return output_locations(stage_params())


@flow(name="retrain", log_prints=True)
def retrain_flow(targets: list[str] | None = None) -> dict:
    """Train every target on the current features, then select through the quality gate and package."""
    trained = train_flow(targets)
    selected = select_flow()
    packaged = package_flow()
    return {"trained": list(trained), "selected": selected, "bento": packaged["bento"]}


@flow(name="pipeline", log_prints=True)
def pipeline_flow(archive: str | None = None, full_extract: bool = False, version: bool = True) -> dict:
    """extract -> validate -> features -> train (targets concurrently) -> select -> backtest -> monitor ->
    package, then version the outputs with DVC: the stages of dvc.yaml. The embedded archive is simulated
    first when it is missing."""
    logger = get_run_logger()
    if archive is None:
        simulate_embedded_archive_task()
    extract_flow(archive, full_extract)
    validate_flow()
    features_flow()
    train_flow()
    selected = select_flow()
    backtest_flow()
    drift = monitor_flow()
    packaged = package_flow()
    versioned = version_task() if version else {"versioned": False, "why": "version=False"}
    locations = locations_task()
    for name, where in locations.items():
        logger.info("%s: %s", name, where)
    return {"selected": selected, "drift": drift["verdict"], "bento": packaged["bento"], "versioned": versioned,
            "outputs": locations}


@flow(name="drift-check", log_prints=True)
def drift_check_flow(archive: str | None = None, retrain: bool = True, version: bool = True) -> dict:
    """Extract the newest tasks, refresh the history the service reads, check drift against the promoted
    models' training window, and when the retrain rule fires (monitor.retrain) run the retrain flow: the new
    winner is promoted only through the selection gate."""
    logger = get_run_logger()
    extract_flow(archive, False)
    validate_flow()
    features_flow()
    history_flow()
    drift = monitor_flow()
    outcome = {"verdict": drift["verdict"], "reasons": drift["reasons"], "retrained": None}
    if drift["retrain"] and retrain:
        logger.warning("retraining: %s", "; ".join(drift["reasons"]))
        outcome["retrained"] = retrain_flow()
    elif drift["retrain"]:
        logger.warning("the retrain rule fired but retrain=False: %s", "; ".join(drift["reasons"]))
    outcome["versioned"] = version_task() if version else {"versioned": False, "why": "version=False"}
    return outcome
