"""How a candidate's quantile predictions are scored, in the paper's terms and in PanDA's.

The paper's point metrics (MAE, RMSE, R², MAPE) judge the median; the pinball loss and the empirical
coverage judge each quantile; the failure share and the slack share say what the request quantile would
cost PanDA: jobs that fail because the request was too low, resources held that the task never used.
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
    task_request = jobs["jeditaskid"].map(request).to_numpy(dtype="float64")
    used = pd.to_numeric(jobs[value_column], errors="coerce").to_numpy(dtype="float64")
    known = ~(np.isnan(task_request) | np.isnan(used))
    return float(np.mean(used[known] > task_request[known])) if known.any() else np.nan


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

    request = quantiles[request_quantile]
    if jobs is not None:
        result["failure_share"] = job_failure_share(request, jobs, job_value_column)
    result["slack_share"] = slack_share(true, request)
    result["n"] = int(scored.sum())
    result["n_unpredicted"] = int((y_true.notna() & ~answered).sum())
    return {key: value if isinstance(value, str | int) else float(value) for key, value in result.items()}
