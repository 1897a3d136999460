"""The archive's password is used to connect and stored nowhere: not in params, Prefect's database, the
outputs, the reports, dvc.lock or the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from scoutless.params import ARCHIVE_PASSWORD_ENV, ParamsError, load_params
from tests.conftest import tracked_copy
from tests.integration.test_dvc_pipeline import run, status

PLANTED = f"planted-{uuid.uuid4().hex}"   # drawn per session: no file of the checkout holds it


def test_a_password_in_params_yaml_is_refused_naming_where_it_goes(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["archive"]["url"] = f"postgresql+psycopg://panda:{PLANTED}@db.example/panda"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=f"archive.url.*dvc.lock.*{ARCHIVE_PASSWORD_ENV}") as refused:
        load_params()
    assert PLANTED not in str(refused.value)


def test_a_password_given_with_the_url_is_kept_in_the_environment_only(project, monkeypatch):
    from scoutless.archive.stages import archive_url

    # set, then removed: the teardown then restores the variable as it was before, whatever load_params sets
    monkeypatch.setenv(ARCHIVE_PASSWORD_ENV, "before")
    monkeypatch.delenv(ARCHIVE_PASSWORD_ENV)
    params = load_params(archive_url=f"postgresql+psycopg://panda:{PLANTED}@db.example:5432/panda")
    assert params.archive.url == "postgresql+psycopg://panda@db.example:5432/panda"
    assert os.environ[ARCHIVE_PASSWORD_ENV] == PLANTED
    assert archive_url(params).password == PLANTED

    monkeypatch.delenv(ARCHIVE_PASSWORD_ENV)
    assert archive_url(params.model_copy(update={"archive": params.archive.model_copy(
        update={"url": "sqlite:///a.sqlite"})})).password is None   # a file takes no password
    (project / "archive.password").write_text(PLANTED + "\n")
    from_file = params.model_copy(update={"archive": params.archive.model_copy(
        update={"password_file": "archive.password"})})
    assert archive_url(from_file).password == PLANTED


@pytest.mark.slow
def test_the_main_job_on_a_postgresql_archive_ends_green_versioned_and_stores_the_password_nowhere(
        postgres_url, tmp_path):
    """`scoutless run --archive URL-with-password` against an archive laid out as PanDA's DDL (schema
    doma_panda, only the live job table), in a git + DVC copy of the project, with Prefect's database in the
    run's own PREFECT_HOME: the flow's stages are recorded by DVC as they ran, `dvc status` says only that the
    archive is an external source, checked at every run; then every byte the run wrote is searched."""
    project = tracked_copy(tmp_path / "project", tmp_path / "remote", run)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["archive"] |= {"schema": "doma_panda", "job_tables": ["jobsarchived4"]}
    params["train"]["xgboost"]["max_depth"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    url = sa.engine.make_url(postgres_url).set(password=PLANTED)   # the server trusts: any password connects
    with_password = url.render_as_string(hide_password=False)
    prefect_home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SCOUTLESS_", "PREFECT_")) and k != "BENTOML_HOME"}
    env.update(PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               SCOUTLESS_PROJECT_DIR=str(project),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    scoutless = str(Path(sys.executable).with_name("scoutless"))
    simulated = subprocess.run([scoutless, "simulate", "--no-progress"], cwd=project, capture_output=True,
                               text=True, env={**env, "SCOUTLESS_ARCHIVE_URL": with_password})
    assert simulated.returncode == 0, simulated.stderr
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:   # only the live job table, as the DDL has it: every job in it
        conn.execute(sa.text("INSERT INTO doma_panda.jobsarchived4 SELECT * FROM jobsarchived WHERE pandaid NOT IN "
                             "(SELECT pandaid FROM doma_panda.jobsarchived4)"))
        conn.execute(sa.text("DROP TABLE jobsarchived"))
    engine.dispose()

    done = subprocess.run([scoutless, "run", "--archive", with_password], cwd=project, capture_output=True,
                          text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "visible to every user" in done.stderr   # the warning about the command line, without the password

    assert "versioned in dvc.lock and pushed: archive, extract" in done.stdout + done.stderr
    assert status(project) == {"archive": ["always changed"]}
    assert "Cache and remote 'local' are in sync" in run(["dvc", "status", "--cloud"], project)
    state = json.loads((project / "data/archive/state.json").read_text())
    assert state["source"].startswith("postgresql+psycopg://") and state["job_tables"] == ["jobsarchived4"]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["train@ramcount"]["params"]["params.yaml"]["train"]["xgboost"]["max_depth"] == 3
    assert lock["stages"]["extract"]["cmd"] == "scoutless extract --no-progress"

    database = sa.engine.make_url(postgres_url).database.encode()
    written = [path for root in (project, prefect_home) for path in root.rglob("*") if path.is_file()]
    assert any(path.name.startswith("prefect.db") for path in written)     # Prefect's database is searched
    assert any(database in path.read_bytes() for path in written if path.name.startswith("prefect.db"))
    holding = [str(path) for path in written if PLANTED.encode() in path.read_bytes()]
    assert not holding, f"the password is stored in {holding}"
    assert PLANTED not in done.stdout and PLANTED not in done.stderr
