"""Evidently 0.7 drift reports of one set of columns, reference window against current window.

Results are read from the snapshot by metric id, never by position: each column's `ValueDrift` metric gives
the method, threshold and score, and the drift test bound to that metric id says whether it drifted.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

VALUE_DRIFT = "evidently:metric_v2:ValueDrift"
DRIFTED_COLUMNS = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class DriftMethods:
    """Evidently's per-column drift tests; None leaves its defaults (chosen by column type and size)."""

    num_method: str | None = None
    cat_method: str | None = None
    num_threshold: float | None = None
    cat_threshold: float | None = None


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float        # a distance (drifted above the threshold) or a p-value (drifted below it)
    threshold: float
    drifted: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    columns: dict[str, ColumnDrift]
    skipped: dict[str, str]          # column -> why it was not tested
    html: Path | None

    @property
    def drifted_share(self) -> float:
        return float(np.mean([c.drifted for c in self.columns.values()])) if self.columns else float("nan")


def _prepared(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    """Floats for numerical columns, Python strings (None when missing) for categorical ones: Evidently's
    statistics do not take pandas' nullable types."""
    out = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in numerical}
    for c in categorical:
        values = frame[c].astype("object")
        out[c] = values.where(values.notna(), None).map(lambda v: v if v is None else str(v))
    return pd.DataFrame(out, index=frame.index)


def testable_columns(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> tuple[list[str], dict]:
    """The columns with values in both windows; the others with the reason (a test needs both sides)."""
    kept, skipped = [], {}
    for column in columns:
        if column not in reference or column not in current:
            skipped[column] = "not in both windows"
        elif reference[column].notna().sum() == 0:
            skipped[column] = "no value in the reference window"
        elif current[column].notna().sum() == 0:
            skipped[column] = "no value in the current window"
        else:
            kept.append(column)
    return kept, skipped


def column_drift(reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str],
                 methods: DriftMethods, title: str, html: Path | None = None) -> DriftResult:
    """Test every column for drift between the two windows; write Evidently's HTML page to `html`."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical, skipped_num = testable_columns(reference, current, numerical)
    categorical, skipped_cat = testable_columns(reference, current, categorical)
    skipped = skipped_num | skipped_cat
    columns = numerical + categorical
    if not columns:
        return DriftResult({}, skipped, None)
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    preset = DataDriftPreset(columns=columns, **{k: v for k, v in asdict(methods).items() if v is not None})
    report = Report([preset], include_tests=True, metadata={"title": title})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # Evidently's legacy layer warns about its own deprecations
        snapshot = report.run(
            Dataset.from_pandas(_prepared(current, numerical, categorical), data_definition=definition),
            Dataset.from_pandas(_prepared(reference, numerical, categorical), data_definition=definition),
        )
    results = read_column_drift(snapshot.dict())
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))    # a str: given a Path, Evidently 0.7 writes nothing
    return DriftResult({c: results[c] for c in columns if c in results}, skipped, html)


def read_column_drift(snapshot: dict) -> dict[str, ColumnDrift]:
    """Per column, its ValueDrift metric joined by metric id with the drift test bound to it."""
    failed = {
        test["metric_config"]["metric_id"]: test["status"] == "FAIL"
        for test in snapshot.get("tests", [])
        if test.get("id") == "drift"
    }
    out = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type") != VALUE_DRIFT:
            continue
        if metric["id"] not in failed:
            raise ValueError(f"Evidently gave no drift test for column {config['column']!r} (metric {metric['id']})")
        out[config["column"]] = ColumnDrift(
            column=config["column"], method=config["method"], score=float(metric["value"]),
            threshold=float(config["threshold"]), drifted=failed[metric["id"]],
        )
    return out
