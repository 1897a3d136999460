"""The stages `scoutless run --cluster` spreads (extract, features, the six targets' training) on a Dask
LocalCluster against one process, side by side on the same archive.

    python -m benchmarks.cluster [--workers 2]

Needs the embedded archive (run the pipeline first). Each arm runs in a project folder of its own under
benchmarks/.cache/ (params.yaml copied, the archive linked), in a fresh process, under one temporary Prefect
server: first one process (the stage functions, and the train flow's two targets at a time, each in a process
of its own), then the cluster (the same flows given the LocalCluster's address). Reported per stage: wall time;
peak memory of the flow's process, of its training processes and of each Dask worker; the workers' busy time
(the scheduler's task stream). The extrapolation to N workers: a stage's time outside the workers (wall time
less busy time over the measured workers) stays, its busy time is divided by N. It assumes even parts, a core
per worker, and an archive and storage that keep up, which one machine cannot tell.
Writes benchmarks/results/cluster.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

from benchmarks.common import measure_in_subprocess, peak_rss_mb, write_results

REPO = Path(__file__).resolve().parents[1]
MODULE = "benchmarks.cluster"
CACHE = Path(__file__).resolve().parent / ".cache"


def _project(arm: str) -> Path:
    """benchmarks/.cache/cluster-<arm>/: params.yaml and the embedded archive, nothing extracted yet."""
    root = CACHE / f"cluster-{arm}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data/archive").symlink_to(REPO / "data/archive")
    return root


def measure(arm: str, workers: int) -> dict:
    root = _project(arm)
    os.environ["SCOUTLESS_PROJECT_DIR"] = str(root)
    from prefect.testing.utilities import prefect_test_harness

    from scoutless.archive.stages import run_extract
    from scoutless.cluster import client_of, cluster_address
    from scoutless.features.stage import run_features
    from scoutless.flows.stages import train_flow
    from scoutless.params import load_params
    from scoutless.validation.validate import run_validate

    params = load_params()
    settings = params.cluster.model_copy(update={"local_workers": workers})
    seconds, busy, workers_peak, spans = {}, {}, [], {}
    with prefect_test_harness(server_startup_timeout=120):
        started = time.perf_counter()
        with cluster_address("local" if arm == "cluster" else None, settings) as address:
            seconds["cluster start"] = time.perf_counter() - started
            if address:
                with client_of(address) as client:
                    client.get_task_stream()   # the scheduler records task durations from now on
            for stage, run in (("extract", lambda: run_extract(params, progress=False, cluster=address)),
                               ("validate", lambda: run_validate(params)),
                               ("features", lambda: run_features(params, address)),
                               ("train", lambda: train_flow(cluster=address))):
                began, wall = time.perf_counter(), time.time()
                run()
                seconds[stage], spans[stage] = time.perf_counter() - began, (wall, time.time())
            if address:
                with client_of(address) as client:
                    workers_peak = sorted(client.run(peak_rss_mb).values())
                    stream = client.get_task_stream()
                busy = {stage: sum(part["stop"] - part["start"] for task in stream for part in task["startstops"]
                                   if part["action"] == "compute" and lo <= part["start"] < hi)
                        for stage, (lo, hi) in spans.items()}
        seconds["all"] = time.perf_counter() - started
    tasks = json.loads((root / "data/raw/extract_state.json").read_text())["tasks_total"]
    return {"arm": arm, "tasks": tasks, "workers": workers if address else 0, "seconds": seconds, "busy": busy,
            "peak_rss_mb": peak_rss_mb(),
            "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "worker_peak_rss_mb": workers_peak}


def extrapolated(spread: dict, stage: str, workers: int) -> float:
    """The stage's time with `workers` workers: its time outside the measured workers, plus their busy time
    shared by `workers`."""
    busy = spread["busy"].get(stage, 0.0)
    outside = max(0.0, spread["seconds"][stage] - busy / spread["workers"])
    return outside + busy / workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.workers)), flush=True)
        os._exit(0)   # see benchmarks.training: Arrow's reader threads may abort the teardown
    alone = measure_in_subprocess(MODULE, ["--measure", "one-process", "--workers", str(args.workers)])
    spread = measure_in_subprocess(MODULE, ["--measure", "cluster", "--workers", str(args.workers)])
    stages = ["extract", "validate", "features", "train"]
    rows = [f"| {stage} | {alone['seconds'][stage]:.1f} | {spread['seconds'][stage]:.1f} | "
            f"{spread['seconds'][stage] / alone['seconds'][stage]:.2f} | {spread['busy'].get(stage, 0):.1f} | "
            + " | ".join(f"{extrapolated(spread, stage, n):.0f}" for n in (4, 8, 16)) + " |"
            for stage in stages]
    rows.append(f"| all, with the cluster's start | {alone['seconds']['all']:.1f} | {spread['seconds']['all']:.1f} | "
                f"{spread['seconds']['all'] / alone['seconds']['all']:.2f} | | | | |")
    table = "\n".join([
        f"`scoutless run --cluster local` against one process, {alone['tasks']:,} tasks ({os.cpu_count()} cores; "
        f"LocalCluster of {spread['workers']} worker processes, one thread each)", "",
        "| stage | one process (s) | cluster (s) | cluster / one process | workers busy (s) | 4 workers (s) | 8 | 16 |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        f"Cluster start: {spread['seconds']['cluster start']:.1f} s (in `all`). Peak RSS: one process "
        f"{alone['peak_rss_mb']:,.0f} MB, its training processes {alone['children_peak_rss_mb']:,.0f} MB; "
        f"cluster flow process {spread['peak_rss_mb']:,.0f} MB, workers "
        + ", ".join(f"{mb:,.0f}" for mb in spread["worker_peak_rss_mb"]) + " MB.", "",
        "N workers: the stage's time outside the workers stays, the workers' busy time is divided by N (even "
        "parts, a core each; busy time measured with two workers on two cores, so with the cores shared). It says "
        "nothing of the archive's or the storage's limits. Validation runs in the flow's process in both arms.",
    ])
    write_results("cluster", {"one_process": alone, "cluster": spread}, table)
    print(table)


if __name__ == "__main__":
    main()
