"""Selection: the winner is the best servable candidate on the validation window, and the quality gate
promotes it only when it does at least as well as the promoted configuration on the test window."""

from __future__ import annotations

import json
import math

import pytest

from scoutless.models.select import GateError, choose_winner, run_select
from scoutless.params import load_params


def test_the_winner_is_the_best_servable_candidate():
    metrics = {   # the test-window score (flat) is reported, never chosen on
        "scout": {"servable": False, "validation": {"pinball_request": 0.01}},
        "default": {"servable": True, "validation": {"pinball_request": math.nan}},
        "history": {"servable": True, "pinball_request": 0.01, "validation": {"pinball_request": 0.05}},
        "xgboost": {"servable": True, "pinball_request": 0.09, "validation": {"pinball_request": 0.04}},
    }
    assert choose_winner(metrics, "pinball_request") == "xgboost"


def test_no_servable_candidate_is_an_error():
    with pytest.raises(ValueError, match="no servable candidate"):
        choose_winner({"scout": {"servable": False, "validation": {"pinball_request": 0.01}}}, "pinball_request")


@pytest.mark.slow
def test_the_gate_refreshes_keeps_or_replaces_the_promoted_configuration(served_project):
    params = load_params()
    promoted = served_project / "artifacts" / "promoted" / "ramcount" / "promotion.json"
    before = json.loads(promoted.read_text())
    warn = params.model_copy(update={"select": params.select.model_copy(update={"gate": "warn"})})
    strict = params.model_copy(update={"select": params.select.model_copy(update={"gate": "fail"})})

    # The same configuration again: refit as of now, which gives the same model.
    outcome = run_select(warn)
    assert "is the promoted configuration" in outcome["ramcount"]["why"]
    assert json.loads(promoted.read_text())["version"] == before["version"]

    # A promoted configuration that does worse on the test window (JEDI's default) is replaced.
    model_folder = promoted.parent / "model"
    default_folder = served_project / "artifacts" / "models" / "ramcount" / "default"
    (model_folder / "candidate.json").write_text((default_folder / "candidate.json").read_text())
    outcome = run_select(warn)
    assert "no worse than promoted default" in outcome["ramcount"]["why"]
    assert json.loads(promoted.read_text())["candidate"] == before["candidate"]

    # A winner (made so on the validation window) that is worse on the test window than the promoted
    # configuration: refused; warn keeps the promoted configuration, refit as of now; fail stops.
    scores = served_project / "artifacts" / "metrics" / "ramcount.json"
    original = scores.read_text()
    rigged = json.loads(original)
    rigged["candidates"]["default"]["validation"]["pinball_request"] = 0.0
    scores.write_text(json.dumps(rigged))
    try:
        outcome = run_select(warn)
        assert "is worse than promoted" in outcome["ramcount"]["why"]
        assert json.loads(promoted.read_text())["candidate"] == before["candidate"]
        with pytest.raises(GateError, match="ramcount: default test .* is worse than promoted"):
            run_select(strict)
    finally:
        scores.write_text(original)
