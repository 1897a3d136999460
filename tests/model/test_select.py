"""Selection: the winner is the best servable candidate, and the quality gate promotes it only when it
beats the promoted model on the same holdout."""

from __future__ import annotations

import json
import math

import pytest

from models.select import GateError, choose_winner, run_select
from scoutless.params import load_params


def test_the_winner_is_the_best_servable_candidate():
    metrics = {
        "scout": {"servable": False, "pinball_request": 0.01},
        "default": {"servable": True, "pinball_request": math.nan},
        "history": {"servable": True, "pinball_request": 0.05},
        "xgboost": {"servable": True, "pinball_request": 0.04},
    }
    assert choose_winner(metrics, "pinball_request") == "xgboost"


def test_no_servable_candidate_is_an_error():
    with pytest.raises(ValueError, match="no servable candidate"):
        choose_winner({"scout": {"servable": False, "pinball_request": 0.01}}, "pinball_request")


@pytest.mark.slow
def test_the_gate_keeps_the_promoted_model_unless_beaten(served_project):
    params = load_params()
    promoted = served_project / "artifacts" / "promoted" / "ramcount" / "promotion.json"
    before = json.loads(promoted.read_text())

    # The same models again: the winner ties the promoted one, which is not beating it.
    warn = params.model_copy(update={"select": params.select.model_copy(update={"gate": "warn"})})
    outcome = run_select(warn)
    assert outcome["ramcount"]["kept"] == before["version"] and "does not beat" in outcome["ramcount"]["why"]
    assert json.loads(promoted.read_text()) == before

    strict = params.model_copy(update={"select": params.select.model_copy(update={"gate": "fail"})})
    with pytest.raises(GateError, match="ramcount: .* does not beat promoted"):
        run_select(strict)

    # A promoted model that does worse on the holdout is replaced by the winner.
    metrics = json.loads((served_project / "artifacts" / "metrics" / "ramcount.json").read_text())["candidates"]
    default_folder = served_project / "artifacts" / "models" / "ramcount" / "default"
    model_folder = promoted.parent / "model"
    (model_folder / "candidate.json").write_text((default_folder / "candidate.json").read_text())
    outcome = run_select(warn)
    assert "beats promoted" in outcome["ramcount"]["why"]
    after = json.loads(promoted.read_text())
    assert after["candidate"] == choose_winner(metrics, params.select.metric)
