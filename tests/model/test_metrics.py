"""Every metric against hand-computed cases; the arithmetic is in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from scoutless.models.metrics import (
    QUANTILE_COLUMNS,
    QUANTILES,
    coverage,
    evaluate,
    job_failure_share,
    pinball_loss,
    point_metrics,
    quantile_name,
    slack_share,
)

NAN = float("nan")


def test_quantile_names():
    assert QUANTILES == (0.5, 0.9, 0.95) and QUANTILE_COLUMNS == ("q50", "q90", "q95")
    with pytest.raises(ValueError):
        quantile_name(0.975)  # not a whole percent


def test_point_metrics_by_hand():
    # errors p - y = [1-1, 1-2, 5-3, 2-4] = [0, -1, 2, -2]
    # mae = (0+1+2+2)/4 = 1.25; rmse = sqrt((0+1+4+4)/4) = 1.5
    # mean y = 2.5, SS_tot = 2.25+0.25+0.25+2.25 = 5, SS_res = 9 -> r2 = 1 - 9/5 = -0.8
    # mape = 100 * (0/1 + 1/2 + 2/3 + 2/4)/4 = 100 * (5/3)/4 = 41.666...
    got = point_metrics([1, 2, 3, 4], [1, 1, 5, 2])
    assert got == pytest.approx({"mae": 1.25, "rmse": 1.5, "r2": -0.8, "mape": 100 * (5 / 3) / 4})


def test_point_metrics_skip_nan_rows_and_zero_actuals_in_mape():
    # rows 2 (y NaN) and 3 (p NaN) go; left y = [0, 2], p = [1, 3]: errors [1, 1]
    # mae 1, rmse 1, SS_tot = 1+1 = 2, SS_res = 2 -> r2 0; mape only over y > 0: 100 * 1/2 = 50
    got = point_metrics([0, 2, NAN, 5], [1, 3, 4, NAN])
    assert got == pytest.approx({"mae": 1.0, "rmse": 1.0, "r2": 0.0, "mape": 50.0})


def test_point_metrics_without_rows_or_variance_are_nan():
    assert all(math.isnan(value) for value in point_metrics([NAN, 1], [2, NAN]).values())
    constant = point_metrics([3, 3], [3, 4])  # SS_tot = 0: r2 undefined; mae = (0 + 1)/2
    assert math.isnan(constant["r2"]) and constant["mae"] == 0.5


def test_pinball_loss_by_hand():
    # y - p = [2, -2]; alpha 0.9: under-prediction 0.9*2 = 1.8, over-prediction 0.1*2 = 0.2 -> mean 1.0
    assert pinball_loss([10, 10], [8, 12], 0.9) == pytest.approx(1.0)
    # alpha 0.5 is half the absolute error: (0.5*2 + 0.5*2)/2 = 1.0; asymmetric case y - p = [4, 0, -1]:
    # alpha 0.95: (0.95*4 + 0 + 0.05*1)/3 = 3.85/3
    assert pinball_loss([10, 10], [8, 12], 0.5) == pytest.approx(1.0)
    assert pinball_loss([5, 1, 1], [1, 1, 2], 0.95) == pytest.approx(3.85 / 3)


def test_pinball_loss_and_coverage_skip_nan():
    # only rows 0 and 3 are known: y - p = [1, -1]; alpha 0.9: (0.9 + 0.1)/2 = 0.5; covered: [no, yes]
    y, p = [3, NAN, 1, 5], [2, 1, NAN, 6]
    assert pinball_loss(y, p, 0.9) == pytest.approx(0.5)
    assert coverage(y, p) == pytest.approx(0.5)
    assert math.isnan(pinball_loss([NAN], [1], 0.5)) and math.isnan(coverage([], []))


def test_coverage_counts_ties_as_covered():
    # y <= p: [yes (equal), yes, no, no] -> 0.5
    assert coverage([1, 2, 3, 4], [1, 5, 2, 3]) == pytest.approx(0.5)


def test_job_failure_share_two_tasks():
    request = pd.Series({1: 1000.0, 2: 2000.0})
    jobs = pd.DataFrame({
        "jeditaskid": [1, 1, 1, 2, 2, 3, 2],
        "mb_per_core": [900, 1000, 1100, 2500, 1500, 9999, NAN],
    })
    # task 1: 900 ok, 1000 ok (equal is enough), 1100 fails; task 2: 2500 fails, 1500 ok, NaN left out;
    # task 3 has no request: left out. 2 failures of 5 jobs = 0.4
    assert job_failure_share(request, jobs, "mb_per_core") == pytest.approx(0.4)


def test_job_failure_share_edge_cases():
    request = pd.Series({1: NAN, 2: 100.0})
    jobs = pd.DataFrame({"jeditaskid": [1, 3], "v": [5.0, 5.0]})
    assert math.isnan(job_failure_share(request, jobs, "v"))  # task 1's request unknown, task 3 not requested
    with pytest.raises(ValueError, match="jeditaskid"):
        job_failure_share(pd.Series([1.0, 2.0], index=[7, 7]), jobs, "v")
    with pytest.raises(ValueError, match="mb"):
        job_failure_share(request, jobs, "mb")


def test_slack_share_by_hand():
    # request 10, need 4 -> 6/10 = 0.6; request 5, need 8 -> 0 (under-request, no slack);
    # request 0 left out; NaN need left out -> mean(0.6, 0) = 0.3
    assert slack_share([4, 8, 1, NAN], [10, 5, 0, 3]) == pytest.approx(0.3)
    assert math.isnan(slack_share([1], [0]))


def frame(q50, q90, q95, index) -> pd.DataFrame:
    return pd.DataFrame({"q50": q50, "q90": q90, "q95": q95}, index=pd.Index(index, name="jeditaskid"))


def test_evaluate_in_target_units():
    y = pd.Series([10.0, 20.0, 30.0, NAN], index=pd.Index([1, 2, 3, 4], name="jeditaskid"))
    predictions = frame([12, 18, 30, 5], [15, 25, 28, 6], [20, 30, 40, 7], [1, 2, 3, 4])
    jobs = pd.DataFrame({"jeditaskid": [1, 1, 2, 3, 4], "used": [14, 16, 26, 27, 100]})
    got = evaluate(y, predictions, log_space=False, request_quantile="q90", jobs=jobs, job_value_column="used")
    assert set(got) == {
        "mae", "rmse", "r2", "mape", "pinball_q50", "pinball_q90", "pinball_q95", "coverage_q50", "coverage_q90",
        "coverage_q95", "pinball_request", "request_quantile", "failure_share", "slack_share", "hindsight_slack",
        "slack_vs_hindsight", "n", "n_unpredicted",
    }
    assert got["n"] == 3 and got["n_unpredicted"] == 0  # task 4 has no actual value
    # q50 errors [2, -2, 0]: mae 4/3
    assert got["mae"] == pytest.approx(4 / 3)
    # q90: y - p = [-5, -5, 2] -> (0.1*5 + 0.1*5 + 0.9*2)/3 = 2.8/3; covered [yes, yes, no]
    assert got["pinball_q90"] == pytest.approx(2.8 / 3) == got["pinball_request"]
    assert got["coverage_q90"] == pytest.approx(2 / 3)
    # request q90 = {1: 15, 2: 25, 3: 28}; jobs 14 ok, 16 fails, 26 fails, 27 ok; task 4 not scored -> 2/4
    assert got["failure_share"] == pytest.approx(0.5)
    # slack per job: 14 under 15 -> 1/15; 16 and 26 above theirs -> 0; 27 under 28 -> 1/28
    assert got["slack_share"] == pytest.approx((1 / 15 + 1 / 28) / 4)
    # in hindsight, requests at 14, 26 and 27 leave one job above (at most the two allowed) and no slack
    assert got["hindsight_slack"] == 0.0 and math.isnan(got["slack_vs_hindsight"])
    assert got["request_quantile"] == "q90"
    # a request of its own (the job-level one) is judged instead of the quantile; the quantiles are not
    with_request = evaluate(y, predictions.assign(request=[17, 30, 30, 6]), log_space=False,
                            request_quantile="q90", jobs=jobs, job_value_column="used")
    assert with_request["failure_share"] == 0.0 and with_request["coverage_q90"] == got["coverage_q90"]
    # task 1 could ask for 16 with no job above: slack (2/16 + 0) / 2 of its jobs; tasks 2 and 3 none
    assert with_request["hindsight_slack"] == pytest.approx((2 / 16) / 4)
    json.dumps(got)  # plain Python values only
    assert all(type(value) in (float, int, str) for value in got.values())


def test_evaluate_log_space_pinball():
    y = pd.Series([np.expm1(1.0), np.expm1(3.0)], index=[1, 2])
    predictions = frame([np.expm1(2.0)] * 2, [np.expm1(2.0)] * 2, [np.expm1(4.0)] * 2, [1, 2])
    got = evaluate(y, predictions, log_space=True, request_quantile="q95")
    assert "failure_share" not in got
    # log1p(y) = [1, 3]; q90 log = 2: y - p = [-1, 1] -> (0.1*1 + 0.9*1)/2 = 0.5
    assert got["pinball_log_q90"] == pytest.approx(0.5)
    # q95 log = 4: y - p = [-3, -1] -> 0.05*(3 + 1)/2 = 0.1; the request quantile is scored in log space
    assert got["pinball_log_q95"] == pytest.approx(0.1) == got["pinball_request"]
    # in target units the q95 loss is different: 0.05 * mean(e^4-e^1, e^4-e^3)
    assert got["pinball_q95"] == pytest.approx(0.05 * ((np.e**4 - np.e) + (np.e**4 - np.e**3)) / 2)


def test_evaluate_counts_tasks_a_candidate_did_not_answer():
    y = pd.Series([1.0, 2.0, 3.0], index=[1, 2, 3])
    predictions = frame([1, NAN, 3], [2, 3, 4], [3, 4, NAN], [1, 2, 3])
    got = evaluate(y, predictions, log_space=True, request_quantile="q90")
    assert got["n"] == 1 and got["n_unpredicted"] == 2
    empty = evaluate(y, frame([NAN] * 3, [NAN] * 3, [NAN] * 3, [1, 2, 3]), log_space=False, request_quantile="q50")
    assert empty["n"] == 0 and math.isnan(empty["pinball_request"]) and math.isnan(empty["mae"])


def test_evaluate_rejects_bad_input():
    y = pd.Series([1.0], index=[1])
    with pytest.raises(ValueError, match="q95"):
        evaluate(y, pd.DataFrame({"q50": [1.0], "q90": [1.0]}, index=[1]), log_space=False, request_quantile="q90")
    with pytest.raises(ValueError, match="request_quantile"):
        evaluate(y, frame([1], [1], [1], [1]), log_space=False, request_quantile="q75")
    with pytest.raises(ValueError, match="index"):
        evaluate(y, frame([1], [1], [1], [2]), log_space=False, request_quantile="q90")
