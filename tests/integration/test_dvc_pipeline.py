"""`dvc repro` in a temporary copy of the project: a full run, a no-op second run, a parameter change
that re-runs only what depends on it, `dvc exp run -S`, and push/pull through a local remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scoutless.params import TARGETS
from tests.conftest import tracked_copy

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUTLESS_") and k != "BENTOML_HOME"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The tracked files of the project, as a fresh git repository, with a small archive."""
    return tracked_copy(tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("remote"), run)


def status(root: Path) -> dict[str, list[str]]:
    """`dvc status` as {stage: what changed}."""
    out, stage = {}, None
    for line in run(["dvc", "status"], root).splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            stage = line[:-1]
            out[stage] = []
        elif line.strip() and stage is not None:
            out[stage].append(line.strip())
    return out


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_repro_runs_everything_then_nothing(copy):
    first = run(["dvc", "repro"], copy)
    trains = [f"train@{target}" for target in TARGETS]
    assert stages_run(first) == ["archive", "extract", "validate", "features", *trains, "select", "history",
                                 "backtest", "replay", "monitor", "package"]
    assert (copy / "artifacts/backtest.json").exists()
    assert (copy / "reports/replay.json").exists() and (copy / "reports/replay/index.html").exists()
    assert (copy / "data/features/features.parquet").exists()
    assert (copy / "reports/validation/index.html").exists()
    assert (copy / "artifacts/leaderboard.md").exists()
    assert all((copy / "artifacts/promoted" / target / "promotion.json").exists() for target in TARGETS)
    bento = json.loads((copy / "artifacts/bento.json").read_text())
    name, tag = bento["bento"].split(":")
    built = Path(bento["bentoml_home"]) / "bentos" / name / tag
    assert (built / "env/python/wheels" / bento["wheel"]).is_file()  # the code, as the scoutless wheel
    assert not list((built / "src").rglob("*.py"))                    # and nowhere else

    # the archive is checked again (an external source could have changed); it did not, so nothing else runs
    second = run(["dvc", "repro"], copy)
    assert stages_run(second) == ["archive"]
    assert status(copy) == {"archive": ["always changed"]}


def test_a_parameter_change_reruns_only_what_depends_on_it(copy):
    """A replay setting reruns the replay alone; the experiment below shows a training setting rerunning the
    training fan-out and not the features."""
    run(["dvc", "repro"], copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["replay"]["max_attempts"] += 1
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = [stage for stage in stages_run(run(["dvc", "repro"], copy)) if stage != "archive"]  # checked each run
    assert rerun == ["replay"]


def test_experiments_and_the_local_remote(copy):
    run(["dvc", "repro"], copy)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "params"], copy)
    output = run(["dvc", "exp", "run", "-S", "train.xgboost.n_estimators=40"], copy)
    assert "Running stage 'train@ramcount'" in output and "Running stage 'features'" not in output

    run(["dvc", "push"], copy)
    shutil.rmtree(copy / ".dvc" / "cache")
    shutil.rmtree(copy / "data")
    run(["dvc", "pull"], copy)
    assert (copy / "data/features/features.parquet").exists()
