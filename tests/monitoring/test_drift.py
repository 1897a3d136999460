"""Evidently drift results read by metric id, the windows, and the retrain rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoutless.monitoring.drift import ColumnDrift, DriftMethods, DriftResult, column_drift, read_column_drift
from scoutless.monitoring.monitor import choose_windows, decide, task_errors
from scoutless.params import MonitorParams, RetrainRule


def _frames(rng: np.random.Generator, shift: float, n_ref: int = 1500, n_cur: int = 600):
    def frame(n: int, mean: float) -> pd.DataFrame:
        return pd.DataFrame({
            "moved": rng.normal(mean, 1, n),
            "steady": rng.normal(0, 1, n),
            "kind": pd.Series(rng.choice(["a", "b", "c"], n), dtype="string"),
            "empty_now": np.nan if mean else rng.normal(0, 1, n),
        })

    return frame(n_ref, 0.0), frame(n_cur, shift)


def test_a_moved_column_drifts_and_steady_ones_do_not(tmp_path):
    reference, current = _frames(np.random.default_rng(1), shift=1.5)
    page = tmp_path / "drift.html"
    result = column_drift(reference, current, ["moved", "steady", "empty_now"], ["kind"], DriftMethods(),
                          "test", page)
    assert result.columns["moved"].drifted
    assert not result.columns["steady"].drifted and not result.columns["kind"].drifted
    assert result.skipped == {"empty_now": "no value in the current window"}
    assert result.drifted_share == pytest.approx(1 / 3)
    moved = result.columns["moved"]
    assert moved.score > moved.threshold and "Wasserstein" in moved.method
    page_text = page.read_text()
    assert page_text.lstrip().startswith("<!DOCTYPE html>") and "moved" in page_text and "kind" in page_text
    assert 'src="http' not in page_text                 # self-contained: opens offline


def test_methods_and_thresholds_come_from_params():
    reference, current = _frames(np.random.default_rng(2), shift=0.3, n_ref=400, n_cur=300)
    result = column_drift(reference, current, ["moved", "steady"], ["kind"],
                          DriftMethods(num_method="ks", cat_method="chisquare", num_threshold=0.01), "test")
    assert result.columns["moved"].method == "ks" and result.columns["moved"].threshold == 0.01
    assert result.columns["kind"].method == "chisquare" and result.columns["kind"].threshold == 0.05
    assert result.columns["moved"].drifted and result.columns["moved"].score < 0.01   # a p-value


def test_results_are_joined_by_metric_id_not_position():
    snapshot = {
        "metrics": [
            {"id": "m2", "config": {"type": "evidently:metric_v2:ValueDrift", "column": "b", "method": "x",
                                    "threshold": 0.1}, "value": 0.5},
            {"id": "count", "config": {"type": "evidently:metric_v2:DriftedColumnsCount"}, "value": {}},
            {"id": "m1", "config": {"type": "evidently:metric_v2:ValueDrift", "column": "a", "method": "x",
                                    "threshold": 0.1}, "value": 0.01},
        ],
        "tests": [
            {"id": "drift", "metric_config": {"metric_id": "m1"}, "status": "SUCCESS"},
            {"id": "lt", "metric_config": {"metric_id": "count"}, "status": "SUCCESS"},
            {"id": "drift", "metric_config": {"metric_id": "m2"}, "status": "FAIL"},
        ],
    }
    result = read_column_drift(snapshot)
    assert result["a"] == ColumnDrift("a", "x", 0.01, 0.1, False)
    assert result["b"] == ColumnDrift("b", "x", 0.5, 0.1, True)
    del snapshot["tests"][0]
    with pytest.raises(ValueError, match="no drift test for column 'a'"):
        read_column_drift(snapshot)


def test_windows_never_overlap_the_training_window():
    created = pd.date_range("2025-01-01", periods=200, freq="D")
    features = pd.DataFrame({"creationdate": created, "jeditaskid": range(200)})
    settings = MonitorParams(current_days=30, reference_days=60)
    windows = choose_windows(features, created[0], created[149], settings)
    assert windows.current["creationdate"].min() > created[149]
    assert len(windows.current) == 30 and windows.current["creationdate"].max() == created[-1]
    assert windows.reference["creationdate"].min() >= created[149] - pd.Timedelta(days=60)
    assert windows.reference["creationdate"].max() == created[149]
    assert windows.error_reference["creationdate"].between(created[150], created[169]).all()
    # trained on almost everything: the current window shrinks instead of reaching into training data
    late = choose_windows(features, created[0], created[189], settings)
    assert len(late.current) == 10 and late.error_reference.empty


def test_errors_are_the_pinball_loss_of_the_request_quantile():
    labels = pd.Series([1000.0, 1000.0, np.nan])
    request = pd.Series([1000.0, 2000.0, 500.0])
    errors = task_errors("ramcount", labels, request, "q90")          # ramcount is modelled in log space
    assert errors.iloc[0] == 0
    assert errors.iloc[1] == pytest.approx(0.1 * (np.log1p(2000) - np.log1p(1000)))
    assert np.isnan(errors.iloc[2])


def _features(share_drifted: float) -> DriftResult:
    columns = {f"c{i}": ColumnDrift(f"c{i}", "m", 0.0, 0.1, i < share_drifted * 10) for i in range(10)}
    return DriftResult(columns, {}, None)


def test_the_retrain_rule():
    rule = RetrainRule(drifted_features_share=0.5, error_margin=0.25, min_labelled=50)
    calm = {"ramcount": {"exceeds_margin": False}}
    assert decide(_features(0.3), calm, rule) == (False, [])
    retrain, reasons = decide(_features(0.5), calm, rule)
    assert retrain and "50% of the features drifted" in reasons[0]
    worse = {"ramcount": {"exceeds_margin": True, "current": 0.2, "reference": 0.1, "labelled": 80,
                          "reference_from": "120 labelled tasks before the current window"}}
    retrain, reasons = decide(_features(0.0), worse, rule)
    assert retrain and reasons[0].startswith("ramcount: mean error 0.2 on 80 labelled")
