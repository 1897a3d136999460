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
- extract_state.json  the watermark (newest modificationtime read) and counts; written last

Incremental: a run reads only tasks whose modificationtime is at or after the watermark, and merges
them into the previous outputs by jeditaskid (a changed task's rows are replaced whole). Chunked: tasks
are read `chunk_tasks` at a time, with their jobs, so memory is bounded by the chunk, not the archive.
Atomic: every output is written under a temporary name and renamed into place; the state file goes
last, so a run killed half-way is simply redone by the next one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from scoutless.archive.jedi_formulas import TASK_PRESET_COLUMNS, job_measurements, normalised_scout_values, task_values
from scoutless.archive.sources import Source
from scoutless.features.parse import submitted_values
from scoutless.params import ExtractParams, Params
from scoutless.paths import atomic_path, write_json
from scoutless.progress import progress_bar

log = logging.getLogger(__name__)

OUTPUTS = ("tasks", "labels", "jobs", "rejected")
STATE_FILE = "extract_state.json"
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


def connection_lost(exc: BaseException) -> bool:
    """Is this a failure of the connection to the archive (worth retrying), not of the SQL or the data?"""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    )


def _retrying(settings: ExtractParams, call: Callable[[], T]) -> T:
    """Run a read, retrying with exponential backoff when the connection fails (not on SQL errors)."""
    for attempt in Retrying(
        stop=stop_after_attempt(settings.retries + 1),
        wait=wait_exponential(multiplier=settings.retry_wait_seconds, max=60),
        retry=retry_if_exception(connection_lost),
        before_sleep=lambda state: log.warning("archive read failed (%s); retrying",
                                               state.outcome.exception()),
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
    """Appends chunk frames to a Parquet file under a temporary name, with the first chunk's schema."""

    def __init__(self, path: Path):
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        else:
            table = pa.Table.from_pandas(frame, schema=self.writer.schema, preserve_index=False)
        self.writer.write_table(table)
        self.rows += len(frame)

    @property
    def opened(self) -> bool:
        return self.writer is not None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _merge_into(target: Path, fresh: Path | None, replaced: pa.Array, incremental: bool) -> int:
    """Write `target` anew, atomically: its previous rows whose jeditaskid is not in `replaced`, then
    the rows of `fresh`. Streams batch by batch, so memory stays bounded. Returns the row count."""
    sources = []
    if incremental and target.exists():
        sources.append((target, True))
    if fresh is not None:
        sources.append((fresh, False))
    if not sources:
        if not incremental:  # a full run that found nothing leaves nothing stale behind
            target.unlink(missing_ok=True)
        return 0
    schema = pq.read_schema(sources[-1][0])
    rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for path, filter_replaced in sources:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=200_000):
                if filter_replaced:
                    batch = batch.filter(pc.invert(pc.is_in(batch.column("jeditaskid"), value_set=replaced)))
                batch = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                writer.write_table(batch)
                rows += batch.num_rows
    return rows


def read_state(raw_dir: Path) -> dict:
    path = raw_dir / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def extract(
    params: Params, source: Source, raw_dir: Path, full: bool = False, progress: bool = True
) -> ExtractSummary:
    """Read changed tasks from `source` into `raw_dir`, merging with what earlier runs extracted."""
    started = time.perf_counter()
    settings = params.extract
    absent_columns = source.check()
    state = read_state(raw_dir)
    incremental = not full and state.get("source") == source.describe() and state.get("watermark")
    since = datetime.fromisoformat(state["watermark"]) if incremental else None
    ranges = list(source.changed_task_ranges(since, settings.chunk_tasks))
    log.info("extracting %s task chunk(s) from %s (since %s)", len(ranges), source.describe(), since)

    raw_dir.mkdir(parents=True, exist_ok=True)
    writers = {name: _PartWriter(raw_dir / f".{name}.fresh.parquet") for name in OUTPUTS}
    read_ids: list[np.ndarray] = []
    watermark = since
    try:
        unkeyed = source.unkeyed_rows()
        if len(unkeyed):
            writers["rejected"].write(
                _rejected_rows(unkeyed.drop(columns="reason"), "jedi_tasks", unkeyed["reason"])
            )
        with progress_bar(progress) as bar:
            for lo, hi in bar.track(ranges, description="extract"):
                raw_tasks = _retrying(settings, lambda lo=lo, hi=hi: source.tasks(lo, hi, since))
                raw_jobs = _retrying(settings, lambda lo=lo, hi=hi: source.jobs(lo, hi, since))
                read_ids.append(pd.to_numeric(raw_tasks["jeditaskid"]).to_numpy(dtype="int64"))
                chunk = extract_chunk(raw_tasks, raw_jobs, settings)
                for name, frame in chunk.items():
                    writers[name].write(frame)
                newest = chunk["tasks"]["modificationtime"].max()
                if pd.notna(newest) and (watermark is None or newest > watermark):
                    watermark = newest.to_pydatetime()
        for writer in writers.values():
            writer.close()
        replaced = pa.array(np.concatenate(read_ids) if read_ids else [], type=pa.int64())
        totals = {
            name: _merge_into(raw_dir / f"{name}.parquet", writers[name].path if writers[name].opened else None,
                              replaced, bool(incremental))
            for name in OUTPUTS
        }
    finally:
        for writer in writers.values():
            writer.close()
            writer.path.unlink(missing_ok=True)

    summary = ExtractSummary(
        source=source.describe(),
        incremental=bool(incremental),
        watermark=watermark.isoformat() if watermark else None,
        tasks_read=int(sum(len(ids) for ids in read_ids)),
        tasks_total=totals["tasks"],
        labelled_total=totals["labels"],
        jobs_total=totals["jobs"],
        rejected_read=writers["rejected"].rows,
        seconds=round(time.perf_counter() - started, 3),
        absent_columns=absent_columns,
    )
    write_json(raw_dir / STATE_FILE, asdict(summary))
    return summary
