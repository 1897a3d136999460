"""History as its own versioned artifact (written by models.refresh): where its files are and how to read
them. artifacts/history/ (params paths.history) holds history_snapshot.parquet (each group's running
statistics over the labels known by `as_of`; features.history), calibration.json (the served models' offsets
as of then) and history.json (as of when, how many labelled tasks).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scoutless.features.history import snapshot

INFO_FILE = "history.json"
CALIBRATION_FILE = "calibration.json"


def snapshot_as_of(table: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The running rows of labels known by `as_of`, the last one of each group."""
    return snapshot(table[pd.to_datetime(table["available_at"]) <= as_of])


def read_history_info(folder: Path) -> dict | None:
    path = folder / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None


def read_calibration(folder: Path) -> dict:
    """Per target: the version of the model the offsets belong to, and the offsets ({} when none)."""
    path = folder / CALIBRATION_FILE
    return json.loads(path.read_text()) if path.exists() else {}
