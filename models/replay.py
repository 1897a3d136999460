"""The replay: had JEDI used scoutless instead of scouts, what would have happened to the archive's tasks?

The tasks are those the backtest judged: each created in a test window after an origin, answered by the model
served as of that origin (never trained on it) with the history known at its creation. Every finished job of
such a task runs again under each policy's requests, its real need taken from its record: memory per core
from maxpss, wall time from its start and end, and the walltime limit JEDI derives from a cputime request
(models.requests.walltime_limit_s) with the job's events, cores and core power.

Policies (params replay.policies):
- default: train.default_values (no cputime: no walltime limit beyond the queue's);
- scouts: JEDI today. The task's first replay.scout_jobs jobs (by start time) run at the default values; the
  rest wait until the last of them ended (the scouts' span: turnaround added before the bulk can start), then
  run at JEDI's scout formulas (archive.jedi_formulas.task_values: P75 x 1.1 memory, P95 x 1.5 CPU, ...) over
  the scouts' measurements;
- history, model: the history baseline's and the served model's request for the task at one job-level quantile
  for all (request.policy quantile; backtest answers);
- cost-aware: the served model's request of least expected cost for the task (request.policy cost-aware).

Each job's first attempt starts when it started in the archive, at the task's request. An attempt whose memory
need exceeds its request fails (out of memory, having run replay.oom_wall_fraction of its wall time) and is
retried then as JEDI's increase_memory does: at the next rung of replay.memory_ladder_mb above its request
(or, for replay.retry_policy replayed once more with each of replay.retry_rules, at the vertical pod
autoscaler's +20 % or at scoutless' advice from the task's distribution); once more than
replay.task_bump_share of the task's jobs were bumped, the task's ramcount is raised to the
bumped value, and every attempt that starts afterwards takes at least that. An attempt longer than its
walltime limit is killed at the limit and retried with the limit x replay.walltime_retry_factor. A job still
failing after replay.max_attempts attempts, or needing more than the ladder's top rung, is lost.

Figures per policy, overall and per processing type: tasks, jobs, failed attempts (out of memory, past the
walltime limit), the core-hours they wasted, lost jobs, the memory slack of the successful attempts
((request - need) x cores x hours, in GB-hours and in core-hours at replay.mb_per_core_slot MB per core), the
turnaround added before the bulk of a task's jobs can start, and the reach of the task's request: the share
of replay.site_memory_mb_per_core it fits.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.archive.jedi_formulas import task_values
from scoutless.models.requests import efficiency_request, job_levels, job_retry, vpa_retry, walltime_limit_s
from scoutless.models.targets import TARGETS
from scoutless.params import JediParams, Params, ReplayParams
from scoutless.paths import build_dir, replace_dir, resolve, write_json

log = logging.getLogger(__name__)

HOUR = 3600.0
# Per job, what the replay reads from jobs.parquet (with the measurements JEDI's scout formulas take)
JOB_FIELDS = ("jeditaskid", "pandaid", "cores", "corepower", "wall_s", "nevents", "ram_mb_per_core", "starttime",
              "endtime")
# Per task, the requests a policy sets: memory (MB per core), cputime (HS06 s per event; NaN: no walltime limit)
# and the cpuefficiency preset the cputime is expressed with
REQUEST_FIELDS = ("ramcount", "cputime")


@dataclass(frozen=True)
class Requests:
    """What a policy sets for one task."""
    ramcount: float
    cputime: float = math.nan
    efficiency: float = 100.0
    basewalltime: float = 0.0


def next_rung(request: np.ndarray, ladder: np.ndarray) -> np.ndarray:
    """The smallest rung above each request (inf above the top rung)."""
    position = np.searchsorted(ladder, request, side="right")
    return np.where(position < len(ladder), ladder[np.minimum(position, len(ladder) - 1)], np.inf)


def ladder_retry(ladder: np.ndarray) -> Callable[[float], float]:
    """JEDI's increase_memory: the next rung above the request."""
    return lambda failed_at: float(next_rung(np.array([failed_at]), ladder)[0])


def retry_rule(rule: str, ladder: np.ndarray, job_need: np.ndarray | None, levels, cost: dict
               ) -> Callable[[float], float]:
    """The memory a job that ran out at its request is retried at, by `rule` (params replay.retry_rules):
    JEDI's ladder, the vertical pod autoscaler's +20 %, or scoutless' advice from the task's job need at
    `levels` (models.requests.retry_advice; the autoscaler's rule for a task without one)."""
    if rule == "ladder":
        return ladder_retry(ladder)
    if rule == "vpa":
        return lambda failed_at: float(vpa_retry(np.array([failed_at]))[0])
    return lambda failed_at: job_retry(TARGETS["ramcount"], job_need, levels, failed_at, cost)[0]


# Event kinds, in the order they happen at one instant: a failure (and the bump it brings) before a start
_OUT_OF_MEMORY, _PAST_WALLTIME, _START = 0, 1, 2


def run_jobs(jobs: pd.DataFrame, requests: Requests, rules: ReplayParams,
             retry: Callable[[float], float] | None = None) -> dict:
    """One task's jobs (JOB_FIELDS) run at `requests` with JEDI's retries: attempts, failures, waste, slack.

    Each job's first attempt starts when it started in the archive; an attempt that fails ends after
    replay.oom_wall_fraction of its wall time (out of memory) or at its walltime limit, and its retry starts
    then, out of memory at what `retry` says (None: JEDI's ladder; above the ladder's top rung no queue takes
    it). A bump of the task's ramcount reaches every attempt that starts after it."""
    ladder = np.asarray(rules.memory_ladder_mb, dtype="float64")
    if retry is None:
        retry = ladder_retry(ladder)
    need = jobs["ram_mb_per_core"].to_numpy(dtype="float64")
    known = np.isfinite(need)
    need = np.where(known, need, 0.0)   # a job without maxpss cannot be seen to run out of memory
    cores = jobs["cores"].to_numpy(dtype="float64")
    wall = jobs["wall_s"].to_numpy(dtype="float64")
    limit = np.full(len(jobs), np.inf)
    if math.isfinite(requests.cputime) and requests.cputime > 0:
        limit = walltime_limit_s(requests.cputime, requests.efficiency, jobs["nevents"].to_numpy(dtype="float64"),
                                 cores, jobs["corepower"].to_numpy(dtype="float64"), requests.basewalltime)
        limit = np.where(np.isfinite(limit) & (limit > 0), limit, np.inf)
    started = pd.to_datetime(jobs["starttime"])
    start_s = ((started - started.min()).dt.total_seconds()).fillna(0.0).to_numpy(dtype="float64")
    runs = np.isfinite(wall)
    request = np.full(len(jobs), float(requests.ramcount))
    attempts = np.zeros(len(jobs), dtype=int)
    bumped = np.zeros(len(jobs), dtype=bool)
    task_ram = float(requests.ramcount)
    out = {"jobs": int(runs.sum()), "attempts": 0, "failed_memory": 0, "failed_walltime": 0,
           "wasted_core_hours": 0.0, "lost": 0, "slack_mb_hours": 0.0}
    events = [(start_s[i], _START, i) for i in np.flatnonzero(runs)]
    heapq.heapify(events)
    while events:
        now, kind, i = heapq.heappop(events)
        if kind == _START:
            request[i] = max(request[i], task_ram)
            attempts[i] += 1
            out["attempts"] += 1
            if need[i] > request[i]:
                heapq.heappush(events, (now + wall[i] * rules.oom_wall_fraction, _OUT_OF_MEMORY, i))
            elif wall[i] > limit[i]:
                heapq.heappush(events, (now + limit[i], _PAST_WALLTIME, i))
            elif known[i]:
                out["slack_mb_hours"] += (request[i] - need[i]) * cores[i] * wall[i] / HOUR
            continue
        if kind == _OUT_OF_MEMORY:
            out["failed_memory"] += 1
            out["wasted_core_hours"] += cores[i] * wall[i] * rules.oom_wall_fraction / HOUR
            asked = float(retry(float(request[i])))
            request[i] = asked if asked <= ladder[-1] else math.inf
            bumped[i] = True
            if bumped.sum() > rules.task_bump_share * out["jobs"] and math.isfinite(request[i]):
                task_ram = max(task_ram, request[i])   # JEDI raises the task's ramcount to the bumped value
        else:
            out["failed_walltime"] += 1
            out["wasted_core_hours"] += cores[i] * limit[i] / HOUR
            limit[i] *= rules.walltime_retry_factor
        if attempts[i] >= rules.max_attempts or not math.isfinite(request[i]):   # no rung above: no queue
            out["lost"] += 1
        else:
            heapq.heappush(events, (now, _START, i))
    return out


def scout_requests(scouts: pd.DataFrame, default: Requests, jedi: JediParams) -> Requests:
    """The requests JEDI sets from its scouts' measurements (the defaults where the formulas give nothing)."""
    values = task_values(scouts.assign(jeditaskid=0), jedi).iloc[0]
    ram, cpu = values["ramcount"], values["cputime"]
    return Requests(ramcount=float(ram) if pd.notna(ram) else default.ramcount,
                    cputime=float(cpu) if pd.notna(cpu) else default.cputime,
                    efficiency=default.efficiency, basewalltime=default.basewalltime)


def _added(total: dict, part: dict) -> dict:
    return {key: total.get(key, 0) + value for key, value in part.items()}


def replay_task(jobs: pd.DataFrame, policy: str, requests: Requests, default: Requests, rules: ReplayParams,
                jedi: JediParams, retry: Callable[[float], float] | None = None) -> dict:
    """One task under one policy: its jobs' figures, the turnaround scouting added (hours) and the request.
    `retry`: what a job out of memory is retried at (None: JEDI's ladder; scouts always use the ladder)."""
    jobs = jobs.sort_values(["starttime", "pandaid"], kind="stable")
    if policy != "scouts":
        return {**run_jobs(jobs, requests, rules, retry), "turnaround_h": 0.0, "ramcount_request": requests.ramcount}
    scouts, bulk = jobs.iloc[:rules.scout_jobs], jobs.iloc[rules.scout_jobs:]
    figures = run_jobs(scouts, default, rules)
    if not len(bulk):   # every job was a scout: no bulk waited for them
        return {**figures, "turnaround_h": 0.0, "ramcount_request": default.ramcount}
    measured = scout_requests(scouts, default, jedi)
    span = (pd.to_datetime(scouts["endtime"]).max() - pd.to_datetime(scouts["starttime"]).min()).total_seconds()
    figures = _added(figures, run_jobs(bulk, measured, rules))
    return {**figures, "turnaround_h": max(span, 0.0) / HOUR if math.isfinite(span) else 0.0,
            "ramcount_request": measured.ramcount}


def policy_requests(tasks: pd.DataFrame, answers: pd.DataFrame, params: Params) -> dict[str, pd.DataFrame]:
    """Per policy, per task (index jeditaskid): ramcount and cputime requests. `tasks` holds the features
    (preset_cpuefficiency, basewalltime); `answers` the backtest's."""
    defaults = params.train.default_values
    if not defaults.get("ramcount"):
        raise ValueError("the replay needs train.default_values.ramcount: the memory a task gets with no estimate")
    default = pd.DataFrame({"ramcount": defaults["ramcount"],
                            "cputime": defaults.get("cputime") or math.nan}, index=tasks.index)
    out = {"default": default, "scouts": default}
    for policy, chosen, column in (("model", answers["served"], "quantile_request"),
                                   ("cost-aware", answers["served"], "cost_aware_request"),
                                   ("history", ~answers["served"], "quantile_request")):
        mine = answers[chosen & answers["target"].isin(REQUEST_FIELDS)]
        wide = mine.pivot_table(index="jeditaskid", columns="target", values=column, aggfunc="first")
        wide = wide.reindex(index=tasks.index, columns=list(REQUEST_FIELDS))
        out[policy] = wide.fillna(default)   # a target the policy has no answer for: the default
    return out


def served_job_need(answers: pd.DataFrame) -> pd.Series:
    """Per task (jeditaskid), the served model's memory need of its jobs at the calibration's levels."""
    mine = answers[answers["served"] & (answers["target"] == "ramcount")]
    if "job_need" not in mine:
        return pd.Series(dtype=object)
    mine = mine[mine["job_need"].notna()].drop_duplicates("jeditaskid")
    return pd.Series(mine["job_need"].to_numpy(), index=mine["jeditaskid"].to_numpy())


def replay(tasks: pd.DataFrame, jobs: pd.DataFrame, answers: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per task and policy: the figures of `replay_task`. `tasks`: the backtest's tasks (features,
    indexed by jeditaskid); `jobs`: their finished jobs (JOB_FIELDS)."""
    rules, jedi = params.replay, params.extract.jedi
    requests = policy_requests(tasks, answers, params)
    job_need, levels = served_job_need(answers), job_levels(params.request.max_job_failure)
    cost = params.request.cost.model_dump()
    ladder = np.asarray(rules.memory_ladder_mb, dtype="float64")
    # the retry policy again with each retry rule but the ladder, which every policy's own rows already use
    compared = [rule for rule in rules.retry_rules if rule != "ladder"] if rules.retry_policy in rules.policies else []
    # the preset every cputime here is expressed with, as the served cpuefficiency.request says
    efficiency = pd.Series(efficiency_request(tasks, jedi.cpuefficiency_if_null), index=tasks.index)
    base_wall = pd.to_numeric(tasks["basewalltime"], errors="coerce").fillna(0.0)
    sites = np.asarray(rules.site_memory_mb_per_core, dtype="float64")
    rows = []
    for task_id, task_jobs in jobs.groupby("jeditaskid", sort=True):
        if task_id not in tasks.index:
            continue
        common = {"efficiency": float(efficiency[task_id]), "basewalltime": float(base_wall[task_id])}
        default = Requests(float(requests["default"].at[task_id, "ramcount"]),
                           float(requests["default"].at[task_id, "cputime"]), **common)
        runs = [(policy, "ladder") for policy in rules.policies] + [(rules.retry_policy, rule) for rule in compared]
        for policy, rule in runs:
            chosen = requests[policy].loc[task_id]
            mine = Requests(float(chosen["ramcount"]), float(chosen["cputime"]), **common)
            retry = retry_rule(rule, ladder, job_need.get(task_id), levels, cost)
            figures = replay_task(task_jobs, policy, mine, default, rules, jedi, retry)
            figures["reach"] = float(np.mean(sites >= figures["ramcount_request"]))
            rows.append({"jeditaskid": task_id, "policy": policy, "retry": rule,
                         "processing_type": str(tasks.at[task_id, "processing_type"]), **figures})
    return pd.DataFrame(rows)


def summarise(per_task: pd.DataFrame, rules: ReplayParams, by: str = "policy") -> dict:
    """The figures per policy (or per value of `by`) over `per_task` (rows of one or more tasks)."""
    out = {}
    for policy, rows in per_task.groupby(by, sort=False):
        attempts = int(rows["attempts"].sum())
        failed = int(rows["failed_memory"].sum() + rows["failed_walltime"].sum())
        slack_mb_h = float(rows["slack_mb_hours"].sum())
        out[str(policy)] = {
            "tasks": int(len(rows)), "jobs": int(rows["jobs"].sum()), "attempts": attempts,
            "failed_attempts": failed, "failed_memory": int(rows["failed_memory"].sum()),
            "failed_walltime": int(rows["failed_walltime"].sum()),
            "failed_per_job": failed / max(int(rows["jobs"].sum()), 1),
            "wasted_core_hours": float(rows["wasted_core_hours"].sum()), "lost_jobs": int(rows["lost"].sum()),
            "slack_gb_hours": slack_mb_h / 1024.0, "slack_core_hours": slack_mb_h / rules.mb_per_core_slot,
            # what the requests cost in core-hours: the failed attempts' and the memory held unused
            "lost_core_hours": float(rows["wasted_core_hours"].sum()) + slack_mb_h / rules.mb_per_core_slot,
            "turnaround_h_mean": float(rows["turnaround_h"].mean()),
            "turnaround_h_p90": float(rows["turnaround_h"].quantile(0.9)),
            "turnaround_h_total": float(rows["turnaround_h"].sum()),
            "reach": float(rows["reach"].mean()),
        }
    return out


def replay_window(params: Params, since: pd.Timestamp | None = None,
                  until: pd.Timestamp | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The backtest's tasks created in [since, until) with their features, finished jobs and answers."""
    features = pd.read_parquet(resolve(params.paths.features) / "features.parquet")
    jobs_path = resolve(params.paths.validated) / "jobs.parquet"
    jobs = pd.read_parquet(jobs_path)
    missing = [column for column in JOB_FIELDS if column not in jobs]
    if missing:
        raise ValueError(f"{jobs_path} lacks {', '.join(missing)}: an older scoutless extracted it; run the "
                         "pipeline again (its extraction rereads the archive in full when the columns changed)")
    answers_path = resolve(params.paths.artifacts) / "backtest_predictions.parquet"
    if not answers_path.exists():
        raise FileNotFoundError(f"{answers_path}: no backtest answers to replay; run `scoutless backtest` first")
    answers = pd.read_parquet(answers_path)
    if "cost_aware_request" not in answers:
        raise ValueError(f"{answers_path} holds one request per answer: an older scoutless wrote it; run "
                         "`scoutless backtest` again")
    tasks = features.drop_duplicates("jeditaskid").set_index("jeditaskid")
    tasks = tasks.loc[tasks.index.intersection(answers["jeditaskid"].unique())]
    created = pd.to_datetime(tasks["creationdate"])
    keep = pd.Series(True, index=tasks.index)
    if since is not None:
        keep &= created >= since
    if until is not None:
        keep &= created < until
    tasks = tasks[keep]
    return tasks, jobs[jobs["jeditaskid"].isin(tasks.index)], answers[answers["jeditaskid"].isin(tasks.index)]


# The columns of the per-policy table, with their headings
COLUMNS = {"tasks": "tasks", "jobs": "jobs", "failed_attempts": "failed attempts", "failed_memory": "out of memory",
           "failed_walltime": "past walltime", "wasted_core_hours": "wasted core-h", "lost_jobs": "lost jobs",
           "slack_core_hours": "memory slack core-h", "lost_core_hours": "wasted + slack core-h",
           "turnaround_h_mean": "scout wait h (mean)",
           "turnaround_h_p90": "scout wait h (p90)", "reach": "reach"}


# The columns of the retry rules' table
RETRY_COLUMNS = {"failed_memory": "out of memory", "wasted_core_hours": "wasted core-h", "lost_jobs": "lost jobs",
                 "slack_core_hours": "memory slack core-h", "lost_core_hours": "wasted + slack core-h"}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown(report: dict) -> str:
    window = report["window"]
    lines = [f"# Replay: {window['tasks']} tasks created {window['since']} to {window['until']}", "",
             "Each task's finished jobs, run again under each policy's requests with JEDI's retries; every task was "
             "answered by a model that never trained on it (the backtest's): model at one job-level quantile for all, "
             f"cost-aware at each task's least expected cost (the service answers {report['served_policy']}).", "",
             "| policy | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for policy, figures in report["policies"].items():
        lines.append(f"| {policy} | " + " | ".join(_cell(figures[key]) for key in COLUMNS) + " |")
    retries = report.get("retries")
    if retries:
        lines += ["", f"## Out of memory: {retries['policy']}'s requests, each retry rule", "",
                  "| retry | " + " | ".join(RETRY_COLUMNS.values()) + " |", "|---" * (len(RETRY_COLUMNS) + 1) + "|"]
        lines += [f"| {rule} | " + " | ".join(_cell(figures[key]) for key in RETRY_COLUMNS) + " |"
                  for rule, figures in retries["rules"].items()]
    for kind, policies in report["by_processing_type"].items():
        lines += ["", f"## {kind}", "", "| policy | failed attempts | memory slack core-h | scout wait h (mean) |",
                  "|---|---|---|---|"]
        lines += [f"| {policy} | {_cell(f['failed_attempts'])} | {_cell(f['slack_core_hours'])} | "
                  f"{_cell(f['turnaround_h_mean'])} |" for policy, f in policies.items()]
    return "\n".join(lines) + "\n"


def plot(per_task: pd.DataFrame, report: dict, folder: Path) -> dict[str, str]:
    """The replay's PNGs in `folder`: failures against slack per policy, the scouts' wait, and per processing
    type; their names by what they show."""
    from matplotlib.figure import Figure

    policies = report["policies"]
    names = {}
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    points: dict[tuple, list[str]] = {}   # policies with the same figures share one point and one label
    for policy, figures in policies.items():
        points.setdefault((figures["slack_core_hours"], figures["failed_attempts"]), []).append(policy)
    for point, same in points.items():
        ax.scatter(*point, s=60)
        ax.annotate(" = ".join(same), point, xytext=(5, 5), textcoords="offset points")
    ax.set_xlabel("memory slack of successful attempts (core-hours)")
    ax.set_ylabel("failed attempts")
    ax.set_title("Failures against slack, per policy (lower left is better)")
    names["failures_vs_slack"] = "failures_vs_slack.png"
    fig.savefig(folder / names["failures_vs_slack"], dpi=110)

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for policy, rows in per_task.groupby("policy", sort=False):
        wait = np.sort(rows["turnaround_h"].to_numpy())
        ax.step(wait, np.arange(1, len(wait) + 1) / len(wait), where="post", label=policy)
    ax.set_xlabel("turnaround added before the bulk of the task's jobs can start (hours)")
    ax.set_ylabel("share of tasks")
    ax.legend()
    names["turnaround"] = "turnaround.png"
    fig.savefig(folder / names["turnaround"], dpi=110)

    kinds = report["by_processing_type"]
    if kinds:
        fig = Figure(figsize=(max(7, 1.6 * len(kinds)), 5), layout="constrained")
        failures_ax, slack_ax = fig.subplots(2, 1, sharex=True)
        width = 0.8 / max(len(policies), 1)
        for i, policy in enumerate(policies):
            x = np.arange(len(kinds)) + i * width
            failures_ax.bar(x, [kinds[k].get(policy, {}).get("failed_per_job", np.nan) for k in kinds], width,
                            label=policy)
            slack_ax.bar(x, [kinds[k].get(policy, {}).get("slack_core_hours", np.nan) for k in kinds], width)
        failures_ax.set_ylabel("failed attempts per job")
        slack_ax.set_ylabel("memory slack core-h")
        slack_ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, list(kinds))
        failures_ax.legend(ncols=len(policies), fontsize=8)
        names["by_processing_type"] = "by_processing_type.png"
        fig.savefig(folder / names["by_processing_type"], dpi=110)
    return names


def _html_table(first: str, rows: dict[str, dict], columns: dict[str, str]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in (first, *columns.values()))
    body = "".join("<tr><td>" + escape(name) + "</td>" + "".join(f"<td>{_cell(f[key])}</td>" for key in columns)
                   + "</tr>" for name, f in rows.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def html(report: dict, pages: dict[str, str]) -> str:
    window = report["window"]
    tables = _html_table("policy", report["policies"], COLUMNS)
    retries = report.get("retries")
    if retries:
        tables += (f"<h2>Out of memory: {escape(retries['policy'])}'s requests, each retry rule</h2>"
                   + _html_table("retry", retries["rules"], RETRY_COLUMNS))
    images = "".join(f'<h2>{escape(name.replace("_", " "))}</h2><img src="{escape(page)}" alt="{escape(name)}">'
                     for name, page in pages.items())
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>scoutless replay</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>Replay</h1><p>{window['tasks']} tasks created {escape(window['since'])} to "
            f"{escape(window['until'])}, each answered by a model that never trained on it; their "
            f"{report['policies'][next(iter(report['policies']))]['jobs']:,} finished jobs run again under each "
            "policy with JEDI's retries (models.replay). model: one job-level quantile for every task; cost-aware: "
            f"each task's request of least expected cost; the service answers {escape(report['served_policy'])}.</p>"
            f"{tables}{images}</body></html>\n")


def run_replay(params: Params, since: pd.Timestamp | None = None, until: pd.Timestamp | None = None) -> dict:
    """The replay stage entry point: reports/replay.json (DVC metrics) and reports/replay/ (index.html, PNGs,
    replay.md, tasks.parquet), both replaced atomically."""
    tasks, jobs, answers = replay_window(params, since, until)
    if not len(jobs):
        raise ValueError(f"no finished job of a backtest task created in [{since}, {until}): nothing to replay")
    per_task = replay(tasks, jobs, answers, params)
    created = pd.to_datetime(tasks["creationdate"])
    rules = params.replay
    own = per_task[per_task["retry"] == "ladder"]   # every policy as JEDI retries today
    retried = per_task[per_task["policy"] == rules.retry_policy]
    report = {
        "window": {"since": str(since or created.min()), "until": str(until or created.max()),
                   "tasks": int(per_task["jeditaskid"].nunique())},
        "served_policy": params.request.policy,
        "policies": summarise(own, rules),
        "retries": {"policy": rules.retry_policy, "rules": summarise(retried, rules, by="retry")}
        if len(retried) else None,
        "by_processing_type": {str(kind): summarise(rows, rules)
                               for kind, rows in own.groupby("processing_type", sort=True)
                               if rows["jeditaskid"].nunique() >= rules.min_group_tasks},
        "rules": rules.model_dump(exclude={"policies"}),
        "cost": params.request.cost.model_dump(),
    }
    folder = resolve(params.paths.replay_reports)
    build = build_dir(folder)
    pages = plot(own, report, build)
    (build / "index.html").write_text(html(report, pages))
    (build / "replay.md").write_text(markdown(report))
    per_task.to_parquet(build / "tasks.parquet", index=False)
    replace_dir(build, folder)
    report["pages"] = {"index": str(folder / "index.html"), **{k: str(folder / v) for k, v in pages.items()}}
    write_json(replay_json_path(params), report)
    for policy, figures in report["policies"].items():
        log.info("replay %s: %d failed attempts, %.3g wasted core-h, %.3g memory slack core-h, %.3g h scout wait",
                 policy, figures["failed_attempts"], figures["wasted_core_hours"], figures["slack_core_hours"],
                 figures["turnaround_h_mean"])
    return report


def replay_json_path(params: Params) -> Path:
    return resolve(params.paths.replay_reports).parent / "replay.json"
