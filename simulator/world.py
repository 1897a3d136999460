"""A simulated PanDA archive: jedi_tasks, jedi_taskparams, jedi_datasets, jobsarchived4 and jobsarchived.

Stands in for a real archive where none is at hand. Every draw comes from `numpy.random.default_rng`
streams spawned from `params.seed` (world, timeline, one stream per block of 2000 tasks): a seed gives the
same archive on every run and backend. Tasks are generated, run and written block by block.

World seeds: with `params.world_seed` set, the world comes from that seed instead, and so does its shape
(`WorldShape`), the hidden hyper-parameters below that are otherwise the reference values; the timeline and
the task blocks still come from `params.seed`, so the same tasks can be judged in several worlds. A world
seed multiplies, by log-uniform factors in SHAPE_SCALE (0.6-1.6), the per-kind sds of the process (user
kinds: user) effects on CPU per event and memory, the sds of the process and user effects on output size
and of the users' CPU-efficiency shift, the release walks' sds and memory jump size, the ranges of the
within-task spread of job memory and CPU per event and the heavy jobs' share and extra memory, the tasks'
CPU-efficiency sd per kind and the jobs' efficiency noise; by factors in SHAPE_RATE (0.5-2) the release
drifts, the memory jump rate and the share of tasks with heavy jobs. The kind mix within managed and within
user tasks is a Dirichlet draw around the reference shares, the user share uniform in 25-45 %. Null keeps
the reference world, every draw where it was before world seeds existed.

The world (`World`: every random property, drawn once from its seed; the values here are the reference shape)
- ~3000 MC physics processes, half per era (Run 2: mc16/mc20, Run 3: mc21/mc23): DSID and a
  `<generator>_<tune>_<process><filter>` name, Zipf popularity; ~1200 data runs (data15-18, data22-24).
  HIDDEN per-process log-normal effects on CPU per event (sd 0.7 evgen, 0.6 simul, 0.3-0.5 for the
  rest; generator, filter and process explain part of it), memory (sd 0.08-0.3) and output size (0.25).
- Software: per cache family (AthGeneration, MCProd, AthSimulation, AtlasOffline, Athena, AthDerivation,
  AnalysisBase, AthAnalysis) a legacy and/or current series (21.x, 22.0, 23.x, 24.x) with its own CPU and
  memory level; patch releases every 2-6 weeks (legacy ones stop early in the window); a task uses a
  release some weeks to months old. HIDDEN drift: each release moves CPU per event (random walk, down
  ~1 %/release) and memory (small walk, rare jumps of ~7 %). Each release has 1-3 configuration tags for
  its steps (e/s/a/r/p) with a small hidden effect (CPU sd 0.05, memory sd 0.03).
- ~500 users (Zipf activity) with HIDDEN effects on CPU (sd ~1 for prun, 0.9 pathena), memory (0.35-0.45),
  output size and CPU efficiency; 25 production managers; 38 sites with a corepower rating of 8-20
  HS06/core, a hidden true speed off the rating (sd 0.12), storage quality (CPU efficiency of I/O-heavy
  work), stage-in bandwidth, copy-to-scratch or direct I/O, a random failure rate.

Tasks
- Created over `params.days` from `params.start` at a rate growing linearly to 2.5x; ids grow with time.
  managed 65 % (deriv, simul, evgen, merge, pile, recon, reprocessing, and rarer overlay, eventIndex,
  validation); user 35 % (processingtype `panda-client-<version>-jedi-run|-jedi-athena`).
- Visible attributes follow the kind, era and release: ATLAS-nomenclature names with tag chains, cache
  and release strings, transformation, architecture, campaign, working group, gshare, corecount (1/8
  mostly, some 4/16, 0 = can vary), resource_type, splitrule (NE= or NF=, US=2 while scouting, US=3
  after), reqid, parent_tid. Fast simulation (a-tag, "MC Simulation Fast") needs ~8x less CPU.
  framework and walltime/walltimeunit are left NULL.
- True needs (written nowhere): memory per job = (base + per_core x cores) x effects; CPU per event =
  kind median (merge 0.5 ... simul 700 HS06 s) x effects; CPU efficiency per kind (simul ~0.93, deriv
  ~0.7, merge ~0.45, user ~0.55-0.6 widely spread); output kB per event per format.
- Jobs per task: log-normal (median ~12, mean ~30 with retries), at most 500 input chunks. Event-split
  kinds choose nEventsPerJob so jobs last hours given the requester's rough CPU guess; file-split kinds take
  1-50 files of the input (events per file drawn per task). Within a task: memory log-normal (sd
  0.02-0.08) plus, in 15 % of tasks, 1-12 % of jobs at 1.15-1.8x; CPU per event log-normal (sd 0.08-0.35);
  the site's true speed; efficiency noise; 5 % of multi-core jobs get other cores than requested.
- Presets: ramcount 2000 MBPerCore or the requester's estimate (users: 2000, or 3000-6000); 5 %
  MBPerCoreFixed; some single-core user tasks in MB; baseramcount 0 or 500-2000 MB for multi-core;
  cputime a rough (wall-clock based) estimate or NULL, 4 % (m)HS06sPerEventFixed; cpuefficiency 90
  (else 50-100 or NULL); basewalltime 600 (else 0-1200 or NULL).
- JEDI: the first (up to) 10 jobs are scouts, requesting the preset memory (ramcount x cores +
  baseramcount, MB: ramcount) with no walltime limit. When they are done, `jedi_formulas`
  (job_measurements -> task_values -> to_task_columns) over the finished scouts sets ramcount, cputime
  (mHS06sPerEvent below 10), iointensity, diskio, outdiskcount, workdiskcount, plus memory_leak_core and
  memory_leak_x2 (means over the scouts); ...Fixed units are never overwritten, MB stays MB;
  cpuefficiency keeps its preset (JEDI does not write it back). After a wait (days for a quarter of the
  tasks) the other jobs request the scouted memory and get maxwalltime from cputime (at least 4 h).
- Task parameter maps (jedi_taskparams): each task's values as submitted, JSON with JEDI's keys. Later, 5 % of
  the task rows are changed (other cores, cpuefficiency, basewalltime, baseramcount; modificationtime moves);
  the map keeps what was submitted, as JEDI_TaskParams does.
- Failures: out of memory when the true need exceeds the request (pilot 1235/1212/1223; maxpss just above
  the limit), retried with 1.4x memory; walltime beyond maxwalltime (1213); site and payload errors
  (0.5-3.5 % per site); lost input files (1331) and, in fragile tasks, crashing events (exe 65) that fail
  every attempt. Up to 5 attempts (user 3), each a new pandaid with attemptnr+1. Failed jobs have partial
  metrics. Task fates: ~2.5 % broken configuration (scouts fail: broken), ~2.5 % fragile (failed or
  finished), ~3 % aborted (running jobs cancelled), ~1.5 % finished early (running jobs closed).
  Jobs not ended by the end of the window are not archived; their tasks are running (or scouting, still
  with their presets), ~1 % of all.
- Job rows: maxpss/maxrss/maxvmem/avgpss/avgrss, cpuconsumptiontime, hs06 = corepower x cores, hs06sec,
  minramcount, maxwalltime, input/output bytes, totrbytes/totwbytes, jobmetrics (coreCount, nEvents,
  workDirSize in bytes), memory_leak. Jobs modified in the last 30 days of the window are in
  jobsarchived4, older ones in jobsarchived; those modified 30-32 days before its end are in both.
- Datasets: the input (pseudo_input for evgen; two minimum-bias secondaries with masterid for pile and
  overlay), output and log, and a lib for pathena; file and event counts follow the archived jobs.

A later window (`simulate_window`): tasks created over `window.days` after the archive's newest task, from
the same world, whose trends go on; the archive's "now" moves to the window's end. Shifted, a new release of
every current series is published as the window opens, needing `new_release_memory` times the memory, and
`new_release_share` of the tasks use it; the share of Run-3 tasks becomes `run3_share` (a campaign mix).

Junk: a share `params.junk_fraction` of the rows of each table, kinds drawn uniformly, counted exactly in
the summary: tasks without creationdate or processingtype, corecount 999, an unknown ramunit or
cputimeunit, endtime before creationdate; datasets with negative nevents; finished jobs without endtime,
maxpss of 10^12 kB, negative cpuconsumptiontime. It is planted after JEDI has used the clean scouts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, time

import numpy as np
import pandas as pd
import sqlalchemy as sa

from scoutless.archive import jedi_formulas
from scoutless.archive.schema import PandaSchema
from scoutless.params import JediParams, ShiftParams, SimulateParams

DAY = 86_400.0
HOUR = 3_600.0
BLOCK_TASKS = 2_000
RECENT_DAYS = 30          # jobs modified this recently are in jobsarchived4
MOVING_DAYS = 2           # jobs just older than that are still in jobsarchived4 while being copied
MAX_JOBS_PER_TASK = 500
N_SCOUTS = 10
EDITED_SHARE = 0.05       # task rows changed after submission (their parameter map keeps the submitted values)
EDIT_STREAM = 7           # the random stream of those changes, apart from the block's
# jedi_tasks columns and their keys in the task parameter map (JEDI_TaskParams.taskParams)
TASK_PARAMETER_KEYS = {
    "taskname": "taskName", "username": "userName", "prodsourcelabel": "prodSourceLabel",
    "processingtype": "processingType", "tasktype": "taskType", "workinggroup": "workingGroup",
    "campaign": "campaign", "transpath": "transPath", "transuses": "transUses", "transhome": "transHome",
    "architecture": "architecture", "corecount": "coreCount", "ramcount": "ramCount", "ramunit": "ramUnit",
    "baseramcount": "baseRamCount", "cputime": "cpuTime", "cputimeunit": "cpuTimeUnit",
    "cpuefficiency": "cpuEfficiency", "basewalltime": "baseWalltime",
}
MIN_WALLTIME = 4 * HOUR      # a job's walltime limit is never below this
VOLUME_GROWTH = 1.5       # the task rate at the end of the window is 1 + this times the rate at its start
RELEASE_AGE_DAYS = 60     # mean age of the release a new task uses
FIRST_JEDITASKID = 20_000_000
FIRST_DATASETID = 400_000_000
FIRST_PANDAID = 5_000_000_000


# ---------------------------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class Kind:
    """One processing type: its visible conventions and its true resource profile."""

    name: str
    user: bool
    share: float                  # within its prodsourcelabel (this and the sigmas: the reference world's)
    step: str                     # step in dataset names
    in_format: str | None
    out_format: str
    transpath: str
    cores: tuple[tuple[int, float], ...]
    mem_base_mb: float            # true memory per job = (base + per_core x cores) x effects
    mem_core_mb: float
    mem_sigma: float              # hidden per-process (user kinds: per-user) memory effect (log sd)
    cpu: float                    # HS06 s per event, median over processes
    cpu_sigma: float              # hidden per-process (user kinds: per-user) CPU effect (log sd)
    efficiency: float
    efficiency_sd: float          # spread of the tasks' CPU efficiency
    out_kb: float                 # output kB per event (formats override)
    split: str                    # "events" (nEventsPerJob) or "files" (nFilesPerJob)
    sizes: tuple[int, ...]        # the NE or NF values requesters use
    events_per_file: float        # median events per input file
    jobs_median: float
    data_fraction: float
    io_weight: float              # how much site storage quality moves its CPU efficiency
    substep: str                  # name in transform error messages


USER_TRF = "http://pandaserver.cern.ch:25085/trf/user/"
KINDS = (
    Kind("evgen", False, .15, "evgen", None, "EVNT", "Gen_tf.py", ((1, .7), (8, .3)),
         350, 450, .3, 100, .7, .93, .04, 100, "events", (200, 500, 1000, 2000, 5000, 10000), 0, 12, 0, 0,
         "generate"),
    Kind("simul", False, .20, "simul", "EVNT", "HITS", "Sim_tf.py",
         ((8, .82), (1, .07), (4, .04), (16, .04), (0, .03)),
         700, 700, .15, 700, .6, .93, .03, 1000, "events", (100, 200, 500, 1000, 2000), 5000, 16, 0, .2,
         "EVNTtoHITS"),
    Kind("pile", False, .08, "recon", "HITS", "AOD", "Reco_tf.py", ((8, .93), (0, .07)),
         1800, 1300, .1, 250, .35, .85, .05, 450, "events", (500, 1000, 2000), 1000, 16, 0, .5,
         "HITtoRDO"),
    Kind("recon", False, .05, "recon", "RDO", "AOD", "Reco_tf.py", ((8, .7), (1, .3)),
         1200, 650, .1, 25, .4, .82, .06, 400, "files", (1, 2), 4000, 12, .3, .6, "RAWtoALL"),
    Kind("reprocessing", False, .03, "recon", "RAW", "AOD", "Reco_tf.py", ((8, 1.0),),
         1500, 800, .08, 60, .3, .86, .04, 300, "files", (1,), 3000, 24, 1.0, .6, "RAWtoALL"),
    Kind("deriv", False, .27, "deriv", "AOD", "DAOD_PHYS", "Derivation_tf.py",
         ((1, .45), (8, .45), (4, .05), (0, .05)),
         1700, 1000, .12, 6.0, .45, .72, .08, 45, "files", (1, 2, 3, 5), 15000, 14, .35, 1.0, "Derivation"),
    Kind("merge", False, .15, "merge", "HITS", "HITS", "HITSMerge_tf.py", ((1, .9), (8, .1)),
         150, 130, .1, .5, .5, .45, .12, 1000, "files", (5, 10, 20, 50), 1000, 10, .2, 1.5, "Merge"),
    Kind("overlay", False, .03, "recon", "HITS", "AOD", "Reco_tf.py", ((8, 1.0),),
         1500, 1000, .1, 150, .35, .8, .05, 450, "events", (500, 1000), 1000, 10, 0, .5, "Overlay"),
    Kind("eventIndex", False, .02, "merge", "AOD", "EI", "POOLtoEI_tf.py", ((1, 1.0),),
         400, 200, .1, .02, .3, .3, .1, .2, "files", (5, 10, 20), 5000, 8, 1.0, 2.0, "POOLtoEI"),
    Kind("validation", False, .02, "recon", "HITS", "AOD", "Reco_tf.py", ((8, .8), (1, .2)),
         1200, 650, .1, 30, .4, .82, .06, 400, "events", (100, 200, 500), 1000, 5, 0, .6, "RAWtoALL"),
    Kind("jedi-run", True, .55, "", "DAOD_PHYS", "NTUP", USER_TRF + "runGen-00-00-02",
         ((1, .95), (4, .02), (8, .03)), 250, 600, .45, 1.0, 1.0, .55, .18, 6, "files",
         (1, 2, 5, 10, 20), 20000, 9, .3, 1.5, "runGen"),
    Kind("jedi-athena", True, .45, "", "AOD", "DAOD", USER_TRF + "runAthena-00-00-12",
         ((1, .85), (8, .15)), 600, 900, .35, 5.0, .9, .62, .15, 25, "files", (1, 2, 5, 10), 10000, 9, .3,
         1.2, "runAthena"),
)
KIND = {k.name: i for i, k in enumerate(KINDS)}
MANAGED_KINDS = np.array([i for i, k in enumerate(KINDS) if not k.user])
USER_KINDS = np.array([i for i, k in enumerate(KINDS) if k.user])


def _kind_array(attribute: str) -> np.ndarray:
    return np.array([getattr(k, attribute) for k in KINDS])


# ---------------------------------------------------------------------------------------------- world shape
SHAPE_SCALE = (.6, 1.6)       # a world seed multiplies each scale by a log-uniform factor in this range,
SHAPE_RATE = (.5, 2.0)        # and each drift and rate by one in this range
KIND_MIX_CONCENTRATION = 40   # Dirichlet concentration of a world's kind mix around the reference shares
USER_SHARE_RANGE = (.25, .45)


@dataclass(frozen=True)
class WorldShape:
    """The hidden hyper-parameters of a world. The defaults are the reference world's (no world seed);
    `draw_shape` varies them around it so that models can be judged on several worlds. Per-kind tuples
    follow KINDS."""

    # log sd of the hidden per-process (user kinds: per-user) effects on CPU per event and memory
    cpu_sigma: tuple[float, ...] = tuple(k.cpu_sigma for k in KINDS)
    mem_sigma: tuple[float, ...] = tuple(k.mem_sigma for k in KINDS)
    process_out_sd: float = .25          # log sd of the per-process (data: per-run) output-size effect
    user_out_sd: float = .6              # log sd of the per-user output-size effect
    user_eff_sd: float = .12             # sd of the per-user CPU-efficiency shift
    # release drift: log steps per release of CPU per event and memory, plus rare memory jumps
    release_cpu_drift: float = -.008
    release_cpu_sd: float = .025
    release_mem_drift: float = .003
    release_mem_sd: float = .015
    release_mem_jump_rate: float = .06
    release_mem_jump_sd: float = .07
    # within a task: the ranges its job spread is drawn from
    job_mem_sd: tuple[float, float] = (.02, .08)
    heavy_task_share: float = .15                        # tasks with heavy jobs,
    heavy_job_share: tuple[float, float] = (.01, .12)    # the share of their jobs that are heavy,
    heavy_factor: tuple[float, float] = (1.15, 1.8)      # and how much more memory those need
    job_cpu_sd: tuple[float, float] = (.08, .35)
    # CPU efficiency: the tasks' sd per kind and the jobs' log-normal noise
    efficiency_sd: tuple[float, ...] = tuple(k.efficiency_sd for k in KINDS)
    job_eff_sd: float = .06
    # the kind mix: each kind's share within its prodsourcelabel, and the share of user tasks
    kind_share: tuple[float, ...] = tuple(k.share for k in KINDS)
    user_share: float = .35


def draw_shape(rng: np.random.Generator) -> WorldShape:
    """A world's hidden hyper-parameters, drawn around the reference world's."""
    ref = WorldShape()

    def factor(spread: tuple[float, float], size: int | None = None) -> np.ndarray:
        return np.exp(rng.uniform(np.log(spread[0]), np.log(spread[1]), size))

    def scale(value: float) -> float:
        return float(value * factor(SHAPE_SCALE))

    def rate(value: float) -> float:
        return float(value * factor(SHAPE_RATE))

    def per_kind(values: tuple[float, ...]) -> tuple[float, ...]:
        return tuple((np.array(values) * factor(SHAPE_SCALE, len(values))).tolist())

    def span(values: tuple[float, float]) -> tuple[float, ...]:
        return tuple((np.array(values) * factor(SHAPE_SCALE)).tolist())     # one factor keeps low < high

    shares = np.array(ref.kind_share)
    for group in (MANAGED_KINDS, USER_KINDS):
        shares[group] = rng.dirichlet(KIND_MIX_CONCENTRATION * shares[group])
    heavy_excess = np.array(ref.heavy_factor) - 1
    return WorldShape(
        cpu_sigma=per_kind(ref.cpu_sigma), mem_sigma=per_kind(ref.mem_sigma),
        process_out_sd=scale(ref.process_out_sd), user_out_sd=scale(ref.user_out_sd),
        user_eff_sd=scale(ref.user_eff_sd),
        release_cpu_drift=rate(ref.release_cpu_drift), release_cpu_sd=scale(ref.release_cpu_sd),
        release_mem_drift=rate(ref.release_mem_drift), release_mem_sd=scale(ref.release_mem_sd),
        release_mem_jump_rate=rate(ref.release_mem_jump_rate), release_mem_jump_sd=scale(ref.release_mem_jump_sd),
        job_mem_sd=span(ref.job_mem_sd), heavy_task_share=rate(ref.heavy_task_share),
        heavy_job_share=span(ref.heavy_job_share),
        heavy_factor=tuple((1 + heavy_excess * factor(SHAPE_SCALE)).tolist()),
        job_cpu_sd=span(ref.job_cpu_sd), efficiency_sd=per_kind(ref.efficiency_sd),
        job_eff_sd=scale(ref.job_eff_sd), kind_share=tuple(shares.tolist()),
        user_share=float(rng.uniform(*USER_SHARE_RANGE)),
    )


# Formats: output kB per event and hidden CPU / memory factors of the derivation that writes them.
DAOD_FORMATS = (
    ("DAOD_PHYS", .30, 45, 1.0, 1.0), ("DAOD_PHYSLITE", .20, 14, .6, .85),
    ("DAOD_FTAG1", .07, 110, 1.4, 1.15), ("DAOD_JETM1", .07, 70, 1.1, 1.05),
    ("DAOD_EGAM1", .06, 35, .8, .95), ("DAOD_SUSY5", .06, 25, .7, .95),
    ("DAOD_HIGG1D1", .05, 20, .6, .9), ("DAOD_TOPQ1", .06, 40, .8, .95), ("DAOD_EXOT2", .05, 55, .9, 1.0),
    ("DAOD_LLP1", .04, 150, 1.8, 1.2), ("DAOD_TRUTH3", .04, 8, .3, .7),
)
# Merged formats: share, kB per event, CPU and memory factors, the kind that produced them, transformation,
# events per input file.
MERGE_FORMATS = (
    ("HITS", .35, 1000, .8, 1.0, "simul", "HITSMerge_tf.py", 1000),
    ("AOD", .25, 400, .5, 2.5, "recon", "AODMerge_tf.py", 3000),
    ("DAOD_PHYS", .30, 45, .15, .8, "deriv", "DAODMerge_tf.py", 10000),
    ("EVNT", .10, 100, .2, .8, "evgen", "EVNTMerge_tf.py", 5000),
)
USER_INPUTS = (("DAOD_PHYS", .45, 45), ("DAOD_PHYSLITE", .3, 14), ("AOD", .15, 400), ("NTUP_PILEUP", .1, 10))
RAW_KB = {"EVNT": 100, "HITS": 1000, "RDO": 2500, "RAW": 1000, "AOD": 400}
STEP_OF_FORMAT = {"EVNT": "evgen", "HITS": "simul", "RDO": "recon", "AOD": "recon", "RAW": "merge"}

# Software: (family, series) -> first patch, legacy (releases stop early in the window), CPU and memory
# factors of the series, architecture.
SERIES = {
    ("AthGeneration", "21.6"): (90, True, 1.0, 1.0, "x86_64-centos7-gcc8-opt"),
    ("AthGeneration", "23.6"): (10, False, .95, 1.1, "x86_64-el9-gcc13-opt"),
    ("MCProd", "21.6"): (90, True, 1.0, 1.0, "x86_64-centos7-gcc8-opt"),
    ("MCProd", "23.6"): (10, False, .95, 1.1, "x86_64-el9-gcc13-opt"),
    ("AthSimulation", "21.0"): (15, True, 1.1, .95, "x86_64-slc6-gcc62-opt"),
    ("AthSimulation", "23.0"): (10, False, .9, 1.0, "x86_64-el9-gcc13-opt"),
    ("AtlasOffline", "21.0"): (77, True, 1.15, .95, "x86_64-slc6-gcc62-opt"),
    ("Athena", "22.0"): (40, True, 1.0, 1.0, "x86_64-centos7-gcc11-opt"),
    ("Athena", "23.0"): (20, False, .95, 1.05, "x86_64-el9-gcc13-opt"),
    ("Athena", "24.0"): (10, False, .85, 1.08, "x86_64-el9-gcc13-opt"),
    ("AthDerivation", "21.2"): (150, True, 1.2, .9, "x86_64-centos7-gcc8-opt"),
    ("AnalysisBase", "21.2"): (150, True, 1.1, .9, "x86_64-centos7-gcc8-opt"),
    ("AnalysisBase", "24.2"): (10, False, .9, 1.0, "x86_64-el9-gcc13-opt"),
    ("AthAnalysis", "21.2"): (150, True, 1.1, .9, "x86_64-centos7-gcc8-opt"),
    ("AthAnalysis", "24.2"): (10, False, .9, 1.0, "x86_64-el9-gcc13-opt"),
}
FAMILY_LETTERS = {"AthGeneration": "e", "MCProd": "e", "AthSimulation": "sa", "AtlasOffline": "r",
                  "Athena": "rp", "AthDerivation": "p"}
FIRST_TAG = {"e": 8000, "s": 3600, "a": 880, "r": 13000, "p": 5200}
# Per kind and era: (family, series, weight); None = no release (plain prun).
SOFTWARE = {
    "evgen": {2: (("AthGeneration", "21.6", .8), ("MCProd", "21.6", .2)),
              3: (("AthGeneration", "23.6", .8), ("MCProd", "23.6", .2))},
    "simul": {2: (("AthSimulation", "21.0", 1.0),), 3: (("AthSimulation", "23.0", 1.0),)},
    "recon": {2: (("AtlasOffline", "21.0", .4), ("Athena", "22.0", .6)),
              3: (("Athena", "23.0", .4), ("Athena", "24.0", .6))},
    "reprocessing": {2: (("Athena", "22.0", 1.0),), 3: (("Athena", "24.0", 1.0),)},
    "deriv": {2: (("AthDerivation", "21.2", .5), ("Athena", "24.0", .5)), 3: (("Athena", "24.0", 1.0),)},
    "jedi-run": {2: (("AnalysisBase", "21.2", .5), ("AthAnalysis", "21.2", .1), (None, None, .4)),
                 3: (("AnalysisBase", "24.2", .55), ("AthAnalysis", "24.2", .1), (None, None, .35))},
    "jedi-athena": {2: (("AthAnalysis", "21.2", .5), ("Athena", "22.0", .3), ("AnalysisBase", "21.2", .2)),
                    3: (("AthAnalysis", "24.2", .5), ("Athena", "24.0", .3), ("AnalysisBase", "24.2", .2))},
}
SOFTWARE_OF_KIND = {"pile": "recon", "overlay": "recon", "eventIndex": "recon", "validation": "recon"}
OWN_TAG_LETTER = {"evgen": "e", "simul": "s", "pile": "r", "recon": "r", "reprocessing": "r", "deriv": "p",
                  "overlay": "r", "validation": "r"}
MERGE_LETTER = {"HITS": "s", "AOD": "r", "DAOD_PHYS": "p", "EVNT": "e"}
UPSTREAM_LETTERS = {"evgen": "", "reprocessing": "", "simul": "e", "pile": "es", "recon": "es",
                    "overlay": "es", "validation": "es", "deriv": "esr", "merge": "esr", "eventIndex": "esr",
                    "jedi-run": "esrp", "jedi-athena": "esrp"}

GENERATORS = (  # name, tune, hidden event-generation cost
    ("PhPy8EG", "A14", 1.0), ("PowhegPythia8EvtGen", "AZNLOCTEQ6L1", 1.0), ("MGPy8EG", "A14N23LO", 2.5),
    ("aMcAtNloPy8EvtGen", "MEN30NLO_A14N23LO", 4.0), ("Sh_2211", "", 8.0), ("Sh_2214", "", 9.0),
    ("Py8EG", "A14NNPDF23LO", .2), ("PhH7EG", "H7UE", 1.3), ("MGH7EG", "H7UE", 2.8),
    ("Pythia8EvtGen", "A14NNPDF23LO", .2),
)
PROCESSES = (  # short name ({m}, {n}: mass points), physics group, hidden event complexity
    ("Zmumu", "SM", .8), ("Zee", "SM", .8), ("Ztautau", "SM", .9), ("Wmunu", "SM", .7), ("Wenu", "SM", .7),
    ("Wtaunu", "SM", .75), ("ZZ_4l", "SM", .9), ("WZ_lvll", "SM", .9), ("WW_lvlv", "SM", .85),
    ("ttbar_hdamp258p75_nonallhad", "Top", 1.6), ("ttbar_hdamp258p75_dil", "Top", 1.5),
    ("tchan_BW50_lept_top", "Top", 1.1), ("tW_DR_dyn_incl", "Top", 1.3), ("ttW", "Top", 1.7),
    ("ttZnunu", "Top", 1.7), ("ggH125_ZZ4lep", "Higgs", 1.0), ("VBFH125_gamgam", "Higgs", 1.0),
    ("ttH125_semilep", "Higgs", 1.8), ("WmH125J_Wincl_H_bb", "Higgs", 1.1), ("HHbbyy_cHHH01d0", "Higgs", 1.2),
    ("jetjet_JZ{n}", "JetEtmiss", 1.2), ("gammajet_DP{m}", "EGamma", 1.0), ("GG_direct_{m}_{n}", "SUSY", 1.4),
    ("C1N2_WZ_{m}_{n}", "SUSY", 1.0), ("TT_directTT_{m}_{n}", "SUSY", 1.3), ("Zprime_ee_{m}", "Exotics", .9),
    ("Wprime_WZ_{m}", "Exotics", 1.1), ("LQ_ld_{m}", "Exotics", 1.2), ("bb_Jpsimu4mu4", "BPHY", .5),
    ("pp_Upsilon1S_mu4mu4", "BPHY", .5), ("Ztautau_lephad", "Tau", .9), ("minbias_inelastic", "SM", .4),
)
FILTERS = (("", 1.0, .7), ("_BFilter", 3.0, .06), ("_CFilterBVeto", 2.0, .06), ("_CVetoBVeto", 1.2, .06),
           ("_1LepFilter", 1.5, .05), ("_2LepFilter", 2.5, .03), ("_4lFilter", 4.0, .02),
           ("_MET200", 6.0, .02))
MC_PROJECTS = {2: (("mc16_13TeV", ("MC16a", "MC16d", "MC16e")), ("mc20_13TeV", ("MC20a", "MC20d", "MC20e"))),
               3: (("mc21_13p6TeV", ("MC21a",)), ("mc23_13p6TeV", ("MC23a", "MC23c", "MC23d", "MC23e")))}
DATA_YEARS = {2: ((15, 276262), (16, 297730), (17, 325713), (18, 348885)),
              3: ((22, 427394), (23, 451587), (24, 473235))}
STREAMS = (("physics_Main", .85), ("physics_Late", .05), ("physics_BphysLS", .05), ("physics_ZeroBias", .05))
GROUPS = ("Higgs", "Top", "SUSY", "Exotics", "SM", "BPHY", "JetEtmiss", "EGamma", "Tau")
FIRST_NAMES = ("Anna", "Ben", "Carlos", "Daria", "Elena", "Felix", "Gao", "Hiro", "Ines", "Jan", "Kari",
               "Lucia", "Marco", "Nadia", "Oleg", "Petra", "Quentin", "Rosa", "Sven", "Tomas", "Ugo", "Vera",
               "Wei", "Ximena", "Yusuf", "Zofia", "Aditi", "Bruno", "Chiara", "Dmitri")
LAST_NAMES = ("Mueller", "Rossi", "Tanaka", "Smith", "Novak", "Garcia", "Kowalski", "Dubois", "Jensen",
              "Ivanova", "Silva", "Chen", "Okafor", "Larsen", "Moreau", "Schmidt", "Bianchi", "Nakamura",
              "Brown", "Horvat", "Lopez", "Nowak", "Fischer", "Petrov", "Santos", "Wang", "Berg", "Conti",
              "Yilmaz", "Haddad", "Kim", "Walker", "Weber", "Ricci", "Sato", "Dvorak", "Martin", "Costa")
SITES = (  # name, capacity weight, Tier-1 (a nucleus)
    ("CERN-PROD", 5, True), ("BNL_PROD", 6, True), ("TRIUMF", 3, True),
    ("FZK-LCG2", 3.5, True), ("IN2P3-CC", 3.5, True), ("INFN-T1", 3, True),
    ("RAL-LCG2", 3.5, True), ("SARA-MATRIX", 2, True), ("NDGF-T1", 2, True),
    ("pic", 1.5, True), ("RRC-KI-T1", 1.5, True), ("TOKYO-LCG2", 1.5, False),
    ("DESY-HH", 2.5, False), ("MWT2", 3, False), ("AGLT2", 2.5, False),
    ("SWT2_CPB", 2, False), ("NET2", 1.5, False), ("BU_ATLAS_Tier2", 1, False),
    ("OU_OSCER_ATLAS", .8, False), ("UKI-NORTHGRID-MAN-HEP", 1.5, False),
    ("UKI-LT2-QMUL", 1.5, False), ("UKI-SCOTGRID-GLASGOW", 1.5, False),
    ("LRZ-LMU", 1.2, False), ("MPPMU", 1.2, False), ("praguelcg2", 1, False),
    ("CSCS-LCG2", 1.5, False), ("UNIBE-LHEP", 1, False), ("IFIC-LCG2", .8, False),
    ("INFN-NAPOLI-ATLAS", 1, False), ("INFN-MILANO-ATLASC", 1, False),
    ("INFN-ROMA1", .8, False), ("GRIF", 1.5, False), ("IN2P3-LAPP", .7, False),
    ("CA-SFU-T2", 1, False), ("CA-VICTORIA-WESTGRID-T2", .8, False),
    ("Australia-ATLAS", .8, False), ("CERN-P1", 2, False), ("NERSC_Perlmutter", 1, False),
)
TASKS_PER_SITE_SET = 6    # a task's jobs run at up to this many sites

# Failures: pilot error code, pilot diag, exe error code, exe diag template, relative frequency.
RANDOM_ERRORS = (
    (1099, "Failed to stage-in file", 0, None, 3.0), (1137, "Failed to stage-out file", 0, None, 2.0),
    (1150, "Looping job killed by pilot", 0, None, 1.0), (1305, "Failed to execute payload", 0, None, 1.0),
    (1201, "Job killed by signal: SIGTERM", 0, None, 1.5),
    (1324, "Service not available at the moment", 0, None, .5),
    (1361, "Remote file could not be opened", 0, None, 1.0),
    (0, None, 65, "Non-zero return code from {substep} (65)", 2.5),
)
OOM_ERRORS = ((1235, "Payload exceeded maximum allowed memory", .7), (1212, "Payload ran out of memory", .2),
              (1223, "Transform failed due to bad_alloc", .1))
WALLTIME_ERROR = (1213, "Reached batch system time limit")
MISSING_INPUT_ERROR = (1331, "Input file is missing in storage element")
DOOMED_MISSING, DOOMED_CRASH = 1, 2
FATES = ("normal", "broken_config", "fragile", "aborted", "finished_early")
FATE_P = (.905, .025, .025, .03, .015)

TASK_JUNK = ("task_null_creationdate", "task_null_processingtype", "task_corecount_999",
             "task_unknown_unit", "task_endtime_before_creation")
DATASET_JUNK = ("dataset_negative_nevents",)
JOB_JUNK = ("job_finished_without_endtime", "job_maxpss_absurd", "job_negative_cputime")


class ArchiveNotEmptyError(RuntimeError):
    """The target table already holds rows: the simulator only writes into an empty archive."""


@dataclass(frozen=True)
class SimulationSummary:
    tasks: int
    datasets: int
    jobs: dict[str, int]                       # rows per job table
    jobs_in_both_tables: int                   # jobs being moved: in jobsarchived4 and jobsarchived
    junk: dict[str, int] = field(default_factory=dict)   # rows made bad on purpose, by kind


# ---------------------------------------------------------------------------------------------- world
@dataclass(frozen=True)
class World:
    """Every random property of the simulated world, drawn once from its seed (see the module docstring)."""

    start: datetime
    days: int
    processes: pd.DataFrame
    runs: pd.DataFrame
    users: pd.DataFrame
    managers: tuple[str, ...]
    releases: pd.DataFrame
    tags: pd.DataFrame
    sites: pd.DataFrame
    clients: pd.DataFrame
    shape: WorldShape
    # The archive's "now": jobs ending later are not archived yet (None: the end of the window). A later
    # window moves it past `days`, which stays the scale of the world's trends.
    now_days: float | None = None
    shift: ShiftParams | None = None
    new_releases: tuple[int, ...] = ()     # rows of `releases` published by the shift

    @property
    def end_s(self) -> float:
        return self.days * DAY

    @property
    def now_s(self) -> float:
        return (self.days if self.now_days is None else self.now_days) * DAY


def _zipf(n: int, exponent: float, offset: float) -> np.ndarray:
    weights = 1.0 / (np.arange(n) + offset) ** exponent
    return weights / weights.sum()


def _standardise(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / values.std()


def draw_world(params: SimulateParams) -> World:
    """The world of `params`: drawn, with its shape, from `world_seed`; without one, the reference world
    (shape) drawn from the first of the three streams of `seed`, as before world seeds existed."""
    start = datetime.combine(params.start, time())
    if params.world_seed is None:
        world_seed = np.random.SeedSequence(params.seed).spawn(3)[0]
        return build_world(np.random.default_rng(world_seed), start, params.days, WorldShape())
    shape_seed, world_seed = np.random.SeedSequence(params.world_seed).spawn(2)
    return build_world(np.random.default_rng(world_seed), start, params.days,
                       draw_shape(np.random.default_rng(shape_seed)))


def build_world(rng: np.random.Generator, start: datetime, days: int, shape: WorldShape) -> World:
    """Draw the world of a shape: processes, runs, people, releases with their tags, sites and client versions."""
    end_s = days * DAY
    releases = _draw_releases(rng, end_s, shape)
    return World(
        start=start, days=days, processes=_draw_processes(rng), runs=_draw_runs(rng),
        users=_draw_users(rng, shape), managers=tuple(_names(rng, 25)), releases=releases,
        tags=_draw_tags(rng, releases), sites=_draw_sites(rng), clients=_draw_clients(rng, end_s), shape=shape,
    )


def _names(rng: np.random.Generator, n: int) -> list[str]:
    pairs = [(f, last) for f in FIRST_NAMES for last in LAST_NAMES]
    return [" ".join(pairs[i]) for i in rng.choice(len(pairs), n, replace=False)]


def _draw_processes(rng: np.random.Generator, per_era: int = 1500) -> pd.DataFrame:
    n = 2 * per_era
    gen = rng.integers(0, len(GENERATORS), n)
    proc = rng.integers(0, len(PROCESSES), n)
    filt = rng.choice(len(FILTERS), n, p=[f[2] for f in FILTERS])
    masses = rng.choice([300, 500, 800, 1000, 1200, 1500, 2000, 3000], (n, 2))
    jz = rng.integers(0, 13, n)
    names, complexity, cost = [], np.empty(n), np.empty(n)
    for i in range(n):
        g_name, tune, g_cost = GENERATORS[gen[i]]
        p_name, _, p_complexity = PROCESSES[proc[i]]
        short = p_name.format(m=masses[i, 0], n=masses[i, 1] // 3 if "{m}" in p_name else jz[i])
        names.append("_".join(x for x in (g_name, tune, short) if x)[:56] + FILTERS[filt[i]][0])
        complexity[i] = p_complexity * (1 + .08 * jz[i] if "JZ" in p_name else 1)
        cost[i] = g_cost * FILTERS[filt[i]][1]
    cpu_z = _standardise(np.log(complexity) + rng.normal(0, .5, n))
    era = np.repeat([2, 3], per_era)
    dsid = np.concatenate([rng.choice(np.arange(300000, 600000), per_era, replace=False),
                           rng.choice(np.arange(600000, 1000000), per_era, replace=False)])
    popularity = np.concatenate([rng.permutation(_zipf(per_era, 1.1, 10)) for _ in (2, 3)])
    return pd.DataFrame({
        "dsid": dsid, "name": names, "era": era, "group": [PROCESSES[p][1] for p in proc],
        "evgen_z": _standardise(np.log(cost) + rng.normal(0, .4, n)), "cpu_z": cpu_z,
        "mem_z": .5 * cpu_z + rng.normal(0, .87, n), "out_z": .6 * cpu_z + rng.normal(0, .8, n),
        "etag": rng.integers(FIRST_TAG["e"] - 3000, FIRST_TAG["e"] + 600, n), "weight": popularity,
    })


def _draw_runs(rng: np.random.Generator, per_year: int = 170) -> pd.DataFrame:
    rows = []
    for era, years in DATA_YEARS.items():
        for year, first in years:
            numbers = np.sort(rng.choice(np.arange(first, first + 25000), per_year, replace=False))
            rows += [(era, year, int(r)) for r in numbers]
    frame = pd.DataFrame(rows, columns=["era", "year", "run"])
    n = len(frame)
    frame["cpu_z"] = rng.normal(0, 1, n)           # pile-up and luminosity of the run
    frame["mem_z"] = .6 * frame["cpu_z"] + rng.normal(0, .8, n)
    frame["out_z"] = .5 * frame["cpu_z"] + rng.normal(0, .87, n)
    frame["weight"] = rng.dirichlet(np.ones(n))
    return frame


def _draw_users(rng: np.random.Generator, shape: WorldShape, n: int = 500) -> pd.DataFrame:
    names = _names(rng, n)
    nicks = [(name.split()[0][0] + name.split()[1]).lower()[:8] for name in names]
    return pd.DataFrame({
        "name": names, "nick": nicks, "weight": rng.permutation(_zipf(n, 1.0, 5)),
        "cpu_z": rng.normal(0, 1, n), "mem_z": rng.normal(0, 1, n), "out_z": rng.normal(0, 1, n),
        "eff_shift": rng.normal(0, shape.user_eff_sd, n),
    })


def _draw_releases(rng: np.random.Generator, end_s: float, shape: WorldShape) -> pd.DataFrame:
    rows = []
    for (family, series), (first, legacy, cpu, mem, arch) in SERIES.items():
        begin, stop = (-800 * DAY, 150 * DAY) if legacy else (-250 * DAY, end_s)
        gaps = rng.uniform(14, 40, 200) * DAY
        dates = begin + np.cumsum(gaps)
        dates = dates[dates < stop]
        cpu_walk = cpu * np.exp(np.cumsum(rng.normal(shape.release_cpu_drift, shape.release_cpu_sd, len(dates))))
        mem_steps = rng.normal(shape.release_mem_drift, shape.release_mem_sd, len(dates))
        jumps = rng.random(len(dates)) < shape.release_mem_jump_rate
        mem_steps += jumps * rng.normal(0, shape.release_mem_jump_sd)     # one jump size per series
        mem_walk = mem * np.exp(np.cumsum(mem_steps))
        for i, date in enumerate(dates):
            version = f"{series}.{first + i}" + (".0" if family == "AthDerivation" else "")
            version += f".{rng.integers(1, 4)}" if family == "MCProd" else ""
            rows.append((family, series, version, date, cpu_walk[i], mem_walk[i], arch))
    return pd.DataFrame(rows, columns=["family", "series", "version", "date_s", "cpu", "mem", "architecture"])


def _draw_tags(rng: np.random.Generator, releases: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for release in releases.sort_values("date_s", kind="stable").itertuples():
        for letter in FAMILY_LETTERS.get(release.family, ""):
            for _ in range(rng.integers(1, 4)):
                rows.append((release.Index, letter, rng.lognormal(0, .05), rng.lognormal(0, .03)))
    tags = pd.DataFrame(rows, columns=["release", "letter", "cpu", "mem"])
    tags["number"] = 0
    for letter, first in FIRST_TAG.items():
        mine = tags["letter"] == letter
        tags.loc[mine, "number"] = first + np.cumsum(rng.integers(1, 6, mine.sum()))
    tags["tag"] = tags["letter"] + tags["number"].astype(str)
    return tags


def _draw_sites(rng: np.random.Generator) -> pd.DataFrame:
    n = len(SITES)
    weight = np.array([s[1] for s in SITES], dtype=float)
    return pd.DataFrame({
        "name": [s[0] for s in SITES], "tier1": [s[2] for s in SITES],
        "weight": weight / weight.sum(), "corepower": np.round(rng.uniform(8, 20, n), 1),
        "speed": rng.lognormal(0, .12, n), "storage": rng.uniform(.75, 1.05, n),
        "bandwidth": rng.uniform(30, 300, n) * 1024**2, "copy_to_scratch": rng.random(n) < .7,
        "fail": rng.uniform(.005, .035, n),
    })


def _draw_clients(rng: np.random.Generator, end_s: float) -> pd.DataFrame:
    dates = -400 * DAY + np.cumsum(rng.uniform(15, 45, 200) * DAY)
    dates = dates[dates < end_s]
    versions = [f"1.{4 + i // 40}.{i % 40 + 20}" for i in range(len(dates))]
    return pd.DataFrame({"version": versions, "date_s": dates})


# ---------------------------------------------------------------------------------------------- public API
def simulate_archive(engine: sa.Engine, schema: PandaSchema, params: SimulateParams, jedi: JediParams,
                     progress: bool = False) -> SimulationSummary:
    """Create the archive tables and fill them with `params.tasks` simulated tasks, their datasets and jobs.

    Refuses to write into a table that already holds rows. Deterministic for `params.seed` (the tasks) and
    `params.world_seed` (the world, see `draw_world`).
    """
    _create_tables(engine, schema)
    world = draw_world(params)
    _, time_seed, block_seed = np.random.SeedSequence(params.seed).spawn(3)
    time_rng = np.random.default_rng(time_seed)
    created = _creation_times(time_rng, params.tasks, world.end_s)
    ids = FIRST_JEDITASKID + np.cumsum(time_rng.geometric(.4, params.tasks))
    counters = {"datasetid": FIRST_DATASETID, "pandaid": FIRST_PANDAID}
    return _simulate_tasks(engine, schema, world, ids, created, block_seed, jedi, params.junk_fraction,
                           counters, progress)


def simulate_window(engine: sa.Engine, schema: PandaSchema, params: SimulateParams, jedi: JediParams,
                    shifted: bool = False, progress: bool = False) -> SimulationSummary:
    """Append `params.window.tasks` tasks created over `params.window.days` after the archive's newest task.

    The world is the one `simulate_archive` drew from the same seeds; the archive's "now" moves to the end of
    the window. Shifted (`params.window.shift`): a new release of every current series needs more memory
    and most tasks use it, and the Run-2/Run-3 mix changes. Each window has its own random stream (by its
    opening day), so windows appended one after another differ; shifted or not, the same draws are used.
    """
    world = draw_world(params)
    ends = _archive_ends(engine, schema)
    if ends["creationdate"] is None:
        raise ValueError("the archive holds no task with a creationdate: simulate the archive before a window")
    opens_s = (pd.Timestamp(ends["creationdate"]) - pd.Timestamp(world.start)).total_seconds()
    window = params.window
    window_seed = np.random.SeedSequence(params.seed, spawn_key=(3, int(opens_s // DAY)))
    time_seed, block_seed, shift_seed = window_seed.spawn(3)
    world = replace(world, now_days=opens_s / DAY + window.days)
    if shifted:
        world = _shift(world, window.shift, np.random.default_rng(shift_seed), opens_s)
    time_rng = np.random.default_rng(time_seed)
    created = opens_s + np.sort(time_rng.random(window.tasks)) * window.days * DAY
    ids = ends["jeditaskid"] + np.cumsum(time_rng.geometric(.4, window.tasks))
    counters = {"datasetid": ends["datasetid"] + 1, "pandaid": ends["pandaid"] + 1}
    return _simulate_tasks(engine, schema, world, ids, created, block_seed, jedi, params.junk_fraction,
                           counters, progress)


def _archive_ends(engine: sa.Engine, schema: PandaSchema) -> dict:
    """The newest creation date and the largest ids already in the archive."""
    queries = {
        "creationdate": sa.select(sa.func.max(schema.jedi_tasks.c.creationdate)),
        "jeditaskid": sa.select(sa.func.max(schema.jedi_tasks.c.jeditaskid)),
        "datasetid": sa.select(sa.func.max(schema.jedi_datasets.c.datasetid)),
        "pandaid": sa.select(sa.func.max(sa.union_all(
            sa.select(schema.jobsarchived4.c.pandaid), sa.select(schema.jobsarchived.c.pandaid)
        ).subquery().c.pandaid)),
    }
    with engine.connect() as conn:
        ends = {name: conn.execute(query).scalar() for name, query in queries.items()}
    return ends | {key: int(ends[key] or 0) for key in ("jeditaskid", "datasetid", "pandaid")}


def _shift(world: World, shift: ShiftParams, rng: np.random.Generator, at_s: float) -> World:
    """The world with a new release of every current series (memory x shift.new_release_memory), and tags."""
    releases = world.releases
    current = [key for key, spec in SERIES.items() if not spec[1]]
    rows = []
    for family, series in current:
        last = releases[(releases["family"] == family) & (releases["series"] == series)].iloc[-1]
        patch = int(last["version"].split(".")[len(series.split("."))]) + 1
        version = f"{series}.{patch}" + (".0" if family == "AthDerivation" else "") + (
            ".1" if family == "MCProd" else "")
        rows.append((family, series, version, at_s, last["cpu"], last["mem"] * shift.new_release_memory,
                     last["architecture"]))
    added = pd.DataFrame(rows, columns=releases.columns, index=range(len(releases), len(releases) + len(rows)))
    tag_rows = []
    for index, row in added.iterrows():
        for letter in FAMILY_LETTERS.get(row["family"], ""):
            for _ in range(rng.integers(1, 4)):
                tag_rows.append((index, letter, rng.lognormal(0, .05), rng.lognormal(0, .03)))
    tags = pd.DataFrame(tag_rows, columns=["release", "letter", "cpu", "mem"])
    tags["number"] = 0
    for letter in tags["letter"].unique():
        mine = (tags["letter"] == letter).to_numpy()
        last_number = world.tags.loc[world.tags["letter"] == letter, "number"].max()
        tags.loc[mine, "number"] = last_number + np.cumsum(rng.integers(1, 6, mine.sum()))
    tags["tag"] = tags["letter"] + tags["number"].astype(str)
    return replace(world, releases=pd.concat([releases, added]), tags=pd.concat([world.tags, tags], ignore_index=True),
                   shift=shift, new_releases=tuple(added.index))


def _use_new_releases(world: World, rng: np.random.Generator, release: np.ndarray) -> None:
    """Move a share of the tasks (shift.new_release_share) to their series' new release."""
    releases = world.releases
    newest = {(releases.at[i, "family"], releases.at[i, "series"]): i for i in world.new_releases}
    picked = rng.random(len(release)) < world.shift.new_release_share
    known = release >= 0
    family = releases["family"].to_numpy()[np.clip(release, 0, None)]
    series = releases["series"].to_numpy()[np.clip(release, 0, None)]
    for (fam, ser), index in newest.items():
        release[picked & known & (family == fam) & (series == ser)] = index


def _simulate_tasks(engine: sa.Engine, schema: PandaSchema, world: World, ids: np.ndarray, created: np.ndarray,
                    block_seed: np.random.SeedSequence, jedi: JediParams, junk_fraction: float,
                    counters: dict[str, int], progress: bool) -> SimulationSummary:
    """Simulate and write the tasks (their datasets and jobs) block by block."""
    n_blocks = -(-len(ids) // BLOCK_TASKS)
    block_seeds = block_seed.spawn(n_blocks)
    totals: Counter[str] = Counter()
    junk: Counter[str] = Counter()
    with _progress_bar(progress, n_blocks) as advance:
        for b in range(n_blocks):
            part = slice(b * BLOCK_TASKS, (b + 1) * BLOCK_TASKS)
            rng = np.random.default_rng(block_seeds[b])
            tables = _simulate_block(world, rng, ids[part], created[part], jedi, counters)
            junk.update(_plant_junk(rng, tables, junk_fraction))
            totals.update(_write_block(engine, schema, world, tables))
            advance()
    return SimulationSummary(
        tasks=totals["jedi_tasks"], datasets=totals["jedi_datasets"],
        jobs={name: totals[name] for name in ("jobsarchived4", "jobsarchived")},
        jobs_in_both_tables=totals["both"],
        junk={kind: junk[kind] for kind in TASK_JUNK + DATASET_JUNK + JOB_JUNK},
    )


def _create_tables(engine: sa.Engine, schema: PandaSchema) -> None:
    tables = (schema.jedi_tasks, schema.jedi_taskparams, schema.jedi_datasets, schema.jobsarchived4,
              schema.jobsarchived)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for name in dict.fromkeys(t.schema for t in tables if t.schema is not None):
                conn.execute(sa.schema.CreateSchema(name, if_not_exists=True))
    schema.metadata.create_all(engine)
    with engine.connect() as conn:
        for table in tables:
            if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
                raise ArchiveNotEmptyError(
                    f"table {table.fullname} already holds rows; the simulator writes only into empty tables"
                )


class _progress_bar:
    """A rich progress bar over task blocks, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.bar = Progress()
        self.bar.__enter__()
        task = self.bar.add_task("simulating task blocks", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)


def _creation_times(rng: np.random.Generator, n: int, end_s: float) -> np.ndarray:
    """Sorted creation times (s from the window start) with a rate growing linearly by VOLUME_GROWTH."""
    u = np.sort(rng.random(n))
    g = VOLUME_GROWTH
    x = (np.sqrt(1 + 2 * g * u * (1 + g / 2)) - 1) / g     # inverse CDF of a density prop. to 1 + g x
    return x * end_s


# ---------------------------------------------------------------------------------------------- tasks
def _pick(rng: np.random.Generator, options: tuple, n: int, weight_at: int = -1) -> np.ndarray:
    p = np.array([o[weight_at] for o in options], dtype=float)
    return rng.choice(len(options), n, p=p / p.sum())


def _draw_tasks(world: World, rng: np.random.Generator, ids: np.ndarray, created: np.ndarray) -> pd.DataFrame:
    """One row per task: visible attributes, presets, and the hidden truth (columns prefixed h_)."""
    n = len(ids)
    x = created / world.end_s
    shape = world.shape
    user = rng.random(n) < shape.user_share
    share = np.array(shape.kind_share)
    kind = np.where(user, rng.choice(USER_KINDS, n, p=share[USER_KINDS]),
                    rng.choice(MANAGED_KINDS, n, p=share[MANAGED_KINDS]))
    run3_share = world.shift.run3_share if world.shift and world.shift.run3_share is not None else .35 + .4 * x
    era = np.where(rng.random(n) < run3_share, 3, 2)
    data = rng.random(n) < _kind_array("data_fraction")[kind]
    t = pd.DataFrame({"jeditaskid": ids, "h_created": created, "h_kind": kind, "h_era": era,
                      "h_data": data, "h_user": user})

    # what the task processes: an output / merged / input format, with hidden factors
    fmt = np.array([KINDS[k].out_format for k in kind], dtype=object)
    in_fmt = np.array([KINDS[k].in_format for k in kind], dtype=object)
    in_kb = np.array([RAW_KB.get(f, 0) for f in in_fmt], dtype=float)
    out_kb = _kind_array("out_kb")[kind].astype(float)
    fmt_cpu = np.ones(n)
    fmt_mem = np.ones(n)
    transpath = np.array([KINDS[k].transpath for k in kind], dtype=object)
    events_per_file = _kind_array("events_per_file")[kind].astype(float)
    software_kind = np.array([SOFTWARE_OF_KIND.get(KINDS[k].name, KINDS[k].name) for k in kind], dtype=object)
    own_letter = np.array([OWN_TAG_LETTER.get(KINDS[k].name, "") for k in kind], dtype=object)

    deriv = kind == KIND["deriv"]
    pick = _pick(rng, DAOD_FORMATS, n, 1)
    fmt[deriv] = [DAOD_FORMATS[i][0] for i in pick[deriv]]
    out_kb[deriv] = [DAOD_FORMATS[i][2] for i in pick[deriv]]
    fmt_cpu[deriv] = [DAOD_FORMATS[i][3] for i in pick[deriv]]
    fmt_mem[deriv] = [DAOD_FORMATS[i][4] for i in pick[deriv]]
    in_kb[deriv & data] = 300

    merge = kind == KIND["merge"]
    pick = _pick(rng, MERGE_FORMATS, n, 1)
    for i, (name, _, kb, cpu, mem, producer, trf, per_file) in enumerate(MERGE_FORMATS):
        m = merge & (pick == i)
        fmt[m], in_fmt[m], in_kb[m], out_kb[m], events_per_file[m] = name, name, kb, kb, per_file
        fmt_cpu[m], fmt_mem[m], software_kind[m], transpath[m] = cpu, mem, producer, trf
        own_letter[m] = MERGE_LETTER[name]
    merge_daod = merge & (fmt == "DAOD_PHYS")
    pick = _pick(rng, DAOD_FORMATS, n, 1)
    fmt[merge_daod] = in_fmt[merge_daod] = [DAOD_FORMATS[i][0] for i in pick[merge_daod]]
    in_kb[merge_daod] = out_kb[merge_daod] = [DAOD_FORMATS[i][2] for i in pick[merge_daod]]
    data[merge & ~np.isin(fmt, ["AOD"]) & ~merge_daod] = False     # HITS / EVNT merges are MC

    for k in USER_KINDS:
        m = kind == k
        pick = _pick(rng, USER_INPUTS, int(m.sum()), 1)
        in_fmt[m] = [USER_INPUTS[i][0] for i in pick]
        in_kb[m] = [USER_INPUTS[i][2] for i in pick]
    fast = (kind == KIND["simul"]) & (rng.random(n) < .25)
    own_letter[fast] = "a"
    fmt_cpu[fast], fmt_mem[fast] = .12, .85
    in_fmt[(kind == KIND["recon"]) & data] = "RAW"
    in_kb[(kind == KIND["recon"]) & data] = 1000
    in_kb *= rng.lognormal(0, .1, n)

    # software: family and series by kind and era, then a release mostly weeks to months old
    family = np.full(n, None, dtype=object)
    series = np.full(n, None, dtype=object)
    for key in dict.fromkeys(zip(software_kind.tolist(), era.tolist(), strict=True)):
        m = (software_kind == key[0]) & (era == key[1])
        options = SOFTWARE[key[0]][key[1]]
        pick = _pick(rng, options, int(m.sum()))
        family[m] = [options[i][0] for i in pick]
        series[m] = [options[i][1] for i in pick]
    transpath[deriv & (family == "AthDerivation")] = "Reco_tf.py"     # release 21 derived inside Reco_tf
    release = np.full(n, -1)
    for (fam, ser), rows in world.releases.groupby(["family", "series"], sort=True).groups.items():
        m = (family == fam) & (series == ser)
        if m.any():
            dates = world.releases.loc[rows, "date_s"].to_numpy()
            target = created[m] - rng.exponential(RELEASE_AGE_DAYS * DAY, m.sum()) - 3 * DAY
            pos = np.searchsorted(dates, target, side="right") - 1
            release[m] = np.asarray(rows)[np.clip(pos, 0, None)]
    if world.new_releases:
        _use_new_releases(world, rng, release)
    has_release = release >= 0
    rel = world.releases.iloc[np.clip(release, 0, None)]
    rel_cpu = np.where(has_release, rel["cpu"].to_numpy(), 1.0)
    rel_mem = np.where(has_release, rel["mem"].to_numpy(), 1.0)
    version = np.where(has_release, rel["version"].to_numpy(), None)

    # the task's own configuration tag, one of its release's tags for its step
    tag = np.full(n, None, dtype=object)
    tag_cpu = np.ones(n)
    tag_mem = np.ones(n)
    by_release_letter = world.tags.groupby(["release", "letter"], sort=True).indices
    choice = rng.random(n)
    for i in np.flatnonzero(has_release & (own_letter != "")):
        rows = by_release_letter.get((release[i], own_letter[i]))
        if rows is None:
            continue
        row = rows[0] if choice[i] < .6 else rows[int(choice[i] * len(rows)) % len(rows)]
        tag[i] = world.tags["tag"].iat[row]
        tag_cpu[i], tag_mem[i] = world.tags["cpu"].iat[row], world.tags["mem"].iat[row]

    # the physics: an MC process, a data run, and for user tasks the user
    proc = np.empty(n, dtype=int)
    run = np.empty(n, dtype=int)
    for e in (2, 3):    # within the task's era
        m = era == e
        for index, table in ((proc, world.processes), (run, world.runs)):
            pool = np.flatnonzero(table["era"].to_numpy() == e)
            w = table["weight"].to_numpy()[pool]
            index[m] = rng.choice(pool, m.sum(), p=w / w.sum())
    uw = world.users["weight"].to_numpy()
    person = rng.choice(len(world.users), n, p=uw / uw.sum())
    P, R, U = world.processes.iloc[proc], world.runs.iloc[run], world.users.iloc[person]
    cpu_z = np.where(data, R["cpu_z"], np.where(kind == KIND["evgen"], P["evgen_z"], P["cpu_z"]))
    mem_z = np.where(data, R["mem_z"], P["mem_z"])
    out_z = np.where(data, R["out_z"], P["out_z"])
    cpu_sigma = np.array(shape.cpu_sigma)[kind]
    mem_sigma = np.array(shape.mem_sigma)[kind]
    # user code dominates user tasks; the input's physics adds a little
    cpu_eff = np.where(user, cpu_sigma * U["cpu_z"] + .2 * cpu_z, cpu_sigma * cpu_z)
    mem_eff = np.where(user, mem_sigma * U["mem_z"] + .05 * mem_z, mem_sigma * mem_z)
    out_eff = np.where(user, shape.user_out_sd * U["out_z"], shape.process_out_sd * out_z)

    h_cpu = _kind_array("cpu")[kind] * np.exp(cpu_eff) * rel_cpu * tag_cpu * fmt_cpu
    mem_mult = np.exp(mem_eff) * rel_mem * tag_mem * fmt_mem
    cores = np.array([KINDS[k].cores[i][0] for k, i in zip(kind, _core_pick(rng, kind), strict=True)])
    eff = _kind_array("efficiency")[kind] + np.array(shape.efficiency_sd)[kind] * rng.normal(0, 1, n)
    eff = np.clip(eff + np.where(user, U["eff_shift"], 0.0), .08, .98)
    t = t.assign(
        h_proc=proc, h_run=run, h_person=person, h_release=release, h_fast=fast,
        h_cpu=h_cpu, h_mem_base=_kind_array("mem_base_mb")[kind] * mem_mult,
        h_mem_core=_kind_array("mem_core_mb")[kind] * mem_mult,
        h_mem_sd=rng.uniform(*shape.job_mem_sd, n),
        h_tail_p=np.where(rng.random(n) < shape.heavy_task_share, rng.uniform(*shape.heavy_job_share, n), 0),
        h_cpu_sd=rng.uniform(*shape.job_cpu_sd, n), h_eff=eff, h_in_kb=in_kb, h_out_kb=out_kb * np.exp(out_eff),
        h_leak=rng.lognormal(np.log(3), 1, n), h_fate=rng.choice(len(FATES), n, p=FATE_P),
        h_fmt=fmt, h_in_fmt=in_fmt, h_family=family, h_version=version, h_tag=tag,
        h_events_per_file=events_per_file, corecount=cores, transpath=transpath,
    )
    t["h_data"] = data
    _presets(rng, t)
    _job_sizes(rng, t)
    _visible(world, rng, t)
    return t


def _core_pick(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    out = np.empty(len(kind), dtype=int)
    for k in np.unique(kind):
        m = kind == k
        out[m] = _pick(rng, KINDS[k].cores, int(m.sum()))
    return out


def _round_up(values: np.ndarray, step: float) -> np.ndarray:
    return np.ceil(values / step) * step


def _presets(rng: np.random.Generator, t: pd.DataFrame) -> None:
    """JEDI's values before scouting: what the requester or the system put on the task."""
    n = len(t)
    user = t["h_user"].to_numpy()
    cores = t["corecount"].to_numpy()
    per_core = np.maximum(cores, 1)
    need_core = t["h_mem_base"].to_numpy() / per_core + t["h_mem_core"].to_numpy()
    need_core *= rng.lognormal(0, .25, n)     # the requester's rough idea
    u = rng.random(n)
    ram = np.where(user, np.where(u < .8, 2000, rng.choice([3000, 4000, 6000], n)),
                   np.where(u < .3, 2000, np.maximum(_round_up(need_core * 1.3, 100), 500)))
    unit = np.full(n, "MBPerCore", dtype=object)
    fixed = rng.random(n) < .05
    unit[fixed] = "MBPerCoreFixed"
    ram[fixed] = _round_up(need_core[fixed] * rng.uniform(1.0, 1.6, fixed.sum()), 250)
    plain_mb = user & (cores == 1) & ~fixed & (rng.random(n) < .12)
    unit[plain_mb] = "MB"
    # shared memory of multi-core jobs; tasks whose core count may vary nearly always set it
    base = np.where((cores != 1) & (rng.random(n) < np.where(cores == 0, .9, .5)),
                    rng.choice([500, 1000, 1500, 2000], n), 0)

    # JEDI's cputime is wall-clock based (x preset efficiency): an expert's fixed value follows that
    wall_based = t["h_cpu"].to_numpy() * .9 / t["h_eff"].to_numpy()
    cpu_fixed = rng.random(n) < .04
    guess = wall_based * np.where(cpu_fixed, rng.lognormal(.4, .3, n), rng.lognormal(0, .7, n))
    has_cpu = cpu_fixed | (~user & (rng.random(n) < .7))
    small = guess < 10
    cputime = np.where(has_cpu, np.ceil(np.where(small, guess * 1000, guess)), np.nan)
    cpu_unit = np.where(small & has_cpu, "mHS06sPerEvent", "HS06sPerEvent").astype(object)
    cpu_unit[cpu_fixed] = cpu_unit[cpu_fixed] + "Fixed"
    efficiency = np.where(rng.random(n) < .85, 90.0, rng.choice([50.0, 70.0, 75.0, 80.0, 100.0], n))
    efficiency[rng.random(n) < .05] = np.nan
    base_wall = np.where(rng.random(n) < .85, 600.0, rng.choice([0.0, 300.0, 1200.0], n))
    base_wall[rng.random(n) < .05] = np.nan

    per_core_ram = np.where(unit == "MB", ram / per_core, ram)
    himem = np.where(per_core_ram > 2000, "_HIMEM", "")
    t["ramcount"], t["ramunit"], t["baseramcount"] = ram, unit, base
    t["cputime"], t["cputimeunit"] = cputime, cpu_unit
    t["cpuefficiency"], t["basewalltime"] = efficiency, base_wall
    t["resource_type"] = np.where(cores == 1, "SCORE", "MCORE").astype(object) + himem
    t["outdiskunit"], t["workdiskunit"] = "kBPerEvent", "MB"
    for column in ("iointensity", "diskio", "outdiskcount", "workdiskcount", "memory_leak_core",
                   "memory_leak_x2"):
        t[column] = np.nan
    for column in ("iointensityunit", "diskiounit"):
        t[column] = None


def _job_sizes(rng: np.random.Generator, t: pd.DataFrame) -> None:
    """nEventsPerJob or nFilesPerJob. Event-split tasks are sized to run some hours per job, from the
    requester's rough guess of the CPU per event; file-split ones take a usual number of files."""
    n = len(t)
    kind = t["h_kind"].to_numpy()
    cores = np.maximum(t["corecount"].to_numpy(), 1)
    guess = t["h_cpu"].to_numpy() * rng.lognormal(0, .3, n)
    target = rng.uniform(4, 12, n) * HOUR * 10 * cores * .9 / guess
    pick = rng.random(n)
    sizes = np.empty(n, dtype=int)
    for i in range(n):
        choices = np.array(KINDS[kind[i]].sizes)
        if KINDS[kind[i]].split == "events":
            sizes[i] = choices[np.argmin(np.abs(np.log(choices / target[i])))]
        else:
            sizes[i] = choices[int(pick[i] * len(choices))]
    t["h_size"] = sizes
    t["h_events_per_file"] = np.maximum(np.rint(t["h_events_per_file"] * rng.lognormal(0, .35, n)), 1)


def _visible(world: World, rng: np.random.Generator, t: pd.DataFrame) -> None:
    """Names, software strings, people, shares and split rules, consistent with the drawn task."""
    n = len(t)
    tag_numbers = world.tags.groupby("letter")["number"].apply(np.asarray).to_dict()
    upstream = {letter: rng.choice(tag_numbers[letter], n) for letter in "esrp"}
    stream = _pick(rng, STREAMS, n)
    project_pick, campaign_pick, group_pick = rng.random((3, n))
    manager = rng.choice(len(world.managers), n)
    nucleus = rng.choice(world.sites.loc[world.sites["tier1"], "name"].to_numpy(), n)
    sites = world.sites
    chosen = rng.choice(sites["name"].to_numpy(), n, p=sites["weight"])
    user_site = np.where(rng.random(n) < .05, chosen, None)
    client_date = t["h_created"].to_numpy() - rng.exponential(60 * DAY, n)    # users update slowly
    client_pos = np.searchsorted(world.clients["date_s"].to_numpy(), client_date) - 1
    client = world.clients["version"].to_numpy()[np.clip(client_pos, 0, None)]
    reqid = 40000 + (t["h_created"].to_numpy() / DAY * 14).astype(int) + rng.integers(0, 14, n)
    parent_back = np.where(rng.random(n) < .8, rng.integers(1, 20000, n), 0)
    analysis = rng.choice(["ana", "ntup", "hist", "skim", "tree", "calib", "study"], n)
    analysis_version = rng.integers(1, 30, n)
    proc = world.processes.iloc[t["h_proc"].to_numpy()]
    dsid, proc_name, etag, group = (proc[c].to_numpy() for c in ("dsid", "name", "etag", "group"))
    run = world.runs.iloc[t["h_run"].to_numpy()]
    year, run_number = run["year"].to_numpy(), run["run"].to_numpy()
    person = world.users.iloc[t["h_person"].to_numpy()]
    person_name, nick = person["name"].to_numpy(), person["nick"].to_numpy()
    architecture = world.releases["architecture"].to_numpy()[np.clip(t["h_release"].to_numpy(), 0, None)]

    cols: dict[str, list] = {c: [] for c in (
        "taskname", "username", "prodsourcelabel", "workinggroup", "tasktype", "processingtype", "transuses",
        "transhome", "architecture", "campaign", "gshare", "nucleus", "parent_tid", "reqid", "splitrule",
        "h_project", "h_prefix", "h_upstream", "h_chain")}
    for i, row in enumerate(t.itertuples(index=False)):
        kind = KINDS[row.h_kind]
        version = row.h_version
        # the physics part of the name, the project and the campaign
        if row.h_data:
            project = f"data{year[i]}_13TeV" if row.h_era == 2 else f"data{year[i]}_13p6TeV"
            prefix = f"{project}.{run_number[i]:08d}.{STREAMS[stream[i]][0]}"
            campaign = f"data{year[i]}"
        else:
            if kind.name == "validation":
                project, campaign = "valid1", "MC23" if row.h_era == 3 else "MC20"
            else:    # mc16 ran on the 21.x software, mc20 reconstruction on release 22+
                legacy_sw = row.h_family in ("AtlasOffline", "AthDerivation")
                new_sw = row.h_era == 2 and version is not None and not version.startswith("21.")
                later = int(project_pick[i] < (.7 if row.h_era == 2 else .85))
                j = 0 if legacy_sw else 1 if new_sw else later
                project, campaigns = MC_PROJECTS[row.h_era][j]
                campaign = campaigns[int(campaign_pick[i] * len(campaigns))]
            prefix = f"{project}.{dsid[i]}.{proc_name[i]}"
        # upstream configuration tags (data starts at reconstruction), then the task's own tag
        letters = UPSTREAM_LETTERS[kind.name]
        chain = [f"e{etag[i]}"] if letters and not row.h_data else []
        chain += [f"{x}{upstream[x][i]}" for x in letters[1:] if not row.h_data or x in "rp"]
        tags = "_".join(chain + ([row.h_tag] if row.h_tag else []))
        has_parent = bool(letters) and not kind.user     # a root task is its own parent
        if kind.user:
            taskname = f"user.{nick[i]}.{prefix.split('.', 1)[1][:110]}.{analysis[i]}_v{analysis_version[i]}/"
            ptype = f"panda-client-{client[i]}-{kind.name}"
            username, label, tasktype = person_name[i], "user", "anal"
            wg, gshare, campaign = None, "User Analysis" if group_pick[i] < .9 else "Express Analysis", None
        else:
            taskname = f"{prefix}.{kind.step}.{row.h_fmt}" + (f".{tags}" if tags else "")
            username, label, tasktype, ptype = world.managers[manager[i]], "managed", "prod", kind.name
            wg, gshare = _group_and_share(kind.name, row, group[i] if not row.h_data else
                                          GROUPS[int(group_pick[i] * len(GROUPS))], group_pick[i])
        flags = ",RS=1,FT=1" if kind.name == "evgen" else ""
        flags += ",UB=1" if kind.name == "jedi-athena" else "" if kind.user else ",UX=1"
        for column, value in (
            ("taskname", taskname), ("username", username), ("prodsourcelabel", label), ("workinggroup", wg),
            ("tasktype", tasktype), ("processingtype", ptype),
            ("transuses", f"Atlas-{'.'.join(version.split('.')[:3])}" if version else None),
            ("transhome", f"{row.h_family}-{version}" if version else None),
            ("architecture", architecture[i] if version else None), ("campaign", campaign),
            ("gshare", gshare), ("nucleus", None if kind.user else nucleus[i]),
            ("parent_tid", row.jeditaskid - (parent_back[i] if has_parent else 0)),
            ("reqid", None if kind.user else reqid[i]),
            ("splitrule", f"{'NE' if kind.split == 'events' else 'NF'}={row.h_size}{flags},US=2"),
            ("h_project", project), ("h_prefix", prefix), ("h_upstream", "_".join(chain) or None),
            ("h_chain", tags),
        ):
            cols[column].append(value)
    for column, values in cols.items():
        t[column] = values
    t["site"] = np.where(t["h_user"], user_site, None)
    t["vo"], t["cloud"], t["framework"] = "atlas", "WORLD", None
    t["attemptnr"] = rng.choice([0, 1, 2, 3], n, p=[.8, .12, .05, .03])
    t["walltime"], t["walltimeunit"] = np.nan, None


def _group_and_share(kind: str, row, group: str, u: float) -> tuple[str, str]:
    """Working group and global share of a production task."""
    physics = "AP_MCGN" if u < .4 else f"AP_{group}"
    if kind in ("reprocessing", "eventIndex"):
        return "AP_REPR", "Data Reprocessing"
    if kind == "validation":
        return "AP_VALI", "Validation"
    if kind == "deriv":
        share = "Data Derivations" if row.h_data else "MC Derivations"
        return ("AP_PHYS" if row.h_fmt in ("DAOD_PHYS", "DAOD_PHYSLITE") else f"GP_{group}"), share
    if kind == "evgen":
        return physics, "Event Generation"
    if kind == "simul":
        return physics, "MC Simulation Fast" if row.h_fast else "MC Simulation Full"
    if kind == "merge":
        share = {"HITS": "MC Simulation Full", "EVNT": "Event Generation", "AOD": "MC Reconstruction"}
        return physics, share.get(row.h_fmt, "MC Derivations")
    return physics, "MC Reconstruction"


# ---------------------------------------------------------------------------------------------- chunks
def _draw_chunks(world: World, rng: np.random.Generator, t: pd.DataFrame) -> pd.DataFrame:
    """The planned jobs (input chunks) of every task, with their share of the input and hidden variation."""
    n = len(t)
    kind = t["h_kind"].to_numpy()
    n_chunks = np.clip(np.rint(rng.lognormal(np.log(_kind_array("jobs_median")[kind]), 1.35)), 1,
                       MAX_JOBS_PER_TASK).astype(int)
    events_split = np.array([KINDS[k].split == "events" for k in kind])
    evpf = t["h_events_per_file"].to_numpy()
    sizes = t["h_size"].to_numpy().astype(float)
    task = np.repeat(np.arange(n), n_chunks)
    rank = np.arange(len(task)) - np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    last = rank == n_chunks[task] - 1
    size = sizes[task]
    is_events = events_split[task]
    c = len(task)
    nevents = np.where(is_events, size, 0.0)
    partial = is_events & last & (n_chunks[task] > 1)
    nevents = np.where(partial, np.ceil(size * rng.uniform(.3, 1, c)), nevents)
    files = np.where(is_events, np.maximum(np.rint(size / evpf[task]), 1), size)
    files = np.where(~is_events & last, rng.integers(1, size.astype(int) + 1), files)
    file_events = np.rint(files * evpf[task] * rng.lognormal(0, .15, c))
    nevents = np.where(is_events, nevents, np.maximum(file_events, 1))
    no_input = kind[task] == KIND["evgen"]
    files = np.where(no_input, 0, files)
    # an event-split job reads whole files even when it processes part of one
    in_events = np.where(is_events, np.maximum(nevents, files * evpf[task]), nevents)
    in_bytes = in_events * t["h_in_kb"].to_numpy()[task] * 1024 * rng.lognormal(0, .05, c)
    in_bytes[no_input] = 0
    tail = rng.random(c) < t["h_tail_p"].to_numpy()[task]
    mem = (rng.lognormal(0, t["h_mem_sd"].to_numpy()[task])
           * np.where(tail, rng.uniform(*world.shape.heavy_factor, c), 1.0))
    # chunks that fail every attempt: a lost input file, or (fragile tasks) events that crash the payload
    fragile = (t["h_fate"].to_numpy() == FATES.index("fragile"))[task]
    crash_share = rng.uniform(.3, 1, n)[task]
    doomed = np.where(fragile & (rng.random(c) < crash_share), DOOMED_CRASH,
                      np.where(rng.random(c) < .003, DOOMED_MISSING, 0))
    t["h_n_chunks"] = n_chunks
    return pd.DataFrame({
        "task": task, "rank": rank, "scout": rank < N_SCOUTS, "nevents": nevents, "files": files,
        "in_bytes": in_bytes, "h_mem": mem, "h_cpu": rng.lognormal(0, t["h_cpu_sd"].to_numpy()[task]),
        "h_out": rng.lognormal(0, .05, c), "h_doomed": doomed,
    })


# ---------------------------------------------------------------------------------------------- jobs
@dataclass
class _Requests:
    """Per task: memory request per core and base (MB), and the walltime limit inputs (NaN: no limit)."""

    ram_per_core: np.ndarray
    base_ram: np.ndarray
    cputime: np.ndarray          # HS06 s per event, NaN when unknown
    max_attempts: np.ndarray


def _run_chunks(world: World, rng: np.random.Generator, t: pd.DataFrame, chunks: pd.DataFrame,
                created: np.ndarray, req: _Requests, task_sites: np.ndarray) -> pd.DataFrame:
    """Run chunks through attempts until they finish or run out of attempts; one row per attempt."""
    sites = world.sites
    kind = t["h_kind"].to_numpy()
    fate = t["h_fate"].to_numpy()
    attempts = []
    pending = np.arange(len(chunks))
    ram_per_core = req.ram_per_core[chunks["task"].to_numpy()].astype(float)
    when = created.astype(float)
    attempt = 1
    while pending.size:
        c = chunks.iloc[pending]
        ti = c["task"].to_numpy()
        m = len(pending)
        site = task_sites[ti, rng.integers(0, TASKS_PER_SITE_SET, m)]
        s = sites.iloc[site]
        requested = t["corecount"].to_numpy()[ti]
        actual = np.where(requested == 0, np.where(rng.random(m) < .6, 8, 1), requested)
        odd = (requested > 1) & (rng.random(m) < .05)
        actual = np.where(odd, rng.choice([4, 6, 12, 16], m), actual)
        job_cores = np.where(requested == 0, actual, requested)
        request = np.ceil(ram_per_core[pending] * job_cores + req.base_ram[ti])
        limit = request * actual / job_cores
        need = ((t["h_mem_base"].to_numpy()[ti] + t["h_mem_core"].to_numpy()[ti] * actual)
                * c["h_mem"].to_numpy() * rng.lognormal(0, .01, m))
        corepower = s["corepower"].to_numpy()
        speed = corepower * s["speed"].to_numpy() * rng.lognormal(0, .07, m)
        nevents = c["nevents"].to_numpy()
        cpu_s = t["h_cpu"].to_numpy()[ti] * c["h_cpu"].to_numpy() * nevents / speed
        io_weight = _kind_array("io_weight")[kind[ti]]
        eff = (t["h_eff"].to_numpy()[ti] * s["storage"].to_numpy() ** io_weight
               * rng.lognormal(0, world.shape.job_eff_sd, m) * (1 - .006 * (actual - 1)))
        eff = np.clip(eff, .03, .99)
        in_bytes = c["in_bytes"].to_numpy()
        copy = s["copy_to_scratch"].to_numpy()
        setup = rng.uniform(60, 300, m) + np.where(copy, in_bytes / s["bandwidth"].to_numpy(), 0)
        wall = setup + cpu_s / (actual * eff)
        cpu_used = cpu_s + .25 * setup

        preset_eff = np.nan_to_num(t["cpuefficiency"].to_numpy()[ti], nan=100.0) / 100
        base_wall = np.nan_to_num(t["basewalltime"].to_numpy()[ti], nan=0.0)
        maxwall = np.maximum(req.cputime[ti] * nevents / job_cores / corepower / preset_eff + base_wall,
                             MIN_WALLTIME)

        doomed = c["h_doomed"].to_numpy()
        fatal = (fate[ti] == FATES.index("broken_config")) | (doomed == DOOMED_CRASH)
        missing = doomed == DOOMED_MISSING
        oom = ~fatal & ~missing & (need > limit)
        timeout = ~fatal & ~missing & ~oom & (wall > maxwall)
        random_fail = ~fatal & ~missing & ~oom & ~timeout & (rng.random(m) < s["fail"].to_numpy())
        failed = fatal | missing | oom | timeout | random_fail
        share = np.ones(m)
        share[fatal | missing] = rng.uniform(.01, .15, (fatal | missing).sum())
        share[oom] = rng.uniform(.3, .95, oom.sum())
        share[timeout] = maxwall[timeout] / wall[timeout]
        share[random_fail] = rng.uniform(.02, 1, random_fail.sum())

        queue = rng.lognormal(np.log(HOUR) + .5 * (job_cores > 1), 1.2, m).clip(60, 10 * DAY)
        start = when + queue
        run = wall * share
        end = start + run
        # an out-of-memory kill happens just past the limit; other failures stop before the peak
        reached = need * np.where(failed, rng.uniform(.5, 1, m), 1)
        pss = np.where(oom, limit * rng.uniform(1.0, 1.04, m), reached)
        pss = np.where(failed & (share < .05), np.nan, pss * 1024)
        rss = pss * (1.05 + .6 * (actual - 1) / actual) * rng.uniform(.97, 1.03, m)
        leak = t["h_leak"].to_numpy()[ti] * rng.lognormal(0, .5, m)
        out_kb = t["h_out_kb"].to_numpy()[ti] * c["h_out"].to_numpy()
        out_bytes = np.where(failed, 0.0, nevents * out_kb * 1024)
        read = in_bytes * rng.uniform(.6, 1.2, m) * share + 150 * 1024**2
        written = out_bytes * rng.uniform(1.2, 2.0, m) + np.where(copy, in_bytes, 0) + 50 * 1024**2
        workdir = np.where(copy, in_bytes, 0) + out_bytes * 1.15 + 250 * 1024**2 * rng.lognormal(0, .3, m)

        code, diag, exe_code, exe_diag = _errors(rng, kind[ti], fatal, missing, oom, timeout, random_fail,
                                                 pss, limit)
        attempts.append(pd.DataFrame({
            "chunk": chunks.index.to_numpy()[pending], "task": ti, "attemptnr": attempt,
            "created": when, "start": start, "end": end, "jobstatus": np.where(failed, "failed", "finished"),
            "site": site, "corecount": job_cores, "actualcorecount": actual, "minramcount": request,
            "maxpss": pss, "maxrss": rss, "maxvmem": rss * rng.uniform(1.4, 2.2, m),
            "avgpss": pss * rng.uniform(.6, .92, m), "avgrss": rss * rng.uniform(.6, .92, m),
            "cpuconsumptiontime": cpu_used * share, "hs06": np.rint(corepower * actual),
            "nevents": np.where(failed, 0, nevents), "ninputdatafiles": c["files"].to_numpy(),
            "inputfilebytes": in_bytes, "outputfilebytes": out_bytes, "totrbytes": read,
            "totwbytes": np.where(failed, written * share, written),
            "workdir": np.where(failed, np.nan, workdir),
            "memory_leak": np.where(failed, np.nan, np.rint(leak)),
            "memory_leak_x2": np.where(failed, np.nan, np.rint(rng.lognormal(np.log(300), 1.2, m))),
            "maxwalltime": maxwall, "piloterrorcode": code, "piloterrordiag": diag, "exeerrorcode": exe_code,
            "exeerrordiag": exe_diag,
        }))
        retry = failed & (attempt < req.max_attempts[ti]) & ~(fatal & (attempt >= 3))
        ram_per_core[pending[oom]] = _round_up(ram_per_core[pending[oom]] * 1.4, 50)
        when = end[retry] + rng.uniform(300, 3600, retry.sum())
        pending = pending[retry]
        attempt += 1
    return pd.concat(attempts, ignore_index=True)


def _errors(rng: np.random.Generator, kind: np.ndarray, fatal: np.ndarray, missing: np.ndarray,
            oom: np.ndarray, timeout: np.ndarray, random_fail: np.ndarray, pss: np.ndarray,
            limit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pilot and payload error codes and diagnostics of the failed attempts (real pilot codes)."""
    m = len(kind)
    code = np.zeros(m)
    exe_code = np.zeros(m)
    diag = np.full(m, None, dtype=object)
    exe_diag = np.full(m, None, dtype=object)
    substep = np.array([KINDS[k].substep for k in kind], dtype=object)
    exe_code[fatal] = 65
    exe_diag[fatal] = [f"Non-zero return code from {s} (65)" for s in substep[fatal]]
    code[missing], diag[missing] = MISSING_INPUT_ERROR
    which = _pick(rng, OOM_ERRORS, m)
    for i in np.flatnonzero(oom):
        code[i] = OOM_ERRORS[which[i]][0]
        diag[i] = f"{OOM_ERRORS[which[i]][1]} ({int(pss[i])} kB > {int(limit[i] * 1024)} kB)"
    code[timeout], diag[timeout] = WALLTIME_ERROR
    which = _pick(rng, RANDOM_ERRORS, m)
    for i in np.flatnonzero(random_fail):
        pilot, pilot_diag, exe, exe_text, _ = RANDOM_ERRORS[which[i]]
        code[i], diag[i], exe_code[i] = pilot, pilot_diag, exe
        exe_diag[i] = exe_text.format(substep=substep[i]) if exe_text else None
    return code, diag, exe_code, exe_diag


def _task_sites(world: World, rng: np.random.Generator, t: pd.DataFrame) -> np.ndarray:
    """Per task, the sites its jobs may run at (repeats weight the popular ones); user-chosen sites pin."""
    n = len(t)
    sites = rng.choice(len(world.sites), (n, TASKS_PER_SITE_SET), p=world.sites["weight"].to_numpy())
    names = world.sites["name"].to_numpy()
    pinned = t["site"].notna().to_numpy()
    for i in np.flatnonzero(pinned):
        sites[i, :] = np.flatnonzero(names == t["site"].iat[i])[0]
    return sites


def _scout(t: pd.DataFrame, jobs: pd.DataFrame, world: World, jedi: JediParams) -> pd.DataFrame:
    """JEDI's task values from the finished scout jobs (jedi_formulas), one row per task that has them."""
    done = jobs[jobs["jobstatus"] == "finished"]
    frame = pd.DataFrame({
        "pandaid": np.arange(len(done)), "jeditaskid": t["jeditaskid"].to_numpy()[done["task"]],
        "corecount": done["corecount"].to_numpy(), "actualcorecount": done["actualcorecount"].to_numpy(),
        "starttime": _as_datetime(world, done["start"].to_numpy()),
        "endtime": _as_datetime(world, done["end"].to_numpy()),
        "cpuconsumptiontime": done["cpuconsumptiontime"].to_numpy(), "hs06": done["hs06"].to_numpy(),
        "maxpss": done["maxpss"].to_numpy(), "nevents": done["nevents"].to_numpy(),
        "inputfilebytes": done["inputfilebytes"].to_numpy(),
        "outputfilebytes": done["outputfilebytes"].to_numpy(),
        "totrbytes": done["totrbytes"].to_numpy(), "totwbytes": done["totwbytes"].to_numpy(),
        "jobmetrics": [f"workDirSize={int(w)}" for w in done["workdir"].to_numpy()],
        "computingsite": world.sites["name"].to_numpy()[done["site"]],
        "attemptnr": done["attemptnr"].to_numpy(),
    })
    for column in jedi_formulas.TASK_PRESET_COLUMNS:
        frame[column] = t[column].to_numpy()[done["task"]]
    values = jedi_formulas.task_values(jedi_formulas.job_measurements(frame, jedi), jedi)
    columns = jedi_formulas.to_task_columns(values)
    leak = done.assign(
        jeditaskid=frame["jeditaskid"].to_numpy(),
        leak_core=np.ceil(done["memory_leak"] / done["actualcorecount"]),
    ).groupby("jeditaskid")[["leak_core", "memory_leak_x2"]].mean()
    columns["memory_leak_core"] = np.ceil(leak["leak_core"])
    columns["memory_leak_x2"] = np.ceil(leak["memory_leak_x2"])
    return columns


def _apply_scout_values(t: pd.DataFrame, values: pd.DataFrame, ready: np.ndarray) -> None:
    """Write JEDI's values into the tasks whose scouting completed, except where a unit is Fixed."""
    pos = pd.Index(t["jeditaskid"]).get_indexer(values.index)
    ok = ready[pos]
    pos, values = pos[ok], values[ok]
    ram_unit = t["ramunit"].to_numpy()[pos]
    ram = values["ramcount"].to_numpy(dtype=float, na_value=np.nan)
    set_ram = (ram_unit != "MBPerCoreFixed") & ~np.isnan(ram)
    t.loc[t.index[pos[set_ram]], "ramcount"] = ram[set_ram]
    cpu = values["cputime"].to_numpy(dtype=float, na_value=np.nan)
    set_cpu = ~np.char.endswith(t["cputimeunit"].to_numpy()[pos].astype(str), "Fixed") & ~np.isnan(cpu)
    t.loc[t.index[pos[set_cpu]], "cputime"] = cpu[set_cpu]
    t.loc[t.index[pos[set_cpu]], "cputimeunit"] = values["cputimeunit"].to_numpy()[set_cpu]
    for column, unit in (("iointensity", "iointensityunit"), ("diskio", "diskiounit"),
                         ("outdiskcount", "outdiskunit"), ("workdiskcount", "workdiskunit"),
                         ("memory_leak_core", None), ("memory_leak_x2", None)):
        value = values[column].to_numpy(dtype=float, na_value=np.nan)
        has = ~np.isnan(value)
        t.loc[t.index[pos[has]], column] = value[has]
        if unit:
            t.loc[t.index[pos[has]], unit] = values[unit].to_numpy()[has]
    rows = t.index[pos]
    t.loc[rows, "splitrule"] = t.loc[rows, "splitrule"].str.replace("US=2", "US=3")


def _cputime_hs06(t: pd.DataFrame) -> np.ndarray:
    """Each task's cputime in HS06 s per event; NaN when unset."""
    factor = t["cputimeunit"].map(jedi_formulas.CPUTIME_FACTORS).to_numpy(dtype=float)
    return t["cputime"].to_numpy(dtype=float) * factor


def _simulate_block(world: World, rng: np.random.Generator, ids: np.ndarray, created: np.ndarray,
                    jedi: JediParams, counters: dict[str, int]) -> dict[str, pd.DataFrame]:
    """Tasks, datasets and archived jobs of one block of consecutive tasks."""
    t = _draw_tasks(world, rng, ids, created)
    submitted = _task_parameters(t)       # before JEDI's scouts and anyone else change the row
    chunks = _draw_chunks(world, rng, t)
    sites = _task_sites(world, rng, t)
    n, now = len(t), world.now_s
    max_attempts = np.where(t["h_user"], 3, 5)
    base = t["baseramcount"].to_numpy(dtype=float)

    # scouts: the first jobs, requesting the preset memory, without a walltime limit
    scouts = chunks[chunks["scout"]]
    preset = _Requests(t["ramcount"].to_numpy(dtype=float), base, np.full(n, np.nan), max_attempts)
    scout_created = created[scouts["task"]] + rng.uniform(60, 1800, len(scouts))
    scout_jobs = _run_chunks(world, rng, t, scouts, scout_created, preset, sites)
    scouting_end = scout_jobs.groupby("task")["end"].max().reindex(range(n)).to_numpy()
    values = _scout(t, scout_jobs, world, jedi)

    # the other jobs of tasks with a finished scout: the scouted memory request and walltime limit
    scouted = t.copy()
    _apply_scout_values(scouted, values, np.ones(n, dtype=bool))
    has_values = np.isin(t["jeditaskid"].to_numpy(), values.index)
    rest = chunks[~chunks["scout"].to_numpy() & has_values[chunks["task"]]]
    rest_task = rest["task"].to_numpy()
    n_rest = np.bincount(rest_task, minlength=n)
    # brokerage, priorities and input staging; some tasks are held for days (exhausted, pending input)
    held = (rng.random(n) < .25) * rng.lognormal(np.log(7 * DAY), .8, n)
    wait = rng.lognormal(np.log(4 * HOUR), 1.2, n) + held
    typical = np.where(t["h_user"], DAY, 4 * DAY)           # production tasks share their slots for weeks
    spread = rng.lognormal(np.log(typical) + .5 * np.log(np.maximum(n_rest, 1) / 10), 1.0)
    rank_share = (rest["rank"].to_numpy() - N_SCOUTS) / np.maximum(n_rest[rest_task], 1)
    rest_created = scouting_end[rest_task] + wait[rest_task] + spread[rest_task] * rank_share
    requests = _Requests(scouted["ramcount"].to_numpy(dtype=float), base, _cputime_hs06(scouted),
                         max_attempts)
    jobs = pd.concat([scout_jobs, _run_chunks(world, rng, t, rest, rest_created, requests, sites)],
                     ignore_index=True)

    # fates that end a task early, at a random point of its natural life; then the end of the window
    natural_end = jobs.groupby("task")["end"].max().reindex(range(n)).to_numpy()
    fate = t["h_fate"].to_numpy()
    ends_early = np.isin(fate, [FATES.index("aborted"), FATES.index("finished_early")])
    cut = np.where(ends_early, created + rng.uniform(.1, .9, n) * (natural_end - created), np.inf)
    jobs = _cut_jobs(rng, jobs, cut, fate)
    jobs = jobs[jobs["end"] <= now].reset_index(drop=True)      # still active: not archived yet
    _apply_scout_values(t, values, scouting_end <= np.minimum(now, cut))
    _finish_tasks(rng, t, jobs, (natural_end > now) & (cut > now), cut, scouting_end, now)
    # a stream of its own, so that the rest of the block is drawn as without it
    _edit_after_submission(np.random.default_rng([EDIT_STREAM, int(ids[0])]), t, now)

    order = np.lexsort((jobs["chunk"].to_numpy(), jobs["created"].to_numpy()))
    jobs = jobs.iloc[order].reset_index(drop=True)
    jobs["pandaid"] = counters["pandaid"] + np.cumsum(rng.integers(1, 4, len(jobs)))
    counters["pandaid"] = int(jobs["pandaid"].max()) + 1 if len(jobs) else counters["pandaid"]
    datasets = _datasets(rng, t, chunks, jobs, counters)
    return {"jedi_tasks": t, "jedi_taskparams": submitted, "jedi_datasets": datasets,
            "jobs": _job_columns(world, rng, t, jobs)}


def _task_parameters(t: pd.DataFrame) -> pd.DataFrame:
    """Each task's parameter map as submitted (JEDI_TaskParams.taskParams, JSON with JEDI's key names)."""
    frame = t[list(TASK_PARAMETER_KEYS)].rename(columns=TASK_PARAMETER_KEYS)
    maps = [json.dumps({key: _json_value(value) for key, value in row.items() if not pd.isna(value)},
                       separators=(",", ":")) for row in frame.to_dict("records")]
    return pd.DataFrame({"jeditaskid": t["jeditaskid"].to_numpy(), "taskparams": maps})


def _json_value(value):
    if isinstance(value, (np.integer, np.floating, float)):
        return int(value) if float(value).is_integer() else float(value)
    return str(value)


def _edit_after_submission(rng: np.random.Generator, t: pd.DataFrame, now: float) -> None:
    """Rows JEDI and operators changed after submission (EDITED_SHARE of the tasks): moved to other cores, the
    efficiency and base walltime retuned, another base memory; the parameter map keeps what was submitted."""
    edited = rng.random(len(t)) < EDITED_SHARE
    k = int(edited.sum())
    cores = t["corecount"].to_numpy(dtype=float)[edited]
    t.loc[edited, "corecount"] = np.where(cores > 1, 1, 8)
    t.loc[edited, "cpuefficiency"] = rng.integers(30, 101, k)
    t.loc[edited, "basewalltime"] = rng.integers(0, 3601, k)
    t.loc[edited, "baseramcount"] = rng.choice([0, 1000, 3000], k)
    when = t["h_created"].to_numpy()[edited] + rng.uniform(HOUR, 10 * DAY, k)
    t.loc[edited, "modificationtime"] = np.fmin(np.fmax(t["modificationtime"].to_numpy()[edited], when), now)


def _cut_jobs(rng: np.random.Generator, jobs: pd.DataFrame, cut: np.ndarray,
              fate: np.ndarray) -> pd.DataFrame:
    """Aborted tasks cancel, early-finished tasks close the jobs not yet done at their cut."""
    task_cut = cut[jobs["task"].to_numpy()]
    jobs = jobs[jobs["created"] <= task_cut].reset_index(drop=True)
    task_cut = cut[jobs["task"].to_numpy()]
    live = (jobs["end"] > task_cut).to_numpy()
    if not live.any():
        return jobs
    aborted = fate[jobs["task"].to_numpy()] == FATES.index("aborted")
    jobs.loc[live, "jobstatus"] = np.where(aborted[live], "cancelled", "closed")
    jobs.loc[live & (jobs["start"] > task_cut).to_numpy(), "start"] = np.nan
    jobs.loc[live, "end"] = task_cut[live] + rng.uniform(10, 600, live.sum())
    for column in ("maxpss", "maxrss", "maxvmem", "avgpss", "avgrss", "workdir", "memory_leak",
                   "memory_leak_x2"):
        jobs.loc[live, column] = np.nan
    for column in ("cpuconsumptiontime", "nevents", "outputfilebytes", "totrbytes", "totwbytes",
                   "piloterrorcode", "exeerrorcode"):
        jobs.loc[live, column] = 0
    jobs.loc[live, ["piloterrordiag", "exeerrordiag"]] = None
    return jobs


def _finish_tasks(rng: np.random.Generator, t: pd.DataFrame, jobs: pd.DataFrame, running: np.ndarray,
                  cut: np.ndarray, scouting_end: np.ndarray, now: float) -> None:
    """Status and times of each task from its archived jobs."""
    n = len(t)
    fate = t["h_fate"].to_numpy()
    by_task = jobs.groupby("task")
    first_start = by_task["start"].min().reindex(range(n)).to_numpy()
    last_end = by_task["end"].max().reindex(range(n)).to_numpy()
    finished = jobs.loc[jobs["jobstatus"] == "finished"].groupby("task")["chunk"].nunique()
    share_ok = finished.reindex(range(n), fill_value=0).to_numpy() / t["h_n_chunks"].to_numpy()
    status = np.where(share_ok >= 1, "done", np.where(share_ok >= .5, "finished", "failed")).astype(object)
    status[share_ok == 0] = "broken"
    status[fate == FATES.index("aborted")] = "aborted"
    status[(fate == FATES.index("finished_early")) & (share_ok < 1)] = "finished"
    created = t["h_created"].to_numpy()
    end = np.fmax(last_end, np.where(np.isfinite(cut), cut, np.nan)) + rng.uniform(600, 2 * HOUR, n)
    running = running | (end > now)       # JEDI had not closed it yet
    status[running] = np.where(scouting_end[running] > now, "scouting", "running")
    end[running] = np.nan
    modified = np.where(running, np.fmax(created, last_end) + HOUR, end + rng.exponential(DAY, n))
    t["status"] = status
    t["creationdate"] = created
    t["starttime"] = first_start
    t["endtime"] = end
    t["modificationtime"] = np.fmin(modified, now)


# ---------------------------------------------------------------------------------------------- datasets
def _datasets(rng: np.random.Generator, t: pd.DataFrame, chunks: pd.DataFrame, jobs: pd.DataFrame,
              counters: dict[str, int]) -> pd.DataFrame:
    """Input, secondary, pseudo-input, lib, output and log datasets, with counts matching the jobs."""
    n = len(t)
    chunk_ids = jobs["chunk"].to_numpy()
    used = np.zeros(len(chunks), dtype=bool)
    used[chunk_ids] = True
    ok = np.zeros(len(chunks), dtype=bool)
    ok[chunk_ids[(jobs["jobstatus"] == "finished").to_numpy()]] = True
    last = jobs.loc[jobs.groupby("chunk")["attemptnr"].idxmax()]
    bad = np.zeros(len(chunks), dtype=bool)
    bad[last.loc[last["jobstatus"] == "failed", "chunk"].to_numpy()] = True
    task = chunks["task"].to_numpy()
    evgen = (t["h_kind"] == KIND["evgen"]).to_numpy()
    event_split = np.array([KINDS[k].split == "events" for k in t["h_kind"]])
    evpf = t["h_events_per_file"].to_numpy()

    def per_task(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(task[mask], weights=values[mask], minlength=n)

    def files_of(mask: np.ndarray, rounding) -> np.ndarray:
        """Input files behind chunks: event-split chunks share files, pseudo files are jobs."""
        by_files = per_task(chunks["files"].to_numpy(dtype=float), mask)
        by_events = rounding(per_task(chunks["nevents"].to_numpy(dtype=float), mask) / evpf)
        pseudo = np.bincount(task[mask], minlength=n)
        return np.where(evgen, pseudo, np.where(event_split, by_events, by_files))

    every = np.ones(len(chunks), dtype=bool)
    counts = {
        "nfiles": files_of(every, np.ceil), "nfilesused": files_of(used, np.ceil),
        "nfilesfinished": files_of(ok, np.floor), "nfilesfailed": files_of(bad, np.ceil),
        "nevents": per_task(chunks["nevents"].to_numpy(dtype=float), every),
        "neventsused": per_task(chunks["nevents"].to_numpy(dtype=float), used),
    }
    counts["nfilestobeused"], counts["neventstobeused"] = counts["nfiles"], counts["nevents"]
    running = np.isin(t["status"].to_numpy(), ["running", "scouting"])
    counts["nfilesfailed"] = np.where(running, 0, counts["nfilesfailed"])
    done = jobs[jobs["jobstatus"] == "finished"]
    out_files = np.bincount(done["task"], minlength=n)
    out_events = np.bincount(done["task"], weights=done["nevents"], minlength=n)
    log_files = np.bincount(jobs["task"], weights=jobs["jobstatus"].isin(["finished", "failed"]), minlength=n)
    secondary_size = rng.integers(500, 5000, (n, 2))

    rows = []
    next_id = counters["datasetid"]
    for i in range(n):
        kind = KINDS[t["h_kind"].iat[i]]
        name = t["taskname"].iat[i]
        tid = int(t["jeditaskid"].iat[i])
        in_state, out_state = _dataset_states(t["status"].iat[i])
        primary = {column: values[i] for column, values in counts.items()}
        master = next_id
        if kind.name == "evgen":
            rows.append((tid, next_id, "pseudo_dataset", "pseudo_input", None, primary, in_state, None))
        else:
            rows.append((tid, next_id, _input_name(t, i, kind), "input", None, primary, in_state, "IN"))
        next_id += 1
        if kind.name in ("pile", "overlay"):     # minimum-bias HITS overlaid on every event
            for j, (label, dsid) in enumerate((("low", 800831), ("high", 800851))):
                size = int(secondary_size[i, j])
                share = primary["neventsused"] / max(primary["nevents"], 1)
                extra = dict(nfiles=size, nfilestobeused=size, nfilesused=int(size * share),
                             nfilesfinished=int(size * share), nfilesfailed=0, nevents=size * 2000,
                             neventstobeused=size * 2000, neventsused=int(size * 2000 * share))
                sec = (f"{t['h_project'].iat[i]}.{dsid}.Py8EG_A3NNPDF23LO_minbias_inelastic_{label}"
                       f".simul.HITS.{t['h_upstream'].iat[i]}")
                stream = f"IN_MINBIAS_{label.upper()}"
                rows.append((tid, next_id, sec, "input", master, extra, in_state, stream))
                next_id += 1
        out_counts = dict(nfiles=out_files[i], nfilesfinished=out_files[i], nevents=out_events[i])
        log_counts = dict(nfiles=log_files[i], nfilesfinished=log_files[i])
        if kind.user:
            base = name.rstrip("/")
            if kind.name == "jedi-athena":
                lib = dict(nfiles=1, nfilesfinished=1)
                rows.append((tid, next_id, f"{base}.lib/", "lib", None, lib, out_state, "LIB"))
                next_id += 1
            suffix = ("tree.root", "hist-output.root", "ANALYSIS.root", "output.root")[tid % 4]
            rows.append((tid, next_id, f"{base}_{suffix}/", "output", None, out_counts, out_state, "OUTPUT0"))
            rows.append((tid, next_id + 1, f"{base}.log/", "log", None, log_counts, out_state, "LOG"))
        else:
            log = name.replace(f".{t['h_fmt'].iat[i]}.", ".log.", 1)
            suffix = f"_tid{tid:08d}_00"
            rows.append((tid, next_id, name + suffix, "output", None, out_counts, out_state, "OUTPUT0"))
            rows.append((tid, next_id + 1, log + suffix, "log", None, log_counts, out_state, "LOG"))
        next_id += 2
    counters["datasetid"] = next_id + int(rng.integers(1, 50))
    return pd.DataFrame([
        {"jeditaskid": r[0], "datasetid": r[1], "datasetname": r[2][:255], "type": r[3], "masterid": r[4],
         "status": r[6], "streamname": r[7], **r[5]} for r in rows
    ])


def _dataset_states(task_status: str) -> tuple[str, str]:
    if task_status in ("running", "scouting"):
        return "ready", "running"
    return {"done": ("done", "done"), "finished": ("finished", "finished")}.get(task_status,
                                                                               (task_status, task_status))


def _input_name(t: pd.DataFrame, i: int, kind: Kind) -> str:
    """The dataset a task reads: the output of the step before it (user tasks: of the whole chain)."""
    prefix, fmt = t["h_prefix"].iat[i], t["h_in_fmt"].iat[i]
    if fmt == "RAW":
        return f"{prefix}.merge.RAW"
    step = "deriv" if fmt.startswith(("DAOD", "NTUP")) else STEP_OF_FORMAT[fmt]
    tags = t["h_chain"].iat[i] if kind.user else t["h_upstream"].iat[i]
    name = f"{prefix}.{step}.{fmt}.{tags}" if tags else f"{prefix}.{step}.{fmt}"
    if kind.name == "merge":     # merges read the outputs of one task
        name += f"_tid{int(t['parent_tid'].iat[i]):08d}_00"
    return name


# ---------------------------------------------------------------------------------------------- job rows
def _job_columns(world: World, rng: np.random.Generator, t: pd.DataFrame, jobs: pd.DataFrame) -> pd.DataFrame:
    """Job rows with PanDA's column names (times still in seconds from the window start)."""
    ti = jobs["task"].to_numpy()
    finished = (jobs["jobstatus"] == "finished").to_numpy()
    site = world.sites.iloc[jobs["site"].to_numpy()]
    actual = jobs["actualcorecount"].to_numpy()
    null_actual = (actual == 1) & (rng.random(len(jobs)) < .1)     # single-core pilots often leave it empty
    wall = (jobs["end"] - jobs["start"]).to_numpy()
    metrics = [
        f"coreCount={int(c)} nEvents={int(e)} dbTime={d:.2f} dbData={int(b)} workDirSize={int(w)}" if ok
        else f"coreCount={int(c)}"
        for ok, c, e, d, b, w in zip(finished, actual, jobs["nevents"], rng.uniform(.1, 3, len(jobs)),
                                     rng.integers(50000, 400000, len(jobs)), jobs["workdir"].fillna(0),
                                     strict=True)
    ]
    home = t["transhome"].to_numpy()[ti]
    return pd.DataFrame({
        "pandaid": jobs["pandaid"], "jeditaskid": t["jeditaskid"].to_numpy()[ti],
        "jobstatus": jobs["jobstatus"],
        "computingsite": site["name"].to_numpy(), "prodsourcelabel": t["prodsourcelabel"].to_numpy()[ti],
        "processingtype": t["processingtype"].to_numpy()[ti], "transformation": t["transpath"].to_numpy()[ti],
        "homepackage": [h.replace("-", "/", 1) if h else None for h in home],
        "atlasrelease": t["transuses"].to_numpy()[ti], "corecount": jobs["corecount"],
        "actualcorecount": np.where(null_actual, np.nan, actual), "creationtime": jobs["created"],
        "starttime": jobs["start"], "endtime": jobs["end"],
        "modificationtime": np.minimum(jobs["end"] + rng.uniform(60, 3 * HOUR, len(jobs)), world.now_s),
        "cpuconsumptiontime": np.rint(jobs["cpuconsumptiontime"]), "cpuconversion": np.nan,
        "hs06": jobs["hs06"], "hs06sec": np.rint(jobs["hs06"] * np.nan_to_num(wall)),
        "maxrss": jobs["maxrss"], "maxpss": jobs["maxpss"], "maxvmem": jobs["maxvmem"],
        "avgrss": jobs["avgrss"], "avgpss": jobs["avgpss"], "minramcount": jobs["minramcount"],
        "maxwalltime": jobs["maxwalltime"], "maxdiskcount": np.ceil(jobs["inputfilebytes"] / 1024**2 + 2000),
        "nevents": jobs["nevents"], "ninputdatafiles": jobs["ninputdatafiles"],
        "inputfilebytes": jobs["inputfilebytes"], "outputfilebytes": jobs["outputfilebytes"],
        "totrbytes": jobs["totrbytes"], "totwbytes": jobs["totwbytes"], "jobmetrics": metrics,
        "memory_leak": jobs["memory_leak"], "memory_leak_x2": jobs["memory_leak_x2"],
        "attemptnr": jobs["attemptnr"], "piloterrorcode": jobs["piloterrorcode"],
        "piloterrordiag": jobs["piloterrordiag"], "exeerrorcode": jobs["exeerrorcode"],
        "exeerrordiag": jobs["exeerrordiag"],
    })


# ---------------------------------------------------------------------------------------------- junk
def _plant_junk(rng: np.random.Generator, tables: dict[str, pd.DataFrame], share: float) -> Counter[str]:
    """Make a share of each table's rows bad on purpose; returns the rows changed per kind."""
    planted: Counter[str] = Counter()
    tasks, datasets, jobs = tables["jedi_tasks"], tables["jedi_datasets"], tables["jobs"]

    def victims(frame: pd.DataFrame, kinds: tuple[str, ...]) -> dict[str, np.ndarray]:
        hit = rng.random(len(frame)) < share
        which = rng.integers(0, len(kinds), len(frame))
        return {kind: hit & (which == k) for k, kind in enumerate(kinds)}

    v = victims(tasks, TASK_JUNK)
    tasks.loc[v["task_null_creationdate"], "creationdate"] = np.nan
    tasks.loc[v["task_null_processingtype"], "processingtype"] = None
    tasks.loc[v["task_corecount_999"], "corecount"] = 999
    unit = v["task_unknown_unit"]
    on_ram = rng.random(len(tasks)) < .5
    tasks.loc[unit & on_ram, "ramunit"] = "MBperCore"
    tasks.loc[unit & ~on_ram, "cputimeunit"] = "HS06sPerEvnt"
    backwards = v["task_endtime_before_creation"] & tasks["endtime"].notna().to_numpy()
    tasks.loc[backwards, "endtime"] = tasks.loc[backwards, "creationdate"] - rng.uniform(HOUR, 30 * DAY,
                                                                                         backwards.sum())
    v["task_endtime_before_creation"] = backwards

    nevents = datasets["nevents"].to_numpy(dtype=float)
    negative = victims(datasets, DATASET_JUNK)["dataset_negative_nevents"] & (nevents > 0)
    datasets.loc[negative, "nevents"] = -nevents[negative]
    v["dataset_negative_nevents"] = negative

    w = victims(jobs, JOB_JUNK)
    no_end = w["job_finished_without_endtime"] & (jobs["jobstatus"] == "finished").to_numpy()
    jobs.loc[no_end, "endtime"] = np.nan
    absurd = w["job_maxpss_absurd"] & jobs["maxpss"].notna().to_numpy()
    jobs.loc[absurd, "maxpss"] = 1e12
    negative_cpu = w["job_negative_cputime"]
    cpu = jobs.loc[negative_cpu, "cpuconsumptiontime"]
    jobs.loc[negative_cpu, "cpuconsumptiontime"] = -np.maximum(cpu, 1)
    v.update(job_finished_without_endtime=no_end, job_maxpss_absurd=absurd, job_negative_cputime=negative_cpu)
    for kind, mask in v.items():
        planted[kind] += int(np.count_nonzero(mask))
    return planted


# ---------------------------------------------------------------------------------------------- writing
def _as_datetime(world: World, seconds: np.ndarray) -> np.ndarray:
    seconds = np.asarray(seconds, dtype=float)
    whole = np.where(np.isnan(seconds), 0, np.rint(seconds)).astype(np.int64)
    stamps = np.datetime64(world.start, "s") + whole.astype("timedelta64[s]")
    return np.where(np.isnan(seconds), np.datetime64("NaT"), stamps).astype("datetime64[s]")


def _db_values(world: World, column: sa.Column, values) -> list:
    """A column as Python values the DB drivers take: ints, floats, datetimes, str, or None."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return _as_datetime(world, values).tolist()
    if isinstance(kind, (sa.Integer, sa.Float)):
        numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        missing = np.isnan(numbers)
        out = (np.rint(np.nan_to_num(numbers)).astype(np.int64).tolist() if isinstance(kind, sa.Integer)
               else numbers.tolist())
        for i in np.flatnonzero(missing):
            out[i] = None
        return out
    return [None if v is None or v != v else str(v) for v in values]


def _records(world: World, table: sa.Table, frame: pd.DataFrame) -> list[dict]:
    names = [c.name for c in table.columns]
    columns = [_db_values(world, table.c[name], frame[name].to_numpy()) for name in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _write_block(engine: sa.Engine, schema: PandaSchema, world: World,
                 tables: dict[str, pd.DataFrame]) -> Counter[str]:
    """Insert one block in one transaction; jobs go to the live or long-term table by modificationtime."""
    jobs = tables["jobs"]
    modified = jobs["modificationtime"].to_numpy(dtype=float)
    recent = modified >= world.now_s - RECENT_DAYS * DAY
    moving = ~recent & (modified >= world.now_s - (RECENT_DAYS + MOVING_DAYS) * DAY)
    parts = {
        schema.jedi_tasks: tables["jedi_tasks"], schema.jedi_taskparams: tables["jedi_taskparams"],
        schema.jedi_datasets: tables["jedi_datasets"],
        schema.jobsarchived4: jobs[recent | moving], schema.jobsarchived: jobs[~recent],
    }
    written: Counter[str] = Counter()
    with engine.begin() as conn:
        for table, frame in parts.items():
            if len(frame):
                conn.execute(table.insert(), _records(world, table, frame))
            written[table.name] += len(frame)
    written["both"] += int(moving.sum())
    return written
