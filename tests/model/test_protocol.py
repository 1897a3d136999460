"""Honest in time: the windows never let a model learn a label unknown at its origin, and the conformal
offsets cover what they say per group on a world that drifts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoutless.models.calibration import CalibrationPool, ConformalOffsets, weighted_conformal_quantile
from scoutless.models.protocol import LABELS_KNOWN_AT, Windows, archive_now, as_of_view
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
    before = frame.copy()
    view = as_of_view(frame, origin)
    assert (view["creationdate"] <= origin).all()
    assert view.loc[view[LABELS_KNOWN_AT] > origin, "label_ramcount"].isna().all()
    kept = frame[frame["creationdate"] <= origin]
    known = kept[LABELS_KNOWN_AT] <= origin
    pd.testing.assert_series_equal(view["label_ramcount"], kept["label_ramcount"].where(known))
    pd.testing.assert_frame_equal(frame, before)   # the archive's own frame is left as it was


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


def drifting_world(rng, start_day: float, days: float, n: int, doubling_day: float, delay_days: float = 0.0
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """Two processing types; a model predicting 0 is three times as wrong on one, and its errors double
    from `doubling_day` on (a new release, say). Labels arrive `delay_days` after creation."""
    day = start_day + np.sort(rng.uniform(0, days, n))
    kind = rng.choice(["simul", "deriv"], n)
    scale = np.where(kind == "simul", 3.0, 1.0) * np.where(day < doubling_day, 1.0, 2.0)
    created = T0 + pd.to_timedelta(day, unit="D")
    frame = pd.DataFrame({"processing_type": kind, "creationdate": created,
                          LABELS_KNOWN_AT: created + pd.Timedelta(days=delay_days)})
    return frame, rng.normal(0, 1, n) * scale


def q90_coverage(y: np.ndarray, q90: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
    return {kind: float(np.mean(y[rows] <= q90[rows]))
            for kind, rows in ((k, (frame["processing_type"] == k).to_numpy()) for k in ("simul", "deriv"))}


def test_offsets_cover_each_group_on_a_world_that_drifts():
    """Mondrian offsets weighted towards the newest errors cover q90 in each group of the next window; one
    exchangeable offset for all does not cover the noisy group."""
    rng = np.random.default_rng(5)
    calibration, y = drifting_world(rng, 0, 60, 20000, doubling_day=40)
    later, y_later = drifting_world(rng, 60, 60, 4000, doubling_day=40)
    origin = T0 + pd.Timedelta(days=60)

    def covered(settings_: dict) -> dict[str, float]:
        offsets = CalibrationPool.of(y, np.zeros((len(y), 3)), calibration, settings_).offsets_at(origin)
        return q90_coverage(y_later, offsets.apply(np.zeros((len(later), 3)), later)[:, 1], later)

    mondrian = covered({"group": "processing_type", "min_group_tasks": 100, "half_life_days": 5})
    pooled = covered({"group": None, "half_life_days": None})
    assert mondrian["simul"] == pytest.approx(0.90, abs=0.03) and mondrian["deriv"] == pytest.approx(0.90, abs=0.03)
    assert pooled["simul"] < 0.85


def test_recalibrating_as_labels_arrive_follows_a_drift_after_the_origin():
    """The errors double ten days after the origin. Offsets frozen at the origin under-cover what follows;
    recomputed as of each task's submission from the labels known by then (a day after creation), they
    cover q90 in each group again. An answer never uses a label unknown at its submission."""
    rng = np.random.default_rng(7)
    settings_ = {"group": "processing_type", "min_group_tasks": 100, "half_life_days": 5}
    before, y_before = drifting_world(rng, 0, 60, 6000, doubling_day=70, delay_days=1)
    after, y_after = drifting_world(rng, 60, 60, 6000, doubling_day=70, delay_days=1)
    origin = T0 + pd.Timedelta(days=60)
    frame, y = pd.concat([before, after], ignore_index=True), np.concatenate([y_before, y_after])
    pool = CalibrationPool.of(y, np.zeros((len(y), 3)), frame, settings_)

    frozen = pool.offsets_at(origin).apply(np.zeros((len(after), 3)), after)[:, 1]
    just_before = after["creationdate"] - pd.Timedelta(1, "ns")
    refreshed = pool.apply_as_of(np.zeros((len(after), 3)), after, just_before)[:, 1]
    settled = (after["creationdate"] > T0 + pd.Timedelta(days=80)).to_numpy()   # after the drift, a few half-lives
    frozen_coverage = q90_coverage(y_after[settled], frozen[settled], after[settled])
    refreshed_coverage = q90_coverage(y_after[settled], refreshed[settled], after[settled])
    assert max(frozen_coverage.values()) < 0.80
    assert all(c == pytest.approx(0.90, abs=0.03) for c in refreshed_coverage.values())

    # The refreshed answers are the offsets a service would hold as of that moment, and take no later label.
    i = int(np.flatnonzero(settled)[0])
    moment = just_before.iloc[i]
    assert refreshed[i] == pool.offsets_at(moment).apply(np.zeros((1, 3)), after.iloc[[i]])[0, 1]
    y_hidden = np.where((frame[LABELS_KNOWN_AT] > moment).to_numpy(), 1e9, y)
    hidden = CalibrationPool.of(y_hidden, np.zeros((len(y), 3)), frame, settings_)
    assert hidden.apply_as_of(np.zeros((1, 3)), after.iloc[[i]], just_before.iloc[[i]])[0, 1] == refreshed[i]


def offsets_by_definition(pool_frame: pd.DataFrame, scores: np.ndarray, counted: np.ndarray, settings_: dict,
                          levels: tuple, moment: pd.Timestamp, group) -> list[float]:
    """weighted_conformal_quantile of the errors known by `moment` (of `group` when it has enough counted
    known rows), weighted by age from `moment`: the offsets a pool gives, from their definition."""
    known = ((pool_frame[LABELS_KNOWN_AT] <= moment) & (pool_frame["creationdate"] <= moment)).to_numpy()
    known &= ~np.isnan(scores).any(axis=1)
    if settings_["group"] is not None and group is not None:
        mine = known & (pool_frame["processing_type"] == group).to_numpy()
        if (mine & counted).sum() >= settings_["min_group_tasks"]:
            known = mine
    age = (moment - pool_frame["creationdate"]).dt.total_seconds().to_numpy() / 86400
    weights = np.ones(len(age)) if settings_["half_life_days"] is None else 0.5 ** (age / settings_["half_life_days"])
    column = [0] * len(levels) if scores.shape[1] == 1 else range(len(levels))
    return [weighted_conformal_quantile(scores[known, c], weights[known], q)
            for c, q in zip(column, levels, strict=True)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(0, 300), one_column=st.booleans(),
       half_life=st.sampled_from([None, 0.5, 5.0]), min_group=st.sampled_from([1, 20, 1000]),
       grouped=st.booleans(), ties=st.booleans())
def test_the_sweep_gives_every_moment_the_offsets_of_their_definition(seed, n, one_column, half_life, min_group,
                                                                      grouped, ties):
    """apply_as_of and offsets_at answer, for many moments in one sweep, what the definition gives moment by
    moment: unknown labels, jobs counted once per task, groups too small for their own, ties, no half-life."""
    rng = np.random.default_rng(seed)
    created = T0 + pd.to_timedelta(rng.uniform(0, 30, n), unit="D")
    frame = pd.DataFrame({"creationdate": created,
                          LABELS_KNOWN_AT: created + pd.to_timedelta(rng.exponential(3, n), unit="D"),
                          "processing_type": rng.choice(["simul", "deriv", "reco"], n, p=[0.6, 0.3, 0.1])})
    levels = (0.05, 0.5, 0.9, 0.95, 0.999) if one_column else (0.5, 0.9, 0.95)
    values = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    y = np.where(rng.random(n) < 0.1, np.nan, values)
    predicted = rng.normal(size=(n, 1 if one_column else 3)) * (0 if ties else 1)
    counted = rng.random(n) < 0.7
    settings_ = {"group": "processing_type" if grouped else None, "min_group_tasks": min_group,
                 "half_life_days": half_life}
    pool = CalibrationPool.of(y, predicted, frame, settings_, levels=levels, counted=counted)
    scores = y[:, None] - predicted
    asked = pd.DataFrame({"processing_type": rng.choice(["simul", "deriv", "reco", None], 25)})
    moments = pd.Series(T0 + pd.to_timedelta(rng.uniform(-1, 40, 25), unit="D"))
    swept = pool.apply_as_of(np.zeros((25, len(levels))), asked, moments)
    for i in range(25):
        expected = offsets_by_definition(frame, scores, counted, settings_, levels, moments[i],
                                         asked["processing_type"][i])
        np.testing.assert_allclose(swept[i], expected, rtol=0, atol=1e-12)
        at = pool.offsets_at(moments[i])
        assert at.apply(np.zeros((1, len(levels))), asked.iloc[[i]])[0].tolist() == swept[i].tolist()


def test_offsets_round_trip_and_unknown_groups_take_the_overall_ones():
    created = pd.Series(T0, index=range(155))
    frame = pd.DataFrame({"processing_type": ["simul"] * 150 + ["deriv"] * 5, "creationdate": created,
                          LABELS_KNOWN_AT: created})
    y = np.concatenate([np.full(150, 2.0), np.full(5, -1.0)])
    offsets = CalibrationPool.of(y, np.zeros((155, 3)), frame, {"group": "processing_type", "min_group_tasks": 100,
                                                                "half_life_days": None}).offsets_at(T0)
    assert set(offsets.by_group) == {"simul"}    # deriv has too few tasks for offsets of its own
    again = ConformalOffsets.from_dict(offsets.to_dict())
    shifted = again.apply(np.zeros((3, 3)), pd.DataFrame({"processing_type": ["simul", "deriv", None]}))
    assert shifted[0].tolist() == [2.0, 2.0, 2.0]
    assert shifted[1].tolist() == offsets.overall and shifted[2].tolist() == offsets.overall
