"""JEDI's scout formulas on hand-computed cases, and the per-task statistics against pandas' groupby."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from scoutless.archive.jedi_formulas import (
    MEASURED_COLUMNS,
    job_measurements,
    normalised_scout_values,
    task_values,
    to_task_columns,
)
from scoutless.params import JediParams

JEDI = JediParams()
START = datetime(2025, 1, 1)


def jobs(*rows: dict) -> pd.DataFrame:
    base = dict(jeditaskid=1, computingsite="SITE", corecount=8, actualcorecount=None, hs06=80,
                nevents=1000, cpuconsumptiontime=None, inputfilebytes=0, outputfilebytes=0, totrbytes=0,
                totwbytes=0, jobmetrics=None, attemptnr=1, baseramcount=0, basewalltime=600, cpuefficiency=90)
    frame = []
    for i, row in enumerate(rows):
        wall = row.pop("wall_s", 4200)
        frame.append({**base, "pandaid": i + 1, "starttime": START,
                      "endtime": START + timedelta(seconds=wall), "maxpss": 8 * 1024 * 1000, **row})
    return pd.DataFrame(frame)


def test_memory_per_core_subtracts_base_ram_and_divides_by_cores():
    measured = job_measurements(jobs({"maxpss": 8 * 1024 * 1000 + 500 * 1024, "baseramcount": 500}), JEDI)
    assert measured["ram_mb_per_core"].iloc[0] == pytest.approx(1000.0)


def test_actual_core_count_wins_over_the_request():
    measured = job_measurements(jobs({"actualcorecount": 4, "maxpss": 4 * 1024 * 700}), JEDI)
    assert measured["cores"].iloc[0] == 4
    assert measured["ram_mb_per_core"].iloc[0] == pytest.approx(700.0)


def test_no_pss_gives_no_memory_value():
    assert np.isnan(job_measurements(jobs({"maxpss": 0}), JEDI)["ram_mb_per_core"].iloc[0])


def test_cputime_per_event_follows_getHS06sec():
    # (4200 s - 600 s base) x 10 HS06/core x 8 cores x 90 % / 1000 events = 259.2
    measured = job_measurements(jobs({}), JEDI)
    assert measured["cputime_hs06s_per_event"].iloc[0] == pytest.approx(259.2)


def test_cputime_without_hs06_uses_the_default_core_power():
    measured = job_measurements(jobs({"hs06": None, "cpuefficiency": None}), JEDI)
    # (4200 - 600) x 10 x 8 x 100 % / 1000
    assert measured["cputime_hs06s_per_event"].iloc[0] == pytest.approx(288.0)


def test_cputime_ignores_short_jobs_with_few_events_but_keeps_long_ones():
    measured = job_measurements(jobs({"nevents": 50}, {"nevents": 50, "wall_s": 7 * 3600}), JEDI)
    short, long_ = measured["cputime_hs06s_per_event"]
    assert np.isnan(short)
    assert long_ == pytest.approx((7 * 3600 - 600) * 10 * 8 * 0.9 / 50)


def test_cputime_is_zero_when_the_job_ran_less_than_the_base_walltime():
    assert job_measurements(jobs({"wall_s": 300}), JEDI)["cputime_hs06s_per_event"].iloc[0] == 0


def test_efficiency_io_output_and_work_disk():
    measured = job_measurements(jobs({
        "cpuconsumptiontime": 8 * 4200 * 0.5, "inputfilebytes": 100 * 1024**2, "outputfilebytes": 50 * 1024**2,
        "totrbytes": 4200 * 3, "totwbytes": 4200, "jobmetrics": "coreCount=8 workDirSize=1073741824 x=1",
    }), JEDI).iloc[0]
    assert measured["cpuefficiency_pct"] == pytest.approx(50.0)
    assert measured["iointensity_kbps"] == pytest.approx((102400 + 51200) / 4200 / 8)
    assert measured["diskio_kbps"] == pytest.approx(4.0)
    assert measured["outdisk_kb_per_event"] == pytest.approx(51.2)
    assert measured["workdisk_mb"] == pytest.approx(1024.0)


def test_task_values_use_jedi_ranks_and_margins():
    measured = job_measurements(jobs(
        {"maxpss": 8 * 1024 * 1000, "wall_s": 4200, "cpuconsumptiontime": 8 * 4200 * 0.4},
        {"maxpss": 8 * 1024 * 2000, "wall_s": 8200, "cpuconsumptiontime": 8 * 8200 * 0.8},
    ), JEDI)
    values = task_values(measured, JEDI).loc[1]
    assert values["ramcount"] == pytest.approx((1000 + 0.75 * 1000) * 1.10)  # P75 x 1.10
    cpu = sorted([3600 * 10 * 8 * 0.9 / 1000, 7600 * 10 * 8 * 0.9 / 1000])
    assert values["cputime"] == pytest.approx((cpu[0] + 0.95 * (cpu[1] - cpu[0])) * 1.5)  # P95 x 1.5
    assert values["cpuefficiency"] == pytest.approx(60.0)  # median
    assert values["n_finished_jobs"] == 2


def test_stored_task_columns_switch_to_milli_units_below_ten():
    stored = to_task_columns(pd.DataFrame({
        "ramcount": [1925.4], "cputime": [5.2001], "cpuefficiency": [60.0], "iointensity": [4.1],
        "diskio": [2.0], "outdiskcount": [51.2], "workdiskcount": [1024.0],
    }))
    row = stored.iloc[0]
    assert (row["ramcount"], row["cputime"], row["cputimeunit"]) == (1925, 5201, "mHS06sPerEvent")
    assert (row["iointensity"], row["outdiskcount"]) == (5, 51)


def test_scout_values_are_normalised_to_target_units():
    tasks = pd.DataFrame({
        "jeditaskid": [1, 2, 3], "corecount": [8, 1, 8], "ramcount": [16000, 900, 1500],
        "ramunit": ["MB", "MBPerCoreFixed", "GB"], "cputime": [5200, 40, 7],
        "cputimeunit": ["mHS06sPerEvent", "HS06sPerEvent", "seconds"], "cpuefficiency": [90, 80, 70],
        "iointensity": [10, 20, 30], "iointensityunit": ["kBPerS"] * 3, "outdiskcount": [50, 60, 70],
        "outdiskunit": ["kBPerEvent", "kB", "kBPerEventFixed"], "workdiskcount": [1, 2, 3],
        "workdiskunit": ["MB"] * 3,
    })
    scout = normalised_scout_values(tasks)
    assert scout["scout_ramcount"].tolist()[:2] == [2000.0, 900.0]
    assert np.isnan(scout["scout_ramcount"].iloc[2])  # unknown unit: no value, not a guess
    assert scout["scout_cputime"].tolist()[:2] == pytest.approx([5.2, 40.0])
    assert np.isnan(scout["scout_cputime"].iloc[2])
    assert scout["scout_outdiskcount"].isna().tolist() == [False, True, False]


def pandas_task_values(measured: pd.DataFrame, jedi: JediParams) -> pd.DataFrame:
    """The per-task statistics as pandas computes them (group by group): the reference of the compiled ones."""
    by_task = measured.groupby("jeditaskid", sort=True)
    ram = by_task["ram_mb_per_core"].quantile(jedi.ramcount_percentile / 100.0) * (1.0 + jedi.ramcount_margin)
    return pd.DataFrame({
        "ramcount": ram.clip(lower=jedi.ramcount_min_mb).where(ram.notna()),
        "cputime": by_task["cputime_hs06s_per_event"].quantile(jedi.cputime_percentile / 100.0) * jedi.cputime_scale,
        "cpuefficiency": by_task["cpuefficiency_pct"].median().clip(0.0, 100.0),
        "iointensity": by_task["iointensity_kbps"].max(),
        "diskio": by_task["diskio_kbps"].mean(),
        "outdiskcount": by_task["outdisk_kb_per_event"].quantile(jedi.outdisk_percentile / 100.0)
        .clip(upper=jedi.outdisk_cap_kb),
        "workdiskcount": by_task["workdisk_mb"].max(),
        "n_finished_jobs": by_task.size(),
    })


def random_measurements(seed: int, tasks: int = 400) -> pd.DataFrame:
    """Job measurements of tasks with 1 to 60 jobs: skewed values, ties, a fifth missing at random, some tasks
    with a measurement no job gives, and tasks in no order."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rng.choice(10**9, tasks, replace=False))
    task = np.repeat(ids, rng.integers(1, 61, tasks))
    frame = pd.DataFrame({"jeditaskid": rng.permutation(task).astype("int64")})
    for column in MEASURED_COLUMNS:
        values = np.round(rng.lognormal(3, 2, len(frame)), rng.integers(0, 4))   # rounding makes ties
        values[rng.random(len(frame)) < 0.2] = np.nan
        values[np.isin(frame["jeditaskid"], ids[: tasks // 20])] = np.nan
        frame[column] = values
    return frame


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_task_values_are_pandas_groupby_values_from_a_frame_and_from_parquet(seed, tmp_path):
    """The compiled statistics against pandas' groupby on the same jobs, to 1e-9: from a frame in no task
    order, and from a folder of Parquet files holding NaN values themselves (as another writer leaves them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    measured = random_measurements(seed)
    expected = pandas_task_values(measured, JEDI)
    with_nan = pa.table({column: pa.array(measured[column].to_numpy()) for column in measured})
    assert pa.compute.sum(pa.compute.is_nan(with_nan["workdisk_mb"])).as_py() > 0
    half = len(measured) // 2
    pq.write_table(with_nan.slice(0, half), tmp_path / "part-0.parquet", row_group_size=5000)
    pq.write_table(with_nan.slice(half), tmp_path / "part-1.parquet", row_group_size=5000)
    for found in (task_values(measured, JEDI), task_values(tmp_path, JEDI),
                  task_values(measured.sort_values("jeditaskid", kind="stable"), JEDI)):
        assert list(found.columns) == list(expected.columns)
        assert (found.index == expected.index).all() and found.index.name == "jeditaskid"
        pd.testing.assert_frame_equal(found, expected, check_exact=False, rtol=1e-9, atol=0, check_names=False)
    assert expected.isna().any().any() and expected["n_finished_jobs"].eq(1).any()   # the cases are there
    assert task_values(measured.iloc[:0], JEDI).empty
