"""Stage entry points of the archive package: the CLI, the DVC stages and the Prefect flows call these."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import sqlalchemy as sa

from scoutless.archive.extract import Cluster, ExtractSummary, extract
from scoutless.archive.schema import panda_schema
from scoutless.archive.sources import BigpandaDump, Source, SqlSource
from scoutless.params import Params, archive_password
from scoutless.paths import resolve, resolve_sqlite_url


def open_source(params: Params, jobs_json: Path | None = None) -> Source:
    """The archive named by archive.url: a SQLAlchemy URL, or the path of a bigpanda tasks .json dump."""
    target = params.archive.url
    if target.endswith(".json"):
        return BigpandaDump(resolve(target), resolve(jobs_json) if jobs_json else None)
    engine = sa.create_engine(archive_url(params), pool_pre_ping=True)
    schema = panda_schema(params.archive.schema_name, params.archive.archive_schema)
    return SqlSource(engine, schema, tuple(params.archive.job_tables))


def archive_url(params: Params) -> sa.URL:
    """archive.url to connect with: relative SQLite paths anchored at the project, the password (which params
    never hold) from the environment or archive.password_file."""
    url = sa.engine.make_url(resolve_sqlite_url(params.archive.url))
    if url.get_backend_name() == "sqlite":   # a file: no password to give
        return url
    password = archive_password(params)
    return url.set(password=password) if password is not None else url


def run_extract(params: Params, jobs_json: Path | None = None, full: bool = False,
                progress: bool = True, cluster: str | None = None) -> ExtractSummary:
    """Extract the archive named by archive.url into paths.raw; with a Dask scheduler's address, on its workers."""
    source = open_source(params, jobs_json)
    spread = Cluster(cluster, partial(open_source, params, jobs_json)) if cluster else None
    return extract(params, source, resolve(params.paths.raw), full, progress, spread)


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL (relative ones anchored at the project folder), else None."""
    url = resolve_sqlite_url(url)
    database = sa.engine.make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:":
        return Path(database)
    return None
