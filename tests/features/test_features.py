"""Feature building on tiny frames, and the no-leakage property."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoutless.features.build import build_features, submission_features
from scoutless.features.history import history_features, snapshot

TARGETS = ["ramcount", "cputime"]
T0 = datetime(2025, 1, 1)


def task(i: int, created_day: float, ended_day: float | None, dsid: str = "361107", ram: float = 1000.0,
         cpu: float = 50.0, **fields) -> dict:
    return {
        "jeditaskid": i, "creationdate": T0 + timedelta(days=created_day),
        "endtime": None if ended_day is None else T0 + timedelta(days=ended_day),
        "taskname": f"mc16_13TeV.{dsid}.Pythia8_X.simul.HITS.e1_s{i}", "processingtype": "simul",
        "transpath": "Sim_tf.py", "transhome": "AthSimulation-21.0.15", "corecount": 8, "prodsourcelabel": "managed",
        "total_nfiles": 10, "total_nevents": 1000, "n_input_datasets": 1, "ramcount": ram, "cputime": cpu,
        **fields,
    }


def frames(rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tasks = pd.DataFrame(rows)
    ended = tasks["endtime"].notna()
    labels = tasks.loc[ended, ["jeditaskid", *TARGETS]]
    return tasks.drop(columns=TARGETS), labels


def test_submission_features_parse_the_task_fields():
    tasks, _ = frames([task(1, 0, 1, transhome="AthDerivation-21.2.170.0", processingtype="urgent-deriv",
                            total_nevents=5000, total_nfiles=10, corecount=1)])
    row = submission_features(tasks).iloc[0]
    assert (row["framework"], row["release"], row["release_patch"]) == ("AthDerivation", "21.2.170", 170.0)
    assert (row["processing_type"], row["corecount_class"], row["events_per_file"]) == ("deriv", "single", 500.0)
    assert (row["dsid"], row["step"], row["s_tag"]) == ("361107", "simul", "s1")


def test_unknown_and_missing_fields_give_missing_features_not_errors():
    odd = pd.DataFrame([{"taskname": "weird-name", "processingtype": "quantum-sim", "corecount": "lots"}])
    row = submission_features(odd).iloc[0]
    assert row["processing_type"] == "others" and row["framework"] == "others"
    assert np.isnan(row["corecount"]) and pd.isna(row["dsid"])


def test_history_uses_only_tasks_that_ended_before_creation():
    tasks, labels = frames([
        task(1, 0, 2, ram=1000), task(2, 1, 3, ram=3000),  # same DSID
        task(3, 2.5, 4),  # created after task 1 ended, before task 2 ended
        task(4, 5, 6, dsid="999999"),  # another DSID: no history
    ])
    features, _ = build_features(tasks, labels, TARGETS)
    by_id = features.set_index("jeditaskid")
    assert by_id.loc[3, "hist_dsid_n"] == 1
    assert by_id.loc[3, "hist_dsid_ramcount_mean"] == pytest.approx(np.log1p(1000))
    assert by_id.loc[1, "hist_dsid_n"] == 0 and np.isnan(by_id.loc[1, "hist_dsid_ramcount_mean"])
    assert by_id.loc[4, "hist_dsid_n"] == 0
    assert by_id.loc[4, "hist_processing_n"] == 3  # same processing type and cores, all ended before


def test_snapshot_answers_like_the_full_table_for_new_tasks():
    rows = [task(i, i, i + 0.5, dsid=str(361100 + i % 3), ram=500 + 10 * i) for i in range(12)]
    tasks, labels = frames(rows)
    features, table = build_features(tasks, labels, TARGETS)
    new, _ = frames([task(100, 30, None, dsid="361101"), task(101, 31, None, dsid="123456")])
    new = new.assign(**submission_features(new))
    from_table = history_features(new, table, TARGETS)
    pd.testing.assert_frame_equal(from_table, history_features(new, snapshot(table), TARGETS))
    assert from_table.loc[0, "hist_dsid_n"] == 4  # tasks 1, 4, 7 and 10 share DSID 361101


# Whole days, so that ties (a task ending the day another is created) and bad end times (before the
# creation) come up often.
task_rows = st.lists(
    st.tuples(
        st.integers(0, 20),  # created (day)
        st.one_of(st.none(), st.integers(-5, 10)),  # ended, days after creation (may be bad: < 0)
        st.sampled_from(["361107", "361108", "410000"]),
        st.floats(100, 5000, allow_nan=False),
    ),
    min_size=8, max_size=30,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=task_rows, cut=st.integers(0, 20), new_ram=st.floats(1, 1e5, allow_nan=False),
       drop=st.booleans())
def test_no_leakage_later_tasks_never_change_earlier_features(rows, cut, new_ram, drop):
    """Changing or removing any task created after T never changes a feature of a task created before T."""
    built = [task(i, c, None if e is None else c + e, dsid=d, ram=r) for i, (c, e, d, r) in enumerate(rows)]
    before = [r for r in built if r["creationdate"] < T0 + timedelta(days=cut)]
    later = [r for r in built if r["creationdate"] >= T0 + timedelta(days=cut)]
    if drop:
        changed_later = later[1:]
    else:
        changed_later = [{**r, "ramcount": new_ram, "endtime": r["creationdate"]} for r in later]

    def model_inputs(rows_: list[dict]) -> pd.DataFrame:
        features, _ = build_features(*frames(rows_), TARGETS)
        inputs = features.drop(columns=["labels_known_at", *[c for c in features if c.startswith("label_")]])
        return inputs.set_index("jeditaskid").loc[[r["jeditaskid"] for r in before]]

    pd.testing.assert_frame_equal(model_inputs(built), model_inputs(before + changed_later))


def test_user_task_names_give_the_dsid_they_carry():
    tasks = pd.DataFrame({"taskname": ["user.alice.306718.Sh_Zprime.hist_v3/", "user.bob.mytest.v1/"]})
    features = submission_features(tasks)
    assert features["project"].tolist() == ["user", "user"]
    assert features["dsid"].iloc[0] == "306718" and pd.isna(features["dsid"].iloc[1])
    assert features["step"].isna().all()


submitted_task = st.fixed_dictionaries({
    "taskname": st.sampled_from(["mc16_13TeV.361107.Pythia8_X.simul.HITS.e1_s2_s3", "user.alice.306718.Sh.hist/",
                                 "data24_13p6TeV.00481798.physics_Main.merge.EI.r13749", "group.perf.x", "odd"]),
    "processingtype": st.sampled_from(["simul", "urgent-deriv", "jedi-athena", "eventIndex", "Merge"]),
    "prodsourcelabel": st.sampled_from(["managed", "user"]),
    "corecount": st.integers(0, 16),
    "transhome": st.one_of(st.none(), st.sampled_from(["AthSimulation-21.0.15", "Athena-23.0", "AnalysisBase-x"])),
    "transuses": st.one_of(st.none(), st.sampled_from(["Atlas-22.0.1", "nightly"])),
    "transpath": st.one_of(st.none(), st.sampled_from(["Sim_tf.py", "Reco_tf.py"])),
    "username": st.one_of(st.none(), st.text(min_size=1, max_size=5)),
    "campaign": st.one_of(st.none(), st.sampled_from(["MC16a", "data24"])),
    "baseramcount": st.one_of(st.none(), st.integers(0, 4000)),
    "basewalltime": st.one_of(st.none(), st.integers(0, 3600)),
    "cpuefficiency": st.one_of(st.none(), st.integers(0, 100)),
    "total_nfiles": st.integers(0, 10_000),
    "total_nevents": st.integers(0, 10**8),
    "n_input_datasets": st.one_of(st.none(), st.integers(0, 5)),
    "taskparams": st.one_of(st.none(), st.sampled_from(['{"coreCount": 8, "baseRamCount": 1500}', "not json",
                                                        '{"cpuEfficiency": 70}'])),
})


@settings(max_examples=50, deadline=None)
@given(tasks=st.lists(submitted_task, min_size=1, max_size=20))
def test_a_task_sent_to_the_service_gets_the_features_training_computed_for_it(tasks):
    """No training/serving skew: the features of a task read from the archive (a typed frame, as the features
    stage reads it back from parquet: counts as floats where a value is missing) are those of the same task sent
    to the service (TaskSpec, one task at a time)."""
    from scoutless.features.build import task_features
    from scoutless.serving.schema import TaskSpec

    archive = pd.DataFrame(tasks).convert_dtypes(convert_integer=False, convert_boolean=False)
    training = submission_features(archive)
    for i, fields in enumerate(tasks):
        served = task_features(TaskSpec(**fields).row())
        for name, value in served.items():
            trained = training[name].iloc[i]
            assert (pd.isna(trained) and (value is None or value != value)) or trained == value, (name, fields)
