"""Stage entry points of serving: package (register + `bentoml build`), serve, and predict from a file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import NoReturn

import pandas as pd
from pydantic import TypeAdapter, ValidationError

from scoutless.params import Params, project_dir
from scoutless.paths import resolve, write_json
from scoutless.serving.registry import (
    ACCESS_LOG_ENV,
    WORKERS_ENV,
    bentoml_env,
    register_in_subprocess,
    use_project_store,
)
from scoutless.serving.schema import TaskSpec, check_limits

SERVICE = "scoutless.serving.service:Scoutless"
HISTORY_DIR_ENV = "SCOUTLESS_HISTORY_DIR"   # the history artifact a served process reloads
# The code, pyproject.toml and bentofile.yaml live in the source checkout; data and models live in the project
# folder, which is the same folder in an ordinary checkout but need not be.
CODE_ROOT = Path(__file__).resolve().parents[1]
WHEELS = CODE_ROOT / "dist"   # bentofile.yaml's python.wheels names the wheel in here


def source_checkout() -> Path:
    """The checkout this package runs from (an editable install): packaging builds from its sources."""
    missing = [name for name in ("pyproject.toml", "bentofile.yaml") if not (CODE_ROOT / name).is_file()]
    if missing:
        raise RuntimeError(f"packaging needs the scoutless source checkout, but {CODE_ROOT} has no "
                           f"{' or '.join(missing)}: install scoutless from a checkout with `pip install -e`")
    return CODE_ROOT


def package_folders(checkout: Path) -> dict[str, str]:
    """Each package of the wheel -> its folder in the checkout (pyproject.toml's setuptools mapping)."""
    setuptools = tomllib.loads((checkout / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {package: setuptools.get("package-dir", {}).get(package, package.replace(".", "/"))
            for package in setuptools["packages"]}


def build_wheel(dest: Path) -> Path:
    """Build the scoutless wheel into `dest` and return its path, offline and without touching the checkout:
    the build runs on a copy of the files the wheel is made of (pyproject.toml's packages and README.md)."""
    checkout = source_checkout()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-", dir=dest) as build:
        source, out = Path(build) / "source", Path(build) / "out"
        for folder in package_folders(checkout).values():
            shutil.copytree(checkout / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(checkout / name, source / name)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--wheel-dir", str(out), str(source)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the scoutless wheel failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        (wheel,) = out.glob("*.whl")
        os.replace(wheel, dest / wheel.name)
    return dest / wheel.name


def _bentoml(args: list[str], params: Params, **kwargs) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("bentoml")), *args]
    return subprocess.run(command, cwd=CODE_ROOT, env=bentoml_env(params), **kwargs)


def run_package(params: Params) -> dict:
    """Register the promoted models and build the Bento (offline: nothing is locked or downloaded)."""
    tags = register_in_subprocess(params)
    missing = sorted(set(params.targets) - set(tags))
    if missing:
        raise RuntimeError(f"no promoted model for {', '.join(missing)}: run `scoutless select` first")
    wheel = build_wheel(WHEELS)
    built = _bentoml(["build", "--output", "tag", str(source_checkout())], params, capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{built.stdout}\n{built.stderr}")
    bento = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    result = {"bento": bento, "wheel": wheel.name, "models": tags, "bentoml_home": os.environ["BENTOML_HOME"]}
    write_json(resolve(params.paths.artifacts) / "bento.json", result)
    return result


def run_serve(params: Params, port: int | None = None) -> NoReturn:
    """Serve the project's promoted models on 127.0.0.1 until interrupted. The calling process becomes
    `bentoml serve` (exec): a signal to it reaches the server, which stops its workers, so nothing is left
    running behind it."""
    register_in_subprocess(params)
    port = port or params.serving.port
    os.environ[HISTORY_DIR_ENV] = str(resolve(params.paths.history))
    os.environ[WORKERS_ENV] = str(params.serving.workers or "cpu_count")
    os.environ[ACCESS_LOG_ENV] = "true" if params.serving.access_log else "false"
    use_project_store(params)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    os.chdir(project_dir())  # the service is imported from the installed package, not from the cwd
    os.execv(bentoml, [bentoml, "serve", SERVICE, "--host", "127.0.0.1", "--port", str(port)])


def _cell(value):
    """A table's cell as JSON would carry it: a column of counts with a gap is float in CSV and Parquet, and
    its whole numbers are counts again (the schema takes no 8.0 for 8)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
    records = [{k: _cell(v) for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))} for r in records]
    try:
        return TypeAdapter(list[TaskSpec]).validate_python(records)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{path}: task {where}: {first['msg']}") from exc


def run_predict(params: Params, path: Path) -> dict:
    from scoutless.serving.predictor import Predictor

    tasks = read_tasks(path)  # bad input is reported before any model is loaded
    check_limits(tasks, params.validation.max_corecount)
    predictor = Predictor.from_promoted(resolve(params.paths.promoted), list(params.targets),
                                        resolve(params.paths.history))
    return predictor.predict(tasks).model_dump(by_alias=True)
