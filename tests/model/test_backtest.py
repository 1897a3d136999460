"""The backtest replays the pipeline: the model served as of an origin answers a task exactly as the
backtest says it did, once the history and the calibration are refreshed as of the task's submission; and a
refresh alone changes the answer of a task whose kind gained finished tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import project_env, write_params

pytestmark = pytest.mark.slow

CHEAP = ["default", "xgboost"]
SETTINGS = {
    "simulate": {"tasks": 1500}, "split": {"validation_days": 45, "test_days": 45},
    "train": {"candidates": CHEAP, "xgboost": {"n_estimators": 40}},
    "backtest": {"origins": 2, "candidates": CHEAP, "min_group_tasks": 10},
}


@pytest.fixture(scope="module")
def backtested(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backtested")
    write_params(root, **SETTINGS)
    with project_env(root):
        from scoutless.archive.stages import run_extract
        from scoutless.features.stage import run_features
        from scoutless.models.backtest import run_backtest
        from scoutless.params import load_params
        from scoutless.simulator.stage import run_simulate
        from scoutless.validation.validate import run_validate

        params = load_params()
        run_simulate(params, progress=False)
        run_extract(params, full=True, progress=False)
        run_validate(params)
        run_features(params)
        run_backtest(params)
    return root


def test_the_backtest_reports_every_target_and_window(backtested):
    summary = json.loads((backtested / "artifacts" / "backtest.json").read_text())
    windows = pd.DataFrame(summary["windows"])
    assert len(windows) == 2 * 6 and windows.groupby("target").size().eq(2).all()
    assert windows["origin"].nunique() == 2
    # every served model was judged on tasks it never saw, against the history baseline
    assert (windows["n"] > 0).all() and windows["history_pinball_request"].notna().all()
    assert windows["coverage_q90"].between(0, 1).all()
    # in PanDA's terms: jobs above the request, slack beside the hindsight limit, walltime from the served fields
    memory = windows[windows["target"] == "ramcount"]
    assert memory["failure_share"].between(0, 1).all() and (memory["slack_vs_hindsight"] >= 1).all()
    # beside it, the same rule on the true labels and on the scouts' values, each a policy the limit bounds
    assert (memory[["label_rule_vs_hindsight", "scouts_vs_hindsight"]] >= 0.99).all().all()
    assert windows.loc[windows["target"] == "cputime", "walltime_exceeded_share"].between(0, 1).all()
    assert (backtested / "artifacts" / "backtest.md").read_text().startswith("# Backtest")
    assert (backtested / "artifacts" / "backtest.png").read_bytes()[:4] == b"\x89PNG"


def test_the_served_answer_is_the_backtests_as_of_the_same_time(backtested):
    answers = pd.read_parquet(backtested / "artifacts" / "backtest_predictions.parquet")
    origin = answers["origin"].max()
    mine = answers[(answers["origin"] == origin) & (answers["target"] == "ramcount") & answers["served"]]
    tasks = pd.read_parquet(backtested / "data" / "validated" / "tasks.parquet").set_index("jeditaskid")
    # The newest test task of the commonest processing type: its kind surely gained finished tasks after
    # the origin, before it was created.
    kinds = tasks.loc[mine["jeditaskid"], "processingtype"]
    commonest = kinds.value_counts().index[0]
    task_id = tasks.loc[kinds.index[kinds == commonest]].sort_values("creationdate").index[-1]
    task = tasks.loc[[task_id]].reset_index()
    answer = ["q50", "q90", "q95", "request"]
    expected = mine.set_index("jeditaskid").loc[task_id, answer].astype(float)

    with project_env(backtested):
        from scoutless.models.refresh import write_history
        from scoutless.models.select import run_select
        from scoutless.models.train import run_train
        from scoutless.params import load_params
        from scoutless.paths import resolve
        from scoutless.serving.predictor import Predictor

        # The pipeline, replayed as of the origin.
        write_params(backtested, **{**SETTINGS, "split": {**SETTINGS["split"], "as_of": str(origin)}})
        params = load_params()
        for target in params.targets:
            run_train(params, target)
        run_select(params)
        predictor = Predictor.from_promoted(resolve(params.paths.promoted), list(params.targets),
                                            resolve(params.paths.history))
        as_of_origin = predictor.predict_frame(task)["ramcount"].iloc[0][answer]
        assert predictor.metadata()["history"]["as_of"] == str(pd.Timestamp(origin))

        # The history as of just before the task's creation: exactly the backtest's answer.
        just_before = pd.Timestamp(task.loc[0, "creationdate"]) - pd.Timedelta(1, "ns")
        write_history(params, just_before)
        refreshed = predictor.predict_frame(task)["ramcount"].iloc[0][answer]
        # the served model's offsets were recomputed too, from the labels that arrived after the origin
        assert predictor.metadata()["targets"]["ramcount"]["calibrated_as_of"] == str(just_before)

    pd.testing.assert_series_equal(refreshed.astype(float), expected, check_names=False, rtol=1e-9)
    assert not as_of_origin.equals(refreshed)   # the refresh alone, no retraining, changed the answer
