"""The drift check flow on a later window of the same world (no drift) and of a shifted one (drift, and the
retrain flow through the selection gate). Flows run under the session's Prefect test harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import project_env, write_params

pytestmark = pytest.mark.slow

# The default world over one year with fewer tasks, and 30-day validation and test windows: enough tasks in
# each window (about 160) for calibration and for the error reference the drift rule compares with.
SMALL_PROJECT = {
    "simulate": {"tasks": 2000, "days": 365, "window": {"tasks": 1500, "days": 30}},
    "split": {"validation_days": 30, "test_days": 30},
    "train": {"candidates": ["default", "history", "xgboost"], "xgboost": {"n_estimators": 60}},
    "backtest": {"origins": 1},
}


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory, prefect_harness) -> Path:
    """A project run once through the pipeline flow: promoted models, nothing after their training window."""
    root = tmp_path_factory.mktemp("trained")
    write_params(root, **SMALL_PROJECT)
    with project_env(root):
        from scoutless.flows.pipeline import pipeline_flow

        result = pipeline_flow(version=False)
    assert len(result["selected"]) == 6
    return root


def _later_window(trained_project: Path, tmp_path: Path, shifted: bool) -> Path:
    root = tmp_path / "project"
    shutil.copytree(trained_project, root, symlinks=True)
    with project_env(root):
        from scoutless.params import load_params
        from scoutless.simulator.stage import run_simulate

        run_simulate(load_params(), window=True, shifted=shifted, progress=False)
    return root


def _promotions(root: Path) -> dict[str, dict]:
    return {t: json.loads((root / "artifacts/promoted" / t / "promotion.json").read_text())
            for t in ("ramcount", "cputime", "cpuefficiency")}


def _drift_check(root: Path) -> tuple[dict, dict]:
    """Run the drift check flow in the project; its outcome and reports/drift.json."""
    with project_env(root):
        from scoutless.flows.pipeline import drift_check_flow

        outcome = drift_check_flow(version=False)
    return outcome, json.loads((root / "reports/drift.json").read_text())


def test_a_window_from_the_same_world_shows_no_drift(trained_project, tmp_path):
    root = _later_window(trained_project, tmp_path, shifted=False)
    before = _promotions(root)
    outcome, report = _drift_check(root)
    assert outcome["verdict"] == report["verdict"] == "no_drift", report["reasons"]
    assert outcome["retrained"] is None and _promotions(root) == before
    assert report["windows"]["current"]["tasks"] >= 1000             # the new window was extracted
    assert report["features"]["drifted_share"] < 0.5       # params.yaml monitor.retrain.drifted_features_share
    for target, error in report["errors"].items():
        assert error["labelled"] >= 50 and not error["exceeds_margin"], (target, error)
    for column in report["features"]["columns"].values():
        assert set(column) == {"column", "method", "score", "threshold", "drifted"}
    assert (root / "reports/drift/features.html").stat().st_size > 0


def test_a_shifted_window_is_detected_and_retrains_through_the_gate(trained_project, tmp_path):
    root = _later_window(trained_project, tmp_path, shifted=True)
    before = _promotions(root)
    outcome, report = _drift_check(root)
    assert outcome["verdict"] == report["verdict"] == "drift" and report["retrain"]
    assert any(r.startswith("ramcount: mean error") for r in report["reasons"]), (report["reasons"], report["errors"])
    assert report["errors"]["ramcount"]["ratio"] > 1.25
    assert {"release", "campaign"} <= set(report["features"]["drifted"])
    assert report["predictions"]["columns"]["pred_ramcount"]["drifted"] or report["errors"]["ramcount"]["drift"]

    retrained = outcome["retrained"]
    assert retrained is not None and len(retrained["trained"]) == 6
    after = _promotions(root)
    for target in after:
        decision = retrained["selected"][target]
        assert "why" in decision                         # every target went through the gate
        # Whichever configuration the gate let through, it was refit as of the new now: fresh, not frozen.
        assert after[target]["version"] == decision.get("promoted", decision.get("kept"))
        assert after[target]["as_of"] > before[target]["as_of"]
        assert after[target]["data_window"]["labels_known_by"] > before[target]["data_window"]["labels_known_by"]
