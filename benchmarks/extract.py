"""Extraction throughput and peak memory, chunked path vs a naive `pandas.read_sql`, side by side.

    python -m benchmarks.extract [--tasks 100000] [--seed 1] [--repeat 3] [--postgres-url URL]

Builds (once, cached) a simulated archive of `--tasks` tasks in SQLite and in PostgreSQL (database
`scoutless_bench_<tasks>` on the server of --postgres-url / $SCOUTLESS_TEST_POSTGRES_URL), then runs
each method `--repeat` times, interleaved, each in a fresh process so that its peak RSS is its own.
- chunked: scoutless's extraction (`extract.chunk_tasks` tasks at a time, rows read from the cursor)
- naive:   the same statements over the whole archive at once through `pandas.read_sql`
Writes benchmarks/results/extract.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from benchmarks.common import measure_in_subprocess, median_of, peak_rss_mb, write_results

CACHE = Path(__file__).resolve().parent / ".cache"
MODULE = "benchmarks.extract"


def _params(url: str, schema: str | None, archive_schema: str | None, chunk_tasks: int | None = None):
    from scoutless.params import ArchiveParams, load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    update = {"archive": ArchiveParams(url=url, schema=schema, archive_schema=archive_schema)}
    if chunk_tasks:
        update["extract"] = params.extract.model_copy(update={"chunk_tasks": chunk_tasks})
    return params.model_copy(update=update)


def ensure_archives(tasks: int, seed: int, postgres_url: str | None) -> dict[str, tuple]:
    """Archives to measure: {backend: (url, schema, archive_schema)}, simulated when missing."""
    from scoutless.simulator.stage import run_simulate

    archives = {}
    CACHE.mkdir(exist_ok=True)
    sqlite_path = CACHE / f"archive-{tasks}-{seed}.sqlite"
    archives["sqlite"] = (f"sqlite:///{sqlite_path}", None, None)
    if not sqlite_path.exists():
        print(f"simulating {tasks} tasks into {sqlite_path} ...", flush=True)
        run_simulate(_params(*archives["sqlite"]), tasks=tasks, seed=seed)
    if postgres_url:
        database = f"scoutless_bench_{tasks}_{seed}"
        admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
        admin.dispose()
        url = sa.engine.make_url(postgres_url).set(database=database).render_as_string(hide_password=False)
        archives["postgresql"] = (url, "doma_panda", "doma_pandaarch")
        engine = sa.create_engine(url)
        populated = sa.inspect(engine).has_table("jedi_tasks", schema="doma_panda")
        engine.dispose()
        if not populated:
            print(f"simulating {tasks} tasks into {database} ...", flush=True)
            run_simulate(_params(*archives["postgresql"]), tasks=tasks, seed=seed)
    return archives


def measure(method: str, url: str, schema: str | None, archive_schema: str | None) -> dict:
    """One extraction of the whole archive by `method`, in this process."""
    from scoutless.archive.extract import extract
    from scoutless.archive.stages import open_source

    naive = method == "naive"
    params = _params(url, schema, archive_schema, chunk_tasks=10**12 if naive else None)
    source = open_source(params)
    if naive:
        source.read = lambda conn, stmt: pd.read_sql(stmt, conn)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = extract(params, source, Path(out), full=True, progress=False)
        seconds = time.perf_counter() - started
    with source.engine.connect() as conn:
        job_rows = sum(
            conn.execute(sa.select(sa.func.count()).select_from(source.schema.job_table(t))).scalar_one()
            for t in source.job_tables
        )
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak_rss_mb(), "tasks": summary.tasks_read,
            "job_rows": job_rows, "labelled": summary.labelled_total, "chunk_tasks": params.extract.chunk_tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres-url", default=os.environ.get("SCOUTLESS_TEST_POSTGRES_URL"))
    parser.add_argument("--measure", nargs=4, metavar=("METHOD", "URL", "SCHEMA", "ARCHIVE_SCHEMA"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        method, url, schema, archive_schema = (None if a == "-" else a for a in args.measure)
        import json

        print(json.dumps(measure(method, url, schema, archive_schema)))
        return

    archives = ensure_archives(args.tasks, args.seed, args.postgres_url)
    results, rows = {}, []
    for backend, (url, schema, archive_schema) in archives.items():
        runs: dict[str, list[dict]] = {"chunked": [], "naive": []}
        for _ in range(args.repeat):
            for method in runs:  # interleaved, so that machine noise hits both alike
                runs[method].append(measure_in_subprocess(
                    MODULE, ["--measure", method, url, schema or "-", archive_schema or "-"]))
                print(backend, runs[method][-1], flush=True)
        summary = {}
        for method, method_runs in runs.items():
            seconds = median_of(method_runs, "seconds")
            first = method_runs[0]
            summary[method] = {
                "seconds": seconds, "peak_rss_mb": median_of(method_runs, "peak_rss_mb"),
                "task_rows_per_s": first["tasks"] / seconds, "job_rows_per_s": first["job_rows"] / seconds,
                "tasks": first["tasks"], "job_rows": first["job_rows"], "runs": method_runs,
            }
        summary["speedup"] = summary["naive"]["seconds"] / summary["chunked"]["seconds"]
        summary["memory_ratio"] = summary["naive"]["peak_rss_mb"] / summary["chunked"]["peak_rss_mb"]
        results[backend] = summary
        for method in ("chunked", "naive"):
            s = summary[method]
            rows.append(f"| {backend} | {method} | {s['tasks']:,} | {s['job_rows']:,} | {s['seconds']:.1f} | "
                        f"{s['task_rows_per_s']:,.0f} | {s['job_rows_per_s']:,.0f} | {s['peak_rss_mb']:,.0f} |")
        rows.append(f"| {backend} | **naive / chunked** | | | **{summary['speedup']:.2f}x** | | | "
                    f"**{summary['memory_ratio']:.2f}x** |")
    table = "\n".join([
        f"Extraction of a {args.tasks:,}-task archive (median of {args.repeat}, interleaved; "
        f"{os.cpu_count()} cores)",
        "",
        "| archive | method | tasks | job rows | seconds | task rows/s | job rows/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])
    write_results("extract", {"tasks": args.tasks, "seed": args.seed, "repeat": args.repeat, **results}, table)
    print(table)


if __name__ == "__main__":
    main()
