"""Plots are real PNGs; the model card and the leaderboard say what a reader needs, in the right order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoutless.models.metrics import evaluate
from scoutless.models.report import PLOT_NAMES, leaderboard, model_card, write_plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WINDOW = {"labels_known_by": "2025-06-01", "train_start": "2024-01-01", "train_end": "2025-05-31",
          "validation_start": "2025-06-01", "validation_end": "2025-07-31", "test_start": "2025-07-31",
          "test_end": "2025-09-29", "n_train": 1400, "n_validation": 300, "n_test": 310}


def synthetic(n: int = 300) -> tuple[pd.Series, dict[str, pd.DataFrame], pd.Series]:
    """Memory per core of `n` tasks, a good and a poor candidate, 20 processing types (more than shown)."""
    rng = np.random.default_rng(1)
    index = pd.Index(np.arange(1000, 1000 + n), name="jeditaskid")
    actual = pd.Series(np.exp(rng.normal(7, 0.8, n)), index=index)
    good = actual * np.exp(rng.normal(0, 0.2, n))
    predictions = {
        "history": pd.DataFrame({"q50": good, "q90": good * 1.3, "q95": good * 1.4}),
        "default": pd.DataFrame({"q50": 2000.0, "q90": 2000.0, "q95": 2000.0}, index=index),
    }
    kinds = pd.Series([f"type{i % 20}" if i % 7 else "simul" for i in range(n)], index=index)
    kinds.iloc[0] = None
    return actual, predictions, kinds


@pytest.mark.parametrize("log_scale", [True, False])
def test_plots_are_written_as_png(tmp_path, log_scale):
    actual, predictions, kinds = synthetic()
    out_dir = tmp_path / "plots" / "ramcount"  # does not exist yet
    paths = write_plots("ramcount", "MBPerCore", actual, predictions, kinds, "history", out_dir, log_scale)
    assert set(paths) == set(PLOT_NAMES)
    for name, path in paths.items():
        assert path == out_dir / f"{name}.png"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{name}.png" for name in PLOT_NAMES)  # no temp files


def test_plots_survive_a_winner_without_predictions(tmp_path):
    actual, predictions, kinds = synthetic(20)
    predictions["history"].loc[:, :] = np.nan
    paths = write_plots("cputime", "HS06sPerEvent", actual, predictions, kinds, "history", tmp_path, True)
    assert all(path.read_bytes().startswith(PNG_SIGNATURE) for path in paths.values())


def test_plots_reject_an_unknown_winner(tmp_path):
    actual, predictions, kinds = synthetic(10)
    with pytest.raises(ValueError, match="xgboost"):
        write_plots("ramcount", "MBPerCore", actual, predictions, kinds, "xgboost", tmp_path, True)


def scored() -> dict[str, dict]:
    actual, predictions, _ = synthetic()
    metrics = {name: evaluate(actual, frame, log_space=True, request_quantile="q90")
               for name, frame in predictions.items()}
    metrics["scout"] = {**metrics["history"], "pinball_request": 0.01, "coverage_q90": 0.95}
    return metrics


def card(metrics: dict[str, dict], **overrides) -> str:
    arguments = dict(target="ramcount", unit="MBPerCore", metrics=metrics, winner="history",
                     servable=["history", "default"], data_window=WINDOW, features=["corecount", "processing_type"],
                     request_quantile="q90", log_space=True, notes=["Simulated archive, not real ATLAS data."])
    return model_card(**(arguments | overrides))


def test_model_card_names_winner_unit_and_every_candidate():
    metrics = scored()
    text = card(metrics)
    assert text.startswith("# Model card: ramcount")
    assert "MBPerCore" in text and "q90" in text and "Simulated archive" in text
    assert "2025-06-01" in text and "1,400" in text
    assert "## Features (2)" in text and "corecount, processing_type" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| candidate")]
    assert len(rows) == len(metrics)
    assert [row.split("|")[1].strip() for row in rows] == ["scout †", "**history** (winner)", "default"]
    assert "† not servable" in text
    assert "<" not in text  # plain markdown, no HTML


def test_model_card_calibration_statement():
    metrics = scored()
    calibrated = card({**metrics, "history": {**metrics["history"], "coverage_q90": 0.91}})
    assert "covers 0.910" in calibrated and "within 0.90 ± 0.03" in calibrated
    low = card({**metrics, "history": {**metrics["history"], "coverage_q90": 0.80}})
    assert "below 0.87" in low and "within" not in low


def test_model_card_requires_the_data_window():
    with pytest.raises(ValueError, match="n_test"):
        card(scored(), data_window={key: value for key, value in WINDOW.items() if key != "n_test"})


def test_leaderboard_orders_by_metric_with_missing_last():
    all_metrics = {
        "ramcount": {"hgb": {"pinball_request": 0.3}, "mlp": {"pinball_request": float("nan")},
                     "history": {"pinball_request": 0.2}, "default": {"pinball_request": 0.9}},
        "cputime": {"a": {"pinball_request": 2.0}, "b": {"pinball_request": 1.0}},
    }
    text = leaderboard(all_metrics, {"ramcount": "history", "cputime": "b"}, "pinball_request")
    ram_section = text.split("## ramcount")[1].split("## cputime")[0]
    names = [line.split("|")[2].strip() for line in ram_section.splitlines() if line.startswith("| ") and
             not line.startswith("| rank")]
    assert names == ["**history** (winner)", "hgb", "default", "mlp"]
    cpu_section = text.split("## cputime")[1]
    assert cpu_section.index("**b** (winner)") < cpu_section.index("| a |")
