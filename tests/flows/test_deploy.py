"""`scoutless deploy` against a real Prefect server: the deployments exist with the schedules of params.yaml,
and a run triggered through the API is picked up by the served process and completes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port, wait_until_answers

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, dict]]:
    """`prefect server start` on 127.0.0.1 with a database of its own; yields its API URL and an environment."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answers(f"{url}/health", server, "the Prefect server", (tmp_path / "server.log").read_text,
                           interval=1)
        yield url, {**env, "PREFECT_API_URL": url}
    finally:
        _stop(server)
        log.close()


def test_deploy_serves_both_schedules_and_runs_a_triggered_flow(served_project, prefect_server, tmp_path):
    url, env = prefect_server
    project = tmp_path / "project"
    shutil.copytree(served_project, project, symlinks=True)
    env = {**env, "SCOUTLESS_PROJECT_DIR": str(project), "BENTOML_HOME": str(project / ".bentoml")}
    log = (tmp_path / "deploy.log").open("w")
    deploy = subprocess.Popen([str(BIN / "scoutless"), "deploy"], cwd=project, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: url}):
            deployments = _wait_for_deployments(url, deploy, tmp_path / "deploy.log")
            schedules = yaml.safe_load((project / "params.yaml").read_text())["flows"]["schedules"]
            assert deployments["pipeline/nightly-retrain"] == schedules["retrain"]
            assert deployments["drift-check/hourly-drift-check"] == schedules["drift_check"]

            flow_run = run_deployment("drift-check/hourly-drift-check", timeout=600, poll_interval=2)
            assert flow_run.state.is_completed(), (flow_run.state, (tmp_path / "deploy.log").read_text()[-5000:])
            with get_client(sync_client=True) as client:
                subflows = {client.read_flow(r.flow_id).name for r in client.read_flow_runs()
                            if r.parent_task_run_id is not None}
        assert {"extract", "validate", "features", "monitor"} <= subflows
        assert (project / "reports/drift.json").exists()
    finally:
        _stop(deploy)
        log.close()


def _wait_for_deployments(url: str, deploy: subprocess.Popen, log: Path) -> dict[str, str]:
    """Deployment name -> its cron, once both are registered by the served process."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if deploy.poll() is not None:
            pytest.fail(f"scoutless deploy exited ({deploy.returncode}):\n{log.read_text()[-3000:]}")
        found = httpx.post(f"{url}/deployments/filter", json={}, timeout=10).json()
        if len(found) == 2:
            flows = {f["id"]: f["name"] for f in httpx.post(f"{url}/flows/filter", json={}, timeout=10).json()}
            return {f"{flows[d['flow_id']]}/{d['name']}": d["schedules"][0]["schedule"]["cron"] for d in found}
        time.sleep(2)
    pytest.fail(f"the deployments were not created:\n{log.read_text()[-3000:]}")
