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
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a PostgreSQL server the tests may create databases on. CI must provide it: there a
    missing server is a failure, never a skip."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_URL_ENV} is not set in CI")
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_URL_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1/test)")
    return url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the real server, dropped after the test."""
    name = f"scoutless_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_server_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
