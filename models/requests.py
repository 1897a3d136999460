"""Requests in PanDA's terms: what JEDI should set, given what a failed job and an unused reservation cost,
and how far any request could have been from the jobs' needs.

A job whose need exceeds its task's request fails (out of memory, walltime exceeded, disk full) and is
retried; PanDA pays per failed job. So the request of a target with a per-job limit (TargetSpec.job_column)
is a job-level value: the task's predicted quantile (model space, before its task-level offsets) shifted by
a weighted conformal quantile of the jobs' scores need - base, on calibration tasks the model never learned
from; per processing type where it has enough tasks; newer tasks weighing more; recomputed as labels arrive
exactly as the task-level offsets are (models.calibration.CalibrationPool, one row per job). The label's
q50/q90/q95 are untouched.

That offset is kept at a grid of levels (`job_levels`): the task's predictive distribution of its jobs' needs.
The quantile policy takes its (1 - max_job_failure) level for every task; the cost-aware policy takes, per task,
the request of least expected cost under request.cost (`cost_aware_requests`); and a job that ran out of memory
at r is advised the least expected cost under the distribution conditioned on need > r (`retry_advice`).

The walltime limit JEDI gives a job is cputime x nevents / cores / corepower / (cpuefficiency / 100) +
basewalltime, and a task's cputime is defined with its preset efficiency (archive.jedi_formulas). So the
served cpuefficiency request is the preset efficiency the served cputime is expressed with, and the
cputime request is calibrated on every job's wall-time need in those terms (wall_cputime_hs06s_per_event):
together they give a walltime limit that covers the same share of jobs.

A request policy is judged by the pair (share of jobs above, slack) against the hindsight limit: the least
slack any per-task requests could have at the same share of jobs above, knowing every job's need
(models.metrics.hindsight_slack). Two references say where the gap to it comes from
(`reference_vs_hindsight`): the same rule built on each task's true label instead of its prediction (what the
rule itself costs: the jobs' spread around the label), and on JEDI's scout values (what measuring the task's
own first jobs, hours after submission, reaches); both with the one offset that leaves the same share of jobs
above, chosen knowing the jobs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoutless.models.calibration import CalibrationPool
from scoutless.models.metrics import hindsight_slack, job_outcomes, job_slack
from scoutless.models.targets import TargetSpec

EFFICIENCY_PRESET = "preset_cpuefficiency"   # the feature holding the task's submitted cpuefficiency


def job_pool(spec: TargetSpec, frame: pd.DataFrame, base: np.ndarray, jobs: pd.DataFrame, settings: dict,
             max_job_failure: float) -> CalibrationPool | None:
    """The pool of job scores (model-space need - the task's base) of the tasks in `frame` (rows aligned with
    `base`, with jeditaskid, creationdate, labels_known_at and the group column); None when the target has
    no per-job limit or no job is known."""
    if spec.job_column is None or jobs is None or spec.job_column not in jobs:
        return None
    position = pd.Series(np.arange(len(frame)), index=frame["jeditaskid"].to_numpy())
    position = position[~position.index.duplicated()]
    mine = jobs[jobs["jeditaskid"].isin(position.index)]
    rows = position.loc[mine["jeditaskid"].to_numpy()].to_numpy()
    need = spec.to_model_space(pd.to_numeric(mine[spec.job_column], errors="coerce").to_numpy(dtype="float64"))
    # only what the pool reads, repeated per job: a task's row has a hundred-odd columns
    kept = [c for c in ("creationdate", "labels_known_at", settings.get("group")) if c and c in frame]
    per_job = frame[kept].iloc[rows]
    first = ~pd.Series(rows).duplicated().to_numpy()
    scores = need - np.asarray(base, dtype="float64")[rows]
    return CalibrationPool.of(scores, np.zeros((len(rows), 1)), per_job, settings,
                              levels=job_levels(max_job_failure), counted=first)


def job_levels(max_job_failure: float) -> tuple[float, ...]:
    """The levels at which the job-level calibration holds a task's job need: its predictive distribution,
    every percent and the far tail finer, with the quantile policy's level among them."""
    grid = {round(level, 4) for level in np.arange(1, 100) / 100} | {0.995, 0.999, round(1.0 - max_job_failure, 6)}
    return tuple(sorted(grid))


def _mass(levels: np.ndarray) -> np.ndarray:
    """The probability each level's point stands for: the share between it and the level below."""
    return np.diff(levels, prepend=0.0)


def _expected_costs(spec: TargetSpec, points: np.ndarray, mass: np.ndarray, beyond: np.ndarray,
                    cost: dict) -> np.ndarray:
    """(n, L): the expected cost, per core-hour of the task's jobs, of each point of `points` (n, L, ascending)
    as the request, under a distribution with `mass` at the points and `beyond` above each of them ((n, L), or
    (L,) for every row alike; the mass above the last point taken to sit on it). Reserved memory:
    cost.failed_attempt x P(need > r) plus cost.unused_mb_hour x E[(r - need)+] (a job's run does not grow with
    its memory). Any other limit: a job's run grows with its need, so a failure costs its share of the work,
    cost.failed_attempt x E[need; need > r] / E[need], and the limit beyond the need cost.unused_limit x
    E[(r - need)+] / E[need]."""
    below = np.cumsum(mass, axis=-1)
    work = np.cumsum(mass * points, axis=-1)
    unused = below * points - work
    if spec.reserves_memory:
        return cost["failed_attempt"] * beyond + cost["unused_mb_hour"] * unused
    total = np.maximum(work[:, -1:] + beyond[..., -1:] * points[:, -1:], 1e-300)
    return (cost["failed_attempt"] * (total - work) + cost["unused_limit"] * unused) / total


def quantile_requests(points: np.ndarray, levels, max_job_failure: float) -> np.ndarray:
    """The quantile policy: each task's job need at the (1 - max_job_failure) level."""
    return points[:, int(np.argmin(np.abs(np.asarray(levels) - (1.0 - max_job_failure))))]


def cost_aware_requests(spec: TargetSpec, points: np.ndarray, levels, cost: dict) -> tuple[np.ndarray, np.ndarray]:
    """The cost-aware policy: per task (a row of `points`, its job need at `levels`, in target units), the
    request of least expected cost (`_expected_costs`) among its points from the median up: the newsvendor's
    choice, made on the task's calibrated distribution instead of one fixed level for all. Returns (requests,
    P(need > request))."""
    levels = np.asarray(levels, dtype="float64")
    total = _expected_costs(spec, points, _mass(levels), 1.0 - levels, cost)   # one distribution shape per row
    total = np.where(np.isnan(total) | (levels < 0.5), np.inf, total)
    best = np.argmin(total, axis=1)
    return points[np.arange(len(points)), best], 1.0 - levels[best]


def vpa_retry(failed_at: np.ndarray) -> np.ndarray:
    """The Kubernetes vertical pod autoscaler's answer to an out-of-memory kill: 20 % more, at least 100 MB."""
    return np.maximum(failed_at * 1.2, failed_at + 100.0)


def retry_advice(spec: TargetSpec, points: np.ndarray, levels, failed_at: np.ndarray,
                 cost: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a job that ran out of memory at `failed_at` should ask next: the request of least expected cost
    (as cost_aware_requests) under the task's distribution conditioned on need > failed_at. Returns
    (requests, P(need > request | need > failed_at), advised): where no point of the distribution lies above
    failed_at it says nothing beyond it, and the answer is vpa_retry's (advised False)."""
    levels = np.asarray(levels, dtype="float64")
    failed_at = np.asarray(failed_at, dtype="float64")[:, None]
    above = points > failed_at
    mass = np.where(above, _mass(levels), 0.0)
    tail = np.maximum(1.0 - np.sum(np.where(above, 0.0, _mass(levels)), axis=1, keepdims=True), 1e-12)
    beyond = (1.0 - levels) / tail
    total = _expected_costs(spec, points, mass / tail, beyond, cost)
    total = np.where(above & ~np.isnan(total), total, np.inf)
    best = np.argmin(total, axis=1)
    rows = np.arange(len(points))
    advised = above.any(axis=1)
    return (np.where(advised, points[rows, best], vpa_retry(failed_at[:, 0])),
            np.where(advised, beyond[rows, best], np.nan), advised)


def job_retry(spec: TargetSpec, job_need: np.ndarray | None, levels, failed_at: float,
              cost: dict) -> tuple[float, float | None]:
    """retry_advice for one job of a task whose job need at `levels` is `job_need`: (the memory to ask next,
    P(need > it | need > failed_at)); the autoscaler's answer, with no probability, where the task has no
    distribution or it holds nothing above failed_at."""
    if job_need is None:
        return float(vpa_retry(np.array([failed_at]))[0]), None
    asked, failure, advised = retry_advice(spec, np.asarray(job_need, dtype="float64")[None, :], levels,
                                           np.array([failed_at]), cost)
    return float(asked[0]), float(failure[0]) if advised[0] else None


def efficiency_request(frame: pd.DataFrame, default_efficiency: float) -> np.ndarray:
    """The cpuefficiency JEDI should keep: the preset the task's cputime is expressed with (JEDI's default
    when the task gives none)."""
    return preset_efficiency(presets_of(frame), default_efficiency)


def presets_of(frame: pd.DataFrame) -> np.ndarray:
    """The tasks' preset cpuefficiency (NaN: none, or no such column)."""
    if EFFICIENCY_PRESET not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[EFFICIENCY_PRESET], errors="coerce").to_numpy(dtype="float64")


def preset_efficiency(presets: np.ndarray, default_efficiency: float) -> np.ndarray:
    """`efficiency_request` of the tasks whose preset efficiencies are `presets` (NaN: none)."""
    return np.where(presets > 0, presets, float(default_efficiency))


def walltime_limit_s(cputime: np.ndarray, efficiency_pct: np.ndarray, nevents: np.ndarray, cores: np.ndarray,
                     corepower: np.ndarray, basewalltime_s: np.ndarray) -> np.ndarray:
    """JEDI's walltime limit of a job from its task's cputime (HS06 s per event) and cpuefficiency."""
    return cputime * nevents / cores / corepower / (efficiency_pct / 100.0) + basewalltime_s


def walltime_exceeded_share(tasks: pd.DataFrame, cputime_request: pd.Series, jobs: pd.DataFrame,
                            default_preset: float) -> float:
    """Share of the finished jobs of `tasks` (indexed by jeditaskid, with basewalltime and the preset
    efficiency) whose wall time exceeds the limit JEDI derives from the served cputime request and the served
    cpuefficiency (the preset)."""
    mine = jobs[jobs["jeditaskid"].isin(cputime_request.index)]
    task = mine["jeditaskid"]
    efficiency = pd.Series(efficiency_request(tasks, default_preset), index=tasks.index)
    base = pd.to_numeric(tasks["basewalltime"], errors="coerce").fillna(0.0)   # as the job measurements take it
    limit = walltime_limit_s(task.map(cputime_request).to_numpy(dtype="float64"),
                             task.map(efficiency).to_numpy(dtype="float64"),
                             mine["nevents"].to_numpy(dtype="float64"), mine["cores"].to_numpy(dtype="float64"),
                             mine["corepower"].to_numpy(dtype="float64"), task.map(base).to_numpy(dtype="float64"))
    wall = mine["wall_s"].to_numpy(dtype="float64")
    known = np.isfinite(limit) & np.isfinite(wall)
    return float(np.mean(wall[known] > limit[known])) if known.any() else np.nan


def reference_vs_hindsight(spec: TargetSpec, base: pd.Series, jobs: pd.DataFrame, share_above: float) -> float:
    """Slack over the hindsight limit of the requests `base` (indexed by jeditaskid) shifted in model space by
    the one offset that leaves `share_above` of their finished jobs above, chosen knowing every job: how far a
    rule that builds every request on `base` stays from the limit even with its offset in hindsight."""
    base = base[base.notna() & (base > 0)]
    outcomes = job_outcomes(base, jobs, spec.job_column)
    if not len(outcomes) or not np.isfinite(share_above):
        return np.nan
    scores = spec.to_model_space(outcomes["need"].to_numpy()) - spec.to_model_space(outcomes["request"].to_numpy())
    offset = np.quantile(scores, 1.0 - share_above, method="higher")
    shifted = pd.Series(spec.from_model_space(spec.to_model_space(base.to_numpy()) + offset), index=base.index)
    outcomes = job_outcomes(shifted, jobs, spec.job_column)
    limit = hindsight_slack(outcomes, float(np.mean(outcomes["need"] > outcomes["request"])))
    return job_slack(outcomes) / limit if limit and np.isfinite(limit) else np.nan
