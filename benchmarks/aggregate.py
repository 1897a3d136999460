"""Job -> task aggregation at ATLAS scale: JEDI's per-task statistics (P75, P95, median, max, mean) over every job
of every task, scoutless' `task_values` against DuckDB's quantile_cont over the same Parquet files, side by side in
one run.

    python -m benchmarks.aggregate [--rows 100000000] [--repeat 2]

The job measurements are generated (tasks of 1 to 60 jobs, lognormal values with ties, a fifth missing as NaN)
and written as Parquet parts of 10M rows in task order, as extraction writes its jobs, to benchmarks/.cache/
(kept for the next run). Each method runs `--repeat` times, interleaved, each in a fresh process: wall time from
the Parquet files to the per-task frame, and peak RSS. DuckDB computes the same statistics with JEDI's margins
and caps in SQL; its answer and scoutless' are compared on every task (rtol 1e-9).
Writes benchmarks/results/aggregate.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import measure_in_subprocess, median_of, peak_rss_mb, write_results

CACHE = Path(__file__).resolve().parent / ".cache"
PART_ROWS = 10_000_000
METHODS = ("scoutless", "duckdb")


def ensure_measurements(rows: int, seed: int) -> Path:
    """A folder of Parquet parts holding about `rows` job measurements (generated once)."""
    from scoutless.archive.jedi_formulas import MEASURED_COLUMNS

    folder = CACHE / f"job-measurements-{rows}-{seed}"
    if (folder / "_complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    scratch = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    rng, first_task, written, parts = np.random.default_rng(seed), 1, 0, 0
    while written < rows:
        jobs = rng.integers(1, 61, int(min(PART_ROWS, rows - written) / 30.5) + 1)
        tasks = np.repeat(np.arange(first_task, first_task + len(jobs), dtype="int64"), jobs)
        part = {"jeditaskid": tasks}
        for column in MEASURED_COLUMNS:
            values = np.round(rng.lognormal(3, 2, len(tasks)), 2)
            values[rng.random(len(tasks)) < 0.2] = np.nan
            part[column] = values
        pd.DataFrame(part).to_parquet(scratch / f"part-{parts:04d}.parquet", index=False)
        first_task, written, parts = first_task + len(jobs), written + len(tasks), parts + 1
    (scratch / "_complete").write_text(f"{written}\n")
    scratch.rename(folder)
    return folder


def duckdb_values(folder: Path) -> pd.DataFrame:
    """The reference: task_values' statistics, margins and caps in DuckDB's SQL, over the same files."""
    import duckdb

    from scoutless.params import JediParams

    jedi = JediParams()

    def known(column: str) -> str:
        return f"CASE WHEN isnan({column}) THEN NULL ELSE {column} END"

    def percentile(column: str, rank: float) -> str:
        return f"quantile_cont({known(column)}, {rank / 100.0})"

    def clipped(value: str, low: float = -np.inf, high: float = np.inf) -> str:   # NULL stays NULL, as in pandas
        bounded = f"least(greatest({value}, '{low}'::DOUBLE), '{high}'::DOUBLE)"
        return f"CASE WHEN {value} IS NULL THEN NULL ELSE {bounded} END"

    statistics = {
        "ramcount": clipped(f"{percentile('ram_mb_per_core', jedi.ramcount_percentile)} * "
                            f"{1.0 + jedi.ramcount_margin}", low=jedi.ramcount_min_mb),
        "cputime": f"{percentile('cputime_hs06s_per_event', jedi.cputime_percentile)} * {jedi.cputime_scale}",
        "cpuefficiency": clipped(percentile("cpuefficiency_pct", 50.0), 0.0, 100.0),
        "iointensity": f"max({known('iointensity_kbps')})",
        "diskio": f"avg({known('diskio_kbps')})",
        "outdiskcount": clipped(percentile("outdisk_kb_per_event", jedi.outdisk_percentile), high=jedi.outdisk_cap_kb),
        "workdiskcount": f"max({known('workdisk_mb')})",
    }
    select = ", ".join(f"{sql} AS {name}" for name, sql in statistics.items())
    with duckdb.connect() as connection:
        # Parquet's min/max statistics leave NaN out; DuckDB would conclude that isnan() is always false.
        connection.execute("SET disabled_optimizers = 'statistics_propagation'")
        found = connection.execute(
            f"SELECT jeditaskid, {select}, count(*) AS n_finished_jobs FROM read_parquet(?) "
            "GROUP BY jeditaskid ORDER BY jeditaskid", [str(folder / "*.parquet")]).df()
    return found.set_index("jeditaskid")


def measure(method: str, folder: Path, out: Path) -> dict:
    started = time.perf_counter()
    if method == "scoutless":
        from scoutless.archive.jedi_formulas import task_values
        from scoutless.params import JediParams

        values = task_values(folder, JediParams())
    else:
        values = duckdb_values(folder)
    seconds = time.perf_counter() - started
    values.to_parquet(out)
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "tasks": len(values),
            "job_rows": int(values["n_finished_jobs"].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--measure", choices=METHODS)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.folder, args.out)))
        return

    started = time.perf_counter()
    folder = ensure_measurements(args.rows, args.seed)
    print(f"job measurements in {folder} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    answers = {method: CACHE / f"aggregate-{method}.parquet" for method in METHODS}
    runs: dict[str, list[dict]] = {method: [] for method in METHODS}
    for _ in range(args.repeat):
        for method in METHODS:
            runs[method].append(measure_in_subprocess("benchmarks.aggregate", [
                "--measure", method, "--folder", str(folder), "--out", str(answers[method])]))
            print(runs[method][-1], file=sys.stderr)
    ours, reference = (pd.read_parquet(answers[method]) for method in METHODS)
    pd.testing.assert_frame_equal(ours, reference[ours.columns], check_exact=False, rtol=1e-9, atol=0,
                                  check_names=False, check_dtype=False)
    summary = {method: {"seconds": median_of(runs[method], "seconds"),
                        "peak_rss_mb": median_of(runs[method], "peak_rss_mb")} for method in METHODS}
    job_rows, tasks = runs["scoutless"][0]["job_rows"], runs["scoutless"][0]["tasks"]
    ratio = summary["duckdb"]["seconds"] / summary["scoutless"]["seconds"]
    table = "\n".join([
        f"Job -> task aggregation over {job_rows:,} job rows of {tasks:,} tasks in Parquet (2 cores; median of "
        f"{args.repeat} fresh processes each; the same values on every task, rtol 1e-9).",
        "",
        "| method | seconds | job rows/s | peak RSS (MB) |",
        "|---|---|---|---|",
        *(f"| {method} | {summary[method]['seconds']:.1f} | {job_rows / summary[method]['seconds'] / 1e6:.1f}M | "
          f"{summary[method]['peak_rss_mb']:,.0f} |" for method in METHODS),
        f"| **duckdb / scoutless** | **{ratio:.2f}x** | | |",
    ])
    write_results("aggregate", {"job_rows": job_rows, "tasks": tasks, "runs": runs, "summary": summary,
                                "duckdb_over_scoutless": ratio}, table)
    print(table)


if __name__ == "__main__":
    main()
