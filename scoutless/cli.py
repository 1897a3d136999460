"""The `scoutless` command line. Every stage command calls the same stage function as DVC and Prefect."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from scoutless.telemetry import disable_telemetry

disable_telemetry()
# A flow run outside a Prefect server starts a temporary one, which Prefect waits 20 s for: too short on a
# loaded machine, where the run then fails before its first stage.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

app = typer.Typer(
    help="Predict the resources a PanDA task will need before its scout jobs run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ArchiveOption = Annotated[
    str | None,
    typer.Option(
        "--archive",
        help="SQLAlchemy URL of the PanDA archive, or a bigpanda tasks .json dump "
        "(default: $SCOUTLESS_ARCHIVE_URL, then params.yaml archive.url).",
    ),
]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def _setup_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO, format="%(message)s", datefmt="[%X]", handlers=[RichHandler(show_path=False)]
    )


def _params(archive: str | None = None):
    from scoutless.params import ARCHIVE_PASSWORD_ENV, ARCHIVE_URL_ENV, ParamsError, load_params, split_password

    if archive and split_password(archive)[1] is not None:
        typer.echo(f"warning: a password in --archive is visible to every user of this machine (ps); give it in "
                   f"${ARCHIVE_PASSWORD_ENV} or archive.password_file, or the whole URL in ${ARCHIVE_URL_ENV}",
                   err=True)
    try:
        return load_params(archive_url=archive)
    except ParamsError as exc:
        raise typer.BadParameter(str(exc)) from exc


@contextmanager
def _exit_on(error: type[Exception] | tuple[type[Exception], ...], code: int, prefix: str = "",
             hint: str = "") -> Iterator[None]:
    """Turn an expected failure of a stage into a one-line message and an exit code, not a traceback."""
    try:
        yield
    except error as exc:
        typer.echo(f"error: {prefix}{exc}{hint}", err=True)
        raise typer.Exit(code) from exc


def _print(summary) -> None:
    typer.echo(json.dumps(asdict(summary), indent=2, default=str))


@app.command()
def simulate(
    tasks: Annotated[int | None, typer.Option(help="Number of tasks (default: simulate.tasks).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: simulate.seed).")] = None,
    world_seed: Annotated[int | None, typer.Option(
        help="Seed of the world and its hidden hyper-parameters, not of the tasks (default: simulate.world_seed); "
        "give a --window the same one.")] = None,
    window: Annotated[bool, typer.Option(
        help="Append a later window of tasks (simulate.window) to the simulated archive instead.")] = False,
    shifted: Annotated[bool, typer.Option(
        help="With --window: a shifted world (simulate.window.shift), for drift.")] = False,
    archive: ArchiveOption = None,
    progress: ProgressOption = True,
) -> None:
    """Write a simulated PanDA archive (tasks, datasets, every job), deterministic for a seed."""
    from scoutless.simulator.stage import run_simulate
    from scoutless.simulator.world import ArchiveNotEmptyError

    _setup_logging()
    params = _params(archive)
    if world_seed is not None:
        params = params.model_copy(update={"simulate": params.simulate.model_copy(update={"world_seed": world_seed})})
    with _exit_on((ArchiveNotEmptyError, FileNotFoundError, ValueError), 2):
        _print(run_simulate(params, tasks=tasks, seed=seed, window=window, shifted=shifted, progress=progress))


@app.command("check-archive")
def check_archive(
    archive: ArchiveOption = None,
    jobs_json: Annotated[
        Path | None, typer.Option(help="With a bigpanda tasks dump: a dump of their jobs, for labels.")
    ] = None,
) -> None:
    """Check that the archive is there and readable (simulating the embedded default when it is missing or was
    simulated with other settings) and record what it holds in data/archive/state.json: the extract stage's
    input, so that extraction reruns exactly when the archive changed."""
    from scoutless.archive.check import run_check_archive
    from scoutless.archive.sources import ArchiveSchemaError

    _setup_logging()
    params = _params(archive)
    with _exit_on(ArchiveSchemaError, 2):
        typer.echo(json.dumps(run_check_archive(params, jobs_json), indent=2, default=str))


@app.command()
def extract(
    archive: ArchiveOption = None,
    jobs_json: Annotated[
        Path | None, typer.Option(help="With a bigpanda tasks dump: a dump of their jobs, for labels.")
    ] = None,
    full: Annotated[bool, typer.Option(help="Ignore the watermark and read the whole archive.")] = False,
    progress: ProgressOption = True,
) -> None:
    """Read the archive into data/raw/ (incremental by modificationtime, chunked, atomic)."""
    from scoutless.archive.sources import ArchiveSchemaError
    from scoutless.archive.stages import run_extract

    _setup_logging()
    params = _params(archive)
    with _exit_on(ArchiveSchemaError, 2):
        _print(run_extract(params, jobs_json=jobs_json, full=full, progress=progress))


@app.command()
def validate() -> None:
    """Validate data/raw/ with the expectation suites: clean rows to data/validated/, bad ones quarantined."""
    from scoutless.validation.validate import DataValidationError, run_validate

    _setup_logging()
    with _exit_on(DataValidationError, 3, "validation failed: ", " (see reports/validation/index.html)"):
        _print(run_validate(_params()))


@app.command()
def features() -> None:
    """Build submission-time and history features from data/validated/ into data/features/."""
    from scoutless.features.stage import run_features
    from scoutless.validation.validate import DataValidationError

    _setup_logging()
    with _exit_on(DataValidationError, 3, "feature validation failed: ", " (see reports/validation/features.html)"):
        _print(run_features(_params()))


@app.command()
def train(target: Annotated[str, typer.Option(help="The target to train (one of params.yaml targets).")]) -> None:
    """Train every candidate for one target as of the test window's start; score it on the validation and
    test windows (split in params.yaml)."""
    from scoutless.models.train import run_train

    _setup_logging()
    params = _params()
    if target not in params.targets:
        raise typer.BadParameter(f"unknown target {target!r}; params.yaml targets are {list(params.targets)}")
    typer.echo(json.dumps(run_train(params, target), indent=2, default=str))


@app.command()
def select() -> None:
    """Choose each target's winner, pass it through the quality gate, refit it as of now and promote it;
    write the history artifact, leaderboard, cards, plots."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.models.select import GateError, run_select

    _setup_logging()
    with _exit_on(GateError, 4, "quality gate: "), _exit_on(PromotedSetError, 5):
        typer.echo(json.dumps(run_select(_params()), indent=2))


@app.command()
def backtest() -> None:
    """Replay the pipeline at several earlier origins and judge each served model on the tasks that came
    next (artifacts/backtest.json, backtest.md, backtest.png)."""
    from scoutless.models.backtest import run_backtest

    _setup_logging()
    with _exit_on(ValueError, 2):
        typer.echo(json.dumps(run_backtest(_params()), indent=2))


def _run_pipeline_on(archive: str) -> None:
    """`scoutless run` against `archive`, as its own process (the URL, password and all, goes in the
    environment, not on a command line)."""
    import subprocess
    import sys

    from scoutless.params import ARCHIVE_URL_ENV

    command = [sys.executable, "-c", "from scoutless.cli import app; app()", "run"]
    finished = subprocess.run(command, env={**os.environ, ARCHIVE_URL_ENV: archive}, check=False)
    if finished.returncode:
        raise typer.Exit(finished.returncode)


@app.command()
def replay(
    archive: ArchiveOption = None,
    since: Annotated[datetime | None, typer.Option(help="Replay the tasks created from then (default: all the "
                                                        "backtest judged).")] = None,
    until: Annotated[datetime | None, typer.Option(help="... and before then.")] = None,
    policy: Annotated[list[str] | None, typer.Option(
        help="A policy to replay (repeat it; default: replay.policies): default, scouts, history, model, "
             "cost-aware.")] = None,
) -> None:
    """Run the finished jobs of the tasks the backtest judged (each answered by a model that never trained on
    it) again under each policy's requests with JEDI's retries, and compare: failed attempts, wasted
    core-hours, memory slack, scout turnaround, reach (reports/replay.json, reports/replay/index.html). With
    --archive, the pipeline runs on that archive first."""
    import pandas as pd

    from scoutless.models.replay import markdown, run_replay

    params = _params(archive)
    if archive:
        _run_pipeline_on(archive)
    _setup_logging()
    with _exit_on((ValueError, FileNotFoundError), 2):
        if policy:
            params = params.model_validate({**params.model_dump(), "replay": {**params.replay.model_dump(),
                                                                              "policies": policy}})
        report = run_replay(params, pd.Timestamp(since) if since else None, pd.Timestamp(until) if until else None)
    typer.echo(markdown(report))
    typer.echo(f"report: {report['pages']['index']}")


@app.command()
def history(
    as_of: Annotated[datetime | None, typer.Option(
        help="Count the labels known by then (default: the archive's now: split.as_of, else its newest task "
        "or label).")] = None,
) -> None:
    """Refresh the history snapshot and the promoted models' calibration the service reads (paths.history) from
    the newest finished tasks, without retraining; a running `scoutless serve` picks them up at its next
    request."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.models.refresh import write_history

    params = _params()
    with _exit_on(PromotedSetError, 5):
        typer.echo(json.dumps(write_history(params, as_of or params.split.as_of), indent=2))


@app.command()
def monitor() -> None:
    """Check drift of the newest tasks against the promoted models' training window (Evidently); write
    reports/drift/ and reports/drift.json with the retrain verdict."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.monitoring.monitor import NoPromotedModelError, run_monitor

    _setup_logging()
    with _exit_on(NoPromotedModelError, 2), _exit_on(PromotedSetError, 5):
        report = run_monitor(_params())
    typer.echo(json.dumps({key: report[key] for key in ("verdict", "retrain", "reasons", "pages")}, indent=2))


@app.command()
def package() -> None:
    """Register the promoted models in the project's BentoML store and build the Bento (offline)."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.serving.stage import run_package

    _setup_logging()
    with _exit_on(PromotedSetError, 5):
        typer.echo(json.dumps(run_package(_params()), indent=2))


@app.command()
def serve(port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: serving.port).")] = None) -> None:
    """Serve the promoted models over HTTP (POST /predict, GET /metadata, /readyz) until interrupted."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.serving.stage import run_serve

    with _exit_on(PromotedSetError, 5):
        run_serve(_params(), port)


@app.command()
def predict(
    tasks: Annotated[Path, typer.Argument(help="Tasks as JSON (list or {\"tasks\": [...]}), CSV or Parquet.")],
    out: Annotated[Path | None, typer.Option(help="Write the predictions here (JSON) instead of printing.")] = None,
) -> None:
    """Predict for a file of tasks with the promoted models, through the service's code, without a server."""
    from scoutless.models.layout import PromotedSetError
    from scoutless.serving.stage import run_predict

    with _exit_on(ValueError, 2), _exit_on(PromotedSetError, 5):
        result = run_predict(_params(), tasks)
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        typer.echo(text)


@app.command()
def run(
    archive: ArchiveOption = None,
    full: Annotated[bool, typer.Option(help="Extract the whole archive, ignoring the watermark.")] = False,
    cluster: Annotated[str | None, typer.Option(
        help="Extract, build features and train on a Dask cluster: 'local' (cluster.local_workers worker "
             "processes here) or a scheduler's address, tcp://HOST:PORT.")] = None,
) -> None:
    """Run the pipeline flow once (Prefect): archive check -> extract -> validate -> features -> train -> select
    -> history -> backtest -> monitor -> package, against an archive (default: the embedded one, simulated when
    missing), then record the stages it ran in dvc.lock."""
    from scoutless.cluster import ClusterError, check_spec
    from scoutless.flows.pipeline import pipeline_flow

    params = _params(archive)   # a bad params.yaml or --cluster is reported before Prefect starts
    with _exit_on(ClusterError, 2):
        check_spec(cluster)
    # The flow's parameters are stored by Prefect: the URL goes without its password (load_params kept that in
    # the environment, where the flow's stages read it).
    result = pipeline_flow(archive=params.archive.url if archive else None, full_extract=full, cluster=cluster)
    versioned = result["versioned"]
    if versioned["versioned"]:
        typer.echo(f"versioned in dvc.lock{' and pushed' if versioned['pushed'] else ''}: "
                   f"{', '.join(versioned['stages'])}")
    else:
        typer.echo(f"not versioned: {versioned['why']}")
    _print_locations(result["outputs"])


@app.command()
def where() -> None:
    """Print where the last run left its reports, models and Bento."""
    from scoutless.outputs import output_locations

    _print_locations(output_locations(_params()))


def _print_locations(locations: dict[str, str]) -> None:
    if not locations:
        typer.echo("nothing yet: run the pipeline (make run)")
    width = max((len(name) for name in locations), default=0)
    for name, where in locations.items():
        typer.echo(f"{name:<{width}}  {where}")


@app.command()
def deploy(
    limit: Annotated[int | None, typer.Option(help="At most this many flow runs at once.")] = None,
) -> None:
    """Serve the scheduled deployments (nightly retrain, hourly drift check; cron in params.yaml flows.schedules)
    against the Prefect server named by PREFECT_API_URL, until interrupted."""
    from scoutless.flows.deploy import NoPrefectServerError, serve_deployments

    with _exit_on(NoPrefectServerError, 2):
        serve_deployments(_params(), limit=limit)


if __name__ == "__main__":
    app()
