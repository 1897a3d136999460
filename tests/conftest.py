"""Shared fixtures: a hand-built PanDA archive (SQLite file or a real PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from scoutless.telemetry import disable_telemetry

disable_telemetry()

POSTGRES_URL_ENV = "SCOUTLESS_TEST_POSTGRES_URL"
MYSQL_URL_ENV = "SCOUTLESS_TEST_MYSQL_URL"
REPO = Path(__file__).resolve().parents[1]


def _server_url(env: str, example: str) -> str:
    """URL of a database server the tests may create databases on. CI must provide it: there a missing
    server is a failure, never a skip."""
    url = os.environ.get(env)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{env} is not set in CI")
        pytest.skip(f"no database server: set {env} (e.g. {example})")
    return url


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
    server = _server_url(POSTGRES_URL_ENV, "postgresql+psycopg://postgres@127.0.0.1/test")
    yield from _fresh_database(server, " WITH (FORCE)")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    server = _server_url(MYSQL_URL_ENV, "mysql+pymysql://root@127.0.0.1:3306/test")
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
    write_params(root, simulate={"tasks": 600}, backtest={"origins": 1})
    with project_env(root):
        from flows.pipeline import pipeline_flow

        pipeline_flow(version=False)
        yield root
