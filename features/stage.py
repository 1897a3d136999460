"""The features stage: data/validated -> data/features (features and the history table)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scoutless.features.build import TASK_FIELDS, build_features, feature_columns, submission_features
from scoutless.params import Params
from scoutless.paths import build_dir, replace_dir, resolve, write_parquet
from scoutless.validation.report import write_html_report
from scoutless.validation.suites import features_suite
from scoutless.validation.validate import enforce, split_bad_rows, validate_table

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesSummary:
    tasks: int
    labelled: int
    unlabelled: int
    quarantined: int
    n_features: int
    seconds: float


def _submission_features_between(path: Path, lo: int, hi: int) -> pd.DataFrame:
    """submission_features of the tasks of `path` with lo <= jeditaskid < hi, with their jeditaskid."""
    fields = [name for name in ("jeditaskid", *TASK_FIELDS) if name in pq.read_schema(path).names]
    tasks = pd.read_parquet(path, columns=fields, filters=[("jeditaskid", ">=", lo), ("jeditaskid", "<", hi)])
    return submission_features(tasks).assign(jeditaskid=tasks["jeditaskid"].to_numpy())


def submission_features_on(address: str, path: Path, ids: pd.Series, partitions_per_worker: int) -> pd.DataFrame:
    """submission_features of the tasks in `path` (whose jeditaskid are `ids`, in the file's order), computed by
    the workers of the Dask cluster at `address`, each over a range of task ids read from the file itself."""
    from scoutless.cluster import client_of, workers_of

    with client_of(address) as client:
        parts = workers_of(client) * partitions_per_worker
        values = ids.to_numpy(dtype="int64")
        lows = np.unique(np.quantile(values, np.linspace(0, 1, parts + 1)[:-1], method="lower"))
        highs = [*lows[1:], values.max() + 1]
        futures = client.map(_submission_features_between, [path] * len(lows), lows.tolist(),
                             [int(high) for high in highs])
        computed = pd.concat(client.gather(futures), ignore_index=True)
    if computed["jeditaskid"].duplicated().any() or len(computed) != len(ids):
        raise ValueError(f"{path}: jeditaskid is not a unique key of the tasks, cannot join their partitions")
    return computed.set_index("jeditaskid").loc[ids.to_numpy()].reset_index(drop=True)


def run_features(params: Params, cluster: str | None = None) -> FeaturesSummary:
    """Build the features; with a Dask scheduler's address, the submission features on its workers."""
    started = time.perf_counter()
    validated, out = resolve(params.paths.validated), resolve(params.paths.features)
    tasks = pd.read_parquet(validated / "tasks.parquet")
    labels = pd.read_parquet(validated / "labels.parquet")
    targets = list(params.targets)
    own = None if cluster is None or tasks.empty else submission_features_on(
        cluster, validated / "tasks.parquet", tasks["jeditaskid"], params.cluster.feature_partitions_per_worker)
    features, table = build_features(tasks, labels, targets, own)

    suite = features_suite(params.validation, feature_columns(targets), targets)
    outcome = validate_table(features, suite, "features")
    good, bad = split_bad_rows(features, outcome)
    quarantine = resolve(params.paths.quarantine)
    write_parquet(bad, quarantine / "features.parquet")
    reports = resolve(params.paths.validation_reports)
    write_html_report(reports / "features.html", "Validation of the features", [outcome], {"features": bad})
    enforce(outcome, params.validation)

    build = build_dir(out)   # the features and their history table are swapped in together
    write_parquet(good, build / "features.parquet")
    write_parquet(table, build / "history.parquet")
    replace_dir(build, out)
    labelled = int(good["labels_known_at"].notna().sum())
    return FeaturesSummary(
        tasks=len(good), labelled=labelled, unlabelled=len(good) - labelled, quarantined=len(bad),
        n_features=len(feature_columns(targets)),
        seconds=round(time.perf_counter() - started, 2),
    )
