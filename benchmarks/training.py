"""Training time per target and candidate, and peak memory, on the embedded archive's features and on a
larger replica of them, side by side.

    python -m benchmarks.training [--sizes 0 200000]

Size 0 means the features as they are (run the pipeline first); a positive size replicates the labelled
rows (new ids, creation and label times kept in order so the time windows still hold) to that many tasks. Each size
runs in a fresh process. Writes benchmarks/results/training.{json,md}.
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
MODULE = "benchmarks.training"


def features_of_size(size: int) -> pd.DataFrame:
    features = pd.read_parquet(REPO / "data" / "features" / "features.parquet")
    features = features[features["labels_known_at"].notna()].sort_values("creationdate").reset_index(drop=True)
    if size <= 0:
        return features
    picks = np.sort(np.random.default_rng(0).integers(0, len(features), size=size))
    out = features.iloc[picks].reset_index(drop=True)
    out["jeditaskid"] = np.arange(1, size + 1)
    return out


def measure(size: int) -> dict:
    from scoutless.models.protocol import DAY, pipeline_now
    from scoutless.models.train import train_target
    from scoutless.params import load_params

    params = load_params(REPO / "params.yaml")
    features = features_of_size(size)
    jobs = pd.read_parquet(REPO / "data" / "validated" / "jobs.parquet") if size <= 0 else None
    per_target = {}
    origin = pipeline_now(features, params.split) - params.split.test_days * DAY
    started = time.perf_counter()
    for target in params.targets:
        result = train_target(features, jobs, target, params, origin)
        per_target[target] = {"seconds": sum(result.seconds.values()), "by_candidate": result.seconds}
    return {"tasks": len(features), "seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(),
            "per_target": per_target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 200_000])
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    runs = [measure_in_subprocess(MODULE, ["--measure", str(size)]) for size in args.sizes]
    targets = list(runs[0]["per_target"])
    header = "| tasks | " + " | ".join(targets) + " | all six (s) | peak RSS MB |"
    rows = [
        f"| {r['tasks']:,} | " + " | ".join(f"{r['per_target'][t]['seconds']:.0f}" for t in targets)
        + f" | {r['seconds']:.0f} | {r['peak_rss_mb']:,.0f} |"
        for r in runs
    ]
    table = "\n".join([
        f"Training every candidate of every target ({os.cpu_count()} cores; seconds per target)", "",
        header, "|" + "---|" * (len(targets) + 3), *rows,
    ])
    write_results("training", {"runs": runs}, table)
    print(table)


if __name__ == "__main__":
    main()
