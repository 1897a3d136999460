"""Requests in PanDA's terms: the job-level request leaves the asked share of jobs above it on a hand-made
archive whose job spread is known; the walltime JEDI derives from the served cputime and cpuefficiency covers
a job of known CPU and efficiency; the label quantiles are unchanged by the request; the hindsight limit is
the least slack at a share of jobs above, and a rule built on exact task levels reaches it; the cost-aware
request is the least expected cost of a known distribution, and the retry advice asks from its tail."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from scoutless.archive.jedi_formulas import job_measurements
from scoutless.models.candidates import CANDIDATES
from scoutless.models.metrics import hindsight_slack, job_outcomes, job_slack
from scoutless.models.requests import (
    cost_aware_requests,
    efficiency_request,
    job_levels,
    quantile_requests,
    reference_vs_hindsight,
    retry_advice,
    vpa_retry,
    walltime_limit_s,
)
from scoutless.models.targets import TARGETS
from scoutless.params import JediParams
from tests.model.conftest import synthetic_features

T0 = pd.Timestamp("2025-01-01")
SETTINGS = {"group": "processing_type", "min_group_tasks": 50, "half_life_days": None}


def archive_with_known_spread(rng, first_task: int, n_tasks: int, start_day: float
                              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tasks whose jobs' memory per core is lognormal around the task's own level, with a spread set by the
    processing type (0.1 for deriv, 0.4 for simul); the task's level is what its features say (task_mb)."""
    kind = rng.choice(["deriv", "simul"], n_tasks)
    level = rng.uniform(800, 3000, n_tasks)
    created = T0 + pd.to_timedelta(start_day + np.sort(rng.uniform(0, 30, n_tasks)), unit="D")
    tasks = pd.DataFrame({"jeditaskid": np.arange(first_task, first_task + n_tasks), "processing_type": kind,
                          "creationdate": created, "labels_known_at": created + pd.Timedelta(days=1),
                          "task_mb": level, "label_ramcount": level})
    n_jobs = rng.integers(5, 40, n_tasks)
    task_of_job = np.repeat(np.arange(n_tasks), n_jobs)
    spread = np.where(kind == "simul", 0.4, 0.1)[task_of_job]
    jobs = pd.DataFrame({"jeditaskid": tasks["jeditaskid"].to_numpy()[task_of_job],
                         "ram_mb_per_core": level[task_of_job] * rng.lognormal(0, 1, len(task_of_job)) ** spread})
    return tasks, jobs


class KnowsTheLevel(CANDIDATES["default"]):
    """The default candidate fed each task's level (task_mb) as every quantile."""

    def predict_quantiles(self, frame):
        level = frame["task_mb"].to_numpy(dtype="float64")
        return pd.DataFrame({"q50": level, "q90": level, "q95": level}, index=frame.index)


def test_the_request_leaves_the_asked_share_of_jobs_above_it():
    """A candidate that knows each task's level exactly (the default candidate fed the level): the job-level
    request, calibrated on 3000 earlier tasks' jobs, leaves 2% of the next tasks' jobs above it in each
    processing type, while the task-level q90 leaves far more above it for the spread-out kind."""
    rng = np.random.default_rng(11)
    calibration, calibration_jobs = archive_with_known_spread(rng, 0, 3000, 0)
    later, later_jobs = archive_with_known_spread(rng, 10_000, 3000, 30)

    config = {"value": None, "request": {"quantile": "q90", "max_job_failure": 0.02}, "calibration": SETTINGS}
    candidate = KnowsTheLevel(TARGETS["ramcount"], config)
    candidate.calibrate_jobs(calibration, calibration_jobs, calibration["labels_known_at"].max())
    answered = candidate.predict(later.set_index("jeditaskid", drop=False))
    assert (answered["expected_job_failure"] == 0.02).all()
    for kind in ("deriv", "simul"):
        ids = later.loc[later["processing_type"] == kind, "jeditaskid"]
        jobs = later_jobs[later_jobs["jeditaskid"].isin(ids)]
        above = job_outcomes(answered["request"], jobs, "ram_mb_per_core")
        share = float(np.mean(above["need"] > above["request"]))
        # about 20,000 jobs per kind: two binomial standard errors are about 0.002
        assert share == pytest.approx(0.02, abs=0.006), kind
        at_q90 = job_outcomes(answered["q90"], jobs, "ram_mb_per_core")
        assert np.mean(at_q90["need"] > at_q90["request"]) > 0.3


def realised_cost(requests: pd.Series, jobs: pd.DataFrame, cost: dict) -> float:
    """Per job core-hour (every job alike here), what `requests` cost on the jobs' real needs."""
    outcomes = job_outcomes(requests, jobs, "ram_mb_per_core")
    return float(np.mean(cost["failed_attempt"] * (outcomes["need"] > outcomes["request"])
                         + cost["unused_mb_hour"] * np.clip(outcomes["request"] - outcomes["need"], 0, None)))


def test_the_cost_aware_request_costs_less_than_one_level_for_all_and_says_its_failures():
    """The same candidate and archive: per task the cost-aware request leaves far more of the spread-out kind's
    jobs above than of the narrow kind's, each as its expected failure says, and costs less on the next tasks'
    real jobs than the 2% level for all."""
    rng = np.random.default_rng(12)
    calibration, calibration_jobs = archive_with_known_spread(rng, 0, 3000, 0)
    later, later_jobs = archive_with_known_spread(rng, 10_000, 3000, 30)

    request = {"quantile": "q90", "max_job_failure": 0.02, "policy": "cost-aware", "cost": COST}
    candidate = KnowsTheLevel(TARGETS["ramcount"], {"value": None, "request": request, "calibration": SETTINGS})
    candidate.calibrate_jobs(calibration, calibration_jobs, calibration["labels_known_at"].max())
    answered = candidate.predict(later.set_index("jeditaskid", drop=False))
    assert (answered["request_policy"] == "cost-aware").all()
    assert (answered["request"] == answered["cost_aware_request"]).all()
    shares = {}
    for kind in ("deriv", "simul"):
        ids = later.loc[later["processing_type"] == kind, "jeditaskid"]
        jobs = later_jobs[later_jobs["jeditaskid"].isin(ids)]
        above = job_outcomes(answered["request"], jobs, "ram_mb_per_core")
        shares[kind] = float(np.mean(above["need"] > above["request"]))
        expected = np.average(answered.loc[ids, "expected_job_failure"],
                              weights=jobs["jeditaskid"].value_counts().reindex(ids).fillna(0))
        assert shares[kind] == pytest.approx(expected, abs=0.01), kind
    assert shares["simul"] > 3 * shares["deriv"]
    assert realised_cost(answered["request"], later_jobs, COST) < 0.9 * realised_cost(
        answered["quantile_request"], later_jobs, COST)


def test_the_label_quantiles_are_unchanged_by_the_request():
    frame = synthetic_features(1200, seed=3)
    fit, calibration = frame.iloc[:800], frame.iloc[800:]
    config = {"params": {"n_estimators": 30, "max_depth": 4, "learning_rate": 0.1, "min_child_weight": 1.0},
              "categorical": ["processing_type"], "numeric": ["total_nevents"], "max_categories": 255,
              "calibration": SETTINGS, "request": {"quantile": "q90", "max_job_failure": 0.02}}
    candidate = CANDIDATES["xgboost"](TARGETS["cputime"], config).fit(fit, fit["label_cputime"].to_numpy())
    candidate.calibrate(calibration, calibration["label_cputime"].to_numpy(), calibration["labels_known_at"].max())
    without = candidate.predict(calibration)
    jobs = pd.DataFrame({"jeditaskid": np.repeat(calibration["jeditaskid"].to_numpy(), 4),
                         "wall_cputime_hs06s_per_event": np.repeat(calibration["label_cputime"].to_numpy(), 4)
                         * np.random.default_rng(0).lognormal(0, 0.3, 4 * len(calibration))})
    candidate.calibrate_jobs(calibration, jobs, calibration["labels_known_at"].max())
    with_request = candidate.predict(calibration)
    pd.testing.assert_frame_equal(with_request[["q50", "q90", "q95"]], without[["q50", "q90", "q95"]])
    assert not np.allclose(with_request["request"], without["request"])   # the request moved, the label did not


def test_the_walltime_from_the_served_fields_covers_a_job_of_known_cpu_and_efficiency():
    """A job on 8 cores of 12 HS06 each, 2000 events, that burnt 20 hours of CPU at 55% efficiency in a task
    submitted with cpuefficiency 80 and basewalltime 600: its wall time is 20 h / (8 x 0.55). Served the
    cputime its wall needs (in JEDI's terms) and the preset as cpuefficiency, JEDI's limit is its wall time;
    served the efficiency the job really had with the same cputime, the limit would be far longer than
    needed, and served a higher one (the q50 of a task that ran better), too short."""
    cores, hs06_per_core, nevents, efficiency, preset, base = 8, 12.0, 2000, 0.55, 80.0, 600.0
    cpu_s = 20 * 3600.0
    wall_s = cpu_s / (cores * efficiency)
    start = pd.Timestamp("2025-03-01")
    job = pd.DataFrame([{
        "pandaid": 1, "jeditaskid": 7, "corecount": cores, "actualcorecount": cores, "starttime": start,
        "endtime": start + pd.Timedelta(seconds=wall_s), "cpuconsumptiontime": cpu_s, "hs06": hs06_per_core * cores,
        "maxpss": 2e6, "nevents": nevents, "inputfilebytes": 1e9, "outputfilebytes": 1e8, "totrbytes": 0,
        "totwbytes": 0, "jobmetrics": "", "computingsite": "X", "attemptnr": 1, "baseramcount": 0,
        "basewalltime": base, "cpuefficiency": preset}])
    measured = job_measurements(job, JediParams()).iloc[0]
    assert measured["cpuefficiency_pct"] == pytest.approx(100 * efficiency)
    served_cputime = measured["wall_cputime_hs06s_per_event"]
    served_efficiency = efficiency_request(pd.DataFrame({"preset_cpuefficiency": [preset]}), 90.0)[0]
    assert served_efficiency == preset

    def limit(cputime: float, efficiency_pct: float) -> float:
        return walltime_limit_s(np.array([cputime]), np.array([efficiency_pct]), np.array([nevents]),
                                np.array([cores]), np.array([measured["corepower"]]), np.array([base]))[0]

    # exactly the wall time it needs (basewalltime is part of JEDI's limit and was taken out of its cputime)
    assert limit(served_cputime, served_efficiency) == pytest.approx(wall_s, rel=1e-9)
    assert limit(served_cputime * 1.01, served_efficiency) > wall_s
    assert limit(served_cputime * 0.98, served_efficiency) < wall_s
    assert limit(served_cputime, 100 * efficiency) > 1.4 * wall_s   # its real efficiency: far more than needed
    assert limit(served_cputime, 90.0) < wall_s                      # a higher efficiency than the preset fails
    # a task without a preset keeps JEDI's default, which its cputime is then expressed with
    assert efficiency_request(pd.DataFrame({"preset_cpuefficiency": [np.nan]}), 90.0)[0] == 90.0


def brute_force_least_slack(outcomes: pd.DataFrame, share_above: float) -> float:
    tasks = [rows["need"].to_numpy() for _, rows in outcomes.groupby("jeditaskid")]
    total = sum(len(t) for t in tasks)
    best = np.inf
    for choice in itertools.product(*[sorted(set(t)) for t in tasks]):
        above = sum(int(np.sum(t > r)) for t, r in zip(tasks, choice, strict=True))
        if above / total <= share_above + 1e-12:
            best = min(best, sum(float(np.sum(np.maximum(r - t, 0) / r)) for t, r in zip(tasks, choice, strict=True))
                       / total)
    return best


def test_the_hindsight_limit_is_the_least_slack_at_a_share_of_jobs_above():
    rng = np.random.default_rng(2)
    outcomes = pd.DataFrame({"jeditaskid": np.repeat([1, 2, 3], [4, 5, 3]),
                             "need": np.round(rng.lognormal(7, 0.5, 12), 1), "request": 0.0})
    # no job above: every task asks for its largest need
    largest = outcomes.groupby("jeditaskid")["need"].transform("max")
    assert hindsight_slack(outcomes, 0.0) == pytest.approx(float(np.mean((largest - outcomes["need"]) / largest)))
    # every job but the smallest of each task may fail: no slack at all
    assert hindsight_slack(outcomes, 1.0) == pytest.approx(0.0, abs=1e-12)
    slacks = [hindsight_slack(outcomes, share) for share in (0.0, 1 / 12, 2 / 12, 3 / 12, 0.5)]
    assert all(a >= b for a, b in zip(slacks, slacks[1:], strict=False))
    for share in (0.0, 1 / 12, 2 / 12, 3 / 12, 0.5):
        limit = hindsight_slack(outcomes, share)
        # never better than the exact optimum, and a served policy at that share is never better than it
        assert limit >= brute_force_least_slack(outcomes, share) - 1e-12
    served = outcomes.assign(request=outcomes.groupby("jeditaskid")["need"].transform("max") * 1.2)
    assert job_slack(served) > hindsight_slack(served, 0.0)


def test_a_rule_on_exact_task_levels_reaches_the_hindsight_limit_and_noise_moves_it_away():
    rng = np.random.default_rng(4)
    level = pd.Series(rng.uniform(800, 3000, 300), index=np.arange(1, 301))
    # every task's ten jobs need its level times the same ten factors: one offset on the level is optimal
    factors = np.tile(np.exp(0.05 * np.arange(10)), len(level))
    jobs = pd.DataFrame({"jeditaskid": np.repeat(level.index, 10),
                         "ram_mb_per_core": np.repeat(level.to_numpy(), 10) * factors})
    spec = TARGETS["ramcount"]
    assert reference_vs_hindsight(spec, level, jobs, 0.0) == pytest.approx(1.0, rel=0.02)
    ratios = [reference_vs_hindsight(spec, level * rng.lognormal(0, sd, len(level)), jobs, 0.02)
              for sd in (0.05, 0.2)]
    assert 1.1 < ratios[0] < ratios[1]


def normal_need(mean: float, spread: float, levels) -> np.ndarray:
    """A task's job need (MB per core) at `levels`: normally spread around `mean`."""
    from scipy.stats import norm

    return (mean + spread * norm.ppf(np.asarray(levels)))[None, :]


def brute_force_cost(need: np.ndarray, request: float, cost: dict) -> float:
    """The expected cost of `request` over sampled needs, per job core-hour."""
    return cost["failed_attempt"] * np.mean(need > request) + cost["unused_mb_hour"] * np.mean(
        np.clip(request - need, 0, None))


COST = {"failed_attempt": 1.5, "unused_mb_hour": 1 / 2000, "unused_limit": 0.02}
MEMORY = TARGETS["ramcount"]


def test_the_cost_aware_request_is_the_least_expected_cost_and_moves_with_the_costs():
    levels = np.asarray(job_levels(0.02))
    points = normal_need(3000.0, 400.0, levels)
    asked, failure = cost_aware_requests(MEMORY, points, levels, COST)
    # against every request, costed on a large sample of the same distribution
    sample = np.random.default_rng(3).normal(3000.0, 400.0, 400_000)
    grid = np.linspace(3000.0, 4600.0, 321)
    best = grid[np.argmin([brute_force_cost(sample, r, COST) for r in grid])]
    assert asked[0] == pytest.approx(best, abs=40.0)
    assert failure[0] == pytest.approx(np.mean(sample > asked[0]), abs=0.01)
    # failures dearer: a higher request; unused memory free: the top of the distribution
    dearer, _ = cost_aware_requests(MEMORY, points, levels, {**COST, "failed_attempt": 10.0})
    free, free_failure = cost_aware_requests(MEMORY, points, levels, {**COST, "unused_mb_hour": 0.0})
    assert asked[0] < dearer[0] < free[0] and free_failure[0] == pytest.approx(1 - levels[-1])
    # a wider task gets a lower level than a narrow one: its misses cost as much, its margin more
    _, narrow = cost_aware_requests(MEMORY, normal_need(3000.0, 100.0, levels), levels, COST)
    _, wide = cost_aware_requests(MEMORY, normal_need(3000.0, 1500.0, levels), levels, COST)
    assert narrow[0] < failure[0] < wide[0]
    # the quantile policy takes the one level it is given
    assert quantile_requests(points, levels, 0.02)[0] == points[0, list(levels).index(0.98)]


def test_the_retry_advice_asks_above_the_failure_from_the_tail_and_falls_back_to_vpa():
    levels = np.asarray(job_levels(0.02))
    points = np.repeat(normal_need(3000.0, 400.0, levels), 3, axis=0)
    failed_at = np.array([3000.0, 3800.0, 99_000.0])
    asked, failure, advised = retry_advice(MEMORY, points, levels, failed_at, COST)
    assert advised.tolist() == [True, True, False]
    assert 3000.0 < asked[0] < asked[1] and asked[1] > 3800.0   # a later failure: further up the tail
    # conditioned on needing more than 3000 (half the jobs), the chance of needing more than the advice
    sample = np.random.default_rng(4).normal(3000.0, 400.0, 400_000)
    above = sample[sample > 3000.0]
    assert failure[0] == pytest.approx(np.mean(above > asked[0]), abs=0.02)
    # nothing of the distribution above 99,000: the vertical pod autoscaler's 20 %
    assert asked[2] == pytest.approx(99_000.0 * 1.2) and np.isnan(failure[2])
    assert vpa_retry(np.array([300.0, 2000.0])).tolist() == [400.0, 2400.0]


def test_a_limit_that_reserves_nothing_sits_high_and_its_cost_weighs_the_work():
    """A walltime-like limit: a job's run grows with its need, so the cost is per unit of the task's work; the
    least-cost request on a lognormal need agrees with a brute force over a large sample."""
    levels = np.asarray(job_levels(0.02))
    from scipy.stats import norm

    points = np.exp(norm.ppf(levels))[None, :]   # lognormal(0, 1)
    sample = np.random.default_rng(5).lognormal(0.0, 1.0, 400_000)
    for unused in (0.02, 0.5):
        cost = {**COST, "unused_limit": unused}
        asked, _ = cost_aware_requests(TARGETS["cputime"], points, levels, cost)
        grid = np.exp(np.linspace(0.0, 3.2, 321))
        brute = [(cost["failed_attempt"] * sample[sample > r].sum() + unused * np.clip(r - sample, 0, None).sum())
                 / sample.sum() for r in grid]
        best = grid[int(np.argmin(brute))]
        assert np.log(asked[0]) == pytest.approx(np.log(best), abs=0.1), unused
    cheap, cheap_failure = cost_aware_requests(TARGETS["cputime"], points, levels, COST)
    assert cheap_failure[0] < 0.01   # the default costs: a generous limit


@pytest.mark.parametrize("target", ["ramcount", "cputime"])
def test_the_compiled_cost_aware_policy_answers_numpys_to_the_bit(target):
    """models.compiled's loop against models.requests' arrays, on random distributions: ties, NaN points (a
    task the model answered NaN for), flat and zero needs, and costs that make every level or none the best."""
    from scoutless.models.compiled import cost_aware_requests as compiled

    rng = np.random.default_rng(11)
    levels = np.asarray(job_levels(0.02))
    spread = rng.lognormal(0.0, 1.0, (400, 1))
    points = np.sort(rng.lognormal(5.0, 1.0, (400, 1)) * rng.lognormal(0.0, 0.3, (400, len(levels))) ** spread,
                     axis=1)
    points[:20] = np.round(points[:20], -3)   # equal points: equal costs, the first one wins
    points[20:30] = 0.0
    points[30:40] = 4000.0
    points[40:45, 60:] = np.nan
    points[45:50] = np.nan
    for cost in (COST, {**COST, "failed_attempt": 0.0}, {**COST, "unused_mb_hour": 0.0, "unused_limit": 0.0},
                 {**COST, "failed_attempt": 1e9}):
        for rows in (points, points[:1], points[47:48]):
            expected = cost_aware_requests(TARGETS[target], rows, levels, cost)
            answered = compiled(TARGETS[target], rows, levels, cost)
            for mine, theirs in zip(answered, expected, strict=True):
                np.testing.assert_array_equal(mine, theirs)
