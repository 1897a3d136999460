"""History features: what earlier tasks of the same kind needed, as known when a task is created.

For each group (same DSID; same transformation and release; same processing type; same user and kind
of work) and each target, the
count, mean and standard deviation of log1p(label) over the tasks of that group whose labels were known
strictly before the task's creationdate. A task's labels are known from its endtime (never earlier than
its creationdate, so a bad endtime cannot reach into the past). Only earlier tasks count, so a feature
never depends on anything that happened after the task was created.

The same computation serves training and serving: `history_table` keeps running sums per group in time
order; `snapshot` keeps only the last row of each group, which gives the same answers for tasks created
after the snapshot (what the service sees); `history_features` looks up, for each task, the last row
of its group strictly before its creation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# group name -> the columns (of the submission features) that define "the same kind of task"
HISTORY_GROUPS: dict[str, tuple[str, ...]] = {
    "dsid": ("dsid",),
    "transform_release": ("transpath", "release"),
    "processing": ("processing_type", "corecount_class"),
    # The same submitter running the same kind of work: user tasks repeat their own code and settings.
    "user": ("username", "processing_type", "corecount_class"),
}
_SEP = "\x1f"


def group_key(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """One string key per row; missing when any part is missing (no history for an unknown kind)."""
    parts = [frame[c].astype("string") for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + _SEP + part
    return key


def history_table(events: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Running sums of log1p(label) per group, in the order the labels became known.

    `events` holds the submission features of labelled tasks, `available_at` and the label columns.
    Returns rows (group, key, available_at, n, and per target: n_, sum_, sumsq_) with cumulative values.
    """
    tables = []
    for group, columns in HISTORY_GROUPS.items():
        keyed = events.assign(group=group, key=group_key(events, columns))
        keyed = keyed[keyed["key"].notna() & keyed["available_at"].notna()]
        keyed = keyed.sort_values(["key", "available_at", "jeditaskid"], kind="stable")
        out = keyed[["group", "key", "available_at"]].copy()
        by_key = keyed.groupby("key", sort=False)
        out["n"] = by_key.cumcount() + 1
        for target in targets:
            logged = np.log1p(keyed[target].clip(lower=0))
            out[f"n_{target}"] = logged.notna().astype("int64").groupby(keyed["key"]).cumsum()
            out[f"sum_{target}"] = logged.fillna(0.0).groupby(keyed["key"]).cumsum()
            out[f"sumsq_{target}"] = (logged**2).fillna(0.0).groupby(keyed["key"]).cumsum()
        tables.append(out)
    return pd.concat(tables, ignore_index=True)


def snapshot(table: pd.DataFrame) -> pd.DataFrame:
    """The last running row of every group: all the service needs to compute history features."""
    return table.groupby(["group", "key"], sort=False).tail(1).reset_index(drop=True)


def history_feature_names(targets: list[str]) -> list[str]:
    names = []
    for group in HISTORY_GROUPS:
        names.append(f"hist_{group}_n")
        for target in targets:
            names += [f"hist_{group}_{target}_mean", f"hist_{group}_{target}_std"]
    return names


def history_features(tasks: pd.DataFrame, table: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """For each task (with its submission features and creationdate), the statistics of its groups'
    labels known strictly before it was created. No earlier task of its kind: count 0, NaN stats."""
    result = pd.DataFrame(index=tasks.index)
    # One time unit on both sides: merge_asof refuses ns against us (parquet round trips change it).
    created = pd.to_datetime(tasks["creationdate"]).astype("datetime64[ns]")
    for group, columns in HISTORY_GROUPS.items():
        queries = pd.DataFrame({"key": group_key(tasks, columns), "created": created, "row": np.arange(len(tasks))})
        queries = queries[queries["key"].notna() & queries["created"].notna()].sort_values("created", kind="stable")
        rows = table[table["group"] == group].sort_values("available_at", kind="stable")
        rows = rows.assign(available_at=rows["available_at"].astype("datetime64[ns]"))
        found = pd.merge_asof(
            queries, rows.drop(columns="group"), left_on="created", right_on="available_at", by="key",
            allow_exact_matches=False, direction="backward",
        ).set_index("row").reindex(np.arange(len(tasks)))
        result[f"hist_{group}_n"] = found["n"].fillna(0).to_numpy(dtype="float64")
        for target in targets:
            n = found[f"n_{target}"].to_numpy(dtype="float64")
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = found[f"sum_{target}"].to_numpy(dtype="float64") / n
                var = found[f"sumsq_{target}"].to_numpy(dtype="float64") / n - mean**2
            result[f"hist_{group}_{target}_mean"] = np.where(n > 0, mean, np.nan)
            result[f"hist_{group}_{target}_std"] = np.where(n > 1, np.sqrt(np.clip(var, 0, None)), np.nan)
    return result
