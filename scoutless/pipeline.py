"""The whole pipeline against one archive, in order. Each step is a stage function of its package."""

from __future__ import annotations

import logging

from scoutless.params import EMBEDDED_ARCHIVE_URL, Params

log = logging.getLogger(__name__)


def run_pipeline(params: Params, progress: bool = True) -> None:
    """simulate (only the embedded default archive, and only when it is missing) -> extract."""
    from archive.stages import run_extract, run_simulate, sqlite_file
    from scoutless.paths import resolve

    if params.archive.url == EMBEDDED_ARCHIVE_URL:
        embedded = sqlite_file(EMBEDDED_ARCHIVE_URL)
        if embedded is not None and not embedded.exists():
            log.info("no archive at %s: simulating the embedded default", embedded)
            run_simulate(params, progress=progress)
    summary = run_extract(params, progress=progress)
    log.info(
        "extracted %s tasks (%s labelled, %s finished jobs) into %s in %.1f s",
        summary.tasks_total, summary.labelled_total, summary.jobs_total,
        resolve(params.extract.raw_dir), summary.seconds,
    )
