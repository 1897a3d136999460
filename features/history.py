"""History features: what earlier tasks of the same kind needed, as known when a task is created.

For each group (same DSID; same transformation and release; same processing type; same user and kind
of work) and each target, statistics of log1p(label) over the tasks of that group whose labels were
known strictly before the task's creationdate: their count, mean and standard deviation, a mean that
weighs each label by how recently it became known (halving every HALF_LIFE_DAYS) and the mean of the
last LAST_K labels. A task's labels are known from its endtime (never earlier than its creationdate,
so a bad endtime cannot reach into the past). Only earlier tasks count, so a feature never depends on
anything that happened after the task was created.

A task whose transformation and release have no such history yet (a new patch release) takes the
history of the same transformation on the nearest earlier release of the same series that had some
before the task was created: 24.0.13 falls back to 24.0.12, or to 24.0.11 if 24.0.12 had none yet.

The same computation serves training and serving: `history_table` keeps running values per group in
time order; `snapshot` keeps only the last row of each group, which gives the same answers for tasks
created after the snapshot (what the service sees); `history_features` looks up, for each task, the
last row of its group strictly before its creation.
"""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np
import pandas as pd

from scoutless.features.parse import release_series, release_series_frame

# group name -> the columns (of the submission features) that define "the same kind of task"
HISTORY_GROUPS: dict[str, tuple[str, ...]] = {
    "dsid": ("dsid",),
    "transform_release": ("transpath", "release"),
    "processing": ("processing_type", "corecount_class"),
    # The same submitter running the same kind of work: user tasks repeat their own code and settings.
    "user": ("username", "processing_type", "corecount_class"),
}
# The group whose tasks without history fall back to an earlier release of the same series.
RELEASE_FALLBACK_GROUP = "transform_release"
# Half-life of the recency-weighted mean: about a month, the pace at which caches, campaigns and the
# software behind a kind of task change. A constant, not a param: the features stage and the service
# must agree on it, and params.yaml is not stored with the model.
HALF_LIFE_DAYS = 30
LAST_K = 5  # labels in the "latest labels" mean
_SEP = "\x1f"


def group_key(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """One string key per row; missing when any part is missing (no history for an unknown kind)."""
    parts = [frame[c].astype("string") for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + _SEP + part
    return key


def row_group_key(row: dict, columns: tuple[str, ...]) -> str | None:
    """`group_key` of one task given as a dict of its features (None where it is missing)."""
    parts = []
    for column in columns:
        value = row.get(column)
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return None
        parts.append(value if isinstance(value, str) else str(value))
    return _SEP.join(parts)


def series_key(frame: pd.DataFrame, columns: tuple[str, ...]) -> tuple[pd.Series, pd.Series]:
    """(the group key with the release replaced by its series, the release's number in that series);
    both missing where the release is not "A.B.C"."""
    parsed = release_series_frame(frame["release"])
    return group_key(frame.assign(release=parsed["series"]), columns), parsed["number"]


def history_table(events: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """Running values of log1p(label) per group, in the order the labels became known.

    `events` holds the submission features of labelled tasks, `available_at` and the label columns.
    Returns rows (group, key, available_at, n, and per target: n_, sum_, sumsq_, decayed_, last_) with
    the values over the group's labels up to and including that row; rows of the release fallback
    group also carry the series key and release number (`series`, `number`).
    """
    tables = []
    for group, columns in HISTORY_GROUPS.items():
        keyed = events.assign(group=group, key=group_key(events, columns))
        keyed = keyed[keyed["key"].notna() & keyed["available_at"].notna()]
        keyed = keyed.sort_values(["key", "available_at", "jeditaskid"], kind="stable")
        out = keyed[["group", "key", "available_at"]].copy()
        # Integer codes group many times faster than the string keys.
        codes = pd.factorize(keyed["key"])[0]
        out["n"] = keyed.groupby(codes, sort=False).cumcount() + 1
        if group == RELEASE_FALLBACK_GROUP:
            out["series"], out["number"] = series_key(keyed, columns)
        # Recency weights double every half-life after the group's first label. The weighted mean at a
        # later time t, with weights 2^-((t - available_at) / half-life), is the same ratio: decaying to t
        # scales both sums by one factor. So the value as of a group's last row holds until its next one.
        # (2^(days / 30) stays finite for groups spanning up to some 80 years.)
        since = keyed["available_at"] - keyed["available_at"].groupby(codes, sort=False).transform("min")
        weight = np.exp2(since / pd.Timedelta(days=HALF_LIFE_DAYS))
        for target in targets:
            logged = np.log1p(keyed[target].clip(lower=0))
            known = logged.notna()
            out[f"n_{target}"] = known.astype("int64").groupby(codes).cumsum()
            out[f"sum_{target}"] = logged.fillna(0.0).groupby(codes).cumsum()
            out[f"sumsq_{target}"] = (logged**2).fillna(0.0).groupby(codes).cumsum()
            weighted = weight.where(known, 0.0)
            out[f"decayed_{target}"] = ((weighted * logged.fillna(0.0)).groupby(codes).cumsum()
                                        / weighted.groupby(codes).cumsum())
            last = _last_k_mean(logged[known], codes[known.to_numpy()])
            out[f"last_{target}"] = last.reindex(keyed.index).groupby(codes).ffill()
        tables.append(out)
    return pd.concat(tables, ignore_index=True)


def _last_k_mean(values: pd.Series, codes: np.ndarray) -> pd.Series:
    """At each value, the mean of the last LAST_K values of its group up to it (values in time order)."""
    by_group = values.groupby(codes, sort=False)
    total = by_group.cumsum()
    before_window = total.groupby(codes, sort=False).shift(LAST_K, fill_value=0.0)
    return (total - before_window) / (by_group.cumcount() + 1).clip(upper=LAST_K)


def snapshot(table: pd.DataFrame) -> pd.DataFrame:
    """The last running row of every group: all the service needs to compute history features."""
    return table.groupby(["group", "key"], sort=False).tail(1).reset_index(drop=True)


def history_feature_names(targets: list[str]) -> list[str]:
    names = []
    for group in HISTORY_GROUPS:
        names.append(f"hist_{group}_n")
        for target in targets:
            names += [f"hist_{group}_{target}_{stat}" for stat in ("mean", "std", "decayed_mean", f"last{LAST_K}_mean")]
    return names


def _earlier_release_history(queries: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """For queries (created, row, and their release's series key and number) without history of their
    own: the last row strictly before `created` of the release of the same series key with the largest
    number below theirs that has a row before `created`."""
    candidates = rows[rows["series"].isin(queries["series"].unique()).fillna(False).to_numpy(dtype=bool)]
    # Rows are in time order: a release's first row tells since when it has history.
    releases = (candidates.drop_duplicates("key")[["key", "series", "number", "available_at"]]
                .rename(columns={"number": "earlier", "available_at": "since"}).sort_values("earlier", kind="stable")
                .astype({"series": object}))  # as merge_asof gives it back: one dtype on both sides
    chosen, pending = [], queries
    # Releases mostly come out in order, so the release just below is nearly always the one; one that
    # had no history yet when the task was created sends the search on below it.
    while len(pending):
        nearest = pd.merge_asof(pending.sort_values("number", kind="stable"), releases, left_on="number",
                                right_on="earlier", by="series", allow_exact_matches=False, direction="backward")
        nearest = nearest[nearest["key"].notna()]
        ready = nearest["since"] < nearest["created"]
        chosen.append(nearest.loc[ready, ["key", "created", "row"]])
        pending = nearest.loc[~ready, ["created", "row", "series", "earlier"]].rename(columns={"earlier": "number"})
    nearest = pd.concat(chosen).sort_values("created", kind="stable")
    return pd.merge_asof(
        nearest, candidates[candidates["key"].isin(nearest["key"]).to_numpy(dtype=bool)],
        left_on="created", right_on="available_at", by="key", allow_exact_matches=False, direction="backward",
    ).set_index("row")


def _column(found: pd.DataFrame, column: str) -> np.ndarray:
    # A snapshot promoted before a running value existed lacks it: NaN features, which the model
    # promoted with it was never trained on.
    if column not in found:
        return np.full(len(found), np.nan)
    return found[column].to_numpy(dtype="float64")


def history_features(tasks: pd.DataFrame, table: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """For each task (with its submission features and creationdate), the statistics of its groups'
    labels known strictly before it was created. No earlier task of its kind: count 0, NaN stats."""
    result = {}
    # One time unit on both sides: merge_asof refuses ns against us (parquet round trips change it).
    created = pd.to_datetime(tasks["creationdate"]).astype("datetime64[ns]")
    for group, columns in HISTORY_GROUPS.items():
        queries = pd.DataFrame({"key": group_key(tasks, columns), "created": created, "row": np.arange(len(tasks))})
        queries = queries[queries["key"].notna() & queries["created"].notna()].sort_values("created", kind="stable")
        rows = table[table["group"] == group].drop(columns="group").sort_values("available_at", kind="stable")
        rows = rows.assign(available_at=rows["available_at"].astype("datetime64[ns]"))
        found = pd.merge_asof(
            queries, rows, left_on="created", right_on="available_at", by="key",
            allow_exact_matches=False, direction="backward",
        ).set_index("row")
        if group == RELEASE_FALLBACK_GROUP and "series" in rows:
            alone = found.loc[found["n"].isna(), ["created"]]
            series, number = series_key(tasks.iloc[alone.index], columns)
            alone = alone.assign(series=series.to_numpy(dtype=object), number=number.to_numpy())
            alone = alone.dropna(subset=["series", "number"])
            if len(alone):
                earlier = _earlier_release_history(alone.reset_index(), rows)
                found = pd.concat([found.drop(index=earlier.index), earlier])
        result |= _group_features(found.reindex(np.arange(len(tasks))), group, targets)
    return pd.DataFrame(result, index=tasks.index)


def _group_features(found: pd.DataFrame, group: str, targets: list[str]) -> dict[str, np.ndarray]:
    """The features of `group` from the running rows found for each task (NaN rows: none found)."""
    result = {f"hist_{group}_n": found["n"].fillna(0).to_numpy(dtype="float64")}
    for target in targets:
        n = found[f"n_{target}"].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = found[f"sum_{target}"].to_numpy(dtype="float64") / n
            var = found[f"sumsq_{target}"].to_numpy(dtype="float64") / n - mean**2
        result[f"hist_{group}_{target}_mean"] = np.where(n > 0, mean, np.nan)
        result[f"hist_{group}_{target}_std"] = np.where(n > 1, np.sqrt(np.clip(var, 0, None)), np.nan)
        result[f"hist_{group}_{target}_decayed_mean"] = np.where(n > 0, _column(found, f"decayed_{target}"), np.nan)
        result[f"hist_{group}_{target}_last{LAST_K}_mean"] = np.where(n > 0, _column(found, f"last_{target}"),
                                                                      np.nan)
    return result


class HistoryIndex:
    """A snapshot's history features by group and key, for tasks one at a time: the same values as
    `history_features` on the snapshot, from dictionary look-ups instead of a merge per request (the
    service's hot path). Built once per snapshot: each running row's features are computed by the same
    code as `history_features`, then kept with the moment they became known."""

    def __init__(self, table: pd.DataFrame, targets: list[str]):
        self.names = history_feature_names(list(targets))
        # per group: its columns, key -> (known since, in ns; its features), the features of no history
        self.groups: list[tuple[str, tuple[str, ...], dict[str, tuple[int, np.ndarray]], np.ndarray]] = []
        # per release series key (the transform and the release's series): its releases' (number, known since,
        # features), numbers ascending
        self.series: dict[str, list[tuple[float, int, np.ndarray]]] = {}
        for group, columns in HISTORY_GROUPS.items():
            rows = table[table["group"] == group].sort_values("available_at", kind="stable")
            rows = rows.drop_duplicates("key", keep="last").reset_index(drop=True)   # a snapshot has one per key
            blocks = np.column_stack(list(_group_features(rows, group, targets).values()))
            known = rows["available_at"].astype("datetime64[ns]").to_numpy().astype("int64")
            by_key = dict(zip(rows["key"].tolist(), zip(known.tolist(), blocks, strict=True), strict=True))
            nothing = np.concatenate(list(_group_features(rows.iloc[:0].reindex([0]), group, targets).values()))
            self.groups.append((group, columns, by_key, nothing))
            if group == RELEASE_FALLBACK_GROUP and "series" in rows:
                numbers = rows["number"].to_numpy(dtype="float64")
                usable = np.flatnonzero(rows["series"].notna().to_numpy(dtype=bool) & ~np.isnan(numbers))
                series = rows["series"].astype(object).to_numpy()
                for i in usable[np.argsort(numbers[usable], kind="stable")]:
                    self.series.setdefault(series[i], []).append((float(numbers[i]), int(known[i]), blocks[i]))

    def features(self, task: dict, created_ns: int) -> np.ndarray:
        """The history features (in `self.names` order) of a task, given by its submission features, created
        at `created_ns` (nanoseconds since the epoch, UTC)."""
        blocks = []
        for group, columns, by_key, nothing in self.groups:
            found = by_key.get(row_group_key(task, columns))   # no key is None: a missing part finds nothing
            block = found[1] if found is not None and found[0] < created_ns else None
            if block is None and group == RELEASE_FALLBACK_GROUP:
                block = self._earlier_release(task, columns, created_ns)
            blocks.append(nothing if block is None else block)
        return np.concatenate(blocks)

    def _earlier_release(self, task: dict, columns: tuple[str, ...], created_ns: int) -> np.ndarray | None:
        """As `_earlier_release_history`: the features of the release of the same series with the largest number
        below the task's that had history before its creation (of releases with one number, the last; when it
        had none yet, the search goes on below that number)."""
        parsed = release_series(task["release"]) if task.get("release") is not None else None
        if parsed is None:
            return None
        releases = self.series.get(row_group_key(task | {"release": parsed[0]}, columns), [])
        below = bisect_left(releases, parsed[1], key=lambda entry: entry[0])
        while below:
            number, since, block = releases[below - 1]
            if since < created_ns:
                return block
            below = bisect_left(releases, number, key=lambda entry: entry[0])
        return None
