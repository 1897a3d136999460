"""Behaviour of the candidates: ordered quantiles, monotone totals, unseen categories, a planted signal
learned, calibrated coverage, and models that come back identical from disk."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scoutless.models.candidates import CANDIDATES, Candidate
from scoutless.models.encoding import OTHER, CategoryEncoder
from scoutless.models.metrics import coverage
from scoutless.models.targets import TARGETS
from scoutless.models.train import candidate_config
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
    fit, calibration = train.iloc[: int(len(train) * 0.7)], train.iloc[int(len(train) * 0.7):]
    params = small_params()
    return {
        name: CANDIDATES[name](SPEC, candidate_config(name, "cputime", params))
        .fit(fit, fit["label_cputime"].to_numpy())
        .calibrate(calibration, calibration["label_cputime"].to_numpy(), calibration["labels_known_at"].max())
        for name in LEARNED
    }


@pytest.mark.parametrize("name", LEARNED)
def test_quantiles_are_ordered_and_finite(fitted, synthetic, name):
    predicted = fitted[name].predict(synthetic[synthetic["split"] == "holdout"])
    assert np.isfinite(predicted[["q50", "q90", "q95", "request"]].to_numpy()).all()
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
    assert np.isfinite(fitted[name].predict(task)[["q50", "q90", "q95", "request"]].to_numpy()).all()


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
    candidate = fitted.get(name) or CANDIDATES[name](SPEC, {"value": 100.0}).fit(synthetic, None)
    candidate.save(tmp_path / name)
    loaded = Candidate.load(tmp_path / name, SPEC)
    holdout = synthetic[synthetic["split"] == "holdout"]
    pd.testing.assert_frame_equal(loaded.predict(holdout), candidate.predict(holdout))


def test_the_scout_candidate_is_not_servable():
    assert not CANDIDATES["scout"].servable
    assert all(CANDIDATES[name].servable for name in ("default", *LEARNED))


def release_encoder(releases: list[str], max_categories: int = 255) -> CategoryEncoder:
    frame = pd.DataFrame({"release": pd.Series(releases, dtype="string"), "corecount": 1.0})
    return CategoryEncoder.fit(frame, ["release"], ["corecount"], max_categories)


def release_codes(encoder: CategoryEncoder, releases: list) -> list[float]:
    return encoder.codes(pd.DataFrame({"release": pd.Series(releases, dtype="string")}))[:, 0].tolist()


def test_a_new_release_takes_the_code_of_the_nearest_earlier_one_of_its_series():
    known = [f"24.0.{n}" for n in (1, 2, 3, 5, 12)] * 2 + ["25.1.4"] * 2 + ["23.0.7"]  # 23.0.7 is too rare
    encoder = release_encoder(known, max_categories=7)
    code = {value: float(i) for i, value in enumerate(encoder.categories["release"])}
    assert OTHER in code and "23.0.7" not in code
    new = ["24.0.13", "24.0.4", "24.0.5", "25.1.9", "24.0.0", "25.1.3", "26.0.1", "24.0", "23.0.8", "nightly", None]
    expected = [code["24.0.12"], code["24.0.3"], code["24.0.5"], code["25.1.4"],
                # nothing earlier in its series, an unknown series, no number, no kept release in its series
                *[code[OTHER]] * 6, np.nan]
    np.testing.assert_array_equal(release_codes(encoder, new * 2), expected * 2)  # again from the remembered
    assert np.isnan(release_codes(release_encoder(["24.0.3", "24.0.4"]), ["24.0.1"])[0])  # no "other" code


def test_a_stored_encoder_places_new_releases_as_before_and_an_older_one_still_loads():
    encoder = release_encoder(["24.0.1", "24.0.12", "24.0.12", "25.0.2"])
    code = {value: float(i) for i, value in enumerate(encoder.categories["release"])}
    stored = CategoryEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    new = ["24.0.13", "25.0.3", "24.0.12", "26.0.1"]
    expected = [code["24.0.12"], code["25.0.2"], code["24.0.12"], np.nan]
    np.testing.assert_array_equal(release_codes(stored, new), expected)
    np.testing.assert_array_equal(release_codes(stored, new), release_codes(encoder, new))
    older = {key: value for key, value in encoder.to_dict().items() if key != "releases"}
    np.testing.assert_array_equal(release_codes(CategoryEncoder.from_dict(older), new),
                                  [np.nan, np.nan, code["24.0.12"], np.nan])  # as its model was trained


def perturbed_codes(candidate, frame: pd.DataFrame, out_of_range: bool, seed: int = 0) -> np.ndarray:
    """The frame's codes with missing values and other categories: with `out_of_range`, codes no encoder gives
    (negative, or beyond its categories: what trees must still route as their library does)."""
    rng = np.random.default_rng(seed)
    codes = candidate.encoder.codes(frame)
    odd = codes.copy()
    odd[rng.random(odd.shape) < 0.15] = np.nan
    rows = np.flatnonzero(rng.random(len(odd)) < 0.3)
    for i, values in enumerate(candidate.encoder.categories.values()):
        low, high = (-2, 300) if out_of_range else (0, len(values))
        odd[rows, i] = rng.integers(low, high, len(rows))
    return np.vstack([codes, odd])


@pytest.mark.parametrize("name", ["hgb", "xgboost", "mlp"])
def test_a_compiled_model_predicts_what_its_library_predicts(fitted, synthetic, name):
    """Trees bit for bit (the libraries' own order and precision of additions), the MLP to rounding."""
    candidate = fitted[name]
    codes = perturbed_codes(candidate, synthetic, out_of_range=name != "mlp")   # one-hot takes only its codes
    library = candidate._library_raw(codes)
    assert candidate.compile()
    try:
        compiled = candidate._raw(codes)
        one_by_one = np.vstack([candidate._raw(codes[i:i + 1]) for i in range(50)])
    finally:
        candidate._compiled = None
    if name == "mlp":   # one row and many take different BLAS kernels
        np.testing.assert_allclose(compiled, library, rtol=1e-12, atol=0)
        np.testing.assert_allclose(one_by_one, compiled[:50], rtol=1e-12, atol=0)
    else:
        np.testing.assert_array_equal(compiled, library)
        np.testing.assert_array_equal(one_by_one, compiled[:50])


def test_a_model_that_cannot_be_compiled_keeps_its_library_predict(synthetic):
    """A dart booster weighs its trees: compile() says no, and the answers stay the library's."""
    config = candidate_config("xgboost", "cputime", small_params())
    config["params"] = {**config["params"], "booster": "dart", "n_estimators": 10}
    candidate = CANDIDATES["xgboost"](SPEC, config).fit(synthetic, synthetic["label_cputime"].to_numpy())
    before = candidate.predict(synthetic)
    assert not candidate.compile()
    pd.testing.assert_frame_equal(candidate.predict(synthetic), before)


@pytest.mark.parametrize("name", [*LEARNED, "default"])
def test_tasks_given_as_dicts_get_what_the_frame_gets(fitted, synthetic, name, monkeypatch):
    """predict_rows (the service's hot path) answers every column of predict, compiled or not, and builds no
    pandas frame on the way; also for tasks of a kind never seen, or missing a part of their kind (history backs
    off to coarser kinds, or to all)."""
    candidate = fitted.get(name) or CANDIDATES[name](SPEC, {"value": 100.0}).fit(synthetic, None)
    holdout = synthetic[synthetic["split"] == "holdout"].reset_index(drop=True)
    holdout.loc[0, "transpath"] = "Never_tf.py"
    holdout.loc[1, "processing_type"] = pd.NA
    holdout.loc[2, ["processing_type", "transpath", "release", "corecount_class"]] = pd.NA
    rows = holdout.astype(object).where(holdout.notna(), None).to_dict("records")
    expected = candidate.predict(holdout)
    compiles = hasattr(candidate, "compile") and candidate.compile()
    try:
        with monkeypatch.context() as patched:
            patched.setattr(pd, "DataFrame", lambda *args, **kwargs: pytest.fail("the hot path built a DataFrame"))
            answered = candidate.predict_rows(rows)
    finally:
        if compiles:
            candidate._compiled = None
    assert set(answered) == set(expected.columns)
    for column in expected.columns:
        if column in ("request_policy", "job_need"):
            assert list(answered[column]) == expected[column].tolist()
        else:
            np.testing.assert_allclose(answered[column], expected[column].to_numpy(dtype="float64"), rtol=1e-12)
