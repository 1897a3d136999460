"""Running suites with Great Expectations 1.x, quarantining the rows that fail, and the validate stage.

Row-level expectations (values, pairs, uniqueness) send their failing rows to data/quarantine/ with the
names of the expectations they failed; table-level ones (a missing column, a wrong dtype) cannot be
pinned on rows and fail the stage. Too many bad rows (validation.max_bad_fraction) fail it as well,
or only warn, as validation.on_too_many_bad says.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.archive.jedi_formulas import task_values
from scoutless.archive.layout import STATE_FILE, extraction_of, read_state
from scoutless.params import JediParams, Params, ValidationParams
from scoutless.paths import build_dir, replace_dir, resolve, write_json, write_parquet
from scoutless.validation.report import write_html_report
from scoutless.validation.suites import Expect, jobs_suite, labels_suite, tasks_suite

log = logging.getLogger(__name__)

# Expectations whose failures cannot be traced to rows: they fail the table, not rows.
TABLE_LEVEL = {"ExpectColumnToExist", "ExpectColumnValuesToBeInTypeList", "ExpectColumnValuesToBeOfType"}


class DataValidationError(ValueError):
    """The data failed validation: a table-level expectation, or too many bad rows."""


@dataclass
class ExpectationOutcome:
    name: str
    kind: str
    kwargs: dict
    success: bool
    unexpected_count: int = 0
    unexpected_percent: float = 0.0
    sample_values: list = field(default_factory=list)
    observed: str | None = None
    error: str | None = None


@dataclass
class TableOutcome:
    table: str
    rows: int
    bad_rows: int
    expectations: list[ExpectationOutcome]
    # row label -> names of the expectations that row failed
    failures: dict = field(default_factory=dict, repr=False)
    # rows that passed their own expectations but were quarantined for want of a partner (quarantine_orphans):
    # reported and counted, not held against the table's max_bad_fraction (their partner's table was)
    orphans: int = 0

    @property
    def bad_fraction(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0

    @property
    def table_failures(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success and (e.kind in TABLE_LEVEL or e.error)]

    def summary(self) -> dict:
        data = asdict(self)
        data.pop("failures")
        return {**data, "bad_fraction": self.bad_fraction}


def _gx_batch(frame: pd.DataFrame, table: str):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX narrates its ephemeral context at INFO (temporary docs folders and the like): keep its warnings.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas(name=f"scoutless_{table}").add_dataframe_asset(name=table)
    return asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": frame})


def _error_message(exception_info: dict) -> str | None:
    """GX reports errors flat, or nested per metric; either way, the first message raised."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    for info in infos:
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message"))
    return None


def validate_table(frame: pd.DataFrame, suite: list[Expect], table: str) -> TableOutcome:
    """Validate `frame` (its index must be unique) against `suite`; collect each failing row's reasons."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    by_id: dict[str, Expect] = {}
    expectations = []
    for i, expect in enumerate(suite):
        key = f"{i}:{expect.name}"
        by_id[key] = expect
        expectations.append(getattr(gxe, expect.kind)(**expect.kwargs, meta={"key": key}))
    # GX cannot type-check pandas' nullable integers: it sees the same numbers as float64.
    nullable_ints = [c for c, dtype in frame.dtypes.items() if isinstance(dtype, pd.Int64Dtype)]
    result = _gx_batch(frame.astype({c: "float64" for c in nullable_ints}), table).validate(
        gx.ExpectationSuite(name=table, expectations=expectations), result_format={"result_format": "COMPLETE"}
    )
    outcomes: dict[str, ExpectationOutcome] = {}
    failures: dict = {}
    for item in result.results:  # not in suite order: matched by the key in meta
        key = item.expectation_config.meta["key"]
        expect = by_id[key]
        details = item.result or {}
        outcome = ExpectationOutcome(
            name=expect.name, kind=expect.kind, kwargs=expect.kwargs, success=bool(item.success),
            unexpected_count=int(details.get("unexpected_count") or 0),
            unexpected_percent=float(details.get("unexpected_percent_total") or details.get("unexpected_percent") or 0),
            sample_values=[str(v) for v in (details.get("partial_unexpected_list") or [])[:5]],
            observed=None if details.get("observed_value") is None else str(details["observed_value"]),
            error=_error_message(item.exception_info),
        )
        outcomes[key] = outcome
        if not outcome.success and expect.kind not in TABLE_LEVEL:
            for label in details.get("unexpected_index_list") or []:
                failures.setdefault(label, []).append(expect.name)
    ordered = [outcomes[key] for key in by_id if key in outcomes]
    return TableOutcome(table=table, rows=len(frame), bad_rows=len(failures), expectations=ordered,
                        failures=failures)


def split_bad_rows(frame: pd.DataFrame, outcome: TableOutcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(good rows, bad rows with a `failed_expectations` column)."""
    bad_labels = list(outcome.failures)
    bad = frame.loc[bad_labels].copy()
    bad["failed_expectations"] = ["; ".join(outcome.failures[label]) for label in bad_labels]
    return frame.drop(index=bad_labels), bad


def enforce(outcome: TableOutcome, settings: ValidationParams) -> None:
    """Raise (or warn) when the table cannot be used: a table-level failure, or too many bad rows."""
    if outcome.table_failures:
        names = ", ".join(
            f"{e.name}" + (f": {e.error}" if e.error else "") + (f" (found {e.observed})" if e.observed else "")
            for e in outcome.table_failures
        )
        raise DataValidationError(f"{outcome.table}: {names}")
    if outcome.bad_fraction > settings.max_bad_fraction:
        worst = sorted((e for e in outcome.expectations if not e.success), key=lambda e: -e.unexpected_count)[:3]
        message = (
            f"{outcome.table}: {outcome.bad_rows} of {outcome.rows} rows ({outcome.bad_fraction:.1%}) failed "
            f"validation, above validation.max_bad_fraction={settings.max_bad_fraction:.1%}; most failed: "
            + ", ".join(f"{e.name} ({e.unexpected_count} rows)" for e in worst)
        )
        if settings.on_too_many_bad == "fail":
            raise DataValidationError(message)
        log.warning(message)


@dataclass(frozen=True)
class ValidateSummary:
    tables: dict
    report: str


def labels_from_jobs(labels: pd.DataFrame, jobs: pd.DataFrame, jedi: JediParams) -> pd.DataFrame:
    """`labels` with every value JEDI's formulas take from finished jobs recomputed from `jobs` (the ones that
    passed validation): a quarantined job must not move its task's label, as one junk job would move a max.
    A task left with no job gets n_finished_jobs 0, which its suite quarantines. The failure counts stay."""
    values = task_values(jobs, jedi)
    kept = labels.drop(columns=[column for column in values.columns if column in labels.columns])
    relabelled = kept.merge(values, left_on="jeditaskid", right_index=True, how="left")
    relabelled["n_finished_jobs"] = relabelled["n_finished_jobs"].fillna(0).astype("int64")
    return relabelled


PARTNER = {"tasks": "task row", "labels": "task's label"}


def quarantine_orphans(good: pd.DataFrame, partner: str, kept: pd.Series, extracted: pd.Series,
                       outcome: TableOutcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the rows of `good` whose task has no row in `partner` after validation, each with the reason:
    the partner was quarantined, or the extraction never had it. Counted in `outcome`, listed in its report."""
    lonely = ~good["jeditaskid"].isin(kept)
    orphans = good[lonely].copy()
    what = PARTNER[partner]
    orphans["failed_expectations"] = np.where(orphans["jeditaskid"].isin(extracted),
                                              f"its {what} was quarantined", f"its {what} is not in the extraction")
    outcome.orphans = int(lonely.sum())
    outcome.expectations.append(ExpectationOutcome(
        name=f"HasPartner({partner})", kind="HasPartner", kwargs={"table": partner}, success=not outcome.orphans,
        unexpected_count=outcome.orphans,
        unexpected_percent=100.0 * outcome.orphans / outcome.rows if outcome.rows else 0.0,
        sample_values=[str(task) for task in orphans["jeditaskid"].head(5)]))
    return good[~lonely], orphans


def check_one_extraction(raw: Path, tables: list[str]) -> None:
    """The raw tables all come from one extraction, the one its state file names: a mix of two would pair
    tasks with labels and jobs they were not extracted with."""
    missing = [f"{table}.parquet" for table in tables if not (raw / f"{table}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"{raw} lacks {', '.join(missing)}: run `scoutless extract` first")
    state = read_state(raw).get("extraction")
    found = {f"{table}.parquet": extraction_of(raw / f"{table}.parquet") for table in tables}
    if state is None or any(value != state for value in found.values()):
        written = ", ".join(f"{name} by {value or 'no extraction'}" for name, value in found.items())
        raise DataValidationError(f"{raw} mixes extractions: {STATE_FILE} names {state or 'none'}, {written}; "
                                  "run `scoutless extract --full`")


def run_validate(params: Params) -> ValidateSummary:
    """The validate stage: data/raw -> data/validated + data/quarantine + reports/validation."""
    raw, validated = resolve(params.paths.raw), resolve(params.paths.validated)
    quarantine, reports = resolve(params.paths.quarantine), resolve(params.paths.validation_reports)
    settings = params.validation
    # jobs before labels: the labels are taken again from the jobs that passed
    suites = {"tasks": tasks_suite(settings), "jobs": jobs_suite(settings), "labels": labels_suite(settings)}
    check_one_extraction(raw, list(suites))
    frames: dict[str, pd.DataFrame] = {}
    quarantined: dict[str, pd.DataFrame] = {}
    extracted: dict[str, pd.Series] = {}     # every task id each raw table holds, before validation
    outcomes: dict[str, TableOutcome] = {}
    for table, suite in suites.items():
        path = raw / f"{table}.parquet"
        frame = pd.read_parquet(path).reset_index(drop=True)
        if table == "labels":
            frame = labels_from_jobs(frame, frames["jobs"], params.extract.jedi)
        outcome = validate_table(frame, suite, table)
        good, bad = split_bad_rows(frame, outcome)
        frames[table], outcomes[table], quarantined[table] = good, outcome, bad
        extracted[table] = frame["jeditaskid"]

    # A task is usable for training only if its row and its label both passed; a job only if its label did.
    for table, partner in (("labels", "tasks"), ("jobs", "labels")):
        frames[table], orphans = quarantine_orphans(frames[table], partner, frames[partner]["jeditaskid"],
                                                    extracted[partner], outcomes[table])
        quarantined[table] = pd.concat([quarantined[table], orphans])
    for table, outcome in outcomes.items():
        write_parquet(quarantined[table], quarantine / f"{table}.parquet")
        log.info("%s: %s rows, %s quarantined, %s more for want of a partner", table, outcome.rows,
                 outcome.bad_rows, outcome.orphans)

    reports.mkdir(parents=True, exist_ok=True)
    summaries = {table: outcome.summary() for table, outcome in outcomes.items()}
    write_json(reports / "validation.json", summaries)
    html = write_html_report(reports / "index.html", "Validation of the extracted archive", outcomes.values(),
                             {table: pd.read_parquet(quarantine / f"{table}.parquet") for table in outcomes})
    for outcome in outcomes.values():
        enforce(outcome, settings)
    build = build_dir(validated)   # the validated tables are swapped in together, never some of each run
    for table, frame in frames.items():
        write_parquet(frame, build / f"{table}.parquet")
    replace_dir(build, validated)
    return ValidateSummary(
        tables={t: {"rows": o.rows, "quarantined": o.bad_rows, "without_partner": o.orphans,
                    "bad_fraction": round(o.bad_fraction, 5)} for t, o in outcomes.items()},
        report=str(html),
    )
