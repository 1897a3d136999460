"""What people read about the models: three plots per target, a model card, a leaderboard.

Plots use matplotlib's object API (a bare Figure renders with Agg): no pyplot global state, no display,
and matplotlib is imported only when a plot is drawn, never when the CLI starts.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.models.metrics import QUANTILE_COLUMNS, QUANTILES
from scoutless.paths import atomic_path

PLOT_NAMES = ("predicted_vs_actual", "calibration", "residuals_by_processing_type")
DATA_WINDOW_KEYS = ("labels_known_by", "train_start", "train_end", "validation_start", "validation_end",
                    "test_start", "test_end", "n_train", "n_validation", "n_test")
CARD_METRICS = (
    "pinball_request", "coverage_q90", "coverage_q95", "mae", "mape", "r2", "failure_share", "slack_share",
    "slack_vs_hindsight",
)
CALIBRATION_TOLERANCE = 0.03
MAX_SCATTER_POINTS = 20_000  # beyond this a scatter is a blot; a fixed sample keeps it readable and fast
MAX_PROCESSING_TYPES = 15


def write_plots(
    target: str,
    unit: str,
    y_true: pd.Series,
    predictions: dict[str, pd.DataFrame],
    processing_type: pd.Series,
    winner: str,
    out_dir: Path,
    log_scale: bool,
) -> dict[str, Path]:
    """Draw the winner's fit, every candidate's calibration and the winner's residuals per processing type.

    `predictions` maps candidate -> frame of q50/q90/q95 on `y_true`'s index (jeditaskid);
    `processing_type` is indexed the same way. Returns {plot name: path}; each PNG is written atomically.
    """
    from matplotlib.figure import Figure

    if winner not in predictions:
        raise ValueError(f"winner {winner!r} is not among the candidates {sorted(predictions)}")
    label = f"{target} [{unit}]"
    drawers = {
        "predicted_vs_actual": lambda fig: _predicted_vs_actual(fig, label, y_true, predictions[winner], winner,
                                                                log_scale),
        "calibration": lambda fig: _calibration(fig, label, y_true, predictions, winner),
        "residuals_by_processing_type": lambda fig: _residuals(fig, label, unit, y_true, predictions[winner]["q50"],
                                                               processing_type, winner, log_scale),
    }
    paths = {}
    for name, draw in drawers.items():
        fig = Figure(figsize=(8, 6), layout="constrained")
        draw(fig)
        paths[name] = Path(out_dir) / f"{name}.png"
        with atomic_path(paths[name]) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    return paths


def _predicted_vs_actual(fig, label: str, y_true: pd.Series, winner_frame: pd.DataFrame, winner: str,
                         log_scale: bool) -> None:
    frame = pd.DataFrame({"actual": y_true, "q50": winner_frame["q50"], "q90": winner_frame["q90"]}).dropna()
    if log_scale:  # log axes cannot show zeros or negatives
        frame = frame[(frame > 0).all(axis=1)]
    shown = f"{len(frame):,} tasks"
    if len(frame) > MAX_SCATTER_POINTS:
        frame = frame.sample(MAX_SCATTER_POINTS, random_state=0)
        shown = f"sample of {MAX_SCATTER_POINTS:,} of {shown}"
    ax = fig.add_subplot()
    ax.vlines(frame["actual"], frame["q50"], frame["q90"], color="tab:orange", alpha=0.25, linewidth=0.8,
              label="q50 → q90")
    ax.scatter(frame["actual"], frame["q50"], s=6, alpha=0.5, color="tab:blue", label="q50", linewidths=0)
    if len(frame):
        low, high = frame.to_numpy().min(), frame.to_numpy().max()
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = actual")
        if log_scale:
            ax.set_xscale("log")
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no task with both an actual value and a prediction", ha="center", transform=ax.transAxes)
    ax.set_xlabel(f"actual {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"{label}: {winner} predicted vs actual, test window ({shown})")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)


def _calibration(fig, label: str, y_true: pd.Series, predictions: dict[str, pd.DataFrame], winner: str) -> None:
    ax = fig.add_subplot()
    ax.fill_between([0.45, 1.0], [0.45 - CALIBRATION_TOLERANCE, 1.0 - CALIBRATION_TOLERANCE],
                    [0.45 + CALIBRATION_TOLERANCE, 1.0 + CALIBRATION_TOLERANCE], color="grey", alpha=0.15,
                    label=f"nominal ± {CALIBRATION_TOLERANCE}")
    ax.plot([0.45, 1.0], [0.45, 1.0], color="black", linewidth=1, linestyle="--", label="perfect calibration")
    for candidate, frame in predictions.items():
        known = frame[list(QUANTILE_COLUMNS)].notna().all(axis=1) & y_true.notna()
        truth = y_true[known]
        empirical = [float(np.mean(truth <= frame.loc[known, column])) if known.any() else np.nan
                     for column in QUANTILE_COLUMNS]
        is_winner = candidate == winner
        ax.plot(QUANTILES, empirical, marker="o", linewidth=2.5 if is_winner else 1.2, zorder=3 if is_winner else 2,
                label=f"{candidate} (winner)" if is_winner else candidate)
    ax.set_xlim(0.45, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xticks(QUANTILES)
    ax.set_xlabel("nominal quantile")
    ax.set_ylabel("empirical coverage: share of tasks with actual ≤ predicted")
    ax.set_title(f"{label}: calibration of q50 / q90 / q95 on the test window")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)


def _residuals(fig, label: str, unit: str, y_true: pd.Series, q50: pd.Series, processing_type: pd.Series,
               winner: str, log_scale: bool) -> None:
    frame = pd.DataFrame({"actual": y_true, "q50": q50}).dropna()
    if log_scale:
        frame = frame[(frame > 0).all(axis=1)]
        residual = np.log10(frame["q50"] / frame["actual"])
        residual_label = "log10(predicted q50 / actual)"
    else:
        residual = frame["q50"] - frame["actual"]
        residual_label = f"predicted q50 − actual [{unit}]"
    kinds = processing_type.reindex(frame.index).astype("string").fillna("unknown")
    counts = kinds.value_counts().head(MAX_PROCESSING_TYPES)
    ax = fig.add_subplot()
    # Most frequent type at the top: boxplot draws the first position at the bottom.
    ordered = list(counts.index)[::-1]
    if not ordered:
        ax.text(0.5, 0.5, "no task with both an actual value and a prediction", ha="center", transform=ax.transAxes)
    else:
        ax.boxplot([residual[kinds == kind].to_numpy() for kind in ordered], orientation="horizontal",
                   showfliers=False, tick_labels=[f"{kind} (n={counts[kind]:,})" for kind in ordered])
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel(f"{residual_label}; > 0 over-predicts (boxes: quartiles, whiskers: 1.5 IQR)")
    ax.set_title(f"{label}: {winner} residuals by processing type"
                 + (f" (top {MAX_PROCESSING_TYPES})" if kinds.nunique() > MAX_PROCESSING_TYPES else ""))
    ax.grid(alpha=0.3, axis="x")


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _format(metric: str, value) -> str:
    if _is_missing(value):
        return "–"
    if metric.startswith(("coverage", "failure_share", "slack_share")):
        return f"{value:.3f}"
    if metric == "slack_vs_hindsight":
        return f"{value:.2f}"
    if metric == "mape":
        return f"{value:.1f}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ranked(metrics: dict[str, dict], metric: str) -> list[str]:
    """Candidates by `metric`, lowest first; a missing or NaN metric sorts last."""
    def key(candidate: str) -> tuple[bool, float]:
        value = metrics[candidate].get(metric)
        return (True, 0.0) if _is_missing(value) else (False, value)
    return sorted(metrics, key=key)


def model_card(
    target: str,
    unit: str,
    metrics: dict[str, dict],
    winner: str,
    servable: list[str],
    data_window: dict,
    features: list[str],
    request_quantile: str,
    log_space: bool,
    notes: list[str],
) -> str:
    """The markdown model card of one target: what the winner predicts, on which data, how well, its limits.

    `metrics` maps candidate -> `models.metrics.evaluate` output. `servable` names the candidates that can
    answer at submission time; the others (e.g. "scout") are shown for comparison only. `data_window`
    holds DATA_WINDOW_KEYS: the windows' bounds (dates, any printable form) and task counts
    (models.protocol.Windows.describe).
    """
    missing = [key for key in DATA_WINDOW_KEYS if key not in data_window]
    if missing:
        raise ValueError(f"data_window lacks {missing}; it needs {list(DATA_WINDOW_KEYS)}")
    if winner not in metrics:
        raise ValueError(f"winner {winner!r} has no metrics; candidates are {sorted(metrics)}")
    quantiles = ", ".join(QUANTILE_COLUMNS)
    space = "on log1p of the target, so every task weighs alike" if log_space else "in the target's unit"
    lines = [
        f"# Model card: {target}",
        "",
        "## What it predicts",
        f"- Target: `{target}`, in PanDA's unit **{unit}**, per task, from what is known at submission.",
        f"- Quantiles: {quantiles}. The **{request_quantile}** is the value sent to JEDI as the request;",
        "  the others say how much headroom the request has.",
        f"- Winner: **{winner}**, of {len(metrics)} candidates, chosen on the validation window and judged on "
        "the test window after it.",
        "",
        "## Data window",
        f"- Train: the {data_window['n_train']:,} tasks whose labels were known by "
        f"{data_window['labels_known_by']} (created {data_window['train_start']} to {data_window['train_end']}).",
        f"- Validation (calibration, selection): {data_window['n_validation']:,} tasks created "
        f"{data_window['validation_start']} to {data_window['validation_end']}, labels known by the end.",
        f"- Test (reported, and the gate): {data_window['n_test']:,} tasks created {data_window['test_start']} "
        f"to {data_window['test_end']}.",
        "",
        f"## Features ({len(features)})",
        textwrap.fill(", ".join(features), width=100) if features else "(none)",
        "",
        "## Metrics on the test window",
        f"pinball_request: pinball loss of {request_quantile} ({space}; lower is better); coverage_qNN: share of "
        "tasks at or below the quantile; failure_share: share of finished jobs above their task's request (the "
        "job-level value JEDI is told to set); slack_share: the unused share of the request, per job; "
        "slack_vs_hindsight: slack over the least any per-task requests could have with as many jobs above; "
        f"mae, mape (%, over actual > 0), r2: of q50 in {unit}.",
        "",
        "| candidate | " + " | ".join(CARD_METRICS) + " |",
        "|---|" + "---:|" * len(CARD_METRICS),
    ]
    for candidate in _ranked(metrics, "pinball_request"):
        name = f"**{candidate}** (winner)" if candidate == winner else candidate
        if candidate not in servable:
            name += " †"
        row = [_format(metric, metrics[candidate].get(metric)) for metric in CARD_METRICS]
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    if any(candidate not in servable for candidate in metrics):
        lines += ["", "† not servable: its values exist only after the task has started (e.g. the scouts' "
                      "measurements); shown for comparison only."]
    lines += ["", "## Calibration", _calibration_statement(metrics[winner]), "", "## Known limits"]
    lines += [f"- {note}" for note in notes]
    lines += [
        "- Scored on one test window; `scoutless backtest` repeats the protocol at several origins. New "
        "releases, campaigns and sites shift the values, which the drift check watches.",
        "- Quantiles are per task; jobs of one task vary around it, so the failure share counts jobs, "
        "and a task's own spread is not predicted.",
    ]
    return "\n".join(lines) + "\n"


def _calibration_statement(winner_metrics: dict) -> str:
    covered = winner_metrics.get("coverage_q90")
    if _is_missing(covered):
        return "The q90 coverage could not be measured (no scored rows)."
    verdict = (
        "within 0.90 ± 0.03: calibrated" if abs(covered - 0.90) <= CALIBRATION_TOLERANCE
        else "below 0.87: the q90 is too low, more tasks exceed it than intended" if covered < 0.90
        else "above 0.93: the q90 is too high, requests carry more headroom than intended"
    )
    return f"The winner's q90 covers {covered:.3f} of the test window's tasks ({verdict})."


def leaderboard(all_metrics: dict[str, dict[str, dict]], winners: dict[str, str], metric: str) -> str:
    """Markdown ranking of the candidates of every target by `metric` on the test window (lowest first,
    missing last), beside the validation score that chose the winner."""
    lines = [f"# Leaderboard by {metric} on the test window (lower is better)",
             "", "The winner is chosen by the validation score; the test window is only reported."]
    for target, metrics in all_metrics.items():
        lines += ["", f"## {target}", "",
                  f"| rank | candidate | {metric} | coverage_q90 | n | validation {metric} |",
                  "|---:|---|---:|---:|---:|---:|"]
        for rank, candidate in enumerate(_ranked(metrics, metric), start=1):
            scores = metrics[candidate]
            name = f"**{candidate}** (winner)" if winners.get(target) == candidate else candidate
            chosen_on = scores.get("validation", {}).get(metric)
            lines.append(f"| {rank} | {name} | {_format(metric, scores.get(metric))} | "
                         f"{_format('coverage_q90', scores.get('coverage_q90'))} | {_format('n', scores.get('n'))} | "
                         f"{_format(metric, chosen_on)} |")
    return "\n".join(lines) + "\n"
