"""A small project run through the whole pipeline once per session: its promoted models, registered in
a BentoML store of its own, are what the service tests serve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="session")
def served_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("served")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["simulate"]["tasks"] = 600
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    saved = {name: os.environ.get(name) for name in ("SCOUTLESS_PROJECT_DIR", "BENTOML_HOME")}
    os.environ["SCOUTLESS_PROJECT_DIR"] = str(root)
    os.environ["BENTOML_HOME"] = str(root / ".bentoml")
    from scoutless.params import load_params
    from scoutless.pipeline import run_pipeline

    run_pipeline(load_params(), progress=False)
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
