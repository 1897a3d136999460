"""Shared fixtures: a hand-built PanDA archive (SQLite file or a real PostgreSQL database)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml

from scoutless.telemetry import disable_telemetry

disable_telemetry()

POSTGRES_URL_ENV = "SCOUTLESS_TEST_POSTGRES_URL"
MYSQL_URL_ENV = "SCOUTLESS_TEST_MYSQL_URL"
REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester", "tests.process_guard"]


DEFAULT_SERVERS = {POSTGRES_URL_ENV: "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                   MYSQL_URL_ENV: "mysql+pymysql://root@127.0.0.1:3306/test"}


def _answers(url: str) -> str | None:
    """None when the server of `url` accepts a connection, else why not."""
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:   # any driver's refusal: the reason is what the skip reports
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@functools.cache
def _server_url_or_reason(env: str) -> tuple[str | None, str]:
    """(the URL of the database server the tests may create databases on, how it was found): the one $env
    names, else the default address when a server answers there; (None, why not) otherwise."""
    if os.environ.get(env):
        return os.environ[env], f"${env}"
    default = DEFAULT_SERVERS[env]
    refused = _answers(default)
    if refused is None:
        return default, "the default address"
    return None, f"nothing answered at {default} ({refused}); start the server there or set {env}"


def _server_url(env: str) -> str:
    """CI must have the server: there a missing one is a failure, never a skip."""
    url, how = _server_url_or_reason(env)
    if url is None:
        if os.environ.get("CI"):
            pytest.fail(f"no database server in CI: {how}")
        pytest.skip(f"no database server: {how}")
    return url


def pytest_report_header(config) -> list[str]:
    lines = []
    for env in DEFAULT_SERVERS:
        url, how = _server_url_or_reason(env)
        backend = sa.engine.make_url(DEFAULT_SERVERS[env]).get_backend_name()
        lines.append(f"{backend} tests: " + (f"{sa.engine.make_url(url).render_as_string()} ({how})" if url
                                             else f"skipped, {how}"))
    return lines


def _fresh_database(server_url: str, drop_suffix: str = "") -> Iterator[str]:
    """A new, empty database on a real server, dropped after the test."""
    name = f"scoutless_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{drop_suffix}"))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    server = _server_url(POSTGRES_URL_ENV)
    yield from _fresh_database(server, " WITH (FORCE)")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    server = _server_url(MYSQL_URL_ENV)
    yield from _fresh_database(server)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder holding a copy of params.yaml, set as the working project."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.setenv("SCOUTLESS_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("SCOUTLESS_ARCHIVE_URL", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for every flow run of the test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@contextmanager
def project_env(root: Path) -> Iterator[Path]:
    """Make `root` the working project (and its BentoML store) until the block ends."""
    saved = {name: os.environ.get(name) for name in ("SCOUTLESS_PROJECT_DIR", "BENTOML_HOME")}
    os.environ["SCOUTLESS_PROJECT_DIR"] = str(root)
    os.environ["BENTOML_HOME"] = str(root / ".bentoml")
    try:
        yield root
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_params(root: Path, **sections) -> None:
    """params.yaml of the repository with some sections' keys replaced (nested dicts are merged)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def merge(base: dict, update: dict) -> None:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(params, sections)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="session")
def served_project(tmp_path_factory, prefect_harness) -> Iterator[Path]:
    """A small project run through the pipeline flow once per session (simulate -> ... -> monitor ->
    package), with a BentoML store of its own: what the selection, service and deployment tests work on."""
    root = tmp_path_factory.mktemp("served")
    write_params(root, simulate={"tasks": 600}, backtest={"origins": 1}, train={"hgb": {"max_iter": 40}})
    with project_env(root):
        from scoutless.flows.pipeline import pipeline_flow

        pipeline_flow(version=False)
        yield root


def tracked_copy(root: Path, remote: Path, run: Callable[[list[str], Path], str]) -> Path:
    """The project's tracked files in `root`, as a fresh git repository with a DVC remote at `remote`, set for
    a small archive (400 tasks, one backtest origin) and three candidates. `run(cmd, cwd)` runs a command and
    fails the test if it fails."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["simulate"]["tasks"] = 400
    params["backtest"]["origins"] = 1
    # what these tests check is the pipeline's machinery, not the models: the quick candidates only
    params["train"]["candidates"] = ["default", "history", "xgboost"]
    params["train"]["xgboost"]["n_estimators"] = 60
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], root)
    run(["dvc", "remote", "add", "--local", "-d", "-f", "local", str(remote)], root)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, what: str, output: Callable[[], str],
                       timeout: float = 120, interval: float = 0.5) -> None:
    """Poll `url` until it answers 200; fail the test, with the tail of `output()`, when `process` ends first
    or `timeout` seconds pass (then its process group, started with start_new_session, is killed first, so that
    reading its output cannot hang)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            pytest.fail(f"{what} ended before it answered at {url}:\n{output()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f"{what} did not answer at {url} within {timeout:.0f} s:\n{output()[-3000:]}")
        time.sleep(interval)
