"""The rolling-origin backtest: the pipeline replayed at several earlier "nows", judged on what came next.

At each origin T (`backtest.origins` of them, `split.test_days` apart, the newest one test window before
the archive's now) the pipeline as of T is replayed exactly (models.protocol): every candidate trained as of
T - test_days and chosen on its validation window, the winner refit as of T; that served model is judged on
the tasks created in the test window after T, with every label the archive has for them. Training the
candidates at every origin once gives both: the candidates as of T - test_days choose the winner that the
candidates as of T then serve. The history baseline as of T is judged on the same tasks. The replay has no
gate: every origin starts from nothing promoted.

Reported per target and window, overall and per processing type: the pinball loss of the request quantile,
its ratio to the history baseline's, the coverage of every quantile, the share of finished jobs above the
request, the slack and its ratio to the hindsight limit (models.metrics.hindsight_slack) beside the same ratio
for the rule built on the true labels and on JEDI's scouts (models.requests.reference_vs_hindsight), and for
cputime the share of jobs longer than the walltime limit JEDI derives from the served fields. Written to
artifacts/backtest.json, artifacts/backtest.md, artifacts/backtest.png and
artifacts/backtest_predictions.parquet (every served answer, `served`, and the history baseline's beside it, each
with both request policies' values and, for memory, the task's job need at the calibration's levels: what the
replay runs jobs under).
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from scoutless.models.metrics import QUANTILE_COLUMNS
from scoutless.models.protocol import DAY, Windows, pipeline_now
from scoutless.models.requests import reference_vs_hindsight, walltime_exceeded_share
from scoutless.models.select import choose_winner
from scoutless.models.targets import TARGETS
from scoutless.models.train import by_task, load_training_data, score, train_target
from scoutless.params import Params
from scoutless.paths import atomic_path, resolve, write_json, write_parquet

log = logging.getLogger(__name__)

REPORTED = ("pinball_request", "coverage_q50", "coverage_q90", "coverage_q95", "failure_share", "slack_share",
            "hindsight_slack", "slack_vs_hindsight", "label_rule_vs_hindsight", "scouts_vs_hindsight",
            "walltime_exceeded_share", "n")
BASELINE = "history"


def backtest_origins(now: pd.Timestamp, params: Params) -> list[pd.Timestamp]:
    """The origins whose served models are judged, oldest first; the newest one's test window ends at now."""
    step = params.split.test_days * DAY
    return [now - k * step for k in range(params.backtest.origins, 0, -1)]


def _subset(metrics: dict) -> dict:
    return {key: metrics.get(key) for key in REPORTED}


def _walltime(target: str, rows: pd.DataFrame, served: pd.DataFrame, jobs: pd.DataFrame, params: Params) -> dict:
    """For cputime: the share of jobs whose wall time exceeds the limit JEDI derives from the served fields."""
    if target != "cputime" or "corepower" not in jobs:
        return {}
    return {"walltime_exceeded_share": walltime_exceeded_share(
        rows, served.loc[rows.index, "request"], jobs, params.extract.jedi.cpuefficiency_if_null)}


def _references(target: str, rows: pd.DataFrame, jobs: pd.DataFrame, share_above) -> dict:
    """Where the served slack's gap to the hindsight limit comes from: the same rule on the true labels and on
    the scouts' values, each at the served share of jobs above."""
    spec = TARGETS[target]
    if spec.job_column is None or share_above is None or not math.isfinite(share_above):
        return {}
    out = {"label_rule_vs_hindsight": reference_vs_hindsight(spec, rows[f"label_{target}"], jobs, share_above)}
    if f"scout_{target}" in rows:
        out["scouts_vs_hindsight"] = reference_vs_hindsight(spec, rows[f"scout_{target}"], jobs, share_above)
    return out


def _ratio(value, baseline) -> float | None:
    if value is None or baseline is None or not math.isfinite(baseline) or baseline <= 0:
        return None
    return value / baseline


def judge(target: str, origin: pd.Timestamp, winner: str, results_at_origin, features: pd.DataFrame,
          jobs: pd.DataFrame, params: Params) -> tuple[dict, pd.DataFrame]:
    """The served model's (and the baseline's) scores on the test window after `origin`, overall and per
    processing type; and its answers."""
    spec = TARGETS[target]
    request = params.train.request_quantile.get(target, "q90")
    test = by_task(Windows.at(origin, params.split).test_rows(features, target))
    served = results_at_origin.predictions[winner]
    baseline = results_at_origin.predictions[BASELINE]
    overall = results_at_origin.metrics[winner]
    base_overall = results_at_origin.metrics[BASELINE]
    record = {
        "target": target, "origin": str(origin), "test_end": str(origin + params.split.test_days * DAY),
        "winner": winner, **_subset({**overall, **_walltime(target, test, served, jobs, params),
                                     **_references(target, test, jobs, overall.get("failure_share"))}),
        "history_pinball_request": base_overall.get("pinball_request"),
        "vs_history": _ratio(overall.get("pinball_request"), base_overall.get("pinball_request")),
        "by_processing_type": {},
    }
    for kind, rows in test.groupby("processing_type", observed=True):
        if len(rows) < params.backtest.min_group_tasks:
            continue
        mine = score(spec, rows, served.loc[rows.index], request, jobs)
        mine.update(_walltime(target, rows, served, jobs, params),
                    **_references(target, rows, jobs, mine.get("failure_share")))
        theirs = score(spec, rows, baseline.loc[rows.index], request, jobs)
        record["by_processing_type"][str(kind)] = {
            **_subset(mine), "vs_history": _ratio(mine.get("pinball_request"), theirs.get("pinball_request"))}
    answers = pd.concat([
        served[_answer_columns(served)].reset_index().assign(candidate=winner, served=True),
        baseline[_answer_columns(baseline)].reset_index().assign(candidate=BASELINE, served=False),
    ], ignore_index=True).assign(target=target, origin=origin)
    return record, answers


def _answer_columns(answers: pd.DataFrame) -> list[str]:
    """What the replay runs jobs under: the quantiles, the served request and both policies' requests, and
    the job need at the calibration's levels where there is one (models.candidates)."""
    kept = [*QUANTILE_COLUMNS, "request", "quantile_request", "cost_aware_request", "job_need"]
    return [column for column in kept if column in answers]


def run_backtest(params: Params) -> dict:
    """The backtest stage entry point: the CLI, DVC and Prefect call this."""
    features, jobs = load_training_data(params)
    now = pipeline_now(features, params.split)
    origins = backtest_origins(now, params)
    fit_origins = [origins[0] - params.split.test_days * DAY, *origins]
    competing = list(params.backtest.candidates or params.train.candidates)
    candidates = competing if BASELINE in competing else [*competing, BASELINE]   # the baseline is always judged
    metric = params.select.metric
    records, answers = [], []
    for target in params.targets:
        results = {}
        for origin in fit_origins:
            log.info("backtest %s: candidates as of %s", target, origin)
            results[origin] = train_target(features, jobs, target, params, origin, candidates)
        for before, origin in zip(fit_origins, origins, strict=False):
            winner = choose_winner({name: results[before].metrics[name] for name in competing}, metric)
            record, served = judge(target, origin, winner, results[origin], features, jobs, params)
            records.append(record)
            answers.append(served)
            log.info("backtest %s as of %s: %s %s=%.4g (x%.2f history) coverage_q90=%.3f failure_share=%s",
                     target, origin, winner, metric, record["pinball_request"] or math.nan,
                     record["vs_history"] or math.nan, record["coverage_q90"] or math.nan, record["failure_share"])
    summary = {"now": str(now), "test_days": params.split.test_days, "validation_days": params.split.validation_days,
               "candidates": competing, "windows": records, "targets": summarise(records)}
    artifacts = resolve(params.paths.artifacts)
    write_json(artifacts / "backtest.json", summary)
    write_parquet(pd.concat(answers, ignore_index=True), artifacts / "backtest_predictions.parquet")
    with atomic_path(artifacts / "backtest.md") as tmp:
        tmp.write_text(markdown(summary))
    plot(records, artifacts / "backtest.png")
    return summary["targets"]


def summarise(records: list[dict]) -> dict:
    """Per target: the worst and the mean over windows of coverage_q90 and of the ratio to history."""
    out = {}
    frame = pd.DataFrame(records)
    for target, rows in frame.groupby("target", sort=False):
        out[target] = {
            "windows": len(rows),
            "coverage_q90_min": float(rows["coverage_q90"].min()),
            "coverage_q90_max": float(rows["coverage_q90"].max()),
            "vs_history_mean": float(rows["vs_history"].mean()), "vs_history_max": float(rows["vs_history"].max()),
            "failure_share_max": _max(rows, "failure_share"),
            "slack_vs_hindsight_max": _max(rows, "slack_vs_hindsight"),
            "label_rule_vs_hindsight_max": _max(rows, "label_rule_vs_hindsight"),
            "scouts_vs_hindsight_max": _max(rows, "scouts_vs_hindsight"),
            "walltime_exceeded_share_max": _max(rows, "walltime_exceeded_share"),
        }
    return out


def _max(rows: pd.DataFrame, column: str) -> float | None:
    return None if column not in rows or rows[column].isna().all() else float(rows[column].max())


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = [
        "# Backtest: the pipeline replayed at earlier origins",
        "",
        f"Now {summary['now']}; validation {summary['validation_days']:g} days, test {summary['test_days']:g} days; "
        f"candidates {', '.join(summary['candidates'])}. Each row: the model served as of the origin, judged on "
        "the tasks created in the test window after it. vs history: pinball loss of the request quantile over "
        "the history baseline's (lower is better); jobs above: finished jobs above the request; slack: the "
        "unused share of the request per job, and its ratio to the hindsight limit (the least slack any per-task "
        "requests could have with as many jobs above), and the same ratio for the rule built on each task's true label "
        "(what the rule itself costs) and on JEDI's scout values (measured hours later), each with the offset "
        "leaving as many jobs above chosen in hindsight; walltime: jobs longer than the walltime limit JEDI "
        "derives from the served cputime and cpuefficiency.",
        "",
        "| target | origin | winner | n | pinball | vs history | cov q50 | cov q90 | cov q95 | jobs above | slack "
        "| vs hindsight | true label | scouts | walltime exceeded |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["windows"]:
        lines.append(
            f"| {r['target']} | {r['origin'][:10]} | {r['winner']} | {_cell(r['n'])} | "
            f"{_cell(r['pinball_request'], 4)} | "
            f"{_cell(r['vs_history'], 2)} | {_cell(r['coverage_q50'])} | {_cell(r['coverage_q90'])} | "
            f"{_cell(r['coverage_q95'])} | {_cell(r['failure_share'])} | {_cell(r['slack_share'])} | "
            f"{_cell(r['slack_vs_hindsight'], 2)} | {_cell(r['label_rule_vs_hindsight'], 2)} | "
            f"{_cell(r['scouts_vs_hindsight'], 2)} | {_cell(r['walltime_exceeded_share'])} |")
    lines += ["", "## Per processing type (every window)", "",
              "| target | origin | processing type | n | vs history | cov q90 | jobs above | slack | vs hindsight "
              "| true label | scouts | walltime exceeded |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["windows"]:
        for kind, g in r["by_processing_type"].items():
            lines.append(f"| {r['target']} | {r['origin'][:10]} | {kind} | {_cell(g['n'])} | "
                         f"{_cell(g['vs_history'], 2)} | "
                         f"{_cell(g['coverage_q90'])} | {_cell(g['failure_share'])} | {_cell(g['slack_share'])} | "
                         f"{_cell(g['slack_vs_hindsight'], 2)} | {_cell(g['label_rule_vs_hindsight'], 2)} | "
                         f"{_cell(g['scouts_vs_hindsight'], 2)} | {_cell(g['walltime_exceeded_share'])} |")
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path) -> None:
    """q90 coverage and the ratio to history over the origins, one line per target."""
    from matplotlib.figure import Figure

    frame = pd.DataFrame(records).assign(origin=lambda f: pd.to_datetime(f["origin"]))
    fig = Figure(figsize=(10, 7), layout="constrained")
    coverage_ax, ratio_ax = fig.subplots(2, 1, sharex=True)
    for target, rows in frame.groupby("target", sort=False):
        coverage_ax.plot(rows["origin"], rows["coverage_q90"], marker="o", label=target)
        ratio_ax.plot(rows["origin"], rows["vs_history"], marker="o", label=target)
    coverage_ax.axhspan(0.87, 0.93, color="tab:green", alpha=0.12, label="0.87–0.93")
    coverage_ax.set_ylabel("q90 coverage (test window)")
    ratio_ax.axhline(1.0, color="grey", linewidth=0.8)
    ratio_ax.set_ylabel("pinball / history's")
    ratio_ax.set_xlabel("origin (model as of)")
    coverage_ax.legend(fontsize=8, ncols=4)
    coverage_ax.set_title("Backtest: each origin's served model on the test window after it")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
