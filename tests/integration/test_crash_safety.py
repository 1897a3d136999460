"""A stage killed (SIGKILL) at the steps where a crash would hurt most: the previous outputs stay whole, the
next run removes the leftovers, and the service starts and serves one promotion.

The stage runs as a real `scoutless` process; $SCOUTLESS_TEST_PAUSE_AT makes it stop at the named step
(scoutless.paths.pause_point) and the test kills its whole process group there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from scoutless.paths import PAUSE_ENV, PAUSED_FILE
from tests.archive_builder import ArchiveBuilder
from tests.conftest import REPO, free_port, wait_until_answers, write_params
from tests.integration.test_extract import fill

pytestmark = pytest.mark.slow
SCOUTLESS = str(Path(sys.executable).with_name("scoutless"))


def environment(project: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {PAUSE_ENV, "SCOUTLESS_ARCHIVE_URL"}}
    return {**env, "SCOUTLESS_PROJECT_DIR": str(project), "BENTOML_HOME": str(project / ".bentoml"), **extra}


def scoutless(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SCOUTLESS, *args], cwd=project, env=environment(project), capture_output=True,
                          text=True, timeout=900)


def kill_at(project: Path, step: str, *args: str) -> None:
    """Run `scoutless <args>` until it pauses at `step`, then kill it and every process it started."""
    marker = project / PAUSED_FILE
    marker.unlink(missing_ok=True)
    process = subprocess.Popen([SCOUTLESS, *args], cwd=project, env=environment(project, **{PAUSE_ENV: step}),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    while not (marker.exists() and marker.read_text() == step):
        if process.poll() is not None:
            pytest.fail(f"scoutless {' '.join(args)} ended ({process.returncode}) before {step}: "
                        f"{process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"scoutless {' '.join(args)} did not reach {step}")
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    marker.unlink()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != PAUSED_FILE)


def test_a_killed_extraction_leaves_the_previous_one_whole(project):
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    write_params(project, archive={"url": str(builder.engine.url)})
    assert scoutless(project, "extract", "--no-progress").returncode == 0
    raw = project / "data" / "raw"
    before = snapshot(raw)

    kill_at(project, "replace:raw", "extract", "--full", "--no-progress")
    assert snapshot(raw) == before                       # the extraction before, not a mix
    assert leftovers(raw.parent)                         # the killed run's next data/raw, half swapped in
    assert scoutless(project, "validate").returncode == 0

    assert scoutless(project, "extract", "--full", "--no-progress").returncode == 0
    assert leftovers(raw.parent) == []                   # removed by the next run
    state = json.loads((raw / "extract_state.json").read_text())
    assert state["extraction"] != json.loads(before["extract_state.json"])["extraction"]


def test_validation_refuses_a_mix_of_two_extractions(project):
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    write_params(project, archive={"url": str(builder.engine.url)})
    raw = project / "data" / "raw"
    assert scoutless(project, "extract", "--no-progress").returncode == 0
    older = raw.parent / "older"
    shutil.copytree(raw, older)
    assert scoutless(project, "extract", "--full", "--no-progress").returncode == 0
    shutil.copy2(older / "labels.parquet", raw / "labels.parquet")   # a mix, as two interleaved writers leave

    validated = scoutless(project, "validate")
    assert validated.returncode == 3
    assert "mixes extractions" in validated.stderr and "labels.parquet by" in validated.stderr


@pytest.fixture(scope="module")
def trained(served_project, tmp_path_factory) -> Path:
    """A copy of the session's trained project (its archive, outputs and BentoML store) to kill stages in."""
    root = tmp_path_factory.mktemp("killed") / "project"
    shutil.copytree(served_project, root, symlinks=True)
    return root


def served_promotion(project: Path) -> dict:
    """Start `scoutless serve` on the project, ask it once, stop it; its /metadata and one prediction."""
    port = free_port()
    process = subprocess.Popen([SCOUTLESS, "serve", "--port", str(port)], cwd=project, env=environment(project),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/readyz", process, "scoutless serve", lambda: process.stdout.read().decode())
        metadata = httpx.get(f"{url}/metadata", follow_redirects=True, timeout=10).json()
        task = json.loads((REPO / "examples" / "task.json").read_text())
        answer = httpx.post(f"{url}/predict", json=task, timeout=30)
        assert answer.status_code == 200, answer.text
        return {"metadata": metadata, "prediction": answer.json()["predictions"][0]}
    finally:
        process.terminate()
        process.wait(timeout=60)


def promotion_on_disk(project: Path) -> str:
    return json.loads((project / "artifacts" / "promoted" / "promotion_set.json").read_text())["promotion"]


def test_a_killed_promotion_leaves_the_previous_one_whole_and_the_gate_intact(trained):
    promoted = trained / "artifacts" / "promoted"
    before, promotion = snapshot(promoted), promotion_on_disk(trained)

    kill_at(trained, "replace:promoted", "select")
    assert snapshot(promoted) == before
    predicted = scoutless(trained, "predict", str(REPO / "examples" / "task.json"))
    assert predicted.returncode == 0, predicted.stderr
    assert all(value is not None for value in json.loads(predicted.stdout)["predictions"][0].values())

    assert scoutless(trained, "select").returncode == 0
    assert promotion_on_disk(trained) != promotion
    assert leftovers(promoted.parent) == []

    # A promotion with a folder gone by hand stops the stage, naming it; it does not promote past the gate.
    aside = trained / "ramcount-aside"
    (promoted / "ramcount").rename(aside)
    try:
        refused = scoutless(trained, "select")
        assert refused.returncode == 5 and "lacks ramcount" in refused.stderr
        assert not (promoted / "ramcount").exists()
    finally:
        aside.rename(promoted / "ramcount")


def test_a_killed_registration_leaves_a_service_that_serves_one_promotion(trained):
    assert scoutless(trained, "select").returncode == 0   # a promotion not registered yet
    promotion = promotion_on_disk(trained)
    store = trained / ".bentoml" / "models"
    kill_at(trained, "register:cputime", "package")
    # What the kill left: ramcount registered for this promotion, cputime not; and, as a kill inside BentoML's
    # copy into the store leaves it, a cputime folder without its files.
    assert (store / "scoutless_ramcount" / "latest").read_text() == promotion
    assert (store / "scoutless_cputime" / "latest").read_text() != promotion
    (store / "scoutless_cputime" / promotion).mkdir()
    assert list((trained / ".bentoml" / "tmp").iterdir())           # BentoML's scratch copy of the model

    served = served_promotion(trained)
    assert served["metadata"]["promotion"] == promotion
    assert {t["version"] for t in served["metadata"]["targets"].values()} == {
        json.loads((trained / "artifacts/promoted" / t / "promotion.json").read_text())["version"]
        for t in served["metadata"]["targets"]}
    assert all(served["prediction"][target] is not None for target in served["metadata"]["targets"])
    assert (store / "scoutless_cputime" / promotion / "model.yaml").exists()   # registered whole this time
    assert not (trained / ".bentoml" / "tmp").exists() or not list((trained / ".bentoml" / "tmp").iterdir())
    listed = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "models", "list"],
                            env=environment(trained), capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr


def test_the_service_refuses_models_of_two_promotions(trained):
    from scoutless.models.layout import PromotedSetError
    from scoutless.serving.predictor import Predictor

    promoted = trained / "artifacts" / "promoted"
    folders = [promoted / target for target in ("ramcount", "cputime")]
    stray = trained / "stray" / "cputime"
    shutil.copytree(folders[1], stray)
    info = json.loads((stray / "promotion.json").read_text())
    (stray / "promotion.json").write_text(json.dumps({**info, "promotion": "an-older-one"}))
    with pytest.raises(PromotedSetError, match="not one promotion .*cputime from an-older-one"):
        Predictor.from_folders([folders[0], stray])
    assert pd.notna(Predictor.from_folders(folders).models[0].info["promotion"])
