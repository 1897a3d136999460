"""A tiny PanDA archive written row by row, for tests whose expected values are computed by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from scoutless.archive.schema import PandaSchema, panda_schema

T0 = datetime(2025, 3, 1, 12, 0, 0)

TASK_DEFAULTS = dict(
    status="done", username="alice", prodsourcelabel="managed", workinggroup="AP_MCGN", vo="atlas",
    corecount=8, tasktype="prod", processingtype="simul", transuses="Atlas-21.0.15",
    transhome="AthSimulation-21.0.15", transpath="Sim_tf.py", architecture="x86_64-centos7-gcc8-opt",
    campaign="MC16e", gshare="MC 16", resource_type="MCORE", framework="atlas", attemptnr=0,
    ramcount=2000, ramunit="MBPerCore", baseramcount=0, cputime=300, cputimeunit="HS06sPerEvent",
    cpuefficiency=90, basewalltime=600, iointensity=10, iointensityunit="kBPerS", outdiskcount=500,
    outdiskunit="kBPerEvent", workdiskcount=2000, workdiskunit="MB",
)

JOB_DEFAULTS = dict(
    jobstatus="finished", computingsite="CERN-PROD", prodsourcelabel="managed", corecount=8,
    actualcorecount=None, cpuconsumptiontime=None, hs06=80, maxpss=8 * 1024 * 1000, nevents=1000,
    inputfilebytes=100 * 1024**2, outputfilebytes=50 * 1024**2, totrbytes=0, totwbytes=0,
    jobmetrics="coreCount=8 workDirSize=1073741824", attemptnr=1, minramcount=16000,
)


class ArchiveBuilder:
    def __init__(self, url: str, schema: str | None = None, archive_schema: str | None = None):
        self.engine = sa.create_engine(url)
        self.schema: PandaSchema = panda_schema(schema, archive_schema)
        with self.engine.begin() as conn:
            for name in {schema, archive_schema} - {None}:
                conn.execute(sa.schema.CreateSchema(name, if_not_exists=True))
        self.schema.metadata.create_all(self.engine)
        self._next_pandaid = 1

    def task(self, jeditaskid: int, created: datetime = T0, modified: datetime | None = None, **values) -> None:
        row = {**TASK_DEFAULTS, "jeditaskid": jeditaskid, "creationdate": created,
               "modificationtime": modified or created + timedelta(days=1),
               "taskname": f"mc16_13TeV.361107.PowhegPythia8_Zmumu.simul.HITS.e3601_s{jeditaskid}", **values}
        with self.engine.begin() as conn:
            conn.execute(self.schema.jedi_tasks.insert(), [row])

    def task_params(self, jeditaskid: int, **params) -> None:
        """The task's parameter map as submitted (JEDI's key names), in jedi_taskparams."""
        with self.engine.begin() as conn:
            conn.execute(self.schema.jedi_taskparams.insert(), [{"jeditaskid": jeditaskid,
                                                                  "taskparams": json.dumps(params)}])

    def dataset(self, jeditaskid: int, datasetid: int, type_: str, nfiles: int, nevents: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.schema.jedi_datasets.insert(), [dict(
                jeditaskid=jeditaskid, datasetid=datasetid, type=type_, nfiles=nfiles, nevents=nevents,
                datasetname=f"ds{datasetid}", status="ready")])

    def job(self, jeditaskid: int, wall_s: float = 4200, table: str = "jobsarchived", pandaid: int | None = None,
            **values) -> int:
        pandaid = pandaid or self._next_pandaid
        self._next_pandaid = max(self._next_pandaid, pandaid) + 1
        start = T0 + timedelta(hours=1)
        row = {**JOB_DEFAULTS, "pandaid": pandaid, "jeditaskid": jeditaskid, "starttime": start,
               "endtime": start + timedelta(seconds=wall_s), "modificationtime": start, **values}
        with self.engine.begin() as conn:
            conn.execute(self.schema.job_table(table).insert(), [row])
        return pandaid

    def execute(self, sql: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql))
