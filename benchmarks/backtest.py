"""The backtest on several simulated worlds whose hidden parameters differ (simulate.world_seed), so that no
modelling choice is judged on one world only.

    python -m benchmarks.backtest [--worlds 1 2 3] [--tasks 20000]

Each world is a project folder of its own (under --root): its archive simulated with the world seed, then
`scoutless extract --full`, `validate`, `features`, `backtest` and `replay`, each a real `scoutless` command.
Writes benchmarks/results/backtest.{json,md}: per world and target, the q90 coverage over the windows (goal
0.87-0.93), the pinball loss against the history baseline's, the share of finished jobs above the request, its
slack over the hindsight limit beside the same rule's on the true labels and on the scouts, and the share of
jobs beyond the walltime JEDI derives; per world and policy, the replay's failed attempts, wasted core-hours,
memory slack, scout wait and reach, and the out-of-memory retry rules compared on one policy's requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import write_results

REPO = Path(__file__).resolve().parents[1]


def run_world(world: int, tasks: int, root: Path) -> dict:
    project = root / f"world-{world}"
    shutil.rmtree(project, ignore_errors=True)   # a world is made anew: the simulator refuses a full archive
    project.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["simulate"] |= {"tasks": tasks, "world_seed": world}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "SCOUTLESS_PROJECT_DIR": str(project)}
    scoutless = str(Path(sys.executable).with_name("scoutless"))
    started = time.perf_counter()
    for step in (["simulate", "--no-progress"], ["extract", "--full", "--no-progress"], ["validate"], ["features"],
                 ["backtest"], ["replay"]):
        done = subprocess.run([scoutless, *step], cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"world {world}: scoutless {' '.join(step)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((project / "artifacts" / "backtest.json").read_text())
    # Per processing type stays in the world's own artifacts/backtest.md; the results keep the windows.
    windows = [{k: v for k, v in w.items() if k != "by_processing_type"} for w in summary.pop("windows")]
    replay = json.loads((project / "reports" / "replay.json").read_text())
    return {"world": world, "tasks": tasks, "seconds": round(time.perf_counter() - started, 1), **summary,
            "windows": windows, "replay": {key: replay.get(key) for key in ("window", "policies", "retries")}}


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(runs: list[dict]) -> str:
    lines = [
        "Backtest on simulated worlds (each row: a world and target over its windows; goals: q90 coverage "
        "0.87-0.93 in every window, ramcount and cputime at most 0.85x history's pinball, none above 1.02x; "
        "the jobs above the request are the served request.policy's choice (quantile: request.max_job_failure; "
        "cost-aware: each task's least expected cost), its slack against the hindsight limit at that share; at "
        "most 2% of jobs beyond the walltime limit JEDI derives from the served cputime and cpuefficiency)",
        "",
        "| world | target | windows | q90 coverage min–max | vs history mean | vs history max | "
        "jobs above the request, worst window | slack vs hindsight, worst | same rule on the true label, worst | "
        "same rule on the scouts, worst | walltime exceeded, worst |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for target, t in run["targets"].items():
            lines.append(f"| {run['world']} | {target} | {t['windows']} | {_f(t['coverage_q90_min'])}–"
                         f"{_f(t['coverage_q90_max'])} | {_f(t['vs_history_mean'], 2)} | "
                         f"{_f(t['vs_history_max'], 2)} | {_f(t['failure_share_max'])} | "
                         f"{_f(t.get('slack_vs_hindsight_max'), 2)} | {_f(t.get('label_rule_vs_hindsight_max'), 2)} | "
                         f"{_f(t.get('scouts_vs_hindsight_max'), 2)} | {_f(t.get('walltime_exceeded_share_max'))} |")
    lines += ["", "Replay of each world's backtest tasks (their finished jobs run again under each policy with JEDI's "
              "retries; goal: model or cost-aware with fewer failed attempts than scouts, no more slack, no scout "
              "wait)", "",
              "| world | policy | tasks | jobs | failed attempts | out of memory | past walltime | wasted core-h | "
              "lost jobs | memory slack core-h | wasted + slack core-h | scout wait h, mean | reach |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for policy, f in run["replay"]["policies"].items():
            lines.append(f"| {run['world']} | {policy} | {f['tasks']} | {f['jobs']} | {f['failed_attempts']} | "
                         f"{f['failed_memory']} | {f['failed_walltime']} | {f['wasted_core_hours']:.0f} | "
                         f"{f['lost_jobs']} | {f['slack_core_hours']:.0f} | {f['lost_core_hours']:.0f} | "
                         f"{f['turnaround_h_mean']:.2f} | "
                         f"{f['reach']:.2f} |")
    lines += ["", "Out of memory: the retry policy's requests replayed with each retry rule (JEDI's ladder, the "
              "vertical pod autoscaler's +20 %, scoutless' advice)", "",
              "| world | policy | retry | out of memory | wasted core-h | lost jobs | memory slack core-h | "
              "wasted + slack core-h |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        retries = run["replay"].get("retries") or {"policy": "—", "rules": {}}
        for rule, f in retries["rules"].items():
            lines.append(f"| {run['world']} | {retries['policy']} | {rule} | {f['failed_memory']} | "
                         f"{f['wasted_core_hours']:.0f} | {f['lost_jobs']} | {f['slack_core_hours']:.0f} | "
                         f"{f['lost_core_hours']:.0f} |")
    lines += ["", "Seconds per world (simulate, extract, validate, features, backtest, replay): "
              + ", ".join(f"world {r['world']} {r['seconds']:.0f} s" for r in runs)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--root", type=Path, default=Path("/var/tmp/scoutless-bench"))
    args = parser.parse_args()
    runs = [run_world(world, args.tasks, args.root) for world in args.worlds]
    text = table(runs)
    write_results("backtest", {"runs": runs}, text)
    print(text)


if __name__ == "__main__":
    main()
