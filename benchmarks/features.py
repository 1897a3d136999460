"""Feature building throughput and peak memory, at two sizes side by side (the ratio shows the scaling).

    python -m benchmarks.features [--sizes 100000 1000000]

The task rows are the validated tasks of the embedded archive (run the pipeline first), replicated with
new ids and creation times spread over the same two years until each size is reached; every replica
keeps its labels, so the history features work on realistic groups. Each size runs in a fresh process.
Writes benchmarks/results/features.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import measure_in_subprocess, peak_rss_mb, write_results

REPO = Path(__file__).resolve().parents[1]
MODULE = "benchmarks.features"


def replicated(size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    validated = REPO / "data" / "validated"
    tasks = pd.read_parquet(validated / "tasks.parquet")
    labels = pd.read_parquet(validated / "labels.parquet")
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(tasks), size=size)
    out = tasks.iloc[picks].reset_index(drop=True)
    shift = pd.to_timedelta(rng.integers(-3 * 86400, 3 * 86400, size=size), unit="s")
    out["jeditaskid"] = np.arange(1, size + 1)
    out["creationdate"] = out["creationdate"] + shift
    out["endtime"] = out["endtime"] + shift
    by_id = labels.set_index("jeditaskid")
    new_labels = by_id.reindex(tasks["jeditaskid"].to_numpy()[picks]).reset_index(drop=True)
    new_labels["jeditaskid"] = out["jeditaskid"]
    return out, new_labels.dropna(subset=["ramcount"])


def measure(size: int) -> dict:
    from scoutless.features.build import build_features
    from scoutless.params import load_params

    params = load_params(REPO / "params.yaml")
    tasks, labels = replicated(size)
    before = peak_rss_mb()
    started = time.perf_counter()
    features, table = build_features(tasks, labels, list(params.targets))
    seconds = time.perf_counter() - started
    return {"tasks": size, "seconds": seconds, "tasks_per_s": size / seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_before_build_mb": before, "columns": features.shape[1], "history_rows": len(table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    runs = [measure_in_subprocess(MODULE, ["--measure", str(size)]) for size in args.sizes]
    rows = [f"| {r['tasks']:,} | {r['seconds']:.1f} | {r['tasks_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |"
            for r in runs]
    ratio = (runs[-1]["seconds"] / runs[0]["seconds"]) / (runs[-1]["tasks"] / runs[0]["tasks"])
    table = "\n".join([
        f"Feature building ({os.cpu_count()} cores; each size in a fresh process)", "",
        "| tasks | seconds | tasks/s | peak RSS MB |", "|---|---|---|---|", *rows, "",
        f"Time per task, largest over smallest size: {ratio:.2f}x (1.00 = linear).",
    ])
    write_results("features", {"runs": runs, "time_per_task_ratio": ratio}, table)
    print(table)


if __name__ == "__main__":
    main()
