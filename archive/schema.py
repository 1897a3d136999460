"""PanDA's archive tables, with the real column names and types.

Only the columns scoutless reads or the simulator fills are declared; a real archive has more, which is
fine: extraction selects by name. Names are PostgreSQL's lower case; SQLAlchemy quotes nothing here, so
Oracle's upper-case identifiers (case-insensitive) match the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

JOB_TABLES = ("jobsarchived4", "jobsarchived")


def _task_columns() -> list[Column]:
    return [
        Column("jeditaskid", BigInteger, primary_key=True, autoincrement=False),
        Column("taskname", String(256)),
        Column("status", String(64)),
        Column("username", String(128)),
        Column("creationdate", DateTime),
        Column("modificationtime", DateTime, index=True),
        Column("starttime", DateTime),
        Column("endtime", DateTime),
        Column("prodsourcelabel", String(20)),
        Column("workinggroup", String(32)),
        Column("vo", String(16)),
        Column("corecount", Integer),
        Column("tasktype", String(64)),
        Column("processingtype", String(64)),
        Column("transuses", String(128)),
        Column("transhome", String(128)),
        Column("transpath", String(128)),
        Column("architecture", String(256)),
        Column("campaign", String(72)),
        Column("gshare", String(32)),
        Column("site", String(256)),
        Column("cloud", String(10)),
        Column("nucleus", String(52)),
        Column("resource_type", String(56)),
        Column("framework", String(50)),
        Column("attemptnr", Integer),
        Column("parent_tid", BigInteger),
        Column("reqid", Integer),
        Column("splitrule", String(100)),
        Column("ramcount", Integer),
        Column("ramunit", String(32)),
        Column("baseramcount", Integer),
        Column("cputime", Integer),
        Column("cputimeunit", String(32)),
        Column("cpuefficiency", Integer),
        Column("walltime", Integer),
        Column("walltimeunit", String(32)),
        Column("basewalltime", Integer),
        Column("iointensity", Integer),
        Column("iointensityunit", String(32)),
        Column("diskio", Integer),
        Column("diskiounit", String(32)),
        Column("outdiskcount", Integer),
        Column("outdiskunit", String(32)),
        Column("workdiskcount", Integer),
        Column("workdiskunit", String(32)),
        Column("memory_leak_core", BigInteger),
        Column("memory_leak_x2", BigInteger),
    ]


def _dataset_columns() -> list[Column]:
    return [
        Column("jeditaskid", BigInteger, primary_key=True, autoincrement=False),
        Column("datasetid", BigInteger, primary_key=True, autoincrement=False),
        Column("datasetname", String(255)),
        Column("type", String(20)),
        Column("masterid", BigInteger),
        Column("nfiles", Integer),
        Column("nfilestobeused", Integer),
        Column("nfilesused", Integer),
        Column("nfilesfinished", Integer),
        Column("nfilesfailed", Integer),
        Column("nevents", BigInteger),
        Column("neventstobeused", BigInteger),
        Column("neventsused", BigInteger),
        Column("status", String(20)),
        Column("streamname", String(20)),
    ]


def _job_columns() -> list[Column]:
    return [
        Column("pandaid", BigInteger, primary_key=True, autoincrement=False),
        Column("jeditaskid", BigInteger),
        Column("jobstatus", String(15)),
        Column("computingsite", String(128)),
        Column("prodsourcelabel", String(20)),
        Column("processingtype", String(64)),
        Column("transformation", String(250)),
        Column("homepackage", String(80)),
        Column("atlasrelease", String(64)),
        Column("corecount", Integer),
        Column("actualcorecount", Integer),
        Column("creationtime", DateTime),
        Column("starttime", DateTime),
        Column("endtime", DateTime),
        Column("modificationtime", DateTime),
        Column("cpuconsumptiontime", BigInteger),
        Column("cpuconversion", Float),
        Column("hs06", Integer),
        Column("hs06sec", BigInteger),
        Column("maxrss", BigInteger),
        Column("maxpss", BigInteger),
        Column("maxvmem", BigInteger),
        Column("avgrss", BigInteger),
        Column("avgpss", BigInteger),
        Column("minramcount", BigInteger),
        Column("maxwalltime", Integer),
        Column("maxdiskcount", Integer),
        Column("nevents", Integer),
        Column("ninputdatafiles", Integer),
        Column("inputfilebytes", BigInteger),
        Column("outputfilebytes", BigInteger),
        Column("totrbytes", BigInteger),
        Column("totwbytes", BigInteger),
        Column("jobmetrics", String(500)),
        Column("memory_leak", BigInteger),
        Column("memory_leak_x2", BigInteger),
        Column("attemptnr", Integer),
        Column("piloterrorcode", Integer),
        Column("piloterrordiag", String(500)),
        Column("exeerrorcode", Integer),
        Column("exeerrordiag", String(500)),
    ]


@dataclass(frozen=True)
class PandaSchema:
    """The tables of one archive, in the schemas the deployment uses."""

    metadata: MetaData
    jedi_tasks: Table
    jedi_taskparams: Table   # the task parameter map as submitted (JSON), which jedi_tasks rows drift from
    jedi_datasets: Table
    jobsarchived4: Table
    jobsarchived: Table

    def job_table(self, name: str) -> Table:
        if name not in JOB_TABLES:
            raise ValueError(f"unknown job table {name!r}; expected one of {JOB_TABLES}")
        return getattr(self, name)


def panda_schema(schema: str | None = None, archive_schema: str | None = None) -> PandaSchema:
    """Table definitions for an archive whose live tables sit in `schema` (doma_panda / ATLAS_PANDA)
    and whose long-term job table sits in `archive_schema` (doma_pandaarch / ATLAS_PANDAARCH).
    SQLite has no schemas: pass None for both."""
    metadata = MetaData()
    jobs_tables = {}
    for name, table_schema in (("jobsarchived4", schema), ("jobsarchived", archive_schema)):
        table = Table(name, metadata, *_job_columns(), schema=table_schema)
        Index(f"ix_{name}_jeditaskid", table.c.jeditaskid)
        jobs_tables[name] = table
    return PandaSchema(
        metadata=metadata,
        jedi_tasks=Table("jedi_tasks", metadata, *_task_columns(), schema=schema),
        jedi_taskparams=Table("jedi_taskparams", metadata,
                              Column("jeditaskid", BigInteger, primary_key=True, autoincrement=False),
                              Column("taskparams", Text), schema=schema),
        jedi_datasets=Table("jedi_datasets", metadata, *_dataset_columns(), schema=schema),
        **jobs_tables,
    )
