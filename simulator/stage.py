"""Stage entry point of the simulator: the CLI and the archive stage (for the embedded default) call it."""

from __future__ import annotations

import os
import shutil

import sqlalchemy as sa

from scoutless.archive.schema import panda_schema
from scoutless.archive.stages import archive_url, sqlite_file
from scoutless.params import Params
from scoutless.simulator.world import SimulationSummary, simulate_archive, simulate_window


def run_simulate(params: Params, tasks: int | None = None, seed: int | None = None, window: bool = False,
                 shifted: bool = False, progress: bool = True) -> SimulationSummary:
    """Simulate an archive into archive.url, or (`window`) append a later window of tasks to it.

    A SQLite archive is written under a temporary name (a window: into a copy) and renamed into place when
    complete, so a killed run never leaves a half-written archive. On a server, each block of tasks is one
    transaction.
    """
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
        return simulate(sa.create_engine(archive_url(params)))
    if window and not target.exists():
        raise FileNotFoundError(f"no archive at {target} to append a window to: simulate it first")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    if window:
        shutil.copyfile(target, partial)
    summary = simulate(sa.create_engine(f"sqlite:///{partial}"))
    os.replace(partial, target)
    return summary
