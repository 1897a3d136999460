"""Extraction against real archives: a SQLite file and a real PostgreSQL server (schema doma_panda)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from scoutless.archive import extract as extract_module
from scoutless.archive.layout import OUTPUTS
from scoutless.archive.sources import ArchiveSchemaError
from scoutless.archive.stages import open_source, run_extract
from scoutless.features.build import submission_features
from scoutless.params import ArchiveParams, Params, load_params
from tests.archive_builder import T0, ArchiveBuilder


def params_for(project: Path, url: str, schema: str | None = None, archive_schema: str | None = None,
               raw: Path | None = None, **extract) -> Params:
    params = load_params(project / "params.yaml")
    return params.model_copy(update={
        "archive": ArchiveParams(url=url, schema=schema, archive_schema=archive_schema),
        "extract": params.extract.model_copy(update=extract),
        "paths": params.paths.model_copy(update={
            **{name: project / path for name, path in params.paths.model_dump().items()},
            "raw": raw or project / "raw",
        }),
    })


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def archive(request, project: Path):
    """An empty archive: a SQLite file; a fresh database on the real PostgreSQL server with PanDA's
    schema names (doma_panda for the live tables, doma_pandaarch for the long-term job table); or a fresh
    database on the real MySQL (MariaDB) server."""
    if request.param == "sqlite":
        url, schemas = f"sqlite:///{project / 'panda.sqlite'}", (None, None)
    elif request.param == "postgres":
        url, schemas = request.getfixturevalue("postgres_url"), ("doma_panda", "doma_pandaarch")
    else:
        url, schemas = request.getfixturevalue("mysql_url"), (None, None)
    return ArchiveBuilder(url, *schemas), params_for(project, url, *schemas)


def fill(builder: ArchiveBuilder) -> None:
    """Task 1: two finished 8-core jobs (1000 and 2000 MB/core) and one out-of-memory failure; one
    finished job is in both job tables. Task 2: still running. Task 3: ended, one job."""
    builder.task(1, modified=T0 + timedelta(days=1))
    builder.dataset(1, 10, "input", nfiles=10, nevents=2000)
    builder.dataset(1, 11, "pseudo_input", nfiles=5, nevents=1000)
    builder.dataset(1, 12, "output", nfiles=99, nevents=99)
    first = builder.job(1, maxpss=8 * 1024 * 1000)
    builder.job(1, maxpss=8 * 1024 * 2000, wall_s=8200)
    builder.job(1, table="jobsarchived4", pandaid=first, maxpss=8 * 1024 * 1000)  # being moved
    builder.job(1, jobstatus="failed", piloterrorcode=1212, maxpss=8 * 1024 * 3000)
    builder.task(2, status="running", modified=T0 + timedelta(days=2))
    builder.job(2, table="jobsarchived4")
    builder.task(3, modified=T0 + timedelta(days=3), corecount=1)
    builder.job(3, corecount=1, maxpss=1024 * 500, jobmetrics=None)


def read(params: Params, name: str) -> pd.DataFrame:
    return pd.read_parquet(params.paths.raw / f"{name}.parquet")


def test_extracts_tasks_labels_and_jobs(archive, project):
    builder, params = archive
    fill(builder)
    params = params.model_copy(update={"extract": params.extract.model_copy(update={"chunk_tasks": 2})})

    summary = run_extract(params, progress=False)

    assert (summary.tasks_read, summary.tasks_total, summary.labelled_total) == (3, 3, 2)
    tasks = read(params, "tasks").set_index("jeditaskid")
    assert tasks.loc[1, ["total_nfiles", "total_nevents", "n_input_datasets"]].tolist() == [15, 3000, 2]
    assert tasks.loc[1, "scout_ramcount"] == 2000
    assert tasks.loc[1, "processingtype"] == "simul"
    labels = read(params, "labels").set_index("jeditaskid")
    assert sorted(labels.index) == [1, 3]  # the running task has no label yet
    assert labels.loc[1, "ramcount"] == pytest.approx((1000 + 0.75 * 1000) * 1.10)
    assert labels.loc[1, ["n_finished_jobs", "n_jobs", "n_failed_jobs", "n_oom_failures"]].tolist() == [2, 3, 1, 1]
    assert labels.loc[3, "ramcount"] == pytest.approx(500 * 1.10)
    jobs = read(params, "jobs")
    assert sorted(jobs.loc[jobs.jeditaskid == 1, "ram_mb_per_core"]) == pytest.approx([1000, 2000])
    assert summary.watermark == (T0 + timedelta(days=3)).isoformat()


def test_second_run_reads_only_changed_tasks_and_merges(archive, project):
    builder, params = archive
    fill(builder)
    run_extract(params, progress=False)

    tasks = builder.schema.jedi_tasks
    with builder.engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.jeditaskid == 2).values(
            status="done", modificationtime=T0 + timedelta(days=5)))
    builder.task(4, modified=T0 + timedelta(days=5), corecount=1)
    builder.job(4, corecount=1, maxpss=1024 * 800)
    summary = run_extract(params, progress=False)

    # task 3 sits exactly on the watermark and is read again (harmless: merged by jeditaskid)
    assert summary.incremental and summary.tasks_read == 3
    assert (summary.tasks_total, summary.labelled_total) == (4, 4)
    labels = read(params, "labels").set_index("jeditaskid")
    assert labels.loc[4, "ramcount"] == pytest.approx(800 * 1.10)
    assert read(params, "tasks")["jeditaskid"].is_unique
    assert len(read(params, "jobs")) == 5  # 2 + 1 + 1 + 1: no job counted twice after the merge

    unchanged = run_extract(params, progress=False)
    assert unchanged.tasks_read == 2 and unchanged.tasks_total == 4


def test_outputs_of_another_layout_are_extracted_again_in_full_not_merged(archive, project):
    """An extraction by a scoutless whose outputs had other columns is not merged into (the rows of two layouts
    would not fit one file): the next run reads the archive in full."""
    from scoutless.archive.layout import LAYOUT, STATE_FILE

    builder, params = archive
    fill(builder)
    run_extract(params, progress=False)
    state_path = params.paths.raw / STATE_FILE
    state = json.loads(state_path.read_text())
    assert state["layout"] == LAYOUT
    jobs_path = params.paths.raw / "jobs.parquet"
    read(params, "jobs").drop(columns=["starttime", "endtime"]).to_parquet(jobs_path)   # as layout 1 wrote them
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k != "layout"}))

    summary = run_extract(params, progress=False)
    assert not summary.incremental and summary.tasks_read == 3
    jobs = read(params, "jobs")
    assert {"starttime", "endtime"} <= set(jobs.columns) and jobs["starttime"].notna().all()


def test_unreadable_rows_are_kept_aside_with_the_reason(project):
    builder = ArchiveBuilder(f"sqlite:///{project / 'junk.sqlite'}")
    fill(builder)
    builder.job(3, maxpss="lots", pandaid=900)  # SQLite keeps whatever it is given
    builder.task(5)
    builder.execute("UPDATE jedi_tasks SET creationdate = 'yesterday' WHERE jeditaskid = 5")
    params = params_for(project, str(builder.engine.url))

    summary = run_extract(params, progress=False)

    rejected = read(params, "rejected").set_index("pandaid", drop=False)
    assert summary.rejected_read == 2
    assert "maxpss: unreadable value 'lots'" in rejected.loc[900, "reason"]
    task_row = rejected[rejected.source_table == "jedi_tasks"].iloc[0]
    assert task_row["jeditaskid"] == 5 and "creationdate" in task_row["reason"]
    assert json.loads(task_row["row"])["creationdate"] == "yesterday"
    assert 5 not in set(read(params, "tasks")["jeditaskid"])


def _outputs(params: Params) -> dict[str, pd.DataFrame]:
    return {name: read(params, name) for name in OUTPUTS}


def test_sqlite_read_into_arrow_gives_the_row_by_row_outputs(project, monkeypatch):
    """A simulated archive, with a float among integers and text after NULLs added to its job table: the
    statements ADBC can type are read into Arrow, the others row by row, and every output equals that of an
    extraction read wholly row by row."""
    from scoutless.archive import sources
    from scoutless.simulator.stage import run_simulate

    url = f"sqlite:///{project / 'a.sqlite'}"
    params = params_for(project, url, chunk_tasks=100)
    run_simulate(params.model_copy(update={"simulate": params.simulate.model_copy(update={"tasks": 300})}),
                 progress=False)
    engine = sa.create_engine(url)
    with engine.begin() as conn:   # in the first chunk: ADBC types a column by its first rows (1,024 or so)
        first_chunk = conn.execute(sa.text("SELECT jeditaskid FROM jedi_tasks ORDER BY jeditaskid LIMIT 100"))
        last = list(first_chunk.scalars())[-1]
        conn.execute(sa.text("UPDATE jobsarchived SET computingsite = NULL WHERE jeditaskid < :t"), {"t": last})
        conn.execute(sa.text("UPDATE jobsarchived SET maxpss = maxpss + 0.5 WHERE pandaid = "
                             "(SELECT max(pandaid) FROM jobsarchived WHERE jeditaskid = :t)"), {"t": last})
        assert conn.execute(sa.text("SELECT count(*) FROM jobsarchived WHERE jeditaskid < :t"),
                            {"t": last}).scalar_one() > 2000
    engine.dispose()

    arrow_read, saw = sources._sqlite_arrow_frame, []
    monkeypatch.setattr(sources, "_sqlite_arrow_frame",
                        lambda conn, stmt: saw.append(arrow_read(conn, stmt)) or saw[-1])
    run_extract(params, progress=False)
    read_into_arrow = _outputs(params)
    monkeypatch.setattr(sources, "_sqlite_arrow_frame", lambda conn, stmt: None)
    rows = params_for(project, url, raw=project / "rows", chunk_tasks=100)
    run_extract(rows, progress=False)

    assert any(frame is None for frame in saw) and sum(frame is not None for frame in saw) > len(saw) / 2
    for name, frame in _outputs(rows).items():
        pd.testing.assert_frame_equal(read_into_arrow[name], frame, check_exact=False, rtol=1e-9, obj=name)
    assert len(read_into_arrow["labels"]) > 200


def test_missing_table_is_named(project):
    url = f"sqlite:///{project / 'partial.sqlite'}"
    builder = ArchiveBuilder(url)
    builder.execute("DROP TABLE jedi_datasets")
    with pytest.raises(ArchiveSchemaError, match="no table jedi_datasets"):
        run_extract(params_for(project, url), progress=False)


def test_missing_column_is_named(project):
    url = f"sqlite:///{project / 'partial.sqlite'}"
    builder = ArchiveBuilder(url)
    builder.execute("ALTER TABLE jedi_tasks DROP COLUMN transhome")
    with pytest.raises(ArchiveSchemaError, match="jedi_tasks lacks column.*transhome"):
        run_extract(params_for(project, url), progress=False)


def test_features_take_the_values_a_task_was_submitted_with(archive, project):
    """Task 1's row was changed after submission (other cores, efficiency, base walltime and memory): its
    parameter map in jedi_taskparams keeps what it was submitted with, and that is what features and the
    job measurements use; task 3 has no map and keeps its row's values."""
    builder, params = archive
    fill(builder)
    builder.task_params(1, taskName="t1", coreCount=8, cpuEfficiency=80, baseWalltime=300, baseRamCount=1000)
    tasks = builder.schema.jedi_tasks
    with builder.engine.begin() as conn:
        conn.execute(tasks.update().where(tasks.c.jeditaskid == 1).values(
            corecount=4, cpuefficiency=95, basewalltime=900, baseramcount=0))

    run_extract(params, progress=False)

    raw = read(params, "tasks").set_index("jeditaskid")
    assert raw.loc[1, "corecount"] == 4                       # the row as it is now, kept as it is
    features = submission_features(raw)
    assert features.loc[1, ["corecount", "preset_cpuefficiency", "basewalltime", "baseramcount"]].tolist() == [
        8, 80, 300, 1000]
    assert features.loc[3, "corecount"] == 1 and features.loc[3, "preset_cpuefficiency"] == 90
    jobs = read(params, "jobs")
    assert jobs.loc[jobs.jeditaskid == 1, "ram_mb_per_core"].tolist() == pytest.approx([1000 - 1000 / 8,
                                                                                      2000 - 1000 / 8])


NEVER_USED = {"jedi_tasks": ("site", "nucleus", "resource_type", "splitrule", "diskio"),
              "jobs": ("piloterrorcode", "computingsite")}


def test_an_archive_without_the_columns_nothing_needs_is_extracted(archive, project):
    builder, params = archive
    fill(builder)
    tables = [builder.schema.jedi_tasks, *(builder.schema.job_table(name) for name in params.archive.job_tables)]
    for table in tables:
        for column in NEVER_USED["jedi_tasks" if table.name == "jedi_tasks" else "jobs"]:
            builder.execute(f"ALTER TABLE {table.fullname} DROP COLUMN {column}")

    summary = run_extract(params, progress=False)

    # reported once, per table; read as NULL; the labels are those of the whole archive
    assert summary.absent_columns == {table.fullname: sorted(NEVER_USED["jedi_tasks" if table.name == "jedi_tasks"
                                                                      else "jobs"]) for table in tables}
    assert read(params, "tasks")["nucleus"].isna().all()
    labels = read(params, "labels").set_index("jeditaskid")
    assert labels.loc[1, "ramcount"] == pytest.approx((1000 + 0.75 * 1000) * 1.10)
    assert labels.loc[1, "n_oom_failures"] == 0          # no pilot error codes to tell


def test_every_missing_table_and_column_is_named_at_once(project):
    url = f"sqlite:///{project / 'partial.sqlite'}"
    builder = ArchiveBuilder(url)
    builder.execute("DROP TABLE jobsarchived")
    builder.execute("ALTER TABLE jedi_tasks DROP COLUMN transhome")
    builder.execute("ALTER TABLE jobsarchived4 DROP COLUMN maxpss")
    with pytest.raises(ArchiveSchemaError) as raised:
        run_extract(params_for(project, url), progress=False)
    message = str(raised.value)
    assert "jedi_tasks lacks column(s) transhome" in message and "jobsarchived4 lacks column(s) maxpss" in message
    assert "no table jobsarchived (set archive.job_tables in params.yaml" in message


def test_a_crash_mid_run_leaves_the_previous_outputs(project, monkeypatch):
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    params = params_for(project, str(builder.engine.url), chunk_tasks=1)
    run_extract(params, progress=False)
    before = {p.name: p.read_bytes() for p in (project / "raw").iterdir()}

    calls = []

    def failing_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real_chunk(*args, **kwargs)

    real_chunk = extract_module.extract_chunk
    monkeypatch.setattr(extract_module, "extract_chunk", failing_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        run_extract(params, full=True, progress=False)

    after = {p.name: p.read_bytes() for p in (project / "raw").iterdir()}
    assert after == before  # same files, same bytes, no temporary left behind


def test_connection_errors_are_retried(project, monkeypatch):
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    params = params_for(project, str(builder.engine.url), retry_wait_seconds=0)
    source = open_source(params)
    real_tasks, failures = source.tasks, []

    def flaky_tasks(*args):
        if not failures:
            failures.append(1)
            raise sa.exc.OperationalError("SELECT", {}, ConnectionResetError("server closed the connection"))
        return real_tasks(*args)

    monkeypatch.setattr(source, "tasks", flaky_tasks)
    summary = extract_module.extract(params, source, project / "raw", progress=False)
    assert failures and summary.tasks_total == 3


def test_only_failures_of_the_connection_are_retried(project):
    import psycopg
    import pymysql

    engine = sa.create_engine(f"sqlite:///{project / 'a.sqlite'}")
    with pytest.raises(sa.exc.OperationalError) as no_table, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM jedi_tasks"))
    assert not extract_module.connection_lost(no_table.value)  # an SQL error, though SQLite calls it operational
    lost = [
        sa.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked")),
        psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"),
        pymysql.err.InterfaceError(0, ""),
    ]
    not_lost = [
        psycopg.errors.UndefinedColumn('column "maxpss" does not exist'),
        pymysql.err.OperationalError(1045, "Access denied for user"),
        pymysql.err.ProgrammingError(1146, "Table 'test.jedi_tasks' doesn't exist"),
        ValueError("not a driver error"),
    ]
    assert [extract_module.connection_lost(exc) for exc in lost] == [True] * len(lost)
    assert [extract_module.connection_lost(exc) for exc in not_lost] == [False] * len(not_lost)


def test_an_extraction_survives_terminated_backends_with_the_same_output(postgres_url, project, caplog):
    """pg_terminate_backend on the extraction's backend while it streams a COPY, twice: the reads are retried
    from the chunk that failed and the outputs equal those of an uncut run."""
    from scoutless.simulator.stage import run_simulate

    params = params_for(project, postgres_url, chunk_tasks=20, retry_wait_seconds=0)
    run_simulate(params.model_copy(update={"simulate": params.simulate.model_copy(update={"tasks": 600})}),
                 progress=False)
    clean = params_for(project, postgres_url, raw=project / "clean", chunk_tasks=20)
    run_extract(clean, progress=False)

    terminated, done = [], threading.Event()

    def terminate_two_copies() -> None:
        """Hold a lock on the job table, so that the extraction's next COPY of it waits inside the statement,
        and terminate that backend there; twice. Each cut lands mid-COPY, whatever the timing."""
        watcher = sa.create_engine(postgres_url)
        with watcher.connect() as conn:
            while len(terminated) < 2 and not done.is_set():
                with conn.begin():
                    conn.execute(sa.text("LOCK TABLE jobsarchived4 IN ACCESS EXCLUSIVE MODE"))
                    while not done.is_set():
                        conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))  # else one view per transaction
                        pid = conn.execute(sa.text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query LIKE 'COPY (%'")).scalar()
                        if pid:
                            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                            terminated.append(pid)
                            break
                        time.sleep(0.01)
        watcher.dispose()

    cutter = threading.Thread(target=terminate_two_copies)
    caplog.set_level(logging.WARNING, logger="scoutless.archive.extract")
    cutter.start()
    try:
        run_extract(params, progress=False)
    finally:
        done.set()
        cutter.join()
    assert len(terminated) == 2
    retries = [r.getMessage() for r in caplog.records if "archive read failed" in r.getMessage()]
    assert len(retries) == 2 and all("AdminShutdown" in line for line in retries), retries
    for name in ("tasks", "labels", "jobs", "rejected"):
        pd.testing.assert_frame_equal(read(params, name), read(clean, name))


def test_bigpanda_json_dump_gives_the_same_labels(project):
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    sql_params = params_for(project, str(builder.engine.url), raw=project / "from_sql")
    run_extract(sql_params, progress=False)

    with builder.engine.connect() as conn:
        tasks = [dict(r._mapping) for r in conn.execute(sa.select(builder.schema.jedi_tasks))]
        datasets = [dict(r._mapping) for r in conn.execute(sa.select(builder.schema.jedi_datasets))]
        jobs = [dict(r._mapping) for name in ("jobsarchived4", "jobsarchived")
                for r in conn.execute(sa.select(builder.schema.job_table(name)))]
    for task in tasks:
        task["datasets"] = [d for d in datasets if d["jeditaskid"] == task["jeditaskid"]]
    tasks.append({"taskname": "no id", "modificationtime": str(T0)})
    (project / "tasks.json").write_text(json.dumps(tasks, default=str))
    (project / "jobs.json").write_text(json.dumps(jobs, default=str))

    json_params = params_for(project, str(project / "tasks.json"), raw=project / "from_json")
    summary = run_extract(json_params, jobs_json=project / "jobs.json", progress=False)

    assert summary.rejected_read == 1  # the task without an id, kept aside
    pd.testing.assert_frame_equal(read(json_params, "labels"), read(sql_params, "labels"), check_dtype=False)


@pytest.mark.parametrize("task_params", [True, False], ids=["with jedi_taskparams", "without"])
def test_every_statement_compiles_for_oracle(task_params):
    """No Oracle server here: every statement extraction sends, with PanDA's Oracle schemas and with the
    optional columns read as NULL, compiles for the Oracle dialect."""
    from datetime import datetime

    from scoutless.archive.schema import panda_schema
    from scoutless.archive.sources import OPTIONAL_COLUMNS, SqlSource

    schema = panda_schema("ATLAS_PANDA", "ATLAS_PANDAARCH")
    engine = sa.create_mock_engine("oracle://", lambda *args, **kwargs: None)
    source = SqlSource(engine, schema, ("jobsarchived4", "jobsarchived"), task_params=task_params,
                       absent={schema.jedi_tasks.fullname: OPTIONAL_COLUMNS["jedi_tasks"],
                               schema.jobsarchived.fullname: OPTIONAL_COLUMNS["jobs"]})
    statements = source.statements(20_000_000, 20_001_000, datetime(2025, 1, 1))
    assert set(statements) == {"fingerprint", "changed", "tasks", "jobs from jobsarchived4", "jobs from jobsarchived"}
    for name, statement in statements.items():
        sql = str(statement.compile(dialect=engine.dialect))
        assert '"ATLAS_PANDA".jedi_tasks' in sql, name
    tasks_sql = str(statements["tasks"].compile(dialect=engine.dialect))
    assert ("jedi_taskparams" in tasks_sql) == task_params and "CAST(NULL AS VARCHAR" in tasks_sql
    assert '"ATLAS_PANDAARCH".jobsarchived' in str(statements["jobs from jobsarchived"].compile(dialect=engine.dialect))
