"""The archive simulator: deterministic, realistic in the ways the pipeline relies on, junk as reported."""

from __future__ import annotations

import hashlib
import json
from dataclasses import astuple
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from scoutless.archive import jedi_formulas
from scoutless.archive.schema import panda_schema
from scoutless.params import JediParams, SimulateParams, WindowParams
from scoutless.simulator.world import (
    KINDS,
    MANAGED_KINDS,
    SHAPE_RATE,
    SHAPE_SCALE,
    TASK_PARAMETER_KEYS,
    USER_KINDS,
    USER_SHARE_RANGE,
    ArchiveNotEmptyError,
    SimulationSummary,
    WorldShape,
    draw_shape,
    draw_world,
    simulate_archive,
    simulate_window,
)

JEDI = JediParams()
PARAMS = SimulateParams(tasks=300, seed=7, start=date(2024, 1, 1), days=180, junk_fraction=0.08)
OOM_PILOT_CODES = (1212, 1223, 1235)     # PAYLOADOUTOFMEMORY, BADALLOC, PAYLOADEXCEEDMAXMEM
KEYS = {"jedi_tasks": ["jeditaskid"], "jedi_taskparams": ["jeditaskid"], "jedi_datasets": ["jeditaskid", "datasetid"],
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
    # the presets JEDI saw while scouting: the submitted ones (some rows were changed afterwards)
    scouts = scouts.join(parameter_maps(tables)[list(jedi_formulas.TASK_PRESET_COLUMNS)], on="jeditaskid")
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


def parameter_maps(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The parameter maps' values under their jedi_tasks names, indexed by jeditaskid."""
    maps = tables["jedi_taskparams"].set_index("jeditaskid")["taskparams"].map(json.loads)
    return pd.DataFrame([{column: m.get(key) for column, key in TASK_PARAMETER_KEYS.items()} for m in maps],
                        index=maps.index).astype({"corecount": float, "baseramcount": float, "basewalltime": float,
                                                  "cpuefficiency": float})


def test_the_parameter_maps_keep_what_was_submitted_when_rows_change(clean):
    tables = clean[1]
    tasks = tables["jedi_tasks"].set_index("jeditaskid")
    submitted = parameter_maps(tables)
    assert submitted.index.equals(tasks.index)
    assert (submitted["taskname"] == tasks["taskname"]).all() and (submitted["username"] == tasks["username"]).all()
    changed = submitted["corecount"].ne(tasks["corecount"].astype(float))
    assert 0.02 < changed.mean() < 0.1                      # EDITED_SHARE of the rows, give or take
    # the jobs of a changed task ran with the cores it was submitted with, not those of its row now
    jobs = jobs_of(tables)
    finished = jobs[(jobs["jobstatus"] == "finished") & jobs["jeditaskid"].isin(changed.index[changed])]
    typical = finished.groupby("jeditaskid")["corecount"].median()
    assert (typical == submitted.loc[typical.index, "corecount"]).mean() > 0.9


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


# ---------------------------------------------------------------------------------------------- world seeds
# sha256 over the tables of the `archive` fixture, from the simulator before world seeds existed: without a
# world seed every draw must stay where it was (the embedded archive's DVC hash depends on it).
REFERENCE_FINGERPRINT = "b3782ffe69f71effa58c502db7f57924b280d94e2a13fab73caf7876ab3a58f4"


def fingerprint(tables: dict[str, pd.DataFrame]) -> str:
    digest = hashlib.sha256()
    for name in KEYS:
        digest.update(pd.util.hash_pandas_object(tables[name], index=False).to_numpy().tobytes())
    return digest.hexdigest()


def test_without_a_world_seed_the_archive_is_the_reference_one(archive):
    assert PARAMS.world_seed is None
    assert draw_world(PARAMS).shape == WorldShape()
    assert fingerprint(archive[1]) == REFERENCE_FINGERPRINT


def test_world_shapes_vary_around_the_reference_within_their_ranges():
    reference = WorldShape()
    shapes = [draw_shape(np.random.default_rng(seed)) for seed in range(40)]
    assert len(set(shapes)) == len(shapes)
    for shape in shapes:
        for name in ("cpu_sigma", "mem_sigma", "efficiency_sd", "job_mem_sd", "job_cpu_sd", "heavy_job_share"):
            ratio = np.array(getattr(shape, name)) / getattr(reference, name)
            assert ((SHAPE_SCALE[0] <= ratio) & (ratio <= SHAPE_SCALE[1])).all(), name
        for name in ("release_cpu_drift", "release_mem_jump_rate", "heavy_task_share"):
            assert SHAPE_RATE[0] <= getattr(shape, name) / getattr(reference, name) <= SHAPE_RATE[1], name
        assert shape.release_cpu_drift < 0 < shape.release_mem_drift     # the drifts keep their direction
        assert 1 < shape.heavy_factor[0] < shape.heavy_factor[1]
        share = np.array(shape.kind_share)
        assert len(share) == len(KINDS) and (share > 0).all()
        assert share[MANAGED_KINDS].sum() == pytest.approx(1) and share[USER_KINDS].sum() == pytest.approx(1)
        assert USER_SHARE_RANGE[0] <= shape.user_share <= USER_SHARE_RANGE[1]
    # every hidden parameter moves in some world
    assert all(len({astuple(s)[i] for s in shapes}) > 1 for i in range(len(astuple(reference))))


CLEAN = PARAMS.model_copy(update={"seed": 8, "junk_fraction": 0.0})     # the `clean` fixture's


@pytest.fixture(scope="module")
def worlds(tmp_path_factory) -> dict[int, dict[str, pd.DataFrame]]:
    """The `clean` tasks (same seed) in two other worlds."""
    folder = tmp_path_factory.mktemp("worlds")
    return {world: simulate(folder / f"{world}.sqlite", CLEAN.model_copy(update={"world_seed": world}))[1]
            for world in (2, 3)}


def test_a_world_seed_changes_the_world_not_the_timeline(clean, worlds):
    shapes = {world: draw_world(CLEAN.model_copy(update={"world_seed": world})).shape for world in worlds}
    assert WorldShape() != shapes[2] != shapes[3] != WorldShape()
    for tables in (clean[1], *worlds.values()):
        tasks = tables["jedi_tasks"]
        reference = clean[1]["jedi_tasks"]
        pd.testing.assert_series_equal(tasks["jeditaskid"], reference["jeditaskid"])
        pd.testing.assert_series_equal(tasks["creationdate"], reference["creationdate"])
    assert not worlds[2]["jedi_tasks"]["taskname"].equals(worlds[3]["jedi_tasks"]["taskname"])


def test_worlds_differ_visibly_as_their_shapes_say(worlds):
    shapes = {world: draw_world(CLEAN.model_copy(update={"world_seed": world})).shape for world in worlds}

    def job_memory_spread(tables: dict[str, pd.DataFrame]) -> float:
        """Median over tasks of the sd of log maxpss of their finished jobs (on the cores they asked for)."""
        jobs = jobs_of(tables)
        done = jobs[(jobs["jobstatus"] == "finished") & (jobs["actualcorecount"].fillna(jobs["corecount"])
                                                          == jobs["corecount"])]
        return done.groupby("jeditaskid")["maxpss"].agg(lambda pss: np.log(pss).std()).median()

    spread = {world: job_memory_spread(tables) for world, tables in worlds.items()}
    assert shapes[2].job_mem_sd[1] > 2 * shapes[3].job_mem_sd[1]
    assert spread[2] > 1.5 * spread[3]

    def mix(tasks: pd.DataFrame) -> tuple[float, float]:
        managed = tasks[tasks["prodsourcelabel"] == "managed"]
        return (tasks["prodsourcelabel"] == "user").mean(), (managed["processingtype"] == "deriv").mean()

    deriv = [k.name for k in KINDS].index("deriv")
    for world, other in ((2, 3), (3, 2)):
        seen = np.array(mix(worlds[world]["jedi_tasks"]))
        own, others = (np.array([shapes[w].user_share, shapes[w].kind_share[deriv]]) for w in (world, other))
        assert (np.abs(seen - own) < np.abs(seen - others)).all(), (world, seen, own, others)


def test_the_same_world_seed_gives_the_same_archive(worlds, tmp_path):
    _, again = simulate(tmp_path / "again.sqlite", CLEAN.model_copy(update={"world_seed": 2}))
    for name in KEYS:
        pd.testing.assert_frame_equal(again[name], worlds[2][name])


def test_a_window_with_a_world_seed_is_in_that_world(tmp_path):
    params = CLEAN.model_copy(update={"tasks": 150, "world_seed": 2, "window": WindowParams(days=20, tasks=100)})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.sqlite'}")
    try:
        simulate_archive(engine, panda_schema(), params, JEDI)
        first = pd.read_sql(sa.text("SELECT MAX(jeditaskid) FROM jedi_tasks"), engine).iat[0, 0]
        simulate_window(engine, panda_schema(), params, JEDI)
        tasks = pd.read_sql(sa.text(f"SELECT * FROM jedi_tasks WHERE jeditaskid > {first}"), engine)
    finally:
        engine.dispose()
    world, reference = draw_world(params), draw_world(params.model_copy(update={"world_seed": None}))
    managers = set(tasks.loc[tasks["prodsourcelabel"] == "managed", "username"])
    assert len(tasks) == 100 and managers
    assert managers <= set(world.managers) and not managers & set(reference.managers)
    mc = tasks["taskname"].str.match(r"mc\d\d_") & (tasks["prodsourcelabel"] == "managed")
    dsids = tasks.loc[mc, "taskname"].str.split(".").str[1].astype(int)
    assert len(dsids) and dsids.isin(world.processes["dsid"]).all()


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
