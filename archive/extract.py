"""The extract stage: a PanDA archive into Parquet under data/raw/.

Outputs (one row per task unless said otherwise):
- tasks.parquet     jedi_tasks columns known at submission, bookkeeping, the resource values on the task
                    with their units, the sums over input datasets and the scout values normalised to
                    the targets' units (`scout_*`), and the task parameter map as submitted (`taskparams`,
                    JSON from jedi_taskparams; NULL where the archive has none)
- labels.parquet    the JEDI formulas over ALL finished jobs of each ended task, with job counts
- jobs.parquet      one row per finished job of a labelled task: what JEDI measures of it (memory per
                    core, CPU per event, ...), so that evaluation can count jobs a request would fail
- rejected.parquet  rows that could not be read, whole, with the reason: nothing is dropped silently
- extract_state.json  the extraction's id, the watermark (newest modificationtime read) and counts

Incremental: a run reads only tasks whose modificationtime is at or after the watermark, and merges
them into the previous outputs by jeditaskid (a changed task's rows are replaced whole). Chunked: tasks
are read `chunk_tasks` at a time, with their jobs, so memory is bounded by the chunk, not the archive.
Atomic: the next data/raw is written whole beside the current one and swapped into place in one step, so
a run killed half-way leaves the previous extraction as it was, and is simply redone by the next one.
Every read is retried when the connection fails (read_with_retries).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from scoutless.archive.jedi_formulas import TASK_PRESET_COLUMNS, job_measurements, normalised_scout_values, task_values
from scoutless.archive.layout import EXTRACTION_KEY, LAYOUT, OUTPUTS, STATE_FILE, read_state
from scoutless.archive.sources import Source
from scoutless.features.parse import submitted_values
from scoutless.params import ExtractParams, Params
from scoutless.paths import build_dir, replace_dir, write_json
from scoutless.progress import progress_bar

log = logging.getLogger(__name__)

# Tasks in these states will get no more jobs: their finished jobs give the label.
ENDED_STATUSES = frozenset({"done", "finished", "failed", "broken", "aborted"})

# How each column is typed on the way out. Ids must be readable integers; everything numeric is
# float64 (NULL-able, and what the models consume); times are timestamps; the rest are strings.
IDS = {"jeditaskid", "pandaid", "parent_tid", "reqid"}
REQUIRED_IDS = {"jeditaskid", "pandaid"}
TIMES = {"creationdate", "modificationtime", "starttime", "endtime"}
STRINGS = {
    "taskname", "status", "username", "prodsourcelabel", "workinggroup", "vo", "tasktype",
    "processingtype", "transuses", "transhome", "transpath", "architecture", "campaign", "gshare", "site",
    "cloud", "nucleus", "resource_type", "framework", "splitrule", "ramunit", "cputimeunit",
    "walltimeunit", "iointensityunit", "diskiounit", "outdiskunit", "workdiskunit", "jobstatus",
    "jobmetrics", "computingsite", "taskparams",
}


@dataclass(frozen=True)
class ExtractSummary:
    extraction: str        # this extraction's id, in every output file's Parquet metadata too
    source: str
    incremental: bool
    watermark: str | None
    tasks_read: int
    tasks_total: int
    labelled_total: int
    jobs_total: int
    rejected_read: int
    seconds: float
    absent_columns: dict[str, list[str]]   # columns the archive lacks that nothing needs: read as NULL
    layout: int = LAYOUT                   # the outputs' columns; another layout's outputs are not merged into


def typed(frame: pd.DataFrame, table: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give every column its type; rows holding a value that cannot be read as such are split off.

    Returns (readable rows, rejected rows with a `reason` naming the column and the value).
    """
    out = pd.DataFrame(index=frame.index)
    problems = pd.Series("", index=frame.index, dtype="object")
    for column in frame.columns:
        raw = frame[column]
        if column in STRINGS:
            out[column] = raw.astype("string")
            continue
        if column in TIMES:
            value = pd.to_datetime(raw, errors="coerce", format="ISO8601").astype("datetime64[us]")
        else:
            value = pd.to_numeric(raw, errors="coerce").astype("float64")
            if column in IDS:
                value = value.where(np.isfinite(value) & (value == np.round(value)))
        unreadable = raw.notna() & value.isna()
        if column in REQUIRED_IDS:
            unreadable |= raw.isna()
        if unreadable.any():
            problems[unreadable] = problems[unreadable] + [
                f"{column}: unreadable value {v!r}; " for v in raw[unreadable]
            ]
        out[column] = value.astype("Int64") if column in IDS else value
    bad = problems != ""
    rejected = _rejected_rows(frame[bad], table, problems[bad].str.rstrip("; "))
    return out[~bad], rejected


def _rejected_rows(rows: pd.DataFrame, table: str, reasons: pd.Series) -> pd.DataFrame:
    """Rejected rows, kept whole: the raw row as JSON, with its keys and the reason."""
    def key(column: str) -> pd.Series:
        if column not in rows:
            return pd.Series(pd.NA, index=rows.index, dtype="Int64")
        return pd.to_numeric(rows[column], errors="coerce").astype("Int64")

    return pd.DataFrame({
        "source_table": pd.Series(table, index=rows.index, dtype="string"),
        "jeditaskid": key("jeditaskid"),
        "pandaid": key("pandaid"),
        "reason": reasons.astype("string"),
        "row": pd.Series(
            [json.dumps(r, default=str) for r in rows.to_dict(orient="records")], index=rows.index,
            dtype="string",
        ),
    })


def job_statistics(jobs: pd.DataFrame, oom_pilot_errors: list[int]) -> pd.DataFrame:
    """Per task: how many jobs, how many of them failed, and how many failed for lack of memory."""
    failed = jobs["jobstatus"] == "failed"
    return pd.DataFrame({
        "jeditaskid": jobs["jeditaskid"],
        "n_jobs": 1,
        "n_failed_jobs": failed.astype(int),
        "n_oom_failures": (failed & jobs["piloterrorcode"].isin(oom_pilot_errors)).astype(int),
    }).groupby("jeditaskid").sum()


T = TypeVar("T")


# MySQL/MariaDB error numbers of a lost or refused connection, a killed query or a lock given up on; pymysql
# raises its OperationalError for refused logins and other causes too, which no retry mends.
MYSQL_TRANSIENT = frozenset({1053, 1205, 1213, 1317, 1927, 2003, 2006, 2013, 2055})
# PEP 249 names these two classes for failures of the database's operation rather than of the statement.
TRANSIENT_CLASSES = frozenset({"OperationalError", "InterfaceError"})


def connection_lost(exc: BaseException) -> bool:
    """Is this a failure of the connection to the archive (worth retrying), not of the SQL or the data?

    Reads through SQLAlchemy raise its wrapper; PostgreSQL's COPY goes through psycopg itself and raises
    psycopg's own errors (a terminated backend: AdminShutdown, an OperationalError). So the driver's error is
    judged, whichever way it came."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig
    if isinstance(exc, ConnectionError):  # the socket itself, reset or refused
        return True
    if isinstance(exc, sqlite3.Error):
        return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))
    names = {cls.__name__ for cls in type(exc).__mro__}
    if type(exc).__module__.startswith("pymysql"):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return "InterfaceError" in names or ("OperationalError" in names and code in MYSQL_TRANSIENT)
    return bool(names & TRANSIENT_CLASSES)


def read_with_retries(settings: ExtractParams, what: str, call: Callable[[], T]) -> T:
    """Run one read of the archive, retried with exponential backoff when the connection fails (never on an
    SQL or data error): the one retry layer of every archive read, whoever calls it."""
    def log_retry(state) -> None:
        error = state.outcome.exception()
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        log.warning("archive read failed (%s) on %s: %s; retry %d of %d in %.1f s", type(error).__name__, what,
                    first_line, state.attempt_number, settings.retries, state.upcoming_sleep)

    for attempt in Retrying(
        stop=stop_after_attempt(settings.retries + 1),
        wait=wait_exponential(multiplier=settings.retry_wait_seconds, max=60),
        retry=retry_if_exception(connection_lost),
        before_sleep=log_retry,
        reraise=True,
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable")


def extract_chunk(
    raw_tasks: pd.DataFrame, raw_jobs: pd.DataFrame, settings: ExtractParams
) -> dict[str, pd.DataFrame]:
    """Typed tasks, labels, job measurements and rejected rows for one chunk of tasks."""
    tasks, rejected_tasks = typed(raw_tasks, "jedi_tasks")
    jobs, rejected_jobs = typed(raw_jobs, "jobs")
    # A job in both jobsarchived4 and jobsarchived (it is being moved) counts once.
    jobs = jobs.drop_duplicates("pandaid")
    jobs = jobs[jobs["jeditaskid"].isin(tasks["jeditaskid"])]

    # JEDI measured the jobs with the presets the task was submitted with, whatever its row says now
    submitted = submitted_values(tasks).set_axis(tasks["jeditaskid"])
    submitted = submitted[~submitted.index.duplicated()]
    for column in TASK_PRESET_COLUMNS:
        jobs[column] = jobs["jeditaskid"].map(submitted[column]).fillna(jobs[column])

    ended = tasks.loc[tasks["status"].isin(ENDED_STATUSES), "jeditaskid"]
    finished = jobs[(jobs["jobstatus"] == "finished") & jobs["jeditaskid"].isin(ended)]
    measured = job_measurements(finished, settings.jedi)
    labels = task_values(measured, settings.jedi).join(
        job_statistics(jobs, settings.oom_pilot_errors), how="left"
    )
    tasks = tasks.merge(normalised_scout_values(tasks), on="jeditaskid", how="left")
    return {
        "tasks": tasks.reset_index(drop=True),
        "labels": labels.reset_index(),
        "jobs": measured.reset_index(drop=True),
        "rejected": pd.concat([rejected_tasks, rejected_jobs], ignore_index=True),
    }


class _PartWriter:
    """Appends chunk frames to a Parquet file under a temporary name, with the first chunk's schema, labelled
    with the extraction's id."""

    def __init__(self, path: Path, extraction: str):
        self.path = path
        self.extraction = extraction
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.writer is None:
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
            schema = schema.with_metadata({**(schema.metadata or {}), EXTRACTION_KEY: self.extraction.encode()})
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")
        table = pa.Table.from_pandas(frame, schema=self.writer.schema, preserve_index=False)
        self.writer.write_table(table)
        self.rows += len(frame)

    @property
    def opened(self) -> bool:
        return self.writer is not None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _merge_into(out: Path, previous: Path | None, fresh: list[Path], replaced: pa.Array, extraction: str) -> int:
    """Write `out`: the rows of `previous` whose jeditaskid is not in `replaced`, then the rows of each `fresh`
    part in turn, labelled with the extraction's id. Streams batch by batch, so memory stays bounded. Returns
    the row count."""
    sources = [(path, path == previous) for path in (previous, *fresh) if path is not None and path.exists()]
    if not sources:
        return 0
    if len(sources) == 1 and sources[0][0] != previous:   # one fresh part, already labelled: the output
        sources[0][0].rename(out)
        return pq.ParquetFile(out).metadata.num_rows
    schema = pq.read_schema(sources[-1][0])
    labelled = schema.with_metadata({**(schema.metadata or {}), EXTRACTION_KEY: extraction.encode()})
    rows = 0
    with pq.ParquetWriter(out, labelled, compression="zstd") as writer:
        for path, filter_replaced in sources:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=200_000):
                if filter_replaced:
                    batch = batch.filter(pc.invert(pc.is_in(batch.column("jeditaskid"), value_set=replaced)))
                batch = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                writer.write_table(batch.replace_schema_metadata(labelled.metadata))
                rows += batch.num_rows
    return rows


def _read_ahead(read: Callable[[int, int], T], ranges: list[tuple[int, int]]) -> Iterator[T]:
    """`read(lo, hi)` of each range in turn, the next one read in a thread while the caller works on this one.

    The drivers read without holding the GIL (SQLite's and ADBC's C code, PostgreSQL's COPY and Arrow's CSV
    parser), so reading and labelling share the cores; memory holds two chunks at most.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-read") as reader:
        upcoming = reader.submit(read, *ranges[0]) if ranges else None
        for following in [*ranges[1:], None]:
            chunk = upcoming.result()
            upcoming = reader.submit(read, *following) if following else None
            yield chunk


@dataclass(frozen=True)
class Part:
    """What one run over some task-id ranges wrote: a Parquet file per output (those it wrote anything to), the
    task ids it read, in order, and the newest modificationtime among them."""

    files: dict[str, Path]
    read_ids: np.ndarray
    newest: datetime | None
    rejected: int


@dataclass(frozen=True)
class Cluster:
    """A Dask cluster to extract on: its scheduler's address, and how a worker opens the archive itself."""

    address: str
    open_source: Callable[[], Source]


def extract_part(source: Source, ranges: list[tuple[int, int]], since: datetime | None, settings: ExtractParams,
                 build: Path, name: str, extraction: str, progress: bool = False) -> Part:
    """Read and label the tasks of `ranges` (and their jobs) from `source`, chunk by chunk, into
    `build`/.<output>.<name>.parquet."""
    writers = {output: _PartWriter(build / f".{output}.{name}.parquet", extraction) for output in OUTPUTS}
    read_ids: list[np.ndarray] = []
    newest = None

    def read_chunk(lo: int, hi: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return (read_with_retries(settings, f"tasks {lo}-{hi}", lambda: source.tasks(lo, hi, since)),
                read_with_retries(settings, f"jobs of tasks {lo}-{hi}", lambda: source.jobs(lo, hi, since)))

    try:
        with progress_bar(progress) as bar:
            for raw_tasks, raw_jobs in bar.track(_read_ahead(read_chunk, ranges), total=len(ranges),
                                                 description="extract"):
                read_ids.append(pd.to_numeric(raw_tasks["jeditaskid"]).to_numpy(dtype="int64"))
                chunk = extract_chunk(raw_tasks, raw_jobs, settings)
                for output, frame in chunk.items():
                    writers[output].write(frame)
                latest = chunk["tasks"]["modificationtime"].max()
                if pd.notna(latest) and (newest is None or latest > newest):
                    newest = latest.to_pydatetime()
    finally:  # pyarrow's close is idempotent
        for writer in writers.values():
            writer.close()
    return Part(files={output: writer.path for output, writer in writers.items() if writer.opened},
                read_ids=np.concatenate(read_ids) if read_ids else np.empty(0, dtype="int64"), newest=newest,
                rejected=writers["rejected"].rows)


def _extract_part_on_worker(name: str, ranges: list[tuple[int, int]], open_source: Callable[[], Source],
                            since: datetime | None, settings: ExtractParams, build: Path, extraction: str) -> Part:
    """extract_part on a Dask worker, over a connection of its own to the archive."""
    return extract_part(open_source(), ranges, since, settings, build, name, extraction)


def _extract_parts(source: Source, ranges: list[tuple[int, int]], since: datetime | None, params: Params,
                   build: Path, extraction: str, progress: bool, cluster: Cluster | None) -> list[Part]:
    """The parts of this extraction, in task-id order: one, read here, or (with a cluster) one per group of
    cluster.ranges_per_part consecutive ranges, read by the workers. A task's jobs are read with the task, so the
    jobs of one task never span parts."""
    settings = params.extract
    if cluster is None:
        return [extract_part(source, ranges, since, settings, build, "fresh", extraction, progress)]
    from scoutless.cluster import client_of

    step = params.cluster.ranges_per_part
    groups = [ranges[at:at + step] for at in range(0, len(ranges), step)]
    with client_of(cluster.address) as client:
        names = [f"part{i:05d}" for i in range(len(groups))]
        futures = client.map(_extract_part_on_worker, names, groups, open_source=cluster.open_source, since=since,
                             settings=settings, build=build, extraction=extraction, pure=False)
        return client.gather(futures)


def _extract_into(build: Path, raw_dir: Path, params: Params, source: Source, full: bool, progress: bool,
                  absent_columns: dict[str, list[str]], started: float, cluster: Cluster | None) -> ExtractSummary:
    """Write the next data/raw into `build`: the changed tasks read from `source`, merged with `raw_dir`'s."""
    settings = params.extract
    state = read_state(raw_dir)
    incremental = bool(not full and state.get("source") == source.describe() and state.get("watermark"))
    if incremental and state.get("layout") != LAYOUT:
        log.info("the previous extraction has other columns (layout %s, now %s): extracting in full",
                 state.get("layout"), LAYOUT)
        incremental = False
    since = datetime.fromisoformat(state["watermark"]) if incremental else None
    ranges = read_with_retries(settings, "the changed tasks",
                               lambda: list(source.changed_task_ranges(since, settings.chunk_tasks)))
    log.info("extracting %s task chunk(s) from %s (since %s)%s", len(ranges), source.describe(), since,
             f" on the cluster at {cluster.address}" if cluster else "")

    extraction = uuid.uuid4().hex[:12]
    unkeyed = read_with_retries(settings, "the rows without a task id", source.unkeyed_rows)
    unkeyed_file = build / ".rejected.unkeyed.parquet"
    if len(unkeyed):
        writer = _PartWriter(unkeyed_file, extraction)
        writer.write(_rejected_rows(unkeyed.drop(columns="reason"), "jedi_tasks", unkeyed["reason"]))
        writer.close()
    parts = _extract_parts(source, ranges, since, params, build, extraction, progress, cluster)
    read_ids = np.concatenate([part.read_ids for part in parts]) if parts else np.empty(0, dtype="int64")
    replaced = pa.array(read_ids, type=pa.int64())
    totals = {}
    for name in OUTPUTS:
        fresh = [unkeyed_file] if name == "rejected" and len(unkeyed) else []
        fresh += [part.files[name] for part in parts if name in part.files]
        previous = raw_dir / f"{name}.parquet" if incremental else None
        totals[name] = _merge_into(build / f"{name}.parquet", previous, fresh, replaced, extraction)
        for path in fresh:
            path.unlink(missing_ok=True)
    newest = [part.newest for part in parts if part.newest is not None]
    watermark = max([*newest, *([since] if since else [])], default=None)
    return ExtractSummary(
        extraction=extraction,
        source=source.describe(),
        incremental=incremental,
        watermark=watermark.isoformat() if watermark else None,
        tasks_read=len(read_ids),
        tasks_total=totals["tasks"],
        labelled_total=totals["labels"],
        jobs_total=totals["jobs"],
        rejected_read=len(unkeyed) + sum(part.rejected for part in parts),
        seconds=round(time.perf_counter() - started, 3),
        absent_columns=absent_columns,
    )


def extract(
    params: Params, source: Source, raw_dir: Path, full: bool = False, progress: bool = True,
    cluster: Cluster | None = None,
) -> ExtractSummary:
    """Read changed tasks from `source` into `raw_dir`, merging with what earlier runs extracted; with a
    `cluster`, its workers read and label the task-id ranges (in the build folder, which they must see)."""
    started = time.perf_counter()
    settings = params.extract
    absent_columns = read_with_retries(settings, "the schema check", source.check)
    # The next data/raw is written whole beside the current one and swapped in as one step (replace_dir):
    # a reader sees this extraction or the previous one, never a mix of the two.
    build = build_dir(raw_dir)
    try:
        summary = _extract_into(build, raw_dir, params, source, full, progress, absent_columns, started, cluster)
        write_json(build / STATE_FILE, asdict(summary))
        replace_dir(build, raw_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return summary
