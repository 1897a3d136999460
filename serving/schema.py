"""The request and response of POST /predict, in PanDA's own field names and units.

A task is a `jedi_tasks` row as JEDI knows it at submission (lower-case names), plus its input totals (or a
bigpanda-style `datasets` list from which they are summed) and, optionally, its task parameter map. Fields
beyond these are accepted and ignored, so a whole jedi_tasks row can be sent as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

INPUT_DATASET_TYPES = ("input", "pseudo_input")
# The largest of the integers every JSON reader holds exactly (a bound, not exclusiveMaximum, which OpenAPI
# 3.0 reads as a boolean).
MAX_EXACT_INTEGER = 2**53 - 1


def _not_a_boolean(value):
    """JSON's true and false are not counts (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    return value


def _a_text_date(value):
    """A date is ISO 8601 text, as the schema says (pydantic would also read a number as a Unix time)."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("an ISO 8601 date-time text is required, e.g. 2026-11-30T12:00:00")
    return value


# A count, an id or a size: a whole number (not its text, not a boolean) from 0 up to what JSON carries
# exactly. The bounds come before the validator so that the OpenAPI states them (minimum, maximum).
Count = Annotated[int, Field(ge=0, le=MAX_EXACT_INTEGER, strict=True), BeforeValidator(_not_a_boolean)]


class Dataset(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    nfiles: Count | None = None
    nevents: Count | None = None
    datasetname: str | None = None


# What `input_totals` requires, said in the schema: both totals, or a datasets list.
INPUT_TOTALS_SCHEMA = {"anyOf": [
    {"required": ["total_nfiles", "total_nevents"],
     "properties": {"total_nfiles": {"type": "integer"}, "total_nevents": {"type": "integer"}}},
    {"required": ["datasets"], "properties": {"datasets": {"type": "array"}}},
]}


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=INPUT_TOTALS_SCHEMA)

    jeditaskid: Count | None = None
    taskname: Annotated[str, Field(min_length=1)]
    prodsourcelabel: Annotated[str, Field(min_length=1)]
    processingtype: Annotated[str, Field(min_length=1)]
    corecount: Count   # at most validation.max_corecount (check_limits: the bound is the trained one)
    transpath: str | None = None
    transhome: str | None = None
    transuses: str | None = None
    campaign: str | None = None
    workinggroup: str | None = None
    gshare: str | None = None
    username: str | None = None
    tasktype: str | None = None
    creationdate: Annotated[datetime | None, BeforeValidator(_a_text_date)] = None
    baseramcount: Count | None = None
    basewalltime: Count | None = None
    cpuefficiency: Annotated[int, Field(ge=0, le=100, strict=True), BeforeValidator(_not_a_boolean)] | None = None
    total_nfiles: Count | None = None
    total_nevents: Count | None = None
    n_input_datasets: Count | None = None
    datasets: list[Dataset] | None = None
    # The task parameter map as JEDI keeps it (JEDI_TaskParams.taskParams: an object, or its JSON text): its
    # coreCount, baseRamCount, baseWalltime and cpuEfficiency are what the task was submitted with, and win.
    taskparams: dict | str | None = None
    # A job of this task ran out of memory at this ramcount (MB per core): the answer's ramcount.retry says
    # what to ask next, from the task's job-level predictive distribution above it.
    # (at least 1 MB: a bound, as OpenAPI 3.0 reads exclusiveMinimum as a boolean)
    failed_ramcount: Annotated[float, Field(ge=1, le=MAX_EXACT_INTEGER, strict=True),
                               BeforeValidator(_not_a_boolean)] | None = None

    @model_validator(mode="after")
    def input_totals(self) -> TaskSpec:
        """Totals are given, or summed over the input datasets of `datasets`; one or the other."""
        if self.total_nfiles is None or self.total_nevents is None:
            if self.datasets is None:
                raise ValueError("give total_nfiles and total_nevents, or a datasets list to sum them from")
            inputs = [d for d in self.datasets if d.type in INPUT_DATASET_TYPES]
            self.total_nfiles = sum(d.nfiles or 0 for d in inputs)
            self.total_nevents = sum(d.nevents or 0 for d in inputs)
            if self.n_input_datasets is None:
                self.n_input_datasets = len(inputs)
        return self

    def row(self) -> dict:
        return self.model_dump(exclude={"datasets", "failed_ramcount"})


def check_limits(tasks: list[TaskSpec], max_corecount: int) -> None:
    """Refuse, naming the task and the field, what lies beyond what the models were trained on."""
    for index, task in enumerate(tasks):
        if task.corecount > max_corecount:
            raise ValueError(f"tasks.{index}.corecount: {task.corecount} is above validation.max_corecount="
                             f"{max_corecount}, beyond every task the models learned from")


class Answer(BaseModel):
    """A closed part of the response: its schema names every field, and nothing else is sent."""
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True)


class RetryAdvice(Answer):
    """What a job that ran out of memory at `failed_at` should ask next."""
    failed_at: float
    request: float
    # The share of such jobs (those needing more than failed_at) expected to need more than `request`.
    expected_job_failure: float | None
    # predictive: from the task's job-level distribution above failed_at; vpa: it holds nothing above, and
    # the answer is the vertical pod autoscaler's (+20 %, at least +100 MB).
    rule: Literal["predictive", "vpa"]


class TargetPrediction(Answer):
    unit: str
    q50: float
    q90: float
    q95: float
    # What JEDI should set. For a target with a per-job limit, a job-level value from the task's calibrated
    # distribution of its jobs' needs (models.requests): by request_policy "cost-aware" the value of least
    # expected cost, by "quantile" one fixed level for every task; expected_job_failure is the share of the
    # task's jobs expected above it. For cpuefficiency ("preset"), the preset the served cputime is expressed
    # with (JEDI's walltime limit divides by it).
    request: float
    expected_job_failure: float | None = None
    request_policy: Literal["cost-aware", "quantile", "preset", "label quantile"]
    request_quantile: Literal["q50", "q90", "q95"]   # the label quantile the model's request builds on
    model_version: str
    retry: RetryAdvice | None = None   # for ramcount, when the task gave failed_ramcount


class IOPrediction(TargetPrediction):
    # JEDI's brokerage weighs tasks above 500 kB/s as I/O-intensive.
    io_class: Literal["low", "high"] = Field(alias="class")


class TaskPrediction(Answer):
    jeditaskid: int | None
    ramcount: TargetPrediction | None = None
    cputime: TargetPrediction | None = None
    cpuefficiency: TargetPrediction | None = None
    iointensity: IOPrediction | None = None
    outdiskcount: TargetPrediction | None = None
    workdiskcount: TargetPrediction | None = None


class PredictResponse(Answer):
    model_version: str
    predictions: list[TaskPrediction]


class ErrorObject(Answer):
    """Every refusal of POST /predict: what went wrong, the field it names (None for the request as a
    whole, e.g. its size), and a sentence saying what to send instead."""
    error: str
    field: str | None
    detail: str
