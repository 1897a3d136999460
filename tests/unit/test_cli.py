"""The command line: help on every command, a small end-to-end run, and clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scoutless.cli import app

runner = CliRunner()
COMMANDS = ("simulate", "extract", "validate", "features", "run")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_simulate_then_extract_a_small_archive(project):
    archive = f"sqlite:///{project / 'small.sqlite'}"
    simulated = runner.invoke(app, ["simulate", "--tasks", "60", "--seed", "3", "--archive", archive, "--no-progress"])
    assert simulated.exit_code == 0, simulated.output
    assert json.loads(simulated.output)["tasks"] == 60

    extracted = runner.invoke(app, ["extract", "--archive", archive, "--no-progress"])
    assert extracted.exit_code == 0, extracted.output
    summary = json.loads(extracted.output[extracted.output.index("{"):])
    assert summary["tasks_total"] == 60 and summary["labelled_total"] > 0
    assert (project / "data/raw/labels.parquet").exists()


def test_an_archive_without_panda_tables_is_named(project):
    result = runner.invoke(app, ["extract", "--archive", f"sqlite:///{project / 'empty.sqlite'}", "--no-progress"])
    assert result.exit_code == 2
    assert "no table jedi_tasks" in result.output and "no table jobsarchived4" in result.output


def test_a_misspelt_parameter_stops_every_command(project):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("chunk_tasks:", "chunk_taks:"))
    result = runner.invoke(app, ["extract", "--no-progress"])
    assert result.exit_code != 0
    assert "extract.chunk_taks" in result.output


def test_predict_names_the_bad_field_of_the_bad_task(project):
    tasks = project / "tasks.json"
    good = {"taskname": "t", "prodsourcelabel": "user", "processingtype": "jedi-run", "corecount": 1,
            "total_nfiles": 1, "total_nevents": 1}
    tasks.write_text(json.dumps([good, {**good, "corecount": -2}]))
    result = runner.invoke(app, ["predict", str(tasks)])
    assert result.exit_code == 2
    assert "task 1.corecount" in result.output


def test_predict_without_promoted_models_says_what_to_run(project):
    tasks = project / "tasks.json"
    tasks.write_text(json.dumps({"tasks": [{"taskname": "t", "prodsourcelabel": "user", "processingtype": "x",
                                            "corecount": 1, "total_nfiles": 1, "total_nevents": 1}]}))
    result = runner.invoke(app, ["predict", str(tasks)])
    assert result.exit_code == 2 and "make run" in result.output
