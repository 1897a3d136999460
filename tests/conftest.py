"""Shared fixtures: a hand-built PanDA archive (SQLite file or a real PostgreSQL database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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
def served_project(tmp_path_factory) -> Iterator[Path]:
    """A small project run through the whole pipeline once per session (simulate -> ... -> package), with
    a BentoML store of its own: what the selection and service tests work on."""
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
