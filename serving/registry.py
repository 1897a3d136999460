"""The promoted models in BentoML's model store, where the service (and `bentoml build`) finds them.

Each promoted target becomes `scoutless_<target>:<promotion>` with labels (target, candidate, data
window) and its test metrics as metadata; `latest` of every target names the current promotion, so the
service's `:latest` models are one promotion. scoutless keeps the store inside the project
(paths.bentoml_home) unless BENTOML_HOME is set, so that every clone serves its own promoted models.

BentoML fixes its store when it is first imported, so a process that works on several projects (a
Prefect worker, the tests) would register into the first one's store: `register_in_subprocess` runs the
registration in a fresh interpreter (`python -m scoutless.serving.registry`) that sees the project's store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scoutless.models.layout import PromotedSetError, promoted_infos
from scoutless.params import Params
from scoutless.paths import atomic_path, pause_point, resolve, write_json

SERVICE_CONFIG = "serving.json"
WORKERS_ENV = "SCOUTLESS_SERVE_WORKERS"   # serving.workers for `scoutless serve`, read when the service is defined
ACCESS_LOG_ENV = "SCOUTLESS_SERVE_ACCESS_LOG"   # serving.access_log ("true" or "false"), read likewise
REGISTERED_FILE = "scoutless_registered.json"   # in the store: the tags whose registration finished
PROMOTED_SET_EXIT = 5                           # the registration's exit code for a damaged promotion

log = logging.getLogger(__name__)


def use_project_store(params: Params) -> None:
    """Point BentoML at the project's store; call before importing bentoml."""
    os.environ.setdefault("BENTOML_HOME", str(resolve(params.paths.bentoml_home)))


def model_name(target: str) -> str:
    return f"scoutless_{target}"


def register_promoted(params: Params) -> dict[str, str]:
    """Put every model of the current promotion into the model store, as `scoutless_<target>:<promotion>`
    (once); returns target -> tag. Registrations a killed run left unfinished are removed first."""
    use_project_store(params)
    import bentoml

    home = Path(os.environ["BENTOML_HOME"])
    finished = remove_unfinished_registrations(home)
    infos = promoted_infos(resolve(params.paths.promoted))
    tags = {}
    for target in params.targets:
        info = infos.get(target)
        if info is None:
            continue
        folder = resolve(params.paths.promoted) / target
        tag = f"{model_name(target)}:{info['promotion']}"
        if tag not in finished:
            window = info["data_window"]
            labels = {"target": target, "candidate": info["candidate"],
                      "train_start": str(window["train_start"])[:10],
                      "validation_end": str(window["validation_end"])[:10]}
            metrics = {k: v for k, v in info["test_metrics"].items() if isinstance(v, int | float)}
            with bentoml.models.create(tag, labels=labels, metadata={"version": info["version"], **metrics}) as model:
                shutil.copytree(folder, model.path, dirs_exist_ok=True)
                # What the service needs beyond the model: its limits, from params.yaml.
                write_json(Path(model.path) / SERVICE_CONFIG,
                           {**params.serving.model_dump(), "max_corecount": params.validation.max_corecount})
                pause_point(f"register:{target}")
            finished.append(tag)
            write_json(home / REGISTERED_FILE, finished)
        tags[target] = tag
    for tag in tags.values():   # a promotion restored from DVC was registered before: it is latest again
        name, version = tag.split(":")
        _point_latest(home / "models" / name, version)
    return tags


def _point_latest(model_dir: Path, version: str) -> None:
    """Make `version` the one BentoML resolves `<name>:latest` to (its `latest` file, written whole)."""
    with atomic_path(model_dir / "latest") as tmp:
        tmp.write_text(version)


def remove_unfinished_registrations(home: Path) -> list[str]:
    """Remove what a killed registration left in the store: scoutless model folders whose registration never
    finished (REGISTERED_FILE lists those that did; BentoML writes model.yaml before the files), a `latest`
    naming one of them, BentoML's scratch folders. Returns the finished tags, oldest first."""
    registered = home / REGISTERED_FILE
    finished = json.loads(registered.read_text()) if registered.exists() else []
    for folder in sorted((home / "models").glob(f"{model_name('')}*/*")):
        if folder.is_dir() and f"{folder.parent.name}:{folder.name}" not in finished:
            log.warning("removing the unfinished registration %s:%s", folder.parent.name, folder.name)
            shutil.rmtree(folder)
    for name in (home / "models").glob(f"{model_name('')}*"):
        latest = name / "latest"
        if latest.exists() and not (name / latest.read_text().strip()).is_dir():
            versions = [tag.split(":", 1)[1] for tag in finished if tag.split(":", 1)[0] == name.name]
            if versions:
                _point_latest(name, versions[-1])
            else:
                latest.unlink()
    scratch = scratch_dir(home)
    for leftover in scratch.iterdir() if scratch.is_dir() else []:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return finished


def scratch_dir(home: Path) -> Path:
    """Where BentoML's subprocesses make their temporary folders (TMPDIR): inside the project's store, so the
    ones a killed run leaves are found and removed by the next."""
    return home / "tmp"


def bentoml_env(params: Params) -> dict[str, str]:
    """The environment of a BentoML subprocess: the project's store, and its scratch folder as TMPDIR."""
    use_project_store(params)
    scratch = scratch_dir(Path(os.environ["BENTOML_HOME"]))
    scratch.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(scratch)}


def register_in_subprocess(params: Params) -> dict[str, str]:
    """register_promoted in a fresh interpreter, against the project's store; returns target -> tag."""
    done = subprocess.run([sys.executable, "-m", "scoutless.serving.registry"], env=bentoml_env(params),
                          capture_output=True, text=True)
    if done.returncode == PROMOTED_SET_EXIT:
        raise PromotedSetError(done.stderr.strip().splitlines()[-1])
    if done.returncode != 0:
        raise RuntimeError(f"registering the promoted models failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    from scoutless.params import load_params

    try:
        print(json.dumps(register_promoted(load_params())))
    except PromotedSetError as exc:
        print(exc, file=sys.stderr)
        sys.exit(PROMOTED_SET_EXIT)
