"""The train stage's time per target and candidate, and its peak memory, on the embedded archive's features and
on larger replicas of them, side by side.

    python -m benchmarks.training [--sizes 0 100000 1000000]

Size 0 means the features and jobs as they are (run the pipeline first); a positive size replicates the
labelled tasks (new ids, creation and label times kept in order so the time windows still hold), each with
its finished jobs, to that many tasks, written as Parquet to benchmarks/.cache/ by a process of its own. The
measuring process then runs the train stage itself (models.train.run_train) on them, all six targets one
after the other, each loading the data as the stage does: its peak memory is the stage's. The replicas
repeat a few thousand tasks, so their test scores reward memorising them: they measure time and memory,
not accuracy. Writes benchmarks/results/training.{json,md}.
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
from scoutless.models.train import TRAINING_JOB_COLUMNS

REPO = Path(__file__).resolve().parents[1]
MODULE = "benchmarks.training"
CACHE = Path(__file__).resolve().parent / ".cache"


def write_replica(size: int) -> Path:
    """benchmarks/.cache/training-<size>/ holding features.parquet and jobs.parquet: the labelled tasks
    replicated to `size` tasks with new ids, each replica with its original's finished jobs."""
    folder = CACHE / f"training-{size}"
    if (folder / "jobs.parquet").exists():
        return folder
    features = pd.read_parquet(REPO / "data" / "features" / "features.parquet")
    features = features[features["labels_known_at"].notna()].sort_values("creationdate").reset_index(drop=True)
    jobs = pd.read_parquet(REPO / "data" / "validated" / "jobs.parquet", columns=TRAINING_JOB_COLUMNS)
    picks = np.sort(np.random.default_rng(0).integers(0, len(features), size=size))
    replica = features.iloc[picks].reset_index(drop=True)
    replica["jeditaskid"] = np.arange(1, size + 1)
    jobs = jobs.sort_values("jeditaskid", kind="stable").reset_index(drop=True)
    ids = jobs["jeditaskid"].to_numpy()
    picked = features["jeditaskid"].to_numpy()[picks]
    first = np.searchsorted(ids, picked, side="left")
    counts = np.searchsorted(ids, picked, side="right") - first
    rows = np.repeat(first - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    replica_jobs = jobs.iloc[rows].reset_index(drop=True)
    replica_jobs["jeditaskid"] = np.repeat(replica["jeditaskid"].to_numpy(), counts)
    build = folder.with_name(folder.name + ".partial")
    build.mkdir(parents=True, exist_ok=True)
    replica.to_parquet(build / "features.parquet", index=False)
    replica_jobs.to_parquet(build / "jobs.parquet", index=False)
    build.rename(folder)
    return folder


def measure(size: int) -> dict:
    from scoutless.models.train import run_train
    from scoutless.params import load_params
    from scoutless.paths import resolve

    params = load_params(REPO / "params.yaml")
    # the stage writes its models and metrics into the cache (the pipeline's own stay as they are) and, for a
    # replica, reads it from there
    folder = CACHE / f"training-{size}"
    inputs = {"features": str(folder), "validated": str(folder)} if size > 0 else {}
    paths = params.paths.model_copy(update={"models": str(folder / "models"), "artifacts": str(folder / "artifacts"),
                                            **inputs})
    params = params.model_copy(update={"paths": paths})
    per_target = {}
    started = time.perf_counter()
    for target in params.targets:
        began = time.perf_counter()
        run_train(params, target)
        metrics = json.loads((resolve(params.paths.artifacts) / "metrics" / f"{target}.json").read_text())
        per_target[target] = {
            "seconds": time.perf_counter() - began,
            "by_candidate": {name: m["train_seconds"] for name, m in metrics["candidates"].items()},
            "fit_tasks": {name: m["fit_tasks"] for name, m in metrics["candidates"].items()},
            "skipped": metrics["skipped"],
        }
    tasks = len(pd.read_parquet(resolve(params.paths.features) / "features.parquet", columns=["jeditaskid"]))
    return {"tasks": tasks, "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
            "per_target": per_target}


def scaling_of(run: dict) -> str:
    """What train.scaling did at this size (the same for every target here): candidates not trained, and
    the fit tasks of those that learned from part of the window."""
    first = next(iter(run["per_target"].values()))
    fits = sorted(set(first["fit_tasks"].values()))
    parts = [", ".join(first["skipped"]) or "none"]
    if len(fits) > 1:
        parts.append(", ".join(f"{name} {n:,}" for name, n in first["fit_tasks"].items() if n < fits[-1]))
    return " / ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    parser.add_argument("--replicate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replicate is not None:
        print(json.dumps({"folder": str(write_replica(args.replicate))}))
        return
    if args.measure is not None:
        print(json.dumps(measure(args.measure)), flush=True)
        # The measurement is printed: leave without the interpreter's teardown, where Arrow's Parquet reader
        # threads now and then abort the process (SIGABRT, "terminate called without an active exception",
        # apache/arrow#34314; seen here twice in ten runs, each time after the work was done).
        os._exit(0)
    for size in args.sizes:
        if size > 0:
            measure_in_subprocess(MODULE, ["--replicate", str(size)])
    runs = [measure_in_subprocess(MODULE, ["--measure", str(size)]) for size in args.sizes]
    targets = list(runs[0]["per_target"])
    header = "| tasks | " + " | ".join(targets) + " | all six (s) | peak RSS MB | not trained / learned from |"
    rows = [
        f"| {r['tasks']:,} | " + " | ".join(f"{r['per_target'][t]['seconds']:.0f}" for t in targets)
        + f" | {r['seconds']:.0f} | {r['peak_rss_mb']:,.0f} | {scaling_of(r)} |"
        for r in runs
    ]
    table = "\n".join([
        f"The train stage, every target ({os.cpu_count()} cores; seconds per target, each loading the data)", "",
        header, "|" + "---|" * (len(targets) + 4), *rows,
    ])
    write_results("training", {"runs": runs}, table)
    print(table)


if __name__ == "__main__":
    main()
