"""The promoted models in BentoML's model store, where the service (and `bentoml build`) finds them.

Each promoted target becomes `scoutless_<target>:<version>` with labels (target, candidate, data
window) and its test metrics as metadata. scoutless keeps the store inside the project
(paths.bentoml_home) unless BENTOML_HOME is set, so that every clone serves its own promoted models.

BentoML fixes its store when it is first imported, so a process that works on several projects (a
Prefect worker, the tests) would register into the first one's store: `register_in_subprocess` runs the
registration in a fresh interpreter (`python -m serving.registry`) that sees the project's store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scoutless.models.layout import read_promotion
from scoutless.params import Params
from scoutless.paths import resolve, write_json

SERVICE_CONFIG = "serving.json"


def use_project_store(params: Params) -> None:
    """Point BentoML at the project's store; call before importing bentoml."""
    os.environ.setdefault("BENTOML_HOME", str(resolve(params.paths.bentoml_home)))


def model_name(target: str) -> str:
    return f"scoutless_{target}"


def register_promoted(params: Params) -> dict[str, str]:
    """Put every promoted target into the model store (once per version); returns target -> tag."""
    use_project_store(params)
    import bentoml

    tags = {}
    for target in params.targets:
        folder = resolve(params.paths.promoted) / target
        info = read_promotion(folder)
        if info is None:
            continue
        tag = f"{model_name(target)}:{info['version'].rsplit('-', 1)[-1]}"
        try:
            bentoml.models.get(tag)
        except bentoml.exceptions.NotFound:
            window = info["data_window"]
            labels = {"target": target, "candidate": info["candidate"],
                      "train_start": str(window["train_start"])[:10],
                      "validation_end": str(window["validation_end"])[:10]}
            metrics = {k: v for k, v in info["test_metrics"].items() if isinstance(v, int | float)}
            with bentoml.models.create(tag, labels=labels, metadata={"version": info["version"], **metrics}) as model:
                shutil.copytree(folder, model.path, dirs_exist_ok=True)
                # What the service needs beyond the model: the batch limit, from params.yaml.
                write_json(Path(model.path) / SERVICE_CONFIG, params.serving.model_dump())
        tags[target] = tag
    return tags


def register_in_subprocess(params: Params) -> dict[str, str]:
    """register_promoted in a fresh interpreter, against the project's store; returns target -> tag."""
    use_project_store(params)
    done = subprocess.run([sys.executable, "-m", "scoutless.serving.registry"], env=os.environ.copy(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"registering the promoted models failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    from scoutless.params import load_params

    print(json.dumps(register_promoted(load_params())))
