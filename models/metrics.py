"""How a candidate's quantile predictions are scored, in the paper's terms and in PanDA's.

The paper's point metrics (MAE, RMSE, R², MAPE) judge the median; the pinball loss and the empirical
coverage judge each quantile; the failure share and the slack share say what the request would cost PanDA:
jobs that fail because the request was too low, resources held that the jobs never used, beside the
hindsight limit (the least slack any per-task requests could have at the same share of jobs above).
Every function ignores rows where a value is missing (NaN) and returns NaN when no row is left, so a
candidate that cannot answer for some tasks is scored on the tasks it answered (`evaluate` counts the rest).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.5, 0.9, 0.95)


def quantile_name(alpha: float) -> str:
    """The column holding quantile `alpha`: 0.9 -> "q90". Only whole percents have a name."""
    percent = round(alpha * 100)
    if not 0 < percent < 100 or abs(alpha * 100 - percent) > 1e-9:
        raise ValueError(f"quantile {alpha!r} is not a whole percent strictly between 0 and 1")
    return f"q{percent}"


QUANTILE_COLUMNS = tuple(quantile_name(alpha) for alpha in QUANTILES)


def _known_pairs(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both as float arrays, paired by position, keeping only rows where both are known."""
    true = np.asarray(y_true, dtype="float64")
    pred = np.asarray(y_pred, dtype="float64")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.shape} values but y_pred has {pred.shape}")
    known = ~(np.isnan(true) | np.isnan(pred))
    return true[known], pred[known]


def point_metrics(y_true, y_pred) -> dict[str, float]:
    """MAE, RMSE, R² and MAPE of a point prediction (the paper's metrics).

    MAPE is in percent and averages only over rows with y_true > 0: a relative error of a zero is
    undefined, and zeros are real values for some targets (e.g. work disk). R² is NaN when fewer than
    two rows remain or y_true is constant (no variance to explain).
    """
    true, pred = _known_pairs(y_true, y_pred)
    if true.size == 0:
        return {"mae": np.nan, "rmse": np.nan, "r2": np.nan, "mape": np.nan}
    error = pred - true
    total_variance = float(np.sum((true - true.mean()) ** 2))
    positive = true > 0
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "r2": 1.0 - float(np.sum(error**2)) / total_variance if total_variance > 0 else np.nan,
        "mape": float(100 * np.mean(np.abs(error[positive]) / true[positive])) if positive.any() else np.nan,
    }


def quantile_losses(y_true, y_pred, alpha: float) -> np.ndarray:
    """Per row, the quantile loss: under-prediction costs alpha per unit, over-prediction 1 - alpha (NaN
    where either side is missing)."""
    gap = np.asarray(y_true, dtype="float64") - np.asarray(y_pred, dtype="float64")
    return np.maximum(alpha * gap, (alpha - 1) * gap)


def pinball_loss(y_true, y_pred, alpha: float) -> float:
    """Mean quantile loss over the rows where both sides are known.

    The loss the quantile `alpha` minimises, so it ranks quantile predictions fairly (lower is better).
    """
    true, pred = _known_pairs(y_true, y_pred)
    return float(np.mean(quantile_losses(true, pred, alpha))) if true.size else np.nan


def coverage(y_true, y_pred) -> float:
    """Share of rows whose actual value is at or below the prediction; a calibrated q90 covers 0.90."""
    true, pred = _known_pairs(y_true, y_pred)
    return float(np.mean(true <= pred)) if true.size else np.nan


def job_failure_share(request: pd.Series, jobs: pd.DataFrame, value_column: str) -> float:
    """Share of finished jobs that would have failed under their task's request.

    `request` is indexed by jeditaskid (one value per task, e.g. MB per core); `jobs` has one row per
    finished job with `jeditaskid` and `value_column` in the request's unit. A job fails when it needed
    more than its task requested. Jobs of tasks absent from `request`, and missing values, are left out.
    Counting jobs rather than tasks is what PanDA pays: a task with many jobs fails many times.
    """
    if not request.index.is_unique:
        duplicated = request.index[request.index.duplicated()].unique().tolist()[:5]
        raise ValueError(f"request has more than one value for jeditaskid {duplicated}")
    missing = {"jeditaskid", value_column} - set(jobs.columns)
    if missing:
        raise ValueError(f"jobs lack the column(s) {sorted(missing)}")
    outcomes = job_outcomes(request, jobs, value_column)
    return float(np.mean(outcomes["need"] > outcomes["request"])) if len(outcomes) else np.nan


def slack_share(y_true, request) -> float:
    """Resources requested beyond need, as a share of the request, averaged over tasks.

    Per task max(request - y_true, 0) / request, over rows with request > 0: the part of what was held
    that the task never used. Under-requests count as zero slack here; the failure share counts them.
    """
    true, asked = _known_pairs(y_true, request)
    positive = asked > 0
    if not positive.any():
        return np.nan
    true, asked = true[positive], asked[positive]
    return float(np.mean(np.maximum(asked - true, 0) / asked))


def job_outcomes(request: pd.Series, jobs: pd.DataFrame, need_column: str) -> pd.DataFrame:
    """Per finished job of a task in `request` (indexed by jeditaskid): its task, need and request."""
    asked = jobs["jeditaskid"].map(request).to_numpy(dtype="float64")
    need = pd.to_numeric(jobs[need_column], errors="coerce").to_numpy(dtype="float64")
    known = ~(np.isnan(asked) | np.isnan(need))
    return pd.DataFrame({"jeditaskid": jobs["jeditaskid"].to_numpy()[known], "need": need[known],
                         "request": asked[known]})


def job_slack(outcomes: pd.DataFrame) -> float:
    """Mean over jobs of the unused share of the request, max(request - need, 0) / request (jobs above it
    hold none unused: they fail)."""
    positive = outcomes["request"] > 0
    if not positive.any():
        return np.nan
    rows = outcomes[positive]
    return float(np.mean(np.maximum(rows["request"] - rows["need"], 0.0) / rows["request"]))


def hindsight_slack(outcomes: pd.DataFrame, share_above: float) -> float:
    """The least job slack any per-task requests could have with at most `share_above` of the jobs above
    them, knowing every job's need: per task, the request among its jobs' needs minimising slack + λ · jobs
    above; λ is the smallest that brings the share of jobs above down to `share_above` (bisection)."""
    if not len(outcomes) or not np.isfinite(share_above):
        return np.nan
    jobs = outcomes[outcomes["need"] > 0].sort_values(["jeditaskid", "need"], kind="stable")
    if not len(jobs):
        return np.nan
    task = jobs["jeditaskid"].to_numpy()
    need = jobs["need"].to_numpy(dtype="float64")
    starts = np.flatnonzero(np.r_[True, task[1:] != task[:-1]])
    size = np.diff(np.r_[starts, len(task)])
    start_of = np.repeat(starts, size)
    rank = np.arange(len(task)) - start_of                      # 0-based rank of the candidate within its task
    # Candidate request = the need of rank k: the jobs ranked above k fail (ties: those with a larger need),
    # and the jobs at or below waste (need_k - need_j) / need_k each.
    cumulative = np.cumsum(need)
    below_sum = cumulative - np.r_[0.0, cumulative][start_of]   # sum of the needs up to and including rank k
    strictly_above = np.repeat(size, size) - 1 - rank
    same_as_next = np.r_[need[1:] == need[:-1], False] & np.r_[task[1:] == task[:-1], False]
    # with ties, the jobs of equal need above rank k do not fail: count those strictly greater
    above = strictly_above.copy()
    for i in np.flatnonzero(same_as_next)[::-1]:
        above[i] = above[i + 1]
    waste = ((rank + 1) * need - below_sum) / need               # sum over the jobs at or below rank k
    total = len(task)

    def choose(lam: float) -> tuple[float, float]:
        cost = waste + lam * above
        best = np.minimum.reduceat(cost, starts)
        chosen = np.flatnonzero(cost <= np.repeat(best, size) + 1e-12)
        # the first (lowest) candidate reaching the minimum of each task
        first = chosen[np.r_[True, start_of[chosen][1:] != start_of[chosen][:-1]]]
        return above[first].sum() / total, waste[first].sum() / total

    share, slack = choose(0.0)
    if share <= share_above:
        return slack
    low, high = 0.0, 1.0
    while choose(high)[0] > share_above and high < 1e9:
        high *= 2
    for _ in range(50):
        middle = (low + high) / 2
        if choose(middle)[0] > share_above:
            low = middle
        else:
            high = middle
    return choose(high)[1]


def evaluate(
    y_true: pd.Series,
    predictions: pd.DataFrame,
    *,
    log_space: bool,
    request_quantile: str,
    jobs: pd.DataFrame | None = None,
    job_value_column: str | None = None,
) -> dict[str, float | int | str]:
    """Every metric of one candidate on one target, as a flat JSON-ready dict.

    `predictions` holds q50, q90 and q95 on the same index as `y_true` (jeditaskid). Rows are scored
    where the actual value and all three quantiles are known (`n`); `n_unpredicted` counts tasks with an
    actual value the candidate gave no full answer for, so a candidate cannot look good by abstaining.
    `pinball_request`, the selection metric, is the pinball loss of the request quantile, taken on
    log1p of both sides when `log_space` (targets spanning decades: every task weighs alike), else in
    target units. For log1p, negative values are clipped to 0: every target is a non-negative resource.
    `failure_share` (only when `jobs` is given) and `slack_share` judge the request quantile in PanDA's
    terms. A metric with no rows to score is NaN.
    """
    missing = [column for column in QUANTILE_COLUMNS if column not in predictions.columns]
    if missing:
        raise ValueError(f"predictions lack the quantile column(s) {missing}")
    if request_quantile not in QUANTILE_COLUMNS:
        raise ValueError(f"request_quantile {request_quantile!r} is not one of {QUANTILE_COLUMNS}")
    if not predictions.index.equals(y_true.index):
        raise ValueError("predictions and y_true must share the same index (jeditaskid, in the same order)")
    if jobs is not None and job_value_column is None:
        raise ValueError("jobs were given without job_value_column: which job column holds the used value?")

    true = y_true.astype("float64")
    quantiles = predictions[list(QUANTILE_COLUMNS)].astype("float64")
    answered = quantiles.notna().all(axis=1)
    scored = true.notna() & answered
    true, quantiles = true[scored], quantiles[scored]

    result: dict[str, float | int | str] = dict(point_metrics(true, quantiles["q50"]))
    for alpha, column in zip(QUANTILES, QUANTILE_COLUMNS, strict=True):
        result[f"pinball_{column}"] = pinball_loss(true, quantiles[column], alpha)
        result[f"coverage_{column}"] = coverage(true, quantiles[column])
    if log_space:
        log_true, log_quantiles = np.log1p(true.clip(lower=0)), np.log1p(quantiles.clip(lower=0))
        for alpha, column in zip(QUANTILES, QUANTILE_COLUMNS, strict=True):
            result[f"pinball_log_{column}"] = pinball_loss(log_true, log_quantiles[column], alpha)
    space = "pinball_log" if log_space else "pinball"
    result["pinball_request"] = result[f"{space}_{request_quantile}"]
    result["request_quantile"] = request_quantile

    request = predictions.loc[scored.index[scored], "request"].astype("float64") if "request" in predictions \
        else quantiles[request_quantile]
    if jobs is not None:
        share = result["failure_share"] = job_failure_share(request, jobs, job_value_column)
        outcomes = job_outcomes(request, jobs, job_value_column)
        result["slack_share"] = job_slack(outcomes)
        result["hindsight_slack"] = hindsight_slack(outcomes, share)
        limit = result["hindsight_slack"]
        result["slack_vs_hindsight"] = result["slack_share"] / limit if limit and np.isfinite(limit) else np.nan
    else:
        result["slack_share"] = slack_share(true, request)
    result["n"] = int(scored.sum())
    result["n_unpredicted"] = int((y_true.notna() & ~answered).sum())
    return {key: value if isinstance(value, str | int) else float(value) for key, value in result.items()}
