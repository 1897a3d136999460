"""Data tests: each expectation catches a planted bad row; clean data passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoutless.archive.stages import run_extract
from scoutless.params import Params
from scoutless.validation.suites import jobs_suite, labels_suite, tasks_suite
from scoutless.validation.validate import DataValidationError, enforce, run_validate, split_bad_rows, validate_table
from tests.archive_builder import ArchiveBuilder
from tests.integration.test_extract import fill, params_for


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> tuple[Params, dict[str, pd.DataFrame]]:
    """Clean raw tables, extracted from a small hand-built archive."""
    project = tmp_path_factory.mktemp("project")
    (project / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    builder = ArchiveBuilder(f"sqlite:///{project / 'a.sqlite'}")
    fill(builder)
    for i in range(10, 30):
        builder.task(i)
        builder.job(i)
    params = params_for(project, str(builder.engine.url))
    run_extract(params, progress=False)
    return params, {t: pd.read_parquet(params.paths.raw / f"{t}.parquet") for t in ("tasks", "labels", "jobs")}


SUITES = {"tasks": tasks_suite, "labels": labels_suite, "jobs": jobs_suite}


@pytest.mark.parametrize("table", SUITES)
def test_clean_tables_pass(raw, table):
    params, frames = raw
    outcome = validate_table(frames[table], SUITES[table](params.validation), table)
    assert outcome.bad_rows == 0
    assert all(e.success for e in outcome.expectations), [e.name for e in outcome.expectations if not e.success]


PLANTED = [
    ("tasks", "creationdate", pd.NaT, "ExpectColumnValuesToNotBeNull(creationdate)"),
    ("tasks", "processingtype", None, "ExpectColumnValuesToNotBeNull(processingtype)"),
    ("tasks", "corecount", 999.0, "ExpectColumnValuesToBeBetween(corecount)"),
    ("tasks", "total_nevents", -5.0, "ExpectColumnValuesToBeBetween(total_nevents)"),
    ("tasks", "n_bad_input_datasets", 1.0, "ExpectColumnValuesToBeBetween(n_bad_input_datasets)"),
    ("tasks", "cputimeunit", "seconds", "ExpectColumnValuesToBeInSet(cputimeunit)"),
    ("tasks", "ramunit", "GB", "ExpectColumnValuesToBeInSet(ramunit)"),
    ("tasks", "status", "imaginary", "ExpectColumnValuesToBeInSet(status)"),
    ("tasks", "endtime", pd.Timestamp("2000-01-01"), "ExpectColumnPairValuesAToBeGreaterThanB(endtime>creationdate)"),
    ("labels", "ramcount", 5e6, "ExpectColumnValuesToBeBetween(ramcount)"),
    ("labels", "cputime", -1.0, "ExpectColumnValuesToBeBetween(cputime)"),
    ("labels", "n_finished_jobs", 0.0, "ExpectColumnValuesToBeBetween(n_finished_jobs)"),
    ("jobs", "ram_mb_per_core", 1e9, "ExpectColumnValuesToBeBetween(ram_mb_per_core)"),
    ("jobs", "wall_s", np.nan, "ExpectColumnValuesToNotBeNull(wall_s)"),
    ("jobs", "cores", 0, "ExpectColumnValuesToBeBetween(cores)"),
]


@pytest.mark.parametrize(("table", "column", "value", "expectation"), PLANTED, ids=[p[3] for p in PLANTED])
def test_each_expectation_catches_its_planted_bad_row(raw, table, column, value, expectation):
    params, frames = raw
    frame = frames[table].copy()
    frame.loc[3, column] = value
    outcome = validate_table(frame, SUITES[table](params.validation), table)
    good, bad = split_bad_rows(frame, outcome)
    assert list(bad.index) == [3]
    assert expectation in bad.loc[3, "failed_expectations"]
    assert len(good) == len(frame) - 1


def test_duplicate_ids_are_quarantined(raw):
    params, frames = raw
    frame = pd.concat([frames["tasks"], frames["tasks"].iloc[[0]]], ignore_index=True)
    outcome = validate_table(frame, tasks_suite(params.validation), "tasks")
    _, bad = split_bad_rows(frame, outcome)
    assert sorted(bad.index) == [0, len(frame) - 1]
    assert set(bad["failed_expectations"]) == {"ExpectColumnValuesToBeUnique(jeditaskid)"}


def test_a_missing_column_fails_the_table_naming_it(raw):
    params, frames = raw
    outcome = validate_table(frames["tasks"].drop(columns="transhome"), tasks_suite(params.validation), "tasks")
    with pytest.raises(DataValidationError, match=r"ExpectColumnToExist\(transhome\)"):
        enforce(outcome, params.validation)


def test_too_many_bad_rows_fail_or_warn_as_configured(raw, caplog):
    params, frames = raw
    frame = frames["tasks"].copy()
    frame.loc[:4, "corecount"] = 999.0
    outcome = validate_table(frame, tasks_suite(params.validation), "tasks")
    with pytest.raises(DataValidationError, match=r"above validation.max_bad_fraction.*corecount"):
        enforce(outcome, params.validation)
    enforce(outcome, params.validation.model_copy(update={"on_too_many_bad": "warn"}))
    assert "above validation.max_bad_fraction" in caplog.text


def test_validate_stage_writes_clean_tables_quarantine_and_reports(raw):
    params, frames = raw
    summary = run_validate(params.model_copy(update={"validation": params.validation.model_copy(
        update={"max_bad_fraction": 1.0})}))
    assert summary.tables["tasks"]["quarantined"] == 0
    validated = pd.read_parquet(params.paths.validated / "labels.parquet")
    assert len(validated) == len(frames["labels"])
    html = (params.paths.validation_reports / "index.html").read_text()
    assert "ExpectColumnValuesToBeBetween(corecount)" in html and "<table>" in html
    assert (params.paths.validation_reports / "validation.json").exists()


def test_labels_come_from_the_jobs_that_passed(tmp_path):
    """A junk job (memory far above validation.job_ranges) is quarantined and does not move its task's label;
    a task whose only job was junk has no label left, and its label row is quarantined with the reason."""
    (tmp_path / "params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    builder = ArchiveBuilder(f"sqlite:///{tmp_path / 'a.sqlite'}")
    junk_kb = 8 * 1024 * 5e6                      # 5 TB per core: beyond validation.job_ranges
    builder.task(40)
    for mb_per_core in (1000, 1200, 1400):
        builder.job(40, maxpss=8 * 1024 * mb_per_core)
    builder.job(40, maxpss=junk_kb)
    builder.task(41)
    builder.job(41, maxpss=junk_kb)
    params = params_for(tmp_path, str(builder.engine.url))
    params = params.model_copy(update={"validation": params.validation.model_copy(update={"max_bad_fraction": 1.0})})
    run_extract(params, progress=False)
    raw_labels = pd.read_parquet(params.paths.raw / "labels.parquet").set_index("jeditaskid")

    run_validate(params)
    labels = pd.read_parquet(params.paths.validated / "labels.parquet").set_index("jeditaskid")
    jedi = params.extract.jedi
    clean = np.percentile([1000, 1200, 1400], jedi.ramcount_percentile) * (1 + jedi.ramcount_margin)
    assert raw_labels.loc[40, "ramcount"] > 2 * clean          # extracted from every job, junk included
    assert labels.loc[40, "ramcount"] == pytest.approx(clean) and labels.loc[40, "n_finished_jobs"] == 3
    assert 41 not in labels.index
    quarantined = pd.read_parquet(params.paths.quarantine / "labels.parquet").set_index("jeditaskid")
    assert "n_finished_jobs" in quarantined.loc[41, "failed_expectations"]
    assert (pd.read_parquet(params.paths.quarantine / "jobs.parquet")["jeditaskid"].value_counts() == 1).all()
