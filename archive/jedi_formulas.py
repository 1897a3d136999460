"""JEDI's scout formulas: from finished jobs to a task's resource values.

A faithful port of panda-server's `getScoutJobData_JEDI` (taskbuffer/db_proxy_mods/task_utils_module.py),
vectorised over many tasks. JEDI applies it to a task's first few scout jobs; scoutless applies the same
formulas to ALL finished jobs of a task to obtain the value the task really needed (the label).

Per job (`job_measurements`):
- cores        = actualcorecount, else corecount, else 1 (JobUtils.getCoreCount)
- wall_s       = endtime - starttime
- ram_mb_per_core = (maxpss[kB] - baseramcount[MB] * 1024) / cores / 1024      (maxpss > 0 only)
- cputime      = max(0, wall_s - basewalltime) * corepower * cores * cpuefficiency/100 / nevents, in
                 HS06 s per event; counted when nevents >= 10 * cores or the job ran >= 6 h.
                 corepower = hs06 / cores (the job's rating), else a constant (JEDI falls back to 10).
- wall_cputime = the same for every job with events, eligible or not: the cputime a job's walltime limit
                 (cputime x nevents / cores / corepower / (cpuefficiency/100) + basewalltime, with the
                 preset efficiency) must allow for the job to finish in it
- cpuefficiency = cpuconsumptiontime / (cores * wall_s) * 100
- iointensity  = (inputfilebytes + outputfilebytes) / 1024 / wall_s / cores, kB/s per core
- diskio       = (totrbytes + totwbytes) / wall_s (JEDI reads the byte counters as kB; so do we)
- outdisk      = outputfilebytes / nevents / 1024, kB per event (jobs with nevents >= 10)
- workdisk     = workDirSize (bytes, from jobmetrics) / 1024**2, MB
- starttime, endtime as recorded (the replay orders and times a task's jobs by them)

Per task (`task_values`): ramcount = P75 x 1.10 (never below the floor); cputime = P95 x 1.5;
cpuefficiency = median (JEDI computes it for its checks; here it is a target, clipped to 0-100);
iointensity = max; diskio = mean; outdiskcount = P75 (capped at 10 MB per event); workdiskcount = max.
Percentiles interpolate linearly, as CoreUtils.percentile does. Values stay as floats: the rounding JEDI
does when it stores them (`to_task_columns`) is only for writing task rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.params import JediParams

# Columns of jobsarchived4 / jobsarchived the formulas read.
JOB_COLUMNS = (
    "pandaid", "jeditaskid", "corecount", "actualcorecount", "starttime", "endtime",
    "cpuconsumptiontime", "hs06", "maxpss", "nevents", "inputfilebytes", "outputfilebytes",
    "totrbytes", "totwbytes", "jobmetrics", "computingsite", "attemptnr",
)
# Task presets the formulas need, joined onto each job.
TASK_PRESET_COLUMNS = ("baseramcount", "basewalltime", "cpuefficiency")


_WORKDIR_RE = r"workDirSize=(\d+)"


def _num(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def job_measurements(jobs: pd.DataFrame, jedi: JediParams) -> pd.DataFrame:
    """Per finished job, the quantities JEDI measures. `jobs` holds JOB_COLUMNS plus TASK_PRESET_COLUMNS.

    A quantity a job cannot give (no maxpss, too few events, zero wall time) is NaN, never a guess.
    """
    actual = _num(jobs, "actualcorecount")
    requested = _num(jobs, "corecount")
    cores = actual.where(actual > 0, requested.where(requested > 0, 1.0))
    started = pd.to_datetime(jobs["starttime"], errors="coerce")
    ended = pd.to_datetime(jobs["endtime"], errors="coerce")
    wall_s = (ended - started).dt.total_seconds()
    wall_s = wall_s.where(wall_s > 0)
    nevents = _num(jobs, "nevents")

    base_ram_mb = _num(jobs, "baseramcount").fillna(0.0)
    maxpss = _num(jobs, "maxpss")
    ram = (maxpss - base_ram_mb * 1024.0) / cores / 1024.0
    ram = ram.where(maxpss > 0)

    hs06 = _num(jobs, "hs06")
    corepower = (hs06 / cores).where(hs06 > 0, jedi.corepower_hs06)
    base_wall = _num(jobs, "basewalltime").fillna(0.0)
    preset_eff = _num(jobs, "cpuefficiency").fillna(jedi.cpuefficiency_if_null)
    hs06sec = (wall_s - base_wall).clip(lower=0.0) * corepower * cores * preset_eff / 100.0
    eligible = (nevents >= jedi.cputime_min_events_per_core * cores) | (wall_s >= jedi.long_job_seconds)
    cputime = (hs06sec / nevents).where(eligible & (nevents > 0))
    wall_cputime = (hs06sec / nevents).where(nevents > 0)

    cpu_s = _num(jobs, "cpuconsumptiontime")
    efficiency = (cpu_s / (cores * wall_s) * 100.0).where(cpu_s >= 0)

    in_bytes = _num(jobs, "inputfilebytes").fillna(0.0)
    out_bytes = _num(jobs, "outputfilebytes")
    io = ((in_bytes + out_bytes.fillna(0.0)) / 1024.0 / wall_s / cores)
    diskio = (_num(jobs, "totrbytes").fillna(0.0) + _num(jobs, "totwbytes").fillna(0.0)) / wall_s
    outdisk = (out_bytes / nevents / 1024.0).where((nevents >= jedi.outdisk_min_events) & (out_bytes >= 0))

    workdir_bytes = pd.to_numeric(
        jobs["jobmetrics"].astype("string").str.extract(_WORKDIR_RE, expand=False), errors="coerce"
    )
    return pd.DataFrame({
        "pandaid": jobs["pandaid"].astype("int64"),
        "jeditaskid": jobs["jeditaskid"].astype("int64"),
        "computingsite": jobs["computingsite"].astype("string"),
        "cores": cores.astype("int64"),
        "corepower": corepower,
        "wall_s": wall_s,
        "nevents": nevents,
        "ram_mb_per_core": ram,
        "cputime_hs06s_per_event": cputime,
        "wall_cputime_hs06s_per_event": wall_cputime,
        "cpuefficiency_pct": efficiency,
        "iointensity_kbps": io,
        "diskio_kbps": diskio,
        "outdisk_kb_per_event": outdisk,
        "workdisk_mb": workdir_bytes.astype("float64") / 1024.0**2,
        # When the job ran: the replay orders a task's jobs (its scouts come first) and times its scouting.
        "starttime": started,
        "endtime": ended,
    })


# The job measurements the per-task values are taken from.
MEASURED_COLUMNS = ("ram_mb_per_core", "cputime_hs06s_per_event", "cpuefficiency_pct", "iointensity_kbps",
                    "diskio_kbps", "outdisk_kb_per_event", "workdisk_mb")


def task_values(measured: pd.DataFrame | Path | str, jedi: JediParams) -> pd.DataFrame:
    """Aggregate job measurements (`job_measurements`, as a frame or as Parquet: a file or a folder of files, read
    by the columns needed) into one row of resource values per task (index: jeditaskid, ascending). The
    statistics run compiled over each task's rows (archive.group_statistics): exact, never a loop in Python."""
    from scoutless.archive import group_statistics as stats

    if isinstance(measured, Path | str):
        import pyarrow.dataset as ds

        dataset = ds.dataset(str(measured), format="parquet")

        def column(name: str, dtype: str) -> np.ndarray:   # one at a time: memory holds the ids and one column
            return np.asarray(dataset.to_table(columns=[name]).column(name).to_numpy(), dtype=dtype)
    else:
        def column(name: str, dtype: str) -> np.ndarray:
            series = measured[name]
            return series.to_numpy(dtype=dtype, na_value=np.nan) if dtype == "float64" else series.to_numpy(dtype)
    order, tasks, bounds = stats.group_bounds(column("jeditaskid", "int64"))

    def grouped(name: str) -> np.ndarray:
        values = column(name, "float64")
        return values if order is None else values[order]

    def percentile(name: str, rank: float) -> np.ndarray:
        return stats.group_quantiles(grouped(name), bounds, rank / 100.0)

    return pd.DataFrame({   # np.maximum and np.minimum keep NaN: a task no job measured stays without a value
        "ramcount": np.maximum(percentile("ram_mb_per_core", jedi.ramcount_percentile) * (1.0 + jedi.ramcount_margin),
                               jedi.ramcount_min_mb),
        "cputime": percentile("cputime_hs06s_per_event", jedi.cputime_percentile) * jedi.cputime_scale,
        "cpuefficiency": np.clip(percentile("cpuefficiency_pct", 50.0), 0.0, 100.0),
        "iointensity": stats.group_max(grouped("iointensity_kbps"), bounds),
        "diskio": stats.group_means(grouped("diskio_kbps"), bounds),
        "outdiskcount": np.minimum(percentile("outdisk_kb_per_event", jedi.outdisk_percentile), jedi.outdisk_cap_kb),
        "workdiskcount": stats.group_max(grouped("workdisk_mb"), bounds),
        "n_finished_jobs": np.diff(bounds).astype("int64"),
    }, index=pd.Index(tasks, name="jeditaskid"))


def to_task_columns(values: pd.DataFrame) -> pd.DataFrame:
    """Resource values as JEDI stores them in jedi_tasks: integers (rounded up) with their unit columns.

    cputime under 10 HS06 s/event is stored x1000 as mHS06sPerEvent, as setScoutJobData_JEDI does.
    """
    def ceil_int(series: pd.Series) -> pd.Series:
        return np.ceil(series).astype("Int64")

    small_cpu = values["cputime"] < 10
    return pd.DataFrame({
        "ramcount": values["ramcount"].astype("float64").floordiv(1).clip(lower=1).astype("Int64"),
        "ramunit": "MBPerCore",
        "cputime": ceil_int(values["cputime"].where(~small_cpu, values["cputime"] * 1000)),
        "cputimeunit": np.where(small_cpu, "mHS06sPerEvent", "HS06sPerEvent"),
        "iointensity": ceil_int(values["iointensity"]),
        "iointensityunit": "kBPerS",
        "diskio": ceil_int(values["diskio"]),
        "diskiounit": "kBPerS",
        "outdiskcount": values["outdiskcount"].astype("float64").floordiv(1).astype("Int64"),
        "outdiskunit": "kBPerEvent",
        "workdiskcount": values["workdiskcount"].astype("float64").floordiv(1).astype("Int64"),
        "workdiskunit": "MB",
    }, index=values.index)


# Units a task row may carry, and the factor to PanDA's normalised unit of each target.
RAM_PER_CORE_UNITS = {"MBPerCore", "MBPerCoreFixed"}
CPUTIME_FACTORS = {"HS06sPerEvent": 1.0, "HS06sPerEventFixed": 1.0,
                   "mHS06sPerEvent": 1e-3, "mHS06sPerEventFixed": 1e-3}
PER_EVENT_OUTDISK_UNITS = {"kBPerEvent", "kBPerEventFixed"}


def normalised_scout_values(tasks: pd.DataFrame) -> pd.DataFrame:
    """The resource values on task rows (what the scouts set), in the targets' units.

    ramcount in MB per core (a plain "MB" request is per job: divided by its cores); cputime in
    HS06 s per event; outdiskcount in kB per event (a per-input-size "kB" value cannot be converted
    without the input size, so it is NaN); the rest as stored. An unknown unit gives NaN.
    """
    cores = _num(tasks, "corecount").where(lambda c: c > 0, 1.0)
    ram = _num(tasks, "ramcount")
    ramunit = tasks["ramunit"].astype("string")
    ram_per_core = ram.where(ramunit.isin(RAM_PER_CORE_UNITS), (ram / cores).where(ramunit == "MB"))
    cpu_factor = tasks["cputimeunit"].astype("string").map(CPUTIME_FACTORS).astype("float64")
    per_event = tasks["outdiskunit"].astype("string").isin(PER_EVENT_OUTDISK_UNITS)
    return pd.DataFrame({
        "jeditaskid": tasks["jeditaskid"].astype("int64"),
        "scout_ramcount": ram_per_core,
        "scout_cputime": _num(tasks, "cputime") * cpu_factor,
        "scout_cpuefficiency": _num(tasks, "cpuefficiency"),
        "scout_iointensity": _num(tasks, "iointensity").where(tasks["iointensityunit"] == "kBPerS"),
        "scout_outdiskcount": _num(tasks, "outdiskcount").where(per_event),
        "scout_workdiskcount": _num(tasks, "workdiskcount").where(tasks["workdiskunit"] == "MB"),
    })
