"""The layout of data/raw, shared by extraction (which writes it) and validation (which reads it): one Parquet
file per output and the state file, all of one extraction, whose id each file's Parquet metadata carries."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

OUTPUTS = ("tasks", "labels", "jobs", "rejected")
STATE_FILE = "extract_state.json"
EXTRACTION_KEY = b"scoutless.extraction"
# The version of the outputs' columns: raised when a column is added or changed, so that an incremental run
# does not merge rows of two layouts (2: jobs carry their starttime and endtime).
LAYOUT = 2


def read_state(raw_dir: Path) -> dict:
    """The state file of the extraction in `raw_dir` ({} when there is none)."""
    path = raw_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def extraction_of(path: Path) -> str | None:
    """The id of the extraction that wrote the Parquet file `path` (None: written by something else)."""
    value = (pq.read_schema(path).metadata or {}).get(EXTRACTION_KEY)
    return value.decode() if value else None
