"""The whole pipeline against one archive, in order. Each step is a stage function of its package."""

from __future__ import annotations

import logging

from scoutless.params import EMBEDDED_ARCHIVE_URL, Params

log = logging.getLogger(__name__)


def run_pipeline(params: Params, progress: bool = True) -> None:
    """simulate (only the embedded default archive, and only when it is missing) -> extract -> validate
    -> features -> train (each target) -> select -> package."""
    from archive.stages import run_extract, run_simulate, sqlite_file
    from features.stage import run_features
    from models.select import run_select
    from models.train import run_train
    from scoutless.paths import resolve
    from serving.stage import run_package
    from validation.validate import run_validate

    if params.archive.url == EMBEDDED_ARCHIVE_URL:
        embedded = sqlite_file(EMBEDDED_ARCHIVE_URL)
        if embedded is not None and not embedded.exists():
            log.info("no archive at %s: simulating the embedded default", embedded)
            run_simulate(params, progress=progress)
    extracted = run_extract(params, progress=progress)
    log.info("extracted %s tasks (%s labelled, %s finished jobs) into %s in %.1f s",
             extracted.tasks_total, extracted.labelled_total, extracted.jobs_total,
             resolve(params.paths.raw), extracted.seconds)
    validated = run_validate(params)
    log.info("validated: %s; report: %s", validated.tables, validated.report)
    built = run_features(params)
    log.info("features: %s tasks (%s train, %s holdout) into %s", built.tasks, built.train, built.holdout,
             resolve(params.paths.features))
    for target in params.targets:
        run_train(params, target)
    selected = run_select(params)
    log.info("selection: %s; leaderboard: %s", selected, resolve(params.paths.artifacts) / "leaderboard.md")
    packaged = run_package(params)
    log.info("Bento %s built (models %s)", packaged["bento"], packaged["models"])
