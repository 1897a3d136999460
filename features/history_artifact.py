"""History as its own versioned artifact: the history snapshot as of a moment, refreshed as tasks finish.

artifacts/history/ (params paths.history) holds history_snapshot.parquet (each group's running statistics
over the labels known by `as_of`; features.history) and history.json (as of when, how many labelled tasks).
The select stage writes it as of the models' "now"; `scoutless history` and the drift-check flow refresh it
from newly finished tasks without retraining; a running `scoutless serve` reloads it when it changes, so the
history features of the next request count every task finished by the last refresh.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from features.history import snapshot
from models.layout import SNAPSHOT_FILE
from scoutless.params import Params
from scoutless.paths import build_dir, replace_dir, resolve, write_json

INFO_FILE = "history.json"


def snapshot_as_of(table: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The running rows of labels known by `as_of`, the last one of each group."""
    return snapshot(table[pd.to_datetime(table["available_at"]) <= as_of])


def write_history(params: Params, as_of: pd.Timestamp | None = None) -> dict:
    """Write artifacts/history as of `as_of` (None: every label in the features' history table)."""
    table = pd.read_parquet(resolve(params.paths.features) / "history.parquet")
    known = pd.to_datetime(table["available_at"])
    as_of = pd.Timestamp(as_of) if as_of is not None else known.max()
    current = snapshot_as_of(table, as_of)
    info = {"as_of": str(as_of), "groups": len(current),
            "labels_known_at_newest": str(known[known <= as_of].max())}
    folder = resolve(params.paths.history)
    build = build_dir(folder)
    current.to_parquet(build / SNAPSHOT_FILE, index=False)
    write_json(build / INFO_FILE, info)
    replace_dir(build, folder)
    return info


def read_history_info(folder: Path) -> dict | None:
    path = folder / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None
