"""What each target is: its PanDA unit, whether it is modelled in log space, and which per-job
measurement tells whether a request for it would have been enough (models.requests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TargetSpec:
    name: str
    unit: str
    log_space: bool                 # skewed targets (decades apart) are modelled as log1p
    upper_bound: float | None       # a hard ceiling of the quantity itself
    job_column: str | None          # column of jobs.parquet that a request must cover (None: not a limit)
    request_is_preset: bool = False  # the request is the task's preset (cpuefficiency: what cputime is in)
    # the request is memory per core held for the job's whole run: what it leaves unused is paid per MB-hour,
    # and a job above it runs out of memory (models.requests: cost-aware requests, retry advice)
    reserves_memory: bool = False

    # np.maximum and np.minimum rather than np.clip: the same values, without its per-call cost on the service's
    # one-row arrays
    def to_model_space(self, values):
        values = np.asarray(values, dtype="float64")
        return np.log1p(np.maximum(values, 0.0)) if self.log_space else values

    def from_model_space(self, values):
        values = np.asarray(values, dtype="float64")
        values = np.maximum(np.expm1(values) if self.log_space else values, 0.0)
        return values if self.upper_bound is None else np.minimum(values, self.upper_bound)


TARGETS: dict[str, TargetSpec] = {
    spec.name: spec
    for spec in (
        TargetSpec("ramcount", "MBPerCore", True, None, "ram_mb_per_core", reserves_memory=True),
        # a job's walltime limit must allow for its whole wall time, eligible for JEDI's cputime or not
        TargetSpec("cputime", "HS06sPerEvent", True, None, "wall_cputime_hs06s_per_event"),
        TargetSpec("cpuefficiency", "percent", False, 100.0, None, request_is_preset=True),
        TargetSpec("iointensity", "kBPerS", True, None, "iointensity_kbps"),
        TargetSpec("outdiskcount", "kBPerEvent", True, None, "outdisk_kb_per_event"),
        TargetSpec("workdiskcount", "MB", True, None, "workdisk_mb"),
    )
}
