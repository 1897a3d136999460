"""Stage entry points of serving: package (register + `bentoml build`), serve, and predict from a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from scoutless.params import Params
from scoutless.paths import resolve, write_json
from serving.registry import register_in_subprocess, use_project_store
from serving.schema import TaskSpec

SERVICE = "serving.service:Scoutless"
HISTORY_DIR_ENV = "SCOUTLESS_HISTORY_DIR"   # the history artifact a served process reloads
# The code (and bentofile.yaml) lives where this package is checked out; data and models live in the
# project folder, which is the same folder in an ordinary checkout but need not be.
CODE_ROOT = Path(__file__).resolve().parents[1]


def _bentoml(args: list[str], params: Params, **kwargs) -> subprocess.CompletedProcess:
    use_project_store(params)
    command = [str(Path(sys.executable).with_name("bentoml")), *args]
    return subprocess.run(command, cwd=CODE_ROOT, env=os.environ.copy(), **kwargs)


def run_package(params: Params) -> dict:
    """Register the promoted models and build the Bento (offline: nothing is locked or downloaded)."""
    tags = register_in_subprocess(params)
    missing = sorted(set(params.targets) - set(tags))
    if missing:
        raise RuntimeError(f"no promoted model for {', '.join(missing)}: run `scoutless select` first")
    built = _bentoml(["build", "--output", "tag", str(CODE_ROOT)], params, capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{built.stdout}\n{built.stderr}")
    bento = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    result = {"bento": bento, "models": tags, "bentoml_home": os.environ["BENTOML_HOME"]}
    write_json(resolve(params.paths.artifacts) / "bento.json", result)
    return result


def run_serve(params: Params, port: int | None = None) -> NoReturn:
    """Serve the project's promoted models on 127.0.0.1 until interrupted. The calling process becomes
    `bentoml serve` (exec): a signal to it reaches the server, which stops its workers, so nothing is left
    running behind it."""
    register_in_subprocess(params)
    port = port or params.serving.port
    os.environ[HISTORY_DIR_ENV] = str(resolve(params.paths.history))
    use_project_store(params)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.chdir(CODE_ROOT)
    os.execv(bentoml, [bentoml, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)])


def read_tasks(path: Path) -> list[TaskSpec]:
    """Tasks from JSON (a list, or {"tasks": [...]}), CSV or Parquet; a bad row names its index and field."""
    if path.suffix == ".json":
        payload = json.loads(path.read_text())
        records = payload["tasks"] if isinstance(payload, dict) else payload
    elif path.suffix == ".csv":
        records = pd.read_csv(path).to_dict(orient="records")
    elif path.suffix == ".parquet":
        records = pd.read_parquet(path).to_dict(orient="records")
    else:
        raise ValueError(f"{path}: expected a .json, .csv or .parquet file of tasks")
    records = [{k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))} for r in records]
    try:
        return TypeAdapter(list[TaskSpec]).validate_python(records)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: task {where}: {first['msg']}") from exc


def run_predict(params: Params, path: Path) -> dict:
    from serving.predictor import Predictor

    tasks = read_tasks(path)  # bad input is reported before any model is loaded
    predictor = Predictor.from_promoted(resolve(params.paths.promoted), list(params.targets),
                                        resolve(params.paths.history))
    return predictor.predict(tasks).model_dump(by_alias=True)
