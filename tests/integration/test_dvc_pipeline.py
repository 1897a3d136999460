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
from tests.conftest import REPO

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
    root = tmp_path_factory.mktemp("project")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["simulate"]["tasks"] = 400
    params["backtest"]["origins"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], root)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "local", str(tmp_path_factory.mktemp("remote"))], root)
    return root


def stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_repro_runs_everything_then_nothing(copy):
    first = run(["dvc", "repro"], copy)
    trains = [f"train@{target}" for target in TARGETS]
    assert stages_run(first) == ["simulate", "extract", "validate", "features", *trains, "select", "backtest",
                                 "monitor", "package"]
    assert (copy / "artifacts/backtest.json").exists()
    assert (copy / "data/features/features.parquet").exists()
    assert (copy / "reports/validation/index.html").exists()
    assert (copy / "artifacts/leaderboard.md").exists()
    assert all((copy / "artifacts/promoted" / target / "promotion.json").exists() for target in TARGETS)
    assert "scoutless:" in (copy / "artifacts/bento.json").read_text()

    second = run(["dvc", "repro"], copy)
    assert stages_run(second) == []
    assert "Data and pipelines are up to date" in run(["dvc", "status"], copy)


def test_a_parameter_change_reruns_only_what_depends_on_it(copy):
    run(["dvc", "repro"], copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["xgboost"]["max_depth"] = 4
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = stages_run(run(["dvc", "repro"], copy))
    assert rerun[: len(TARGETS) + 1] == [*(f"train@{target}" for target in TARGETS), "select"]
    assert set(rerun) <= {*(f"train@{target}" for target in TARGETS), "select", "backtest", "monitor", "package"}


def test_experiments_and_the_local_remote(copy):
    run(["dvc", "repro"], copy)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "params"], copy)
    output = run(["dvc", "exp", "run", "-S", "train.hgb.max_iter=50"], copy)
    assert "Running stage 'train@ramcount'" in output and "Running stage 'features'" not in output

    run(["dvc", "push"], copy)
    shutil.rmtree(copy / ".dvc" / "cache")
    shutil.rmtree(copy / "data")
    run(["dvc", "pull"], copy)
    assert (copy / "data/features/features.parquet").exists()


def test_outputs_written_outside_dvc_are_versioned_like_a_flow_run(copy):
    """What the scheduled flows do after running the stage functions: dvc commit + dvc push."""
    run(["dvc", "repro"], copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["xgboost"]["max_depth"] = 3
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["scoutless", "train", "--target", "ramcount"], copy)       # the stage function, as a flow runs it
    assert "train@ramcount" in run(["dvc", "status"], copy)

    versioned = run([sys.executable, "-c", "import json; from scoutless.versioning import version_outputs; "
                                          "print(json.dumps(version_outputs()))"], copy)
    assert json.loads(versioned.strip().splitlines()[-1]) == {"versioned": True, "pushed": True}
    assert "Data and pipelines are up to date" in run(["dvc", "status"], copy)
    assert "Cache and remote 'local' are in sync" in run(["dvc", "status", "--cloud"], copy)
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    assert lock["stages"]["train@ramcount"]["params"]["params.yaml"]["train"]["xgboost"]["max_depth"] == 3
