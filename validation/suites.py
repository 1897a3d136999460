"""The expectation suites, defined in code (Great Expectations 1.x).

A suite is built from plain descriptions (`Expect`) so that this module imports without Great
Expectations; `to_gx` turns them into GX expectations when a stage validates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scoutless.params import ValidationParams

TASK_STATUSES = (
    "registered", "defined", "assigning", "ready", "pending", "scouting", "scouted", "running", "prepared",
    "throttled", "exhausted", "finishing", "passed", "done", "finished", "failed", "broken", "aborted",
    "aborting", "paused", "toretry", "toincexec", "rerefine", "tobroken", "topreprocess", "preprocessing",
)
UNITS = {
    "ramunit": ("MBPerCore", "MBPerCoreFixed", "MB", "MBFixed"),
    "cputimeunit": ("HS06sPerEvent", "HS06sPerEventFixed", "mHS06sPerEvent", "mHS06sPerEventFixed"),
    "iointensityunit": ("kBPerS", "kBPerSFixed"),
    "diskiounit": ("kBPerS", "kBPerSFixed"),
    "outdiskunit": ("kB", "kBFixed", "kBPerEvent", "kBPerEventFixed"),
    "workdiskunit": ("MB", "MBFixed"),
}
NUMERIC_TYPES = ("float64", "int64", "float32", "int32")
TIME_TYPES = ("datetime64[us]", "datetime64[ns]", "datetime64[ms]")


@dataclass(frozen=True)
class Expect:
    """One expectation: a GX expectation class name and its arguments."""

    kind: str
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        target = self.kwargs.get("column") or f"{self.kwargs.get('column_A')}>{self.kwargs.get('column_B')}"
        return f"{self.kind}({target})"


def exists(*columns: str) -> list[Expect]:
    return [Expect("ExpectColumnToExist", {"column": c}) for c in columns]


def not_null(*columns: str) -> list[Expect]:
    return [Expect("ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def between(column: str, low: float | None, high: float | None) -> Expect:
    return Expect("ExpectColumnValuesToBeBetween", {"column": column, "min_value": low, "max_value": high})


def typed(kind: tuple[str, ...], *columns: str) -> list[Expect]:
    return [Expect("ExpectColumnValuesToBeInTypeList", {"column": c, "type_list": list(kind)}) for c in columns]


def unique(column: str) -> Expect:
    return Expect("ExpectColumnValuesToBeUnique", {"column": column})


def in_set(column: str, values: tuple[str, ...]) -> Expect:
    return Expect("ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values)})


def ordered(earlier: str, later: str) -> Expect:
    """`later` is at or after `earlier` wherever both are known."""
    return Expect("ExpectColumnPairValuesAToBeGreaterThanB", {
        "column_A": later, "column_B": earlier, "or_equal": True, "ignore_row_if": "either_value_is_missing",
    })


def tasks_suite(params: ValidationParams) -> list[Expect]:
    return [
        *exists("jeditaskid", "taskname", "creationdate", "endtime", "status", "prodsourcelabel",
                "processingtype", "corecount", "transhome", "transpath", "total_nfiles", "total_nevents",
                "n_input_datasets"),
        *not_null("jeditaskid", "taskname", "creationdate", "status", "prodsourcelabel", "processingtype"),
        unique("jeditaskid"),
        *typed(NUMERIC_TYPES, "jeditaskid", "corecount", "total_nfiles", "total_nevents", "n_input_datasets"),
        *typed(TIME_TYPES, "creationdate", "endtime"),
        in_set("status", TASK_STATUSES),
        between("corecount", 0, params.max_corecount),
        between("total_nfiles", 0, None),
        between("total_nevents", 0, None),
        between("n_bad_input_datasets", 0, 0),
        ordered("creationdate", "endtime"),
        *(in_set(column, values) for column, values in UNITS.items()),
    ]


def labels_suite(params: ValidationParams) -> list[Expect]:
    targets = list(params.label_ranges)
    return [
        *exists("jeditaskid", "n_finished_jobs", *targets),
        *not_null("jeditaskid", "n_finished_jobs"),
        unique("jeditaskid"),
        *typed(NUMERIC_TYPES, *targets),
        between("n_finished_jobs", 1, None),
        *(between(target, low, high) for target, (low, high) in params.label_ranges.items()),
    ]


def jobs_suite(params: ValidationParams) -> list[Expect]:
    return [
        *exists("pandaid", "jeditaskid", "cores", "wall_s", "ram_mb_per_core"),
        *not_null("pandaid", "jeditaskid", "wall_s"),
        unique("pandaid"),
        between("cores", 1, params.max_corecount),
        between("wall_s", 0, params.max_job_wall_s),
        *(between(f"{column}", low, high) for column, (low, high) in params.job_ranges.items()),
    ]


def features_suite(params: ValidationParams, feature_columns: list[str], targets: list[str]) -> list[Expect]:
    """The features table of `targets`: only their labels are there, and checked against label_ranges."""
    return [
        *exists("jeditaskid", "creationdate", "labels_known_at", *feature_columns),
        *not_null("jeditaskid", "creationdate"),
        unique("jeditaskid"),
        between("corecount", 0, params.max_corecount),
        between("total_nevents", 0, None),
        *(between(f"label_{target}", low, high) for target, (low, high) in params.label_ranges.items()
          if target in targets),
    ]
