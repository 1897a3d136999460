"""Where extraction reads from: a PanDA database (any SQLAlchemy URL) or a bigpanda JSON dump.

Both sources answer the same three questions, so extraction has one code path:
- which tasks changed since a watermark (as ranges of jeditaskid, `chunk` tasks each),
- those tasks' rows with the sums over their input datasets and their parameter maps as submitted
  (jedi_taskparams, when the archive has it),
- those tasks' jobs, with the task presets the JEDI formulas need.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import case, func, select

from scoutless.archive.jedi_formulas import JOB_COLUMNS, TASK_PRESET_COLUMNS
from scoutless.archive.schema import JOB_TABLES, PandaSchema

log = logging.getLogger(__name__)

# Task columns extracted: what is known at submission, the task's bookkeeping, and the resource
# values with their units (the presets, or what the scouts set).
TASK_COLUMNS = (
    "jeditaskid", "taskname", "status", "username", "creationdate", "modificationtime", "starttime",
    "endtime", "prodsourcelabel", "workinggroup", "vo", "corecount", "tasktype", "processingtype",
    "transuses", "transhome", "transpath", "architecture", "campaign", "gshare", "site", "cloud",
    "nucleus", "resource_type", "framework", "attemptnr", "parent_tid", "reqid", "splitrule",
    "ramcount", "ramunit", "baseramcount", "cputime", "cputimeunit", "cpuefficiency", "walltime",
    "walltimeunit", "basewalltime", "iointensity", "iointensityunit", "diskio", "diskiounit",
    "outdiskcount", "outdiskunit", "workdiskcount", "workdiskunit",
)
DATASET_COLUMNS = ("jeditaskid", "datasetid", "type", "nfiles", "nevents")
# Job columns beyond the formulas' own: status and the memory request, to count failures.
EXTRA_JOB_COLUMNS = ("jobstatus", "minramcount", "piloterrorcode")
# Columns extracted that no feature, label or check needs: read where the archive has them, NULL where it
# does not (a real archive need not carry them). Every other column extracted is required.
OPTIONAL_COLUMNS = {
    "jedi_tasks": frozenset({"vo", "architecture", "site", "cloud", "nucleus", "resource_type", "parent_tid",
                             "reqid", "splitrule", "walltime", "walltimeunit", "diskio", "diskiounit"}),
    "jedi_datasets": frozenset({"datasetid"}),
    "jobs": frozenset({"minramcount", "piloterrorcode", "computingsite", "attemptnr", "totrbytes", "totwbytes"}),
}
INPUT_DATASET_TYPES = ("input", "pseudo_input")
# Per-task sums over input datasets; n_bad_input_datasets counts rows with negative counts, which
# would otherwise hide inside a sum.
INPUT_SUM_COLUMNS = ("total_nfiles", "total_nevents", "n_input_datasets", "n_bad_input_datasets")


class ArchiveSchemaError(LookupError):
    """The archive lacks a table or column extraction needs."""


class Source(Protocol):
    def describe(self) -> str: ...
    def check(self) -> dict[str, list[str]]:
        """Fail naming every missing table and required column at once; return the optional columns the
        source lacks (read as NULL), per table."""
        ...
    def fingerprint(self) -> dict:
        """What changes whenever the tasks extraction would read change: the count and the newest
        modificationtime of the tasks (JEDI touches a task's row when its jobs change)."""
        ...
    def unkeyed_rows(self) -> pd.DataFrame: ...
    def changed_task_ranges(self, since: datetime | None, chunk: int) -> Iterator[tuple[int, int]]: ...
    def tasks(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame: ...
    def jobs(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame: ...


def _ranges(ids: Iterator[int], chunk: int) -> Iterator[tuple[int, int]]:
    """Consecutive (first, last) id pairs of `chunk` sorted ids each."""
    block: list[int] = []
    for task_id in ids:
        block.append(task_id)
        if len(block) == chunk:
            yield block[0], block[-1]
            block = []
    if block:
        yield block[0], block[-1]


def fetch_frame(conn: sa.Connection, stmt: sa.Select) -> pd.DataFrame:
    """Run `stmt` and return its rows as raw driver values.

    The rows arrive as Arrow columns where the driver allows: from a SQLite file through ADBC, from
    PostgreSQL through psycopg as one COPY stream parsed by Arrow. Otherwise SQLAlchemy compiles the statement
    and binds its parameters, and the rows are read from the DBAPI cursor directly, skipping SQLAlchemy's
    per-value result processing. Either way typing is done column-wise afterwards, which is several times
    cheaper and lets unreadable values be reported, not raised.
    """
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        return _copy_frame(conn, stmt)
    if conn.dialect.name == "sqlite":
        frame = _sqlite_arrow_frame(conn, stmt)
        if frame is not None:
            return frame
    result = conn.execute(stmt)
    columns = list(result.keys())
    rows = result.cursor.fetchall()
    result.close()
    return pd.DataFrame.from_records(rows, columns=columns, coerce_float=False)


def _sqlite_arrow_frame(conn: sa.Connection, stmt: sa.Select) -> pd.DataFrame | None:
    """SQLite: the statement's rows read by ADBC's SQLite driver straight into Arrow columns, through a
    read-only connection of its own to the same file.

    None when the archive is not a plain file, or when ADBC cannot type a column: it types each column by its
    first rows and stops at a later value of another kind (a float among integers, text in a numeric column,
    text after NULLs). The caller then reads the same statement row by row, which takes every value as it is.
    """
    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    database = conn.engine.url.database
    if not database or database == ":memory:" or conn.engine.url.query:
        return None
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    # SQLite keeps times as text: bind a datetime as the ISO text SQLAlchemy's SQLite dialect writes.
    params = tuple(value.isoformat(sep=" ", timespec="microseconds") if isinstance(value, datetime) else value
                   for value in (compiled.params[name] for name in compiled.positiontup))
    try:
        with adbc_sqlite.connect(f"file:{quote(database)}?mode=ro") as adbc, adbc.cursor() as cursor:
            cursor.execute(str(compiled), params)
            table = cursor.fetch_arrow_table()
    except (adbc_driver_manager.Error, OSError) as exc:   # a stream stopped mid-read comes as Arrow's OSError
        log.debug("reading row by row (the Arrow read stopped: %s)", exc)
        return None
    return table.to_pandas()


def _copy_frame(conn: sa.Connection, stmt: sa.Select) -> pd.DataFrame:
    """PostgreSQL: `COPY (<statement>) TO STDOUT` as CSV, parsed by Arrow's multi-threaded reader.

    The statement is SQLAlchemy's, compiled for the connection; psycopg binds its parameters
    (client-side, quoted by the driver: no value is formatted into the SQL here).
    """
    import pyarrow.csv as pacsv

    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    buffer = io.BytesIO()
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY ({compiled}) TO STDOUT (FORMAT CSV, HEADER)", compiled.params) as copy:
            for block in copy:
                buffer.write(block)
    if buffer.tell() == 0:
        return pd.DataFrame(columns=list(stmt.selected_columns.keys()))
    buffer.seek(0)
    table = pacsv.read_csv(buffer, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    return table.to_pandas()


Reader = Callable[[sa.Connection, sa.Select], pd.DataFrame]


@dataclass
class SqlSource:
    """A PanDA archive behind a SQLAlchemy engine (SQLite, PostgreSQL, Oracle, MySQL)."""

    engine: sa.Engine
    schema: PandaSchema
    job_tables: tuple[str, ...]
    read: Reader = fetch_frame
    absent: dict[str, frozenset[str]] = field(default_factory=dict)   # optional columns missing, per table
    task_params: bool = True   # the archive has jedi_taskparams (the parameter maps as submitted)

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def check(self) -> dict[str, list[str]]:
        """Fail early, naming every missing table and required column, instead of with a driver error mid-run;
        remember the optional columns that are missing, which are then read as NULL."""
        inspector = sa.inspect(self.engine)
        needed = {
            self.schema.jedi_tasks: (TASK_COLUMNS, OPTIONAL_COLUMNS["jedi_tasks"]),
            self.schema.jedi_datasets: (DATASET_COLUMNS, OPTIONAL_COLUMNS["jedi_datasets"]),
            **{self.schema.job_table(name): (JOB_COLUMNS + EXTRA_JOB_COLUMNS, OPTIONAL_COLUMNS["jobs"])
               for name in self.job_tables},
        }
        problems, absent = [], {}
        for table, (columns, optional) in needed.items():
            if not inspector.has_table(table.name, schema=table.schema):
                hint = (f" (set archive.job_tables in params.yaml to the job tables it has, of "
                        f"{', '.join(JOB_TABLES)})" if table.name in JOB_TABLES else "")
                problems.append(f"no table {table.fullname}{hint}")
                continue
            present = {c["name"].lower() for c in inspector.get_columns(table.name, schema=table.schema)}
            missing = [c for c in columns if c not in present and c not in optional]
            if missing:
                problems.append(f"table {table.fullname} lacks column(s) {', '.join(missing)}")
            absent[table.fullname] = frozenset(c for c in columns if c not in present and c in optional)
        if problems:
            raise ArchiveSchemaError(f"archive {self.describe()}: " + "; ".join(problems))
        self.absent = absent
        lacking = {table: sorted(columns) for table, columns in absent.items() if columns}
        for table, columns in lacking.items():
            log.warning("archive %s: table %s has no %s (not needed: read as NULL)", self.describe(), table,
                        ", ".join(columns))
        maps = self.schema.jedi_taskparams
        self.task_params = inspector.has_table(maps.name, schema=maps.schema)
        if not self.task_params:
            log.warning("archive %s has no table %s: the values tasks were submitted with are taken from %s, "
                        "whose rows may have changed since", self.describe(), maps.fullname,
                        self.schema.jedi_tasks.fullname)
            lacking[maps.fullname] = ["taskparams"]
        return lacking

    def _columns(self, table: sa.Table, names) -> list[sa.ColumnElement]:
        """`table`'s columns of `names`, a typed NULL in place of an optional one the archive lacks."""
        absent = self.absent.get(table.fullname, frozenset())
        return [sa.cast(sa.null(), table.c[name].type).label(name) if name in absent else table.c[name]
                for name in names]

    def statements(self, lo: int, hi: int, since: datetime | None) -> dict[str, sa.Select]:
        """Every statement extraction sends, by what it asks (compiled for any dialect without a server)."""
        return {
            "fingerprint": self._fingerprint_statement(),
            "changed": self._changed_statement(since),
            "tasks": self._tasks_statement(lo, hi, since),
            **{f"jobs from {name}": self._jobs_statement(name, lo, hi, since) for name in self.job_tables},
        }

    def fingerprint(self) -> dict:
        with self.engine.connect() as conn:
            count, newest = conn.execute(self._fingerprint_statement()).one()
        return {"tasks": int(count), "newest_modification": None if newest is None else str(newest),
                "job_tables": list(self.job_tables)}

    def unkeyed_rows(self) -> pd.DataFrame:
        return pd.DataFrame()  # jeditaskid is the table's primary key: every row has one

    def _changed(self, since: datetime | None) -> sa.ColumnElement[bool]:
        modified = self.schema.jedi_tasks.c.modificationtime
        if since is None:
            return sa.true()
        if self.engine.dialect.name == "sqlite":
            # SQLite keeps times as text, in whatever ISO variant the writer chose ('T' or ' ', with or
            # without fractions): compare them as times, not as strings.
            return func.julianday(modified) >= func.julianday(sa.literal(since, sa.DateTime))
        return modified >= since

    def changed_task_ranges(self, since: datetime | None, chunk: int) -> Iterator[tuple[int, int]]:
        with self.engine.connect() as conn:
            ids = [row[0] for row in conn.execute(self._changed_statement(since))]
        yield from _ranges(iter(ids), chunk)

    def tasks(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return self.read(conn, self._tasks_statement(lo, hi, since))

    def jobs(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame:
        with self.engine.connect() as conn:
            frames = [self.read(conn, self._jobs_statement(name, lo, hi, since)) for name in self.job_tables]
        # Raw driver values, typed later. Tables whose columns came with different types concatenate as objects.
        read = [frame for frame in frames if len(frame)] or frames[:1]
        if len(read) == 1:
            return read[0]
        if any(not frame.dtypes.equals(read[0].dtypes) for frame in read):
            read = [frame.astype(object) for frame in read]
        return pd.concat(read, ignore_index=True)

    def _fingerprint_statement(self) -> sa.Select:
        tasks = self.schema.jedi_tasks
        return select(func.count(), func.max(tasks.c.modificationtime))

    def _changed_statement(self, since: datetime | None) -> sa.Select:
        tasks = self.schema.jedi_tasks
        return select(tasks.c.jeditaskid).where(self._changed(since)).order_by(tasks.c.jeditaskid)

    def _tasks_statement(self, lo: int, hi: int, since: datetime | None) -> sa.Select:
        tasks, datasets = self.schema.jedi_tasks, self.schema.jedi_datasets
        negative = sa.or_(datasets.c.nfiles < 0, datasets.c.nevents < 0)
        sums = (
            select(
                datasets.c.jeditaskid,
                func.sum(datasets.c.nfiles).label("total_nfiles"),
                func.sum(datasets.c.nevents).label("total_nevents"),
                func.count().label("n_input_datasets"),
                func.sum(case((negative, 1), else_=0)).label("n_bad_input_datasets"),
            )
            .where(datasets.c.type.in_(INPUT_DATASET_TYPES), datasets.c.jeditaskid.between(lo, hi))
            .group_by(datasets.c.jeditaskid)
            .subquery("input_sums")
        )
        joined = tasks.outerjoin(sums, sums.c.jeditaskid == tasks.c.jeditaskid)
        maps = self.schema.jedi_taskparams
        if self.task_params:
            joined = joined.outerjoin(maps, maps.c.jeditaskid == tasks.c.jeditaskid)
        return (
            select(*self._columns(tasks, TASK_COLUMNS), *(sums.c[name] for name in INPUT_SUM_COLUMNS),
                   maps.c.taskparams if self.task_params else sa.cast(sa.null(), sa.Text).label("taskparams"))
            .select_from(joined)
            .where(tasks.c.jeditaskid.between(lo, hi), self._changed(since))
        )

    def _jobs_statement(self, name: str, lo: int, hi: int, since: datetime | None) -> sa.Select:
        tasks, jobs = self.schema.jedi_tasks, self.schema.job_table(name)
        return (
            select(*self._columns(jobs, JOB_COLUMNS + EXTRA_JOB_COLUMNS),
                   *(tasks.c[column] for column in TASK_PRESET_COLUMNS))
            .select_from(jobs.join(tasks, tasks.c.jeditaskid == jobs.c.jeditaskid))
            .where(jobs.c.jeditaskid.between(lo, hi), self._changed(since))
        )


@dataclass
class BigpandaDump:
    """bigpanda JSON dumps: tasks (the `/tasks/?json` shape, each with a `datasets` list) and,
    optionally, their jobs (a list of job objects with jobsarchived field names)."""

    tasks_path: Path
    jobs_path: Path | None = None

    def describe(self) -> str:
        return str(self.tasks_path) + (f" + {self.jobs_path}" if self.jobs_path else "")

    def _load(self) -> tuple[pd.DataFrame, ...]:
        if not hasattr(self, "_frames"):
            self._frames = _read_bigpanda(self.tasks_path, self.jobs_path)
        return self._frames

    def check(self) -> dict[str, list[str]]:
        self._load()
        return {}

    def fingerprint(self) -> dict:
        files = [path for path in (self.tasks_path, self.jobs_path) if path is not None]
        return {"files": {str(path): {"bytes": path.stat().st_size, "modified": path.stat().st_mtime_ns}
                          for path in files}}

    def unkeyed_rows(self) -> pd.DataFrame:
        return self._load()[3]

    def _select(self, frame: pd.DataFrame, lo: int, hi: int, since: datetime | None) -> pd.Series:
        chosen = frame["jeditaskid"].between(lo, hi)
        if since is not None:
            chosen &= pd.to_datetime(frame["modificationtime"], errors="coerce") >= pd.Timestamp(since)
        return chosen

    def changed_task_ranges(self, since: datetime | None, chunk: int) -> Iterator[tuple[int, int]]:
        tasks = self._load()[0]
        chosen = self._select(tasks, tasks["jeditaskid"].min(), tasks["jeditaskid"].max(), since)
        yield from _ranges(iter(sorted(tasks.loc[chosen, "jeditaskid"].astype(int))), chunk)

    def tasks(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame:
        tasks, sums = self._load()[:2]
        chosen = tasks[self._select(tasks, lo, hi, since)]
        return chosen.merge(sums, on="jeditaskid", how="left")

    def jobs(self, lo: int, hi: int, since: datetime | None) -> pd.DataFrame:
        tasks, _, jobs, _ = self._load()
        chosen = tasks.loc[self._select(tasks, lo, hi, since), ["jeditaskid", *TASK_PRESET_COLUMNS]]
        return jobs.merge(chosen, on="jeditaskid", how="inner")


def _read_bigpanda(tasks_path: Path, jobs_path: Path | None) -> tuple[pd.DataFrame, ...]:
    def load_list(path: Path, what: str) -> list[dict]:
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ArchiveSchemaError(f"cannot read bigpanda {what} dump {path}: {exc}") from exc
        if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
            raise ArchiveSchemaError(f"bigpanda {what} dump {path} is not a JSON list of objects")
        return payload

    records = load_list(tasks_path, "tasks")
    missing = sorted({"jeditaskid", "modificationtime"} - set().union(*(r.keys() for r in records)))
    if records and missing:
        raise ArchiveSchemaError(f"bigpanda tasks dump {tasks_path} lacks field(s): {', '.join(missing)}")
    tasks = pd.DataFrame([{k: r.get(k) for k in TASK_COLUMNS} for r in records], columns=list(TASK_COLUMNS))
    datasets = pd.DataFrame(
        [
            {"jeditaskid": r.get("jeditaskid"), **{k: d.get(k) for k in ("type", "nfiles", "nevents")}}
            for r in records
            for d in (r.get("datasets") or [])
        ],
        columns=["jeditaskid", "type", "nfiles", "nevents"],
    )
    inputs = datasets[datasets["type"].isin(INPUT_DATASET_TYPES)].copy()
    for column in ("jeditaskid", "nfiles", "nevents"):
        inputs[column] = pd.to_numeric(inputs[column], errors="coerce")
    inputs["bad"] = ((inputs["nfiles"] < 0) | (inputs["nevents"] < 0)).astype(int)
    sums = inputs.groupby("jeditaskid").agg(
        total_nfiles=("nfiles", "sum"),
        total_nevents=("nevents", "sum"),
        n_input_datasets=("type", "size"),
        n_bad_input_datasets=("bad", "sum"),
    ).reset_index()
    job_columns = list(JOB_COLUMNS + EXTRA_JOB_COLUMNS)
    jobs = pd.DataFrame(
        [{k: r.get(k) for k in job_columns} for r in load_list(jobs_path, "jobs")] if jobs_path else [],
        columns=job_columns,
    )
    # A task without a readable id cannot be keyed: it is set aside, whole, for the rejected file.
    task_ids = pd.to_numeric(tasks["jeditaskid"], errors="coerce")
    unkeyed = tasks[task_ids.isna()].assign(reason="jeditaskid: missing or not a number")
    tasks = tasks[task_ids.notna()].assign(jeditaskid=task_ids[task_ids.notna()].astype("int64"))
    # A dump may repeat a task (pages that overlap): the last copy wins, as in the database.
    tasks = tasks.drop_duplicates("jeditaskid", keep="last")
    return tasks, sums, jobs, unkeyed
