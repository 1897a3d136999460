"""The features stage: data/validated -> data/features (features and the history table)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from scoutless.features.build import build_features, feature_columns
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


def run_features(params: Params) -> FeaturesSummary:
    started = time.perf_counter()
    validated, out = resolve(params.paths.validated), resolve(params.paths.features)
    tasks = pd.read_parquet(validated / "tasks.parquet")
    labels = pd.read_parquet(validated / "labels.parquet")
    targets = list(params.targets)
    features, table = build_features(tasks, labels, targets)

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
