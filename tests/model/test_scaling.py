"""Large fit windows: the boosted candidates stop early on the validation window, and train.scaling leaves
candidates out or has them learn from the newest tasks, as the card then says."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoutless.models.candidates import CANDIDATES
from scoutless.models.select import scaling_notes
from scoutless.models.targets import TARGETS
from scoutless.models.train import candidate_config, train_target
from scoutless.params import Params, SplitParams

SPEC = TARGETS["cputime"]


def with_train(params: Params, **sections) -> Params:
    train = params.train.model_copy(update={
        name: getattr(params.train, name).model_copy(update=values) for name, values in sections.items()})
    return params.model_copy(update={"train": train})


def test_the_boosted_candidates_stop_early_on_the_validation_window(synthetic):
    train = synthetic[synthetic["split"] == "train"]
    validation = synthetic[synthetic["split"] == "holdout"]
    params = with_train(Params(), xgboost={"n_estimators": 400, "learning_rate": 0.3},
                        hgb={"max_iter": 400, "learning_rate": 0.3})
    y, y_validation = train["label_cputime"].to_numpy(), validation["label_cputime"].to_numpy()

    def fitted(name: str, config: dict, with_validation: bool):
        return CANDIDATES[name](SPEC, config).fit(train, y, (validation, y_validation) if with_validation else None)

    xgboost = candidate_config("xgboost", "cputime", params)
    assert fitted("xgboost", xgboost, True).booster.num_boosted_rounds() < 100
    assert fitted("xgboost", xgboost, False).booster.num_boosted_rounds() == 400
    never = {**xgboost, "params": {**xgboost["params"], "early_stopping_rounds": None}}
    assert fitted("xgboost", never, True).booster.num_boosted_rounds() == 400
    hgb = fitted("hgb", candidate_config("hgb", "cputime", params), True)
    assert all(model.n_iter_ < 100 for model in hgb.models)
    # the validation window itself scored each iteration (sklearn's own split would hold out a tenth of train)
    assert all(model._use_validation_data and len(model.validation_score_) == model.n_iter_ + 1
               for model in hgb.models)


def test_scaling_skips_candidates_and_fits_others_on_the_newest_tasks(synthetic):
    features = synthetic.drop(columns="split")
    params = with_train(Params(), scaling={"skip_above_tasks": {"mlp": 1000}, "max_fit_tasks": {"xgboost": 500}},
                        xgboost={"n_estimators": 30})
    params = params.model_copy(update={"split": SplitParams(validation_days=10, test_days=10)})
    origin = features["creationdate"].max() - pd.Timedelta(days=10)
    result = train_target(features, None, "cputime", params, origin, ["history", "mlp", "xgboost"])

    n_fit = result.data_window["n_train"]
    assert n_fit > 1000
    assert set(result.metrics) == {"history", "xgboost"} and "1000" in result.skipped["mlp"].replace(",", "")
    assert result.metrics["history"]["fit_tasks"] == n_fit and result.metrics["xgboost"]["fit_tasks"] == 500
    learned = result.candidates["xgboost"].config["max_fit_tasks"]
    assert learned == 500
    notes = scaling_notes(result.metrics, result.data_window, result.skipped)
    assert any(note.startswith("mlp: not trained") for note in notes)
    assert any(f"newest 500 of the {n_fit:,} tasks" in note for note in notes)
    assert not any(note.startswith("history") for note in notes)


def test_the_newest_tasks_are_the_ones_learned_from(synthetic):
    from scoutless.models.protocol import Windows
    from scoutless.models.train import fit_as_of

    features = synthetic.drop(columns="split")
    split = SplitParams(validation_days=10, test_days=10)
    windows = Windows.at(features["creationdate"].max() - pd.Timedelta(days=10), split)
    config = {**candidate_config("history", "cputime", Params()), "max_fit_tasks": 300}
    _, fit, _ = fit_as_of("history", config, SPEC, features, None, windows)
    whole = windows.fit_rows(features, "cputime")
    assert len(fit) == 300
    assert np.array_equal(np.sort(fit["jeditaskid"].to_numpy()),
                          whole.sort_values("creationdate")["jeditaskid"].to_numpy()[-300:])


def test_the_jobs_read_for_some_tasks_are_theirs_as_the_whole_file_has_them(tmp_path):
    from scoutless.models.train import TRAINING_JOB_COLUMNS, load_jobs

    rng = np.random.default_rng(3)
    jobs = pd.DataFrame({column: rng.normal(size=5000) for column in TRAINING_JOB_COLUMNS})
    jobs["jeditaskid"] = rng.integers(1, 400, size=5000)
    jobs.loc[::7, "wall_s"] = np.nan
    jobs.to_parquet(tmp_path / "jobs.parquet", row_group_size=600)   # filtered group by group
    params = Params().model_copy(update={"paths": Params().paths.model_copy(update={"validated": str(tmp_path)})})
    wanted = rng.choice(np.arange(1, 400), size=50, replace=False)
    read = load_jobs(params, wanted)
    expected = jobs[jobs["jeditaskid"].isin(wanted)].reset_index(drop=True)
    pd.testing.assert_frame_equal(read, expected[TRAINING_JOB_COLUMNS])
    pd.testing.assert_frame_equal(load_jobs(params), jobs[TRAINING_JOB_COLUMNS])


def test_a_candidate_that_learns_nothing_from_the_features_fits_on_the_window_s_ids_dates_and_labels(synthetic):
    from scoutless.models.protocol import Windows
    from scoutless.models.train import fit_as_of

    features = synthetic.drop(columns="split")
    windows = Windows.at(features["creationdate"].max() - pd.Timedelta(days=10),
                         SplitParams(validation_days=10, test_days=10))
    whole = windows.fit_rows(features, "cputime")
    for name in ("default", "scout"):
        _, fit, _ = fit_as_of(name, candidate_config(name, "cputime", Params()), SPEC, features, None, windows)
        assert list(fit.columns) == ["jeditaskid", "creationdate", "labels_known_at", "label_cputime"]
        assert fit.index.tolist() == whole["jeditaskid"].tolist()
    _, fit, _ = fit_as_of("xgboost", candidate_config("xgboost", "cputime", Params()), SPEC, features, None, windows)
    assert list(fit.columns) == list(features.columns) and len(fit) == len(whole)
