"""One Prefect flow per stage. Each stage is a task calling its stage function; flows pass paths and small
summaries between tasks, never DataFrames."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.task_runners import ProcessPoolTaskRunner

from scoutless.params import Params, load_params
from scoutless.paths import resolve


def stage_params(archive: str | None = None) -> Params:
    return load_params(archive_url=archive)


def _file_link(path: Path | str, text: str, key: str, description: str) -> None:
    create_link_artifact(Path(path).resolve().as_uri(), link_text=text, key=key, description=description)


def _markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@task
def check_archive_task(archive: str | None) -> dict:
    from scoutless.archive.check import run_check_archive

    return run_check_archive(stage_params(archive))


@flow(name="check-archive", log_prints=True)
def check_archive_flow(archive: str | None = None) -> dict:
    """Check the archive (the embedded default simulated when needed) and record what it holds."""
    return check_archive_task(archive)


# No retries here: the stage retries each archive read itself (extract.retries), for the CLI and DVC alike.
@task
def extract_task(archive: str | None, full: bool, cluster: str | None) -> dict:
    from scoutless.archive.stages import run_extract

    return asdict(run_extract(stage_params(archive), full=full, progress=False, cluster=cluster))


@flow(name="extract", log_prints=True)
def extract_flow(archive: str | None = None, full: bool = False, cluster: str | None = None) -> dict:
    """Read the archive's new and changed tasks (all of them with full=True) into data/raw/; with a Dask
    scheduler's address, on its workers."""
    summary = extract_task(archive, full, cluster)
    create_markdown_artifact(
        _markdown_table(["tasks read", "rows rejected", "tasks in data/raw", "labelled", "finished jobs", "seconds"],
                        [[summary["tasks_read"], summary["rejected_read"], summary["tasks_total"],
                          summary["labelled_total"], summary["jobs_total"], summary["seconds"]]]),
        key="extract", description="What the extraction read from the archive")
    return summary


@task
def validate_task() -> dict:
    from scoutless.validation.validate import run_validate

    return asdict(run_validate(stage_params()))


@flow(name="validate", log_prints=True)
def validate_flow() -> dict:
    """Validate data/raw/ with the expectation suites; bad rows are quarantined with the reason."""
    summary = validate_task()
    rows = [[table, t["rows"], t["quarantined"], f"{t['bad_fraction']:.2%}"] for table, t in summary["tables"].items()]
    create_markdown_artifact(_markdown_table(["table", "rows", "quarantined", "bad share"], rows),
                             key="validation", description="Validation of the extracted archive")
    _file_link(summary["report"], "Validation report", "validation-report", "Great Expectations results")
    return summary


@task
def features_task(cluster: str | None) -> dict:
    from scoutless.features.stage import run_features

    return asdict(run_features(stage_params(), cluster))


@flow(name="features", log_prints=True)
def features_flow(cluster: str | None = None) -> dict:
    """Build the submission-time and history features; with a Dask scheduler's address, the submission features
    on its workers."""
    return features_task(cluster)


@task
def train_task(target: str) -> dict:
    from scoutless.models.train import run_train

    return run_train(stage_params(), target)


@flow(name="train", log_prints=True)
def train_flow(targets: list[str] | None = None, cluster: str | None = None) -> dict:
    """Train every candidate of each target, flows.train_workers targets at a time, each in a process of its own
    as `dvc repro` trains them (two targets trained at once in threads of one process gave other
    HistGradientBoosting and XGBoost models than each trained alone); with a Dask scheduler's address, one
    target per worker thread of that cluster."""
    params = stage_params()
    targets = targets or list(params.targets)
    if cluster:
        from prefect_dask import DaskTaskRunner

        runner = DaskTaskRunner(address=cluster)
    else:
        runner = ProcessPoolTaskRunner(max_workers=params.flows.train_workers)
    with runner:
        futures = {target: runner.submit(train_task, parameters={"target": target}) for target in targets}
        results = {target: future.result() for target, future in futures.items()}
    metric = params.select.metric
    rows = [[target, name, f"{m.get(metric) or float('nan'):.4g}", f"{m.get('coverage_q90') or float('nan'):.3f}"]
            for target, result in results.items() for name, m in result["candidates"].items()]
    create_markdown_artifact(_markdown_table(["target", "candidate", metric, "coverage q90"], rows),
                             key="training", description="Test-window scores of every candidate")
    return results


@task
def select_task() -> dict:
    from scoutless.models.select import run_select

    return run_select(stage_params())


@flow(name="select", log_prints=True)
def select_flow() -> dict:
    """Choose each target's winner on the validation window; through the quality gate, refit it as of now
    and promote it."""
    outcome = select_task()
    leaderboard = resolve(stage_params().paths.artifacts) / "leaderboard.md"
    create_markdown_artifact(leaderboard.read_text(), key="leaderboard", description="Candidates per target")
    return outcome


@task
def monitor_task() -> dict:
    from scoutless.monitoring.monitor import run_monitor

    return run_monitor(stage_params())


@flow(name="monitor", log_prints=True)
def monitor_flow() -> dict:
    """Compare the newest tasks with the promoted models' training window; say whether to retrain."""
    report = monitor_task()
    logger = get_run_logger()
    lines = [f"**Verdict: {report['verdict'].replace('_', ' ')}**" + (" — retrain" if report["retrain"] else "")]
    lines += [f"- {reason}" for reason in report["reasons"]]
    if report["features"] is not None:
        lines.append(f"\nDrifted features: {report['features']['drifted_share']:.0%} "
                     f"({', '.join(report['features']['drifted']) or 'none'})\n")
        lines.append(_markdown_table(
            ["target", "labelled current", "current error", "reference error", "above margin"],
            [[t, e["labelled"], f"{e['current']:.4g}", f"{e['reference']:.4g}", "yes" if e["exceeds_margin"] else "no"]
             for t, e in report["errors"].items()]))
    create_markdown_artifact("\n".join(lines), key="drift", description="Drift check")
    _file_link(report["pages"]["index"], "Drift report", "drift-report", "Evidently drift reports")
    logger.info("drift check: %s", json.dumps({k: report[k] for k in ("verdict", "retrain", "reasons")}))
    return report


@task
def package_task() -> dict:
    from scoutless.serving.stage import run_package

    return run_package(stage_params())


@flow(name="package", log_prints=True)
def package_flow() -> dict:
    """Register the promoted models and build the Bento."""
    result = package_task()
    create_markdown_artifact(f"Bento **{result['bento']}**\n\n" + _markdown_table(
        ["target", "model"], [[t, tag] for t, tag in result["models"].items()]), key="bento",
        description="The built Bento and the models in it")
    return result


@task
def history_task() -> dict:
    from scoutless.models.refresh import write_history

    return write_history(stage_params())


@flow(name="history", log_prints=True)
def history_flow() -> dict:
    """Refresh the history snapshot and calibration the service reads from the newest finished tasks (no
    retraining)."""
    return history_task()


@task
def backtest_task() -> dict:
    from scoutless.models.backtest import run_backtest

    return run_backtest(stage_params())


@flow(name="backtest", log_prints=True)
def backtest_flow() -> dict:
    """Replay the pipeline at several earlier origins; judge each served model on the tasks that came next."""
    summary = backtest_task()
    report = resolve(stage_params().paths.artifacts) / "backtest.md"
    create_markdown_artifact(report.read_text(), key="backtest", description="Rolling-origin backtest")
    return summary


@task
def replay_task() -> dict:
    from scoutless.models.replay import run_replay

    return run_replay(stage_params())


@flow(name="replay", log_prints=True)
def replay_flow() -> dict:
    """Run the backtest's tasks' finished jobs again under each policy (scouts, the model, ...) with JEDI's
    retries: what scoutless saves over scouts."""
    from scoutless.models.replay import markdown

    report = replay_task()
    create_markdown_artifact(markdown(report), key="replay", description="Replay: policies against scouts")
    return report["policies"]
