"""The archive stage: what the archive holds, recorded so that extraction reruns exactly when it changed."""

from __future__ import annotations

import json
from pathlib import Path

from scoutless.archive.extract import read_with_retries
from scoutless.archive.stages import open_source, sqlite_file
from scoutless.params import EMBEDDED_ARCHIVE_URL, Params
from scoutless.paths import resolve, write_json
from scoutless.simulator.stage import run_simulate


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
    absent = read_with_retries(params.extract, "the schema check", source.check)
    fingerprint = read_with_retries(params.extract, "the archive's fingerprint", source.fingerprint)
    state = {"source": source.describe(), "schema": params.archive.schema_name,
             "archive_schema": params.archive.archive_schema, **fingerprint, "absent_columns": absent,
             "simulated_with": simulated_with}
    write_json(state_path, state)
    return state
