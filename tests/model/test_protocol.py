"""Honest in time: the windows never let a model learn a label unknown at its origin, and the conformal
offsets cover what they say per group on a world that drifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calibration import ConformalOffsets, weighted_conformal_quantile
from models.protocol import LABELS_KNOWN_AT, Windows, archive_now, as_of_view
from scoutless.params import SplitParams

T0 = pd.Timestamp("2025-01-01")
SPLIT = SplitParams(validation_days=10, test_days=10)


def tasks(created_days, duration_days) -> pd.DataFrame:
    created = T0 + pd.to_timedelta(np.asarray(created_days, dtype=float), unit="D")
    known = created + pd.to_timedelta(np.asarray(duration_days, dtype=float), unit="D")
    return pd.DataFrame({"jeditaskid": np.arange(len(created)), "creationdate": created,
                         LABELS_KNOWN_AT: known, "label_ramcount": np.arange(len(created), dtype=float)})


def test_a_task_created_before_the_cut_but_ended_after_does_not_train():
    frame = tasks([0, 5, 5, 15, 25, 35], [1, 1, 30, 1, 1, 1])
    windows = Windows.at(T0 + pd.Timedelta(days=30), SPLIT)   # validation (20, 30], test (30, 40]
    assert windows.fit_rows(frame, "ramcount")["jeditaskid"].tolist() == [0, 1, 3]   # task 2 ended on day 35
    assert windows.validation_rows(frame, "ramcount")["jeditaskid"].tolist() == [4]
    assert windows.test_rows(frame, "ramcount")["jeditaskid"].tolist() == [5]


@settings(max_examples=60, deadline=None)
@given(created=st.lists(st.floats(0, 100), min_size=5, max_size=40),
       durations=st.lists(st.floats(0, 60), min_size=40, max_size=40), origin_day=st.floats(10, 100))
def test_no_training_label_known_after_its_origin(created, durations, origin_day):
    frame = tasks(created, durations[: len(created)])
    origin = T0 + pd.Timedelta(days=origin_day)
    windows = Windows.at(origin, SPLIT)
    fit, validation = windows.fit_rows(frame, "ramcount"), windows.validation_rows(frame, "ramcount")
    assert (fit[LABELS_KNOWN_AT] <= windows.validation_start).all()
    assert (validation[LABELS_KNOWN_AT] <= origin).all()
    assert (validation["creationdate"] > windows.validation_start).all()
    assert not set(fit["jeditaskid"]) & set(validation["jeditaskid"])
    assert (windows.test_rows(frame, "ramcount")["creationdate"] > origin).all()
    # As of the origin, nothing created later exists and no label known later is there.
    view = as_of_view(frame, origin)
    assert (view["creationdate"] <= origin).all()
    assert view.loc[view[LABELS_KNOWN_AT] > origin, "label_ramcount"].isna().all()


def test_the_archive_now_is_its_newest_creation_or_label():
    frame = tasks([0, 3], [10, 1])
    assert archive_now(frame) == T0 + pd.Timedelta(days=10)


def test_weighted_conformal_quantile_by_hand():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    # Equal weights: the ceil((5 + 1) * 0.5) = 3rd smallest; at 0.9 ceil(5.4) = 6 > 5: the largest.
    assert weighted_conformal_quantile(scores, np.ones(5), 0.5) == 3.0
    assert weighted_conformal_quantile(scores, np.ones(5), 0.9) == 5.0
    # All the weight on the score 1.0 and on the new point (at +inf): just under half the mass is at 1.0,
    # so a level above that is never reached by a score and the largest one answers.
    weights = np.array([1e-9, 1.0, 1e-9, 1e-9, 1e-9])
    assert weighted_conformal_quantile(scores, weights, 0.45) == 1.0
    assert weighted_conformal_quantile(scores, weights, 0.55) == 5.0


def test_offsets_cover_each_group_on_a_world_that_drifts():
    """Two processing types; the model (predicting 0) is three times as wrong on one, and its errors double
    from day 40 on (a new release, say). Mondrian offsets weighted towards the newest errors cover q90 in
    each group of the next window; one exchangeable offset for all does not cover the noisy group."""
    rng = np.random.default_rng(5)

    def window(start_day: float, n: int) -> tuple[pd.DataFrame, np.ndarray]:
        day = start_day + np.sort(rng.uniform(0, 60, n))
        kind = rng.choice(["simul", "deriv"], n)
        scale = np.where(kind == "simul", 3.0, 1.0) * np.where(day < 40, 1.0, 2.0)
        return pd.DataFrame({"processing_type": kind, "day": day}), rng.normal(0, 1, n) * scale

    calibration, y = window(0, 20000)
    later, y_later = window(60, 4000)
    predicted = np.zeros((len(calibration), 3))
    age = 60 - calibration["day"].to_numpy()

    def q90_coverage(offsets: ConformalOffsets) -> dict[str, float]:
        shifted = offsets.apply(np.zeros((len(later), 3)), later)[:, 1]
        return {kind: float(np.mean(y_later[rows] <= shifted[rows]))
                for kind, rows in ((k, (later["processing_type"] == k).to_numpy()) for k in ("simul", "deriv"))}

    settings_ = {"group": "processing_type", "min_group_tasks": 100, "half_life_days": 5}
    mondrian = q90_coverage(ConformalOffsets.fit(y, predicted, calibration, age, settings_))
    pooled = q90_coverage(ConformalOffsets.fit(y, predicted, calibration, age, {"group": None,
                                                                                 "half_life_days": None}))
    assert mondrian["simul"] == pytest.approx(0.90, abs=0.03) and mondrian["deriv"] == pytest.approx(0.90, abs=0.03)
    assert pooled["simul"] < 0.85


def test_offsets_round_trip_and_unknown_groups_take_the_overall_ones():
    frame = pd.DataFrame({"processing_type": ["simul"] * 150 + ["deriv"] * 5})
    y = np.concatenate([np.full(150, 2.0), np.full(5, -1.0)])
    offsets = ConformalOffsets.fit(y, np.zeros((155, 3)), frame, np.zeros(155),
                                   {"group": "processing_type", "min_group_tasks": 100, "half_life_days": None})
    assert set(offsets.by_group) == {"simul"}    # deriv has too few tasks for offsets of its own
    again = ConformalOffsets.from_dict(offsets.to_dict())
    shifted = again.apply(np.zeros((3, 3)), pd.DataFrame({"processing_type": ["simul", "deriv", None]}))
    assert shifted[0].tolist() == [2.0, 2.0, 2.0]
    assert shifted[1].tolist() == offsets.overall and shifted[2].tolist() == offsets.overall
