"""The replay on hand-made tasks whose answer is known: JEDI's memory ladder and task bump, the walltime retry,
the scouts' wait and their formulas, lost jobs; then on the pipeline's own backtest."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scoutless.models.replay import Requests, next_rung, replay_task, retry_rule, run_jobs
from scoutless.models.requests import job_levels
from scoutless.params import JediParams, ReplayParams

RULES = ReplayParams()
JEDI = JediParams()
START = pd.Timestamp("2026-11-01")
DEFAULT = Requests(ramcount=2000.0)


def jobs(need_mb_per_core, wall_h: float = 2.0, cores: int = 8, nevents: int = 1000, corepower: float = 10.0,
         scout_hours: float | None = None, start_every_min: float = 1.0) -> pd.DataFrame:
    """A task's finished jobs: each needing `need_mb_per_core` (one value or one per job), `wall_h` long, one
    starting every `start_every_min`. With `scout_hours`, the first RULES.scout_jobs start together and the
    last of them ends that long after."""
    need = np.atleast_1d(np.asarray(need_mb_per_core, dtype="float64"))
    n = len(need)
    start = START + pd.to_timedelta(np.arange(n) * start_every_min, "min")
    end = start + pd.Timedelta(hours=wall_h)
    if scout_hours is not None:
        scouts = slice(0, RULES.scout_jobs)
        start = start.to_series().reset_index(drop=True)
        start[scouts] = START
        end = start + pd.Timedelta(hours=wall_h)
        end[RULES.scout_jobs - 1] = START + pd.Timedelta(hours=scout_hours)
    frame = pd.DataFrame({
        "jeditaskid": 1, "pandaid": np.arange(n), "cores": cores, "corepower": corepower,
        "wall_s": wall_h * 3600.0, "nevents": float(nevents), "ram_mb_per_core": need,
        "starttime": np.asarray(start), "endtime": np.asarray(end),
    })
    # the measurements JEDI's scout formulas read, as the extraction writes them
    frame["cputime_hs06s_per_event"] = frame["wall_s"] * corepower * cores / nevents
    for column in ("wall_cputime_hs06s_per_event", "cpuefficiency_pct", "iointensity_kbps", "diskio_kbps",
                   "outdisk_kb_per_event", "workdisk_mb"):
        frame[column] = 1.0
    return frame


def test_the_next_rung_is_the_smallest_above_and_none_above_the_top():
    ladder = np.asarray(RULES.memory_ladder_mb)
    assert next_rung(np.array([2000.0, 2100.0, 500.0, 8000.0]), ladder).tolist() == [3000, 3000, 1000, np.inf]


def test_jobs_just_above_the_default_each_fail_once_and_succeed_at_the_next_rung():
    task = jobs([2100.0] * 20)
    figures = run_jobs(task, DEFAULT, RULES)
    assert figures["failed_memory"] == 20 and figures["attempts"] == 40 and figures["lost"] == 0
    assert figures["wasted_core_hours"] == pytest.approx(20 * 8 * 2.0)   # each failed attempt ran its whole wall
    assert figures["slack_mb_hours"] == pytest.approx(20 * (3000 - 2100) * 8 * 2.0)
    # a request that covers them: no failure, only the slack above the need
    covered = run_jobs(task, Requests(ramcount=2200.0), RULES)
    assert covered["failed_memory"] == 0 and covered["slack_mb_hours"] == pytest.approx(20 * 100 * 8 * 2.0)


def test_a_job_climbs_the_ladder_rung_by_rung_and_one_beyond_the_top_is_lost():
    figures = run_jobs(jobs([4500.0]), DEFAULT, RULES)   # 2000 -> 3000 -> 4000 -> 6000
    assert figures["failed_memory"] == 3 and figures["lost"] == 0
    beyond = run_jobs(jobs([9000.0]), DEFAULT, RULES)    # ... 8000, and no rung above
    assert beyond["lost"] == 1 and beyond["failed_memory"] == 5 and beyond["slack_mb_hours"] == 0


def test_the_task_ramcount_rises_once_more_than_its_share_of_jobs_were_bumped():
    # Ten jobs needing 2500, one every 3 hours, each 2 hours long: each fails at 2000 before the next starts.
    # The fourth failure makes 40% > 30% of the jobs bumped: the task goes to 3000, and the six jobs that start
    # afterwards do not fail
    task = jobs([2500.0] * 10, start_every_min=180)
    assert run_jobs(task, DEFAULT, RULES)["failed_memory"] == 4
    never = RULES.model_copy(update={"task_bump_share": 1.0})
    assert run_jobs(task, DEFAULT, never)["failed_memory"] == 10
    # launched together, every job has started before the first failure: each fails once whatever the rule
    assert run_jobs(jobs([2500.0] * 10), DEFAULT, RULES)["failed_memory"] == 10
    # jobs failing together: their retries start after the bump and the one job needing more climbs on
    climbing = jobs([2500.0] * 3 + [7000.0], start_every_min=0)
    assert run_jobs(climbing, DEFAULT, RULES)["failed_memory"] == 3 + 4   # 7000: 2000, 3000, 4000, 6000


def test_a_job_past_its_walltime_limit_is_killed_there_and_retried_with_more_time():
    task = jobs([1000.0], wall_h=2.0, cores=8, nevents=1000, corepower=10.0)
    need = float(task["cputime_hs06s_per_event"].iloc[0])   # exactly the job's wall time at 100% efficiency
    short = Requests(ramcount=2000.0, cputime=need / 1.2, efficiency=100.0)   # limit: 2 h / 1.2
    figures = run_jobs(task, short, RULES)
    assert figures["failed_walltime"] == 1 and figures["failed_memory"] == 0 and figures["lost"] == 0
    assert figures["wasted_core_hours"] == pytest.approx(8 * 2.0 / 1.2)   # killed at its limit
    assert run_jobs(task, Requests(ramcount=2000.0, cputime=need * 1.01, efficiency=100.0),
                    RULES)["failed_walltime"] == 0
    # no cputime request: the queue's limit, never reached here
    assert run_jobs(task, DEFAULT, RULES)["failed_walltime"] == 0


def test_scouts_add_their_six_hours_before_the_bulk_and_the_model_adds_none():
    task = jobs([1500.0] * 40, scout_hours=6.0)
    scouts = replay_task(task, "scouts", DEFAULT, DEFAULT, RULES, JEDI)
    model = replay_task(task, "model", Requests(ramcount=1700.0), DEFAULT, RULES, JEDI)
    assert scouts["turnaround_h"] == pytest.approx(6.0) and model["turnaround_h"] == 0.0
    assert scouts["jobs"] == model["jobs"] == 40


def test_the_bulk_runs_at_the_scout_formulas_value_measured_on_the_scouts():
    # every job needs 2100 per core: the 10 scouts fail once at the default 2000; the bulk then runs at
    # P75 x 1.1 = 2310 and none of it fails, while the model's 2200 fails nothing at all
    task = jobs([2100.0] * 30, scout_hours=3.0)
    scouts = replay_task(task, "scouts", DEFAULT, DEFAULT, RULES, JEDI)
    assert scouts["ramcount_request"] == pytest.approx(2100.0 * 1.1)
    assert scouts["failed_memory"] == RULES.scout_jobs
    model = replay_task(task, "model", Requests(ramcount=2200.0), DEFAULT, RULES, JEDI)
    assert model["failed_memory"] == 0
    # a task of no more jobs than scouts is scouted whole: nothing waits
    small = replay_task(jobs([1500.0] * 5), "scouts", DEFAULT, DEFAULT, RULES, JEDI)
    assert small["turnaround_h"] == 0.0 and small["jobs"] == 5


def test_each_retry_rule_asks_what_it_says_after_an_out_of_memory_kill():
    ladder = np.asarray(RULES.memory_ladder_mb)
    levels = np.asarray(job_levels(0.02))
    task = jobs([2500.0] * 4, start_every_min=0)   # launched together: each fails once at 2000, whatever the rule
    for rule, retried_at in (("ladder", 3000.0), ("vpa", 2400.0)):
        figures = run_jobs(task, DEFAULT, RULES, retry_rule(rule, ladder, None, levels, {}))
        # vpa's 2400 is still short: a second failure, then 2880 (both above 2000 by 20 %)
        assert figures["failed_memory"] == (4 if rule == "ladder" else 8), rule
        last = retried_at if rule == "ladder" else 2400.0 * 1.2
        assert figures["slack_mb_hours"] == pytest.approx(4 * (last - 2500.0) * 8 * 2.0), rule
    # the advice asks from the task's job need above 2000: every point lies at 2500 or 2600
    need = np.where(levels < 0.5, 2500.0, 2600.0)
    cost = {"failed_attempt": 1.5, "unused_mb_hour": 1 / 2000, "unused_limit": 0.02}
    advised = run_jobs(task, DEFAULT, RULES, retry_rule("advice", ladder, need, levels, cost))
    assert advised["failed_memory"] == 4 and advised["slack_mb_hours"] == pytest.approx(4 * 100 * 8 * 2.0)
    # a retry above the ladder's top rung finds no queue: the job is lost
    lost = run_jobs(jobs([7900.0]), Requests(ramcount=7000.0), RULES, retry_rule("vpa", ladder, None, levels, {}))
    assert lost["lost"] == 1 and lost["failed_memory"] == 1


@pytest.mark.slow
def test_the_pipeline_replays_its_backtest_and_writes_the_reports(served_project):
    """The replay stage the pipeline ran: every policy ran the same jobs; only scouts wait; the reports are
    written and agree with the per-task table."""
    report = json.loads((served_project / "reports" / "replay.json").read_text())
    policies = report["policies"]
    assert list(policies) == ReplayParams().policies
    assert len({figures["jobs"] for figures in policies.values()}) == 1 and policies["model"]["jobs"] > 0
    assert policies["scouts"]["turnaround_h_mean"] > 0
    assert all(policies[p]["turnaround_h_total"] == 0 for p in ("default", "history", "model", "cost-aware"))
    assert all(0 <= figures["reach"] <= 1 for figures in policies.values())
    folder = served_project / "reports" / "replay"
    per_task = pd.read_parquet(folder / "tasks.parquet")
    for policy, figures in policies.items():
        rows = per_task[(per_task["policy"] == policy) & (per_task["retry"] == "ladder")]
        assert figures["failed_attempts"] == rows["failed_memory"].sum() + rows["failed_walltime"].sum()
        assert figures["tasks"] == len(rows) == report["window"]["tasks"]
    # the retry policy with each retry rule, on the same requests: the ladder's row is the policy's own
    retries = report["retries"]
    assert retries["policy"] == "cost-aware" and list(retries["rules"]) == ["ladder", "vpa", "advice"]
    assert retries["rules"]["ladder"] == policies["cost-aware"]
    assert len({figures["jobs"] for figures in retries["rules"].values()}) == 1
    page = (folder / "index.html").read_text()
    for name in ("failures_vs_slack.png", "turnaround.png"):
        assert f'src="{name}"' in page and (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert (folder / "replay.md").read_text().startswith("# Replay")


@pytest.mark.slow
def test_the_replay_command_narrows_the_window_and_the_policies(served_project, tmp_path):
    from typer.testing import CliRunner

    from scoutless.cli import app
    from tests.conftest import project_env

    per_task = pd.read_parquet(served_project / "reports" / "replay" / "tasks.parquet")
    features = pd.read_parquet(served_project / "data" / "features" / "features.parquet").set_index("jeditaskid")
    created = features.loc[per_task["jeditaskid"].unique(), "creationdate"].sort_values()
    since = created.iloc[len(created) // 2]
    with project_env(served_project):
        result = CliRunner().invoke(app, ["replay", "--since", str(since), "--policy", "scouts", "--policy", "model"])
        assert result.exit_code == 0, result.output
        report = json.loads((served_project / "reports" / "replay.json").read_text())
        assert list(report["policies"]) == ["scouts", "model"]
        assert report["window"]["tasks"] == int((created >= since).sum())
        assert "| scouts |" in result.output and "| model |" in result.output
        refused = CliRunner().invoke(app, ["replay", "--policy", "oracle"])
        assert refused.exit_code != 0 and "oracle" in refused.output
        # the whole window again, as the pipeline left it
        assert CliRunner().invoke(app, ["replay"]).exit_code == 0
