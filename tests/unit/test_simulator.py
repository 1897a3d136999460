"""The archive simulator: deterministic, realistic in the ways the pipeline relies on, junk as reported."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from archive import jedi_formulas
from archive.schema import panda_schema
from archive.simulator import ArchiveNotEmptyError, SimulationSummary, simulate_archive, simulate_window
from scoutless.params import JediParams, SimulateParams, WindowParams

JEDI = JediParams()
PARAMS = SimulateParams(tasks=300, seed=7, start=date(2024, 1, 1), days=180, junk_fraction=0.08)
OOM_PILOT_CODES = (1212, 1223, 1235)     # PAYLOADOUTOFMEMORY, BADALLOC, PAYLOADEXCEEDMAXMEM
KEYS = {"jedi_tasks": ["jeditaskid"], "jedi_datasets": ["jeditaskid", "datasetid"],
        "jobsarchived4": ["pandaid"], "jobsarchived": ["pandaid"]}


def simulate(path: Path, params: SimulateParams) -> tuple[SimulationSummary, dict[str, pd.DataFrame]]:
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        summary = simulate_archive(engine, panda_schema(), params, JEDI)
        with engine.connect() as conn:
            tables = {name: pd.read_sql(sa.text(f"SELECT * FROM {name}"), conn)
                      .sort_values(keys, ignore_index=True) for name, keys in KEYS.items()}
    finally:
        engine.dispose()
    return summary, tables


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[SimulationSummary, dict[str, pd.DataFrame]]:
    return simulate(tmp_path_factory.mktemp("sim") / "a.sqlite", PARAMS)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[SimulationSummary, dict[str, pd.DataFrame]]:
    """Another seed, without junk."""
    params = PARAMS.model_copy(update={"seed": 8, "junk_fraction": 0.0})
    return simulate(tmp_path_factory.mktemp("sim") / "clean.sqlite", params)


def jobs_of(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat([tables["jobsarchived"], tables["jobsarchived4"]]).drop_duplicates("pandaid")


def test_same_seed_gives_the_same_archive(archive, tmp_path):
    summary, tables = archive
    again_summary, again = simulate(tmp_path / "again.sqlite", PARAMS)
    assert again_summary == summary
    for name in KEYS:
        pd.testing.assert_frame_equal(again[name], tables[name])


def test_another_seed_gives_another_archive(archive, clean):
    assert not archive[1]["jedi_tasks"]["taskname"].equals(clean[1]["jedi_tasks"]["taskname"])
    pss, other = (set(tables["jobsarchived"]["maxpss"].dropna()) for tables in (archive[1], clean[1]))
    assert pss != other


def test_summary_counts_the_rows_written(archive):
    summary, tables = archive
    assert summary.tasks == len(tables["jedi_tasks"]) == PARAMS.tasks
    assert summary.datasets == len(tables["jedi_datasets"])
    assert summary.jobs == {name: len(tables[name]) for name in ("jobsarchived4", "jobsarchived")}
    assert 15 <= len(jobs_of(tables)) / summary.tasks <= 50


def test_task_rows_carry_both_cputime_regimes_and_fixed_units(archive):
    tasks = archive[1]["jedi_tasks"]
    assert {"HS06sPerEvent", "mHS06sPerEvent"} <= set(tasks["cputimeunit"])
    assert (tasks["ramunit"] == "MBPerCoreFixed").any()
    assert tasks["cputimeunit"].str.endswith("Fixed", na=False).any()
    small = tasks["cputimeunit"] == "mHS06sPerEvent"
    assert (tasks.loc[small, "cputime"] < 10_000).all()      # below 10 HS06 s / event, stored x1000


def test_out_of_memory_failures_needed_more_than_they_requested(archive):
    jobs = jobs_of(archive[1])
    oom = jobs[jobs["piloterrorcode"].isin(OOM_PILOT_CODES)]
    assert len(oom) > 0 and (oom["jobstatus"] == "failed").all()
    cores = oom["actualcorecount"].fillna(oom["corecount"])
    limit_mb = oom["minramcount"] * cores / oom["corecount"]
    assert (oom["maxpss"] / 1024 > limit_mb).all()
    # and were retried asking for more memory
    first_request = oom.groupby("jeditaskid")["minramcount"].min()
    retry_request = jobs[jobs["attemptnr"] > 1].groupby("jeditaskid")["minramcount"].max()
    assert (retry_request.reindex(first_request.index) > first_request).mean() > 0.8


def test_every_job_belongs_to_a_task_and_the_tables_split_by_age(archive):
    tables = archive[1]
    jobs = jobs_of(tables)
    assert jobs["jeditaskid"].isin(tables["jedi_tasks"]["jeditaskid"]).all()
    assert tables["jedi_datasets"]["jeditaskid"].isin(tables["jedi_tasks"]["jeditaskid"]).all()
    end = datetime.combine(PARAMS.start, datetime.min.time()) + timedelta(days=PARAMS.days)
    recent = pd.to_datetime(tables["jobsarchived4"]["modificationtime"])
    old = pd.to_datetime(tables["jobsarchived"]["modificationtime"])
    assert (recent >= end - timedelta(days=32)).all() and (old < end - timedelta(days=30)).all()


def test_jobs_being_moved_are_in_both_tables_unchanged(archive):
    summary, tables = archive
    both = tables["jobsarchived4"].merge(tables["jobsarchived"], on="pandaid", suffixes=("", "_arch"))
    assert len(both) == summary.jobs_in_both_tables > 0
    for column in ("jeditaskid", "jobstatus", "maxpss", "endtime", "cpuconsumptiontime", "jobmetrics"):
        pd.testing.assert_series_equal(both[column], both[f"{column}_arch"], check_names=False)


def test_running_tasks_have_no_endtime_and_part_of_their_jobs(archive):
    tables = archive[1]
    tasks = tables["jedi_tasks"]
    running = tasks[tasks["status"].isin(["running", "scouting"])]
    assert len(running) > 0 and running["endtime"].isna().all()
    inputs = tables["jedi_datasets"].query("type in ('input', 'pseudo_input') and masterid.isna()")
    progress = inputs.set_index("jeditaskid").loc[running["jeditaskid"]]
    assert (progress["nfilesfinished"] < progress["nfiles"]).any()


def test_planted_junk_is_there_as_counted(archive):
    summary, tables = archive
    tasks, datasets, jobs = tables["jedi_tasks"], tables["jedi_datasets"], jobs_of(tables)
    assert all(count > 0 for count in summary.junk.values()), summary.junk
    found = {
        "task_null_creationdate": tasks["creationdate"].isna().sum(),
        "task_null_processingtype": tasks["processingtype"].isna().sum(),
        "task_corecount_999": (tasks["corecount"] == 999).sum(),
        "task_unknown_unit": (~tasks["ramunit"].isin(["MBPerCore", "MBPerCoreFixed", "MB"])
                              | ~tasks["cputimeunit"].isin(jedi_formulas.CPUTIME_FACTORS)).sum(),
        "task_endtime_before_creation": (pd.to_datetime(tasks["endtime"])
                                         < pd.to_datetime(tasks["creationdate"])).sum(),
        "dataset_negative_nevents": (datasets["nevents"] < 0).sum(),
        "job_finished_without_endtime": ((jobs["jobstatus"] == "finished") & jobs["endtime"].isna()).sum(),
        "job_maxpss_absurd": (jobs["maxpss"] >= 1e12).sum(),
        "job_negative_cputime": (jobs["cpuconsumptiontime"] < 0).sum(),
    }
    assert found == summary.junk


def test_task_values_are_what_jedi_computes_from_the_scouts(clean):
    tables = clean[1]
    tasks = tables["jedi_tasks"].set_index("jeditaskid")
    jobs = jobs_of(tables)
    scouts = jobs[(jobs["jobstatus"] == "finished") & jobs["maxwalltime"].isna()]     # scouts get no limit
    scouts = scouts.join(tasks[list(jedi_formulas.TASK_PRESET_COLUMNS)], on="jeditaskid")
    expected = jedi_formulas.to_task_columns(
        jedi_formulas.task_values(jedi_formulas.job_measurements(scouts, JEDI), JEDI))
    scouted = tasks[tasks["splitrule"].str.contains("US=3")].join(expected, rsuffix="_jedi", how="inner")
    assert len(scouted) > 100
    free = scouted["ramunit"] != "MBPerCoreFixed"
    assert (scouted.loc[free, "ramcount"] == scouted.loc[free, "ramcount_jedi"]).all()
    assert (scouted.loc[~free, "ramcount"] != scouted.loc[~free, "ramcount_jedi"]).any()   # Fixed: kept
    cpu = ~scouted["cputimeunit"].str.endswith("Fixed") & scouted["cputime_jedi"].notna()
    assert (scouted.loc[cpu, "cputime"] == scouted.loc[cpu, "cputime_jedi"]).all()
    assert (scouted.loc[cpu, "cputimeunit"] == scouted.loc[cpu, "cputimeunit_jedi"]).all()


def test_realistic_spread_between_kinds_of_task(clean):
    tables = clean[1]
    tasks = tables["jedi_tasks"]
    assert 0.5 < (tasks["prodsourcelabel"] == "managed").mean() < 0.8
    jobs = jobs_of(tables).merge(tasks[["jeditaskid", "baseramcount"]], on="jeditaskid")
    done = jobs[jobs["jobstatus"] == "finished"].copy()
    cores = done["actualcorecount"].fillna(done["corecount"])
    done["ram_per_core"] = (done["maxpss"] / 1024 - done["baseramcount"]) / cores
    done["cpu_per_event"] = done["cpuconsumptiontime"] * done["hs06"] / cores / done["nevents"]
    by_kind = done.groupby("processingtype")[["ram_per_core", "cpu_per_event"]].median()
    assert by_kind.loc["simul", "cpu_per_event"] > 100 * by_kind.loc["merge", "cpu_per_event"]
    assert by_kind.loc["deriv", "ram_per_core"] > 3 * by_kind.loc["merge", "ram_per_core"]
    assert 0.02 < (jobs["jobstatus"] == "failed").mean() < 0.3
    assert np.isin(["done", "finished", "broken", "aborted"], tasks["status"]).all()


def test_refuses_to_write_into_a_table_with_rows(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    schema = panda_schema()
    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema.jobsarchived.insert(), [{"pandaid": 1, "jeditaskid": 1}])
    with pytest.raises(ArchiveNotEmptyError, match="jobsarchived"):
        simulate_archive(engine, schema, PARAMS.model_copy(update={"tasks": 5}), JEDI)
    engine.dispose()


# ---------------------------------------------------------------------------------------------- later windows
WINDOW_BASE = SimulateParams(tasks=600, seed=11, start=date(2024, 1, 1), days=120, junk_fraction=0.0)


def _with_window(path: Path, shifted: bool) -> tuple[pd.DataFrame, pd.DataFrame, SimulationSummary]:
    """The tasks before and after appending a 20-day window of 400 tasks to a fresh archive."""
    engine = sa.create_engine(f"sqlite:///{path}")
    params = WINDOW_BASE.model_copy(update={"window": WindowParams(days=20, tasks=400)})
    try:
        simulate_archive(engine, panda_schema(), params, JEDI)
        before = pd.read_sql(sa.text("SELECT * FROM jedi_tasks"), engine)
        summary = simulate_window(engine, panda_schema(), params, JEDI, shifted=shifted)
        after = pd.read_sql(sa.text("SELECT * FROM jedi_tasks"), engine)
    finally:
        engine.dispose()
    return before, after, summary


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> dict[bool, tuple[pd.DataFrame, pd.DataFrame, SimulationSummary]]:
    folder = tmp_path_factory.mktemp("windows")
    return {shifted: _with_window(folder / f"{shifted}.sqlite", shifted) for shifted in (False, True)}


def test_a_window_appends_later_tasks_with_new_ids(windows):
    before, after, summary = windows[False]
    added = after[~after["jeditaskid"].isin(before["jeditaskid"])]
    assert summary.tasks == len(added) == 400
    assert added["jeditaskid"].min() > before["jeditaskid"].max()
    opened = pd.to_datetime(before["creationdate"]).max()
    created = pd.to_datetime(added["creationdate"])
    assert created.min() > opened and created.max() <= opened + timedelta(days=20)
    # what was there is untouched
    pd.testing.assert_frame_equal(after[after["jeditaskid"].isin(before["jeditaskid"])].reset_index(drop=True),
                                  before.reset_index(drop=True))


def test_a_shifted_window_brings_a_new_release_and_campaign_mix(windows):
    def window_tasks(key: bool) -> pd.DataFrame:
        before, after, _ = windows[key]
        return after[~after["jeditaskid"].isin(before["jeditaskid"])]

    before = windows[False][0]
    plain, shifted = window_tasks(False), window_tasks(True)
    known = set(before["transhome"].dropna())
    new_in_plain = ~plain["transhome"].dropna().isin(known)
    new_in_shifted = ~shifted["transhome"].dropna().isin(known)
    # the same world uses releases the small archive may not have shown yet; the shifted one adds new ones
    assert new_in_shifted.mean() > new_in_plain.mean() + 0.15

    def run3_share(tasks: pd.DataFrame) -> float:
        campaign = tasks["campaign"].dropna()
        return campaign.str.match(r"MC2[13]|data2[2-4]").mean()

    assert run3_share(shifted) < 0.25 < run3_share(plain)


def test_a_window_needs_an_archive(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        simulate_archive(engine, panda_schema(), WINDOW_BASE.model_copy(update={"tasks": 1}), JEDI)
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM jedi_tasks"))
        with pytest.raises(ValueError, match="simulate the archive before a window"):
            simulate_window(engine, panda_schema(), WINDOW_BASE, JEDI)
    finally:
        engine.dispose()
