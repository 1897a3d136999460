"""Behaviour of the candidates: ordered quantiles, monotone totals, unseen categories, a planted signal
learned, calibrated coverage, and models that come back identical from disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.candidates import CANDIDATES, Candidate
from models.metrics import coverage
from models.targets import TARGETS
from models.train import candidate_config
from scoutless.params import Params
from tests.model.conftest import KIND_CPU, synthetic_features

LEARNED = ["history", "mlp", "hgb", "xgboost"]
SPEC = TARGETS["cputime"]


def small_params() -> Params:
    params = Params()
    return params.model_copy(update={"train": params.train.model_copy(update={
        "hgb": params.train.hgb.model_copy(update={"max_iter": 60}),
        "xgboost": params.train.xgboost.model_copy(update={"n_estimators": 60}),
        "mlp": params.train.mlp.model_copy(update={"max_iter": 100}),
    })})


@pytest.fixture(scope="module")
def fitted(synthetic) -> dict[str, Candidate]:
    train = synthetic[synthetic["split"] == "train"]
    calibration = (train["fold"] == train["fold"].max()).to_numpy()
    params = small_params()
    return {
        name: CANDIDATES[name](SPEC, candidate_config(name, "cputime", params))
        .fit(train, train["label_cputime"].to_numpy(), calibration)
        for name in LEARNED
    }


@pytest.mark.parametrize("name", LEARNED)
def test_quantiles_are_ordered_and_finite(fitted, synthetic, name):
    predicted = fitted[name].predict(synthetic[synthetic["split"] == "holdout"])
    assert np.isfinite(predicted.to_numpy()).all()
    assert (predicted["q50"] <= predicted["q90"]).all() and (predicted["q90"] <= predicted["q95"]).all()


@pytest.mark.parametrize("name", ["hgb", "xgboost"])
def test_more_events_never_lower_the_predicted_total_cpu(fitted, synthetic, name):
    tasks = synthetic[synthetic["split"] == "holdout"].head(200)
    more = tasks.assign(total_nevents=tasks["total_nevents"] * 4)
    total = fitted[name].predict(tasks)["q90"] * tasks["total_nevents"]
    total_more = fitted[name].predict(more)["q90"] * more["total_nevents"]
    assert (total_more >= total).all()


@pytest.mark.parametrize("name", LEARNED)
def test_an_unseen_category_gives_a_finite_prediction(fitted, synthetic, name):
    task = synthetic.head(1).assign(processing_type="never-seen-before", transpath="New_tf.py",
                                    release="99.9.9", framework=pd.NA)
    assert np.isfinite(fitted[name].predict(task).to_numpy()).all()


@pytest.mark.parametrize("name", ["hgb", "xgboost", "mlp", "history"])
def test_a_planted_strong_signal_is_learned(fitted, name):
    fresh = synthetic_features(800, seed=7)
    predicted = fitted[name].predict(fresh)["q50"]
    for kind, cpu in KIND_CPU.items():
        median = predicted[fresh["processing_type"] == kind].median()
        # within 30 % in the space the models fit (log1p), where 0.05 and 0.02 are nearly equal
        assert np.log1p(median) == pytest.approx(np.log1p(cpu), abs=0.26), kind


@pytest.mark.parametrize("name", ["hgb", "xgboost", "mlp"])
def test_conformal_quantiles_cover_what_they_say(fitted, name):
    fresh = synthetic_features(4000, seed=11)
    predicted = fitted[name].predict(fresh)
    assert coverage(fresh["label_cputime"], predicted["q90"]) == pytest.approx(0.90, abs=0.04)
    assert coverage(fresh["label_cputime"], predicted["q95"]) == pytest.approx(0.95, abs=0.03)


@pytest.mark.parametrize("name", [*LEARNED, "default", "scout"])
def test_a_saved_candidate_predicts_the_same_after_loading(fitted, synthetic, name, tmp_path):
    candidate = fitted.get(name) or CANDIDATES[name](SPEC, {"value": 100.0}).fit(synthetic, None, None)
    candidate.save(tmp_path / name)
    loaded = Candidate.load(tmp_path / name, SPEC)
    holdout = synthetic[synthetic["split"] == "holdout"]
    pd.testing.assert_frame_equal(loaded.predict(holdout), candidate.predict(holdout))


def test_the_scout_candidate_is_not_servable():
    assert not CANDIDATES["scout"].servable
    assert all(CANDIDATES[name].servable for name in ("default", *LEARNED))
