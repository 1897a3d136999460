"""`scoutless run --cluster local`: the pipeline with its extraction, submission features and training on a Dask
LocalCluster of two worker processes, against the same stages run one after another in this process (as
`dvc repro` runs them). The extraction is cut into many parts (50 tasks per range, two ranges per part) so that
both workers take some, and the parts are joined back in task order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from scoutless.cluster import ClusterError, check_spec
from scoutless.params import TARGETS
from tests.conftest import project_env, write_params
from tests.integration.test_crash_safety import scoutless

pytestmark = pytest.mark.slow

PROJECT = {
    "simulate": {"tasks": 600},
    "extract": {"chunk_tasks": 50},
    "cluster": {"local_workers": 2, "ranges_per_part": 2},
    "train": {"candidates": ["default", "history", "xgboost", "hgb"], "xgboost": {"n_estimators": 60},
              "hgb": {"max_iter": 30}},
    "backtest": {"origins": 1},
    "flows": {"version_with_dvc": False},
}
OUTPUTS = ["data/raw/tasks.parquet", "data/raw/labels.parquet", "data/raw/jobs.parquet", "data/raw/rejected.parquet",
           "data/validated/tasks.parquet", "data/features/features.parquet", "data/features/history.parquet"]


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory) -> Path:
    """A project run through `scoutless run --cluster local`, a real process with its own Prefect server."""
    root = tmp_path_factory.mktemp("cluster")
    write_params(root, **PROJECT)
    done = scoutless(root, "run", "--cluster", "local")
    assert done.returncode == 0, done.stderr[-4000:]
    return root


@pytest.fixture(scope="module")
def in_one_process(on_cluster, tmp_path_factory) -> Path:
    """The same archive and params, each stage run here in turn."""
    root = tmp_path_factory.mktemp("one-process")
    shutil.copy(on_cluster / "params.yaml", root / "params.yaml")
    (root / "data").mkdir()
    shutil.copytree(on_cluster / "data/archive", root / "data/archive")
    with project_env(root):
        from scoutless.archive.stages import run_extract
        from scoutless.features.stage import run_features
        from scoutless.models.train import run_train
        from scoutless.params import load_params
        from scoutless.validation.validate import run_validate

        params = load_params()
        run_extract(params, progress=False)
        run_validate(params)
        run_features(params)
        for target in params.targets:
            run_train(params, target)
    return root


@pytest.mark.parametrize("output", OUTPUTS)
def test_the_cluster_extracts_and_builds_the_same_rows(on_cluster, in_one_process, output):
    spread, alone = pd.read_parquet(on_cluster / output), pd.read_parquet(in_one_process / output)
    assert len(alone) > 0 or output.endswith("rejected.parquet")
    pd.testing.assert_frame_equal(spread, alone, check_exact=True)


def _scores(root: Path, target: str) -> dict[str, dict]:
    """Each candidate's test and validation figures, as `name/figure` -> value (None: nothing to score)."""
    metrics = json.loads((root / "artifacts/metrics" / f"{target}.json").read_text())
    flat = {}
    for name, figures in metrics["candidates"].items():
        for key, value in {**figures, **{f"validation/{k}": v for k, v in figures["validation"].items()}}.items():
            if key not in {"train_seconds", "validation"}:
                flat[f"{name}/{key}"] = value
    return flat


# Each target is trained by one process in both runs, on the same rows, with the trees' threads set alike: the
# figures agree to the last digits (1e-9 relative leaves room for nothing but the printing of floats).
@pytest.mark.parametrize("target", TARGETS)
def test_the_cluster_trains_models_that_score_the_same(on_cluster, in_one_process, target):
    spread, alone = _scores(on_cluster, target), _scores(in_one_process, target)
    assert {key.split("/")[0] for key in alone} == {"default", "history", "xgboost", "hgb"}
    assert isinstance(alone["xgboost/pinball_request"], float)   # the learners scored something
    _assert_same(spread, alone, target)


def _assert_same(scores: dict, expected: dict, target: str) -> None:
    assert scores.keys() == expected.keys(), target
    for key, value in expected.items():
        assert scores[key] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), (target, key)


def test_the_train_flow_in_one_process_trains_what_each_target_alone_does(in_one_process, tmp_path, prefect_harness):
    """Without a cluster the flow trains flows.train_workers targets at once, each in a process of its own: the
    models are those of the stage run by itself (in threads of one process they were not)."""
    root = tmp_path / "flow"
    shutil.copytree(in_one_process, root, symlinks=True, ignore=shutil.ignore_patterns("artifacts"))
    with project_env(root):
        from scoutless.flows.stages import train_flow

        train_flow()
    for target in TARGETS:
        _assert_same(_scores(root, target), _scores(in_one_process, target), target)


def test_the_cluster_run_goes_through_to_the_bento(on_cluster):
    promoted = sorted(path.name for path in (on_cluster / "artifacts/promoted").iterdir() if path.is_dir())
    assert promoted == sorted(TARGETS)
    assert (on_cluster / "reports/drift.json").is_file()
    assert any((on_cluster / ".bentoml/bentos").rglob("bento.yaml"))


@pytest.mark.parametrize(("spec", "says"), [("localhost:8786", "tcp://HOST:PORT"),
                                            ("tcp://10.0.0.1:8786", "PREFECT_API_URL")])
def test_a_cluster_it_cannot_use_is_refused_before_anything_runs(spec, says, monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ClusterError, match=says):
        check_spec(spec)
    write_params(tmp_path)
    done = scoutless(tmp_path, "run", "--cluster", spec)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()
