"""The flows an operator schedules: the whole pipeline, the retrain, and the drift check.

How they relate to DVC: dvc.yaml runs the same stage functions (through the `scoutless` commands) and is
what `make run` and `dvc repro` reproduce from params.yaml. The flows add what a schedule needs (retries,
concurrent training, artifacts, the drift-triggered retrain) and end by recording the stages they ran with
DVC (`dvc commit` of those stages + `dvc push`, flows.version_with_dvc), so dvc.lock describes every run.
A flow asked for another archive than params.yaml's names it in the archive stage's output, which the
extract stage depends on.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from scoutless.cluster import cluster_address
from scoutless.flows.stages import (
    backtest_flow,
    check_archive_flow,
    extract_flow,
    features_flow,
    history_flow,
    monitor_flow,
    package_flow,
    replay_flow,
    select_flow,
    stage_params,
    train_flow,
    validate_flow,
)


@task
def version_task(stages: list[str]) -> dict:
    from scoutless.versioning import version_outputs

    if not stage_params().flows.version_with_dvc:
        return {"versioned": False, "why": "flows.version_with_dvc is false"}
    return version_outputs(stages)


@task
def locations_task() -> dict:
    from scoutless.outputs import output_locations

    return output_locations(stage_params())


def _trains(trained: dict) -> list[str]:
    return [f"train@{target}" for target in trained]


@flow(name="retrain", log_prints=True)
def retrain_flow(targets: list[str] | None = None) -> dict:
    """Train every target on the current features, then select through the quality gate, refresh the history
    the service reads and package."""
    trained = train_flow(targets)
    selected = select_flow()
    history_flow()
    packaged = package_flow()
    return {"trained": list(trained), "selected": selected, "bento": packaged["bento"],
            "stages": [*_trains(trained), "select", "history", "package"]}


@flow(name="pipeline", log_prints=True)
def pipeline_flow(archive: str | None = None, full_extract: bool = False, version: bool = True,
                  cluster: str | None = None) -> dict:
    """archive check (the embedded archive simulated when missing) -> extract -> validate -> features -> train
    (targets concurrently) -> select -> history -> backtest -> replay -> monitor -> package, then record them
    with DVC: the stages of dvc.yaml. With `cluster` ('local', or a Dask scheduler's tcp:// address) the
    extraction, the submission features and the training run on its workers (scoutless.cluster)."""
    logger = get_run_logger()
    check_archive_flow(archive)
    with cluster_address(cluster, stage_params(archive).cluster) as address:
        extract_flow(archive, full_extract, address)
        validate_flow()
        features_flow(address)
        trained = train_flow(cluster=address)
    selected = select_flow()
    history_flow()
    backtest_flow()
    replay_flow()
    drift = monitor_flow()
    packaged = package_flow()
    stages = ["archive", "extract", "validate", "features", *_trains(trained), "select", "history", "backtest",
              "replay", "monitor", "package"]
    versioned = version_task(stages) if version else {"versioned": False, "why": "version=False"}
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
    check_archive_flow(archive)
    extract_flow(archive, False)
    validate_flow()
    features_flow()
    history_flow()
    drift = monitor_flow()
    outcome = {"verdict": drift["verdict"], "reasons": drift["reasons"], "retrained": None}
    stages = ["archive", "extract", "validate", "features", "history", "monitor"]
    if drift["retrain"] and retrain:
        logger.warning("retraining: %s", "; ".join(drift["reasons"]))
        outcome["retrained"] = retrain_flow()
        stages += [stage for stage in outcome["retrained"]["stages"] if stage not in stages]
    elif drift["retrain"]:
        logger.warning("the retrain rule fired but retrain=False: %s", "; ".join(drift["reasons"]))
    outcome["versioned"] = version_task(stages) if version else {"versioned": False, "why": "version=False"}
    return outcome
