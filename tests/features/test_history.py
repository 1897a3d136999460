"""History features on hand-made groups: the release fallback, the recency statistics, and no leakage."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scoutless.features.build import labels_known_at, submission_features
from scoutless.features.history import HALF_LIFE_DAYS, HistoryIndex, history_features, history_table, snapshot

TARGETS = ["ramcount", "cputime"]
T0 = datetime(2025, 1, 1)


def task(i: int, created_day: float, ended_day: float | None, release: str = "21.0.15", ram: float = 1000.0,
         cpu: float = 50.0, dsid: str = "361107", transpath: str = "Sim_tf.py") -> dict:
    return {
        "jeditaskid": i, "creationdate": T0 + timedelta(days=created_day),
        "endtime": None if ended_day is None else T0 + timedelta(days=ended_day),
        "taskname": f"mc16_13TeV.{dsid}.Pythia8_X.simul.HITS.e1_s{i}", "processingtype": "simul",
        "transpath": transpath, "transhome": f"AthSimulation-{release}", "corecount": 8,
        "prodsourcelabel": "managed", "ramcount": ram, "cputime": cpu,
    }


def history_of(rows: list[dict]) -> pd.DataFrame:
    """The history table of the rows that ended, as the features stage builds it."""
    tasks = pd.DataFrame(rows)
    events = pd.concat([tasks[["jeditaskid", *TARGETS]], submission_features(tasks)], axis=1)
    events["available_at"] = labels_known_at(tasks)
    return history_table(events[tasks["endtime"].notna()], TARGETS)


def features_of(rows: list[dict], table: pd.DataFrame) -> pd.DataFrame:
    tasks = pd.DataFrame(rows)
    return history_features(tasks.assign(**submission_features(tasks)), table, TARGETS)


def test_a_release_without_history_takes_that_of_the_nearest_earlier_one_with_history():
    table = history_of([
        task(1, 0, 1, release="21.0.12", ram=1000),
        task(2, 0, 2, release="21.0.13", ram=2000),  # known only at the creation of task 10: not before it
        task(3, 0, 3, release="21.0.14", ram=3000),
        task(4, 0, 4, release="21.0.14", ram=7000),  # known only at the creation of tasks 11, 13 and 14
        task(5, 0, 10, release="21.0.16", ram=9000),  # a later number: never a fallback for 21.0.15
        task(6, 0, 0.5, release="21.0.13", ram=5000, transpath="Reco_tf.py"),  # another transformation
    ])
    queries = [
        task(10, 2, None, release="21.0.15"),  # 21.0.14 not finished yet, 21.0.13 just now: 21.0.12
        task(11, 4, None, release="21.0.15"),  # 21.0.14, its first label only
        task(12, 11, None, release="21.0.15"),  # still 21.0.14 (both labels), though 21.0.16 has finished
        task(13, 4, None, release="21.0.14", transpath="Reco_tf.py"),  # Reco_tf.py's 21.0.13
        task(14, 4, None, release="21.0.14"),  # its own history
        task(15, 0.5, None, release="21.0.15"),  # nothing of the series had finished yet
        task(16, 4, None, release="21.0.11"),  # no earlier release
        task(17, 4, None, release="22.0.15"),  # an unknown series
        task(18, 4, None, release="21.0"),  # no number in the series
    ]
    found = features_of(queries, table)
    means = found["hist_transform_release_ramcount_mean"]
    expected = np.log1p([1000, 3000, np.sqrt(3001 * 7001) - 1, 5000, 3000])  # log1p of the geometric mean
    assert np.allclose(means[:5], expected)
    assert found["hist_transform_release_n"].tolist()[:5] == [1, 1, 2, 1, 1]
    assert (found["hist_transform_release_n"][5:] == 0).all() and means[5:].isna().all()
    assert found["hist_transform_release_ramcount_last5_mean"][1] == pytest.approx(np.log1p(3000))
    late = [task(20, 30, None, release=r) for r in ("21.0.15", "21.0.13", "21.0.17", "21.0.11")]
    pd.testing.assert_frame_equal(features_of(late, table), features_of(late, snapshot(table)))


def test_the_decayed_mean_weighs_labels_by_how_recently_they_became_known():
    rams = [1000.0, 4000.0, 2000.0]
    table = history_of([task(i, 0, day, ram=ram) for i, (day, ram) in enumerate(zip([0, 30, 60], rams, strict=True))])
    found = features_of([task(9, 90, None)], table)
    weights = 2.0 ** -((90 - np.array([0, 30, 60])) / HALF_LIFE_DAYS)
    expected = (weights * np.log1p(rams)).sum() / weights.sum()
    assert found.loc[0, "hist_dsid_ramcount_decayed_mean"] == pytest.approx(expected)
    assert found.loc[0, "hist_dsid_ramcount_mean"] == pytest.approx(np.log1p(rams).mean())


def test_a_newer_label_moves_the_decayed_mean_more_than_an_older_one():
    def decayed_and_mean(rams: list[float]) -> tuple[float, float]:
        table = history_of([task(i, 0, day, ram=ram) for i, (day, ram) in enumerate(zip([0, 60], rams, strict=True))])
        row = features_of([task(9, 61, None)], table).iloc[0]
        return row["hist_dsid_ramcount_decayed_mean"], row["hist_dsid_ramcount_mean"]

    high_is_new, mean_new = decayed_and_mean([1000.0, 9000.0])
    high_is_old, mean_old = decayed_and_mean([9000.0, 1000.0])
    assert mean_new == pytest.approx(mean_old)
    assert high_is_new > mean_new > high_is_old


def test_the_last_k_mean_is_the_mean_of_the_last_five_labels_of_each_target():
    rams = [100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0]
    cpus = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, np.nan]  # the newest task has no CPU label
    table = history_of([task(i, 0, 1 + i, ram=ram, cpu=cpu)
                        for i, (ram, cpu) in enumerate(zip(rams, cpus, strict=True))])
    found = features_of([task(9, 20, None), task(10, 3.5, None)], table)
    assert found.loc[0, "hist_dsid_ramcount_last5_mean"] == pytest.approx(np.log1p(rams[-5:]).mean())
    assert found.loc[0, "hist_dsid_cputime_last5_mean"] == pytest.approx(np.log1p(cpus[1:6]).mean())
    assert found.loc[1, "hist_dsid_ramcount_last5_mean"] == pytest.approx(np.log1p(rams[:3]).mean())
    pd.testing.assert_frame_equal(found.iloc[[0]], features_of([task(9, 20, None)], snapshot(table)))


task_rows = st.lists(
    st.tuples(
        st.integers(0, 20),  # created (day)
        st.one_of(st.none(), st.integers(-5, 10)),  # ended, days after creation (may be bad: < 0)
        st.sampled_from(["21.0.12", "21.0.13", "21.0.15", "22.0.1"]),
        st.sampled_from(["361107", "361108"]),
        st.floats(100, 5000, allow_nan=False),
    ),
    min_size=8, max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=task_rows, cut=st.integers(0, 20), new_ram=st.floats(1, 1e5, allow_nan=False), drop=st.booleans())
def test_no_leakage_through_the_release_fallback_or_the_recency_statistics(rows, cut, new_ram, drop):
    """Changing or removing any task created after T never changes the history of a task created before T."""
    built = [task(i, c, None if e is None else c + e, release=r, dsid=d, ram=ram)
             for i, (c, e, r, d, ram) in enumerate(rows)]
    before = [r for r in built if r["creationdate"] < T0 + timedelta(days=cut)]
    later = [r for r in built if r["creationdate"] >= T0 + timedelta(days=cut)]
    assume(before)
    changed_later = later[1:] if drop else [{**r, "ramcount": new_ram, "endtime": r["creationdate"]} for r in later]
    pd.testing.assert_frame_equal(features_of(before, history_of(built)),
                                  features_of(before, history_of(before + changed_later)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=task_rows, queries=st.lists(st.tuples(st.floats(0, 40), st.sampled_from(
    ["21.0.11", "21.0.12", "21.0.14", "21.0.15", "21.0.16", "22.0.2", "23.0", "nightly"]),
    st.sampled_from(["361107", "361108", "999999"])), min_size=1, max_size=10))
def test_the_snapshot_index_answers_what_history_features_answer(rows, queries):
    """HistoryIndex (the service's look-ups) == history_features on the same snapshot, for tasks created at
    any time, of releases with and without history of their own, of ties and of releases outside any series."""
    built = [task(i, c, None if e is None else c + e, release=r, dsid=d, ram=ram)
             for i, (c, e, r, d, ram) in enumerate(rows)]
    assume(any(r["endtime"] is not None for r in built))
    table = snapshot(history_of(built))
    asked = pd.DataFrame([task(100 + i, day, None, release=r, dsid=d) for i, (day, r, d) in enumerate(queries)])
    own = submission_features(asked)
    expected = history_features(asked.assign(**own), table, TARGETS)
    index = HistoryIndex(table, TARGETS)
    created = asked["creationdate"].astype("datetime64[ns]").astype("int64").tolist()
    rows_ = own.astype(object).where(own.notna(), None).to_dict("records")
    found = np.vstack([index.features(row, at) for row, at in zip(rows_, created, strict=True)])
    assert index.names == list(expected.columns)
    np.testing.assert_array_equal(found, expected.to_numpy())
