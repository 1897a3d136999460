"""What a running service takes without retraining: the history snapshot and the served models' calibration,
as of a moment, refreshed as tasks finish.

artifacts/history/ (params paths.history) holds
- history_snapshot.parquet: each group's running statistics over the labels known by `as_of`
  (features.history), which the history features of the next request count;
- calibration.json: per promoted target, the conformal offsets of that very model (named by its version)
  recomputed from its errors on every task created after its fit's knowledge cut whose label was known by
  `as_of` (models.calibration.CalibrationPool), and its request's offsets from those tasks' jobs
  (models.requests): the model is never refit, so all of them are out of sample, and the offsets follow the
  newest errors as labels arrive;
- history.json: as of when, how many groups, the newest label counted, the calibration counts.

The history stage (`scoutless history`, after select) writes it as of the archive's now, and the drift-check
flow refreshes it; a running `scoutless serve` reloads it when it changes. The backtest answers each task as
this refresh would have just before its creation (models.train.predict_test).
"""

from __future__ import annotations

import pandas as pd

from scoutless.features.history_artifact import CALIBRATION_FILE, INFO_FILE, snapshot_as_of
from scoutless.models.layout import SNAPSHOT_FILE, load_promoted
from scoutless.models.protocol import LABELS_KNOWN_AT, calibration_rows, pipeline_now
from scoutless.params import Params
from scoutless.paths import build_dir, replace_dir, resolve, write_json


def recalibrated(params: Params, features: pd.DataFrame, jobs: pd.DataFrame, as_of: pd.Timestamp) -> dict:
    """Per promoted target whose model calibrates: its version and its offsets (quantiles, request) from the
    labels known by `as_of`."""
    out = {}
    for promoted in load_promoted(resolve(params.paths.promoted), list(params.targets)):
        target, info, candidate = promoted.target, promoted.info, promoted.candidate
        rows = calibration_rows(features, target, pd.Timestamp(info["data_window"]["labels_known_by"]), as_of)
        pool = candidate.calibration_pool(rows, rows[f"label_{target}"].to_numpy(dtype="float64"))
        job_pool = candidate.job_pool(rows, jobs)
        if pool is None and job_pool is None:
            continue
        known = int((pd.to_datetime(rows[LABELS_KNOWN_AT]) <= as_of).sum())
        entry = {"version": info["version"], "as_of": str(as_of), "tasks": known}
        if pool is not None:
            entry["offsets"] = candidate.recalibrate(pool, as_of).calibration.to_dict()
        if job_pool is not None:
            entry["job_offsets"] = job_pool.offsets_at(as_of).to_dict()
            entry["jobs"] = int(job_pool.known_by(as_of).sum())
        out[target] = entry
    return out


def write_history(params: Params, as_of: pd.Timestamp | None = None) -> dict:
    """Write artifacts/history as of `as_of` (None: the archive's now, as selection takes it)."""
    features_dir = resolve(params.paths.features)
    table = pd.read_parquet(features_dir / "history.parquet")
    features = pd.read_parquet(features_dir / "features.parquet")
    known = pd.to_datetime(table["available_at"])
    as_of = pd.Timestamp(as_of) if as_of is not None else pipeline_now(features, params.split)
    current = snapshot_as_of(table, as_of)
    calibration = recalibrated(params, features, pd.read_parquet(resolve(params.paths.validated) / "jobs.parquet"),
                               as_of)
    info = {"as_of": str(as_of), "groups": len(current), "labels_known_at_newest": str(known[known <= as_of].max()),
            "calibrated_on": {target: entry["tasks"] for target, entry in calibration.items()}}
    folder = resolve(params.paths.history)
    build = build_dir(folder)
    current.to_parquet(build / SNAPSHOT_FILE, index=False)
    write_json(build / CALIBRATION_FILE, calibration)
    write_json(build / INFO_FILE, info)
    replace_dir(build, folder)
    return info
