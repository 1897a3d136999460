"""Stage entry points of the archive package: the CLI, the DVC stages and the Prefect flows call these."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from archive.extract import ExtractSummary, extract
from archive.schema import panda_schema
from archive.sources import BigpandaDump, Source, SqlSource
from scoutless.params import EMBEDDED_ARCHIVE_URL, Params
from scoutless.paths import resolve, resolve_sqlite_url, write_json

if TYPE_CHECKING:
    from archive.simulator import SimulationSummary


def open_source(params: Params, jobs_json: Path | None = None) -> Source:
    """The archive named by archive.url: a SQLAlchemy URL, or the path of a bigpanda tasks .json dump."""
    target = params.archive.url
    if target.endswith(".json"):
        return BigpandaDump(resolve(target), resolve(jobs_json) if jobs_json else None)
    engine = sa.create_engine(resolve_sqlite_url(target), pool_pre_ping=True)
    schema = panda_schema(params.archive.schema_name, params.archive.archive_schema)
    return SqlSource(engine, schema, tuple(params.archive.job_tables))


def run_extract(params: Params, jobs_json: Path | None = None, full: bool = False,
                progress: bool = True) -> ExtractSummary:
    """Extract the archive named by archive.url into paths.raw."""
    source = open_source(params, jobs_json)
    return extract(params, source, resolve(params.paths.raw), full, progress)


def run_check_archive(params: Params, jobs_json: Path | None = None) -> dict:
    """The archive stage: the archive is there and readable (the embedded default is simulated from params
    when missing or simulated with other settings), and what it holds is written to paths.archive_state.
    Extraction depends on that file, so it reruns exactly when the archive changed: a real archive is an
    external source, checked at every run."""
    state_path = resolve(params.paths.archive_state)
    simulated_with = None
    if params.archive.url == EMBEDDED_ARCHIVE_URL:
        simulated_with = {"simulate": params.simulate.model_dump(mode="json"),
                          "jedi": params.extract.jedi.model_dump(mode="json")}
        before = json.loads(state_path.read_text()) if state_path.exists() else {}
        if not sqlite_file(EMBEDDED_ARCHIVE_URL).exists() or before.get("simulated_with") != simulated_with:
            run_simulate(params, progress=False)
    source = open_source(params, jobs_json)
    absent = source.check()
    state = {"source": source.describe(), "schema": params.archive.schema_name,
             "archive_schema": params.archive.archive_schema, **source.fingerprint(), "absent_columns": absent,
             "simulated_with": simulated_with}
    write_json(state_path, state)
    return state


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (relative ones anchored at the project folder), else None."""
    url = resolve_sqlite_url(url)
    database = sa.engine.make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:":
        return Path(database)
    return None


def run_simulate(params: Params, tasks: int | None = None, seed: int | None = None, window: bool = False,
                 shifted: bool = False, progress: bool = True) -> SimulationSummary:
    """Simulate an archive into archive.url, or (`window`) append a later window of tasks to it.

    A SQLite archive is written under a temporary name (a window: into a copy) and renamed into place when
    complete, so a killed run never leaves a half-written archive. On a server, each block of tasks is one
    transaction.
    """
    from archive.simulator import simulate_archive, simulate_window

    if shifted and not window:
        raise ValueError("a shifted world is only simulated as a later window (--window --shifted)")
    url = params.archive.url
    settings = params.simulate.model_copy(
        update={k: v for k, v in {"tasks": tasks, "seed": seed}.items() if v is not None}
    )
    if window and tasks is not None:
        settings = settings.model_copy(update={"window": settings.window.model_copy(update={"tasks": tasks})})
    schema = panda_schema(params.archive.schema_name, params.archive.archive_schema)

    def simulate(engine: sa.Engine) -> SimulationSummary:
        try:
            if window:
                return simulate_window(engine, schema, settings, params.extract.jedi, shifted, progress)
            return simulate_archive(engine, schema, settings, params.extract.jedi, progress=progress)
        finally:
            engine.dispose()

    target = sqlite_file(url)
    if target is None:
        return simulate(sa.create_engine(url))
    if window and not target.exists():
        raise FileNotFoundError(f"no archive at {target} to append a window to: simulate it first")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    if window:
        shutil.copyfile(target, partial)
    summary = simulate(sa.create_engine(f"sqlite:///{partial}"))
    os.replace(partial, target)
    return summary
