"""Conformal offsets that hold in time, for the model that is served.

Conformalized quantile regression: each predicted quantile level q is shifted by the q-quantile of the
errors (y - prediction_q) on calibration tasks the model never learned from (the validation window), so that
it covers a share q of the tasks that come next. Three choices make this hold for the next tasks rather than
for an exchangeable sample:
- no refit after calibrating: the offsets belong to the very model that answers (models.protocol);
- Mondrian: a group (processing type) with enough calibration tasks gets offsets of its own, because groups
  differ in how wrong the model is; the rest share the overall offsets;
- weighted in time (Barber et al. 2023, non-exchangeable conformal prediction): a calibration task's weight
  halves every `half_life_days` back from the origin, and the new task takes weight 1, so the offsets follow
  the newest errors.
MAPIE and crepes were looked at first: MAPIE's conformalized quantile regressor takes neither groups nor
weights; crepes' Mondrian predictive systems give one-sided percentiles per group but take no weights (those
live in a separate extension, crepes-weighted). The offset of one quantile level is one weighted quantile of
its scores, below, small enough to own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from scoutless.models.metrics import QUANTILES
from scoutless.models.protocol import LABELS_KNOWN_AT

LEVEL_TOLERANCE = 1e-12   # a weighted share this close below a level reaches it (shares are sums of floats)


def weighted_conformal_quantile(scores: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `scores` under `weights`, with the new point's weight 1 placed at +inf: the
    smallest score whose weighted share (of the total plus 1) reaches q; the largest score when none does
    (+inf would refuse to answer). With equal weights it is the ceil((n + 1) q)-th smallest score. The
    definition the pools' sweep (`_swept_offsets`) computes for many moments at once."""
    known = ~np.isnan(scores)
    order = np.argsort(scores[known], kind="stable")
    ordered, ordered_weights = scores[known][order], weights[known][order]
    if not len(ordered):
        return 0.0
    share = np.cumsum(ordered_weights) / (ordered_weights.sum() + 1.0)
    reached = np.searchsorted(share, q - LEVEL_TOLERANCE, side="left")
    return float(ordered[min(reached, len(ordered) - 1)])


@dataclass
class ConformalOffsets:
    """Offsets (in model space) per quantile level, overall and per group."""

    overall: list[float] = field(default_factory=lambda: [0.0] * len(QUANTILES))
    by_group: dict[str, list[float]] = field(default_factory=dict)
    group: str | None = None
    levels: list[float] = field(default_factory=lambda: list(QUANTILES))

    def apply(self, predicted: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
        """`predicted` (n, 3) shifted by each row's group offsets, else the overall ones."""
        groups = frame[self.group].astype("string").tolist() if self.by_group and self.group in frame else []
        return predicted + self.shifts(groups, len(predicted))

    def shifts(self, groups: list, n: int) -> np.ndarray:
        """(n, levels): the offsets of rows whose group values are `groups` (text; [] when there are none):
        their group's, else the overall ones."""
        shift = np.empty((n, len(self.overall)))
        shift[:] = self.overall
        if self.by_group:
            for i, value in enumerate(groups):
                found = self.by_group.get(value) if isinstance(value, str) else None
                if found is not None:
                    shift[i] = found
        return shift

    def to_dict(self) -> dict:
        return {"overall": self.overall, "by_group": self.by_group, "group": self.group, "levels": self.levels}

    @classmethod
    def from_dict(cls, data: dict) -> ConformalOffsets:
        return cls(overall=list(data["overall"]), by_group={k: list(v) for k, v in data["by_group"].items()},
                   group=data.get("group"), levels=list(data.get("levels", QUANTILES)))


def _group_values(frame: pd.DataFrame, group: str | None) -> np.ndarray:
    if not group or group not in frame:
        return np.full(len(frame), None, dtype=object)
    return frame[group].astype("string").to_numpy(dtype=object, na_value=None)


def _nanoseconds(moments) -> np.ndarray:
    """Moments as int64 nanoseconds; NaT as the largest int64 (never reached)."""
    values = pd.to_datetime(pd.Series(moments)).to_numpy(dtype="datetime64[ns]").astype("int64")
    return np.where(values == np.iinfo("int64").min, np.iinfo("int64").max, values)


NS_PER_DAY = 86_400 * 10**9


@numba.njit(cache=True, nogil=True)
def _swept_offsets(scores, orders, groups, n_groups, counted, weights, available, moments, extra, query_groups,
                   levels, min_group_tasks):
    """The offsets of every query (a moment and a group code) from the rows available by its moment, in one
    sweep through time: rows join, in their order of availability, a Fenwick tree of weights over their
    score ranks (one for all rows, one per group), and each level's offset is found in the tree by descent.
    Row weights are relative (weights[i] = 2^(created_i / half-life), from a common origin) and `extra` is
    the new point's weight in the same terms at each query's moment: the shares are those of the weights
    halving with age from that moment, so no weight is recomputed as time moves.

    scores: (m, C) ascending per column in `orders` (C, m); groups: (m,) codes, -1 none; available: (m,)
    int64 ns, ascending; moments: (Q,) int64 ns; returns ((Q, L) offsets, (Q,) whether the group's own)."""
    m, n_columns = scores.shape
    # each row's rank per column, overall and within its group; groups' tree segments laid end to end
    rank = np.empty((n_columns, m), dtype=np.int64)
    group_rank = np.empty((n_columns, m), dtype=np.int64)
    group_size = np.zeros(n_groups, dtype=np.int64)
    for i in range(m):
        if groups[i] >= 0:
            group_size[groups[i]] += 1
    group_base = np.zeros(n_groups + 1, dtype=np.int64)
    for g in range(n_groups):
        group_base[g + 1] = group_base[g] + group_size[g]
    sorted_scores = np.empty((n_columns, m))
    group_sorted = np.empty((n_columns, m))
    for c in range(n_columns):
        taken = np.zeros(n_groups, dtype=np.int64)
        for r in range(m):
            i = orders[c, r]
            rank[c, i] = r
            sorted_scores[c, r] = scores[i, c]
            g = groups[i]
            if g >= 0:
                group_rank[c, i] = taken[g]
                group_sorted[c, group_base[g] + taken[g]] = scores[i, c]
                taken[g] += 1
    tree = np.zeros((n_columns, m))
    group_tree = np.zeros((n_columns, m))
    total, added, top = 0.0, 0, np.full(n_columns, -1, dtype=np.int64)
    group_total = np.zeros(n_groups)
    group_counted = np.zeros(n_groups, dtype=np.int64)
    group_added = np.zeros(n_groups, dtype=np.int64)
    group_top = np.full((n_columns, n_groups), -1, dtype=np.int64)

    n_queries, n_levels = moments.shape[0], levels.shape[0]
    out = np.zeros((n_queries, n_levels))
    own = np.zeros(n_queries, dtype=np.bool_)
    query_order = np.argsort(moments, kind="mergesort")
    joined = 0
    for k in range(n_queries):
        q = query_order[k]
        while joined < m and available[joined] <= moments[q]:
            i, w, g = joined, weights[joined], groups[joined]
            total += w
            added += 1
            if g >= 0:
                group_total[g] += w
                group_added[g] += 1
                group_counted[g] += counted[i]
            for c in range(n_columns):
                j = rank[c, i] + 1
                while j <= m:
                    tree[c, j - 1] += w
                    j += j & -j
                top[c] = max(top[c], rank[c, i])
                if g >= 0:
                    size, base = group_size[g], group_base[g]
                    j = group_rank[c, i] + 1
                    while j <= size:
                        group_tree[c, base + j - 1] += w
                        j += j & -j
                    group_top[c, g] = max(group_top[c, g], group_rank[c, i])
            joined += 1
        g = query_groups[q]
        own[q] = g >= 0 and group_counted[g] >= min_group_tasks
        if own[q]:
            trees, values, base, size, weight, count = group_tree, group_sorted, group_base[g], group_size[g], \
                group_total[g], group_added[g]
        else:
            trees, values, base, size, weight, count = tree, sorted_scores, 0, m, total, added
        if count == 0:
            continue
        for level in range(n_levels):
            c = 0 if n_columns == 1 else level
            target = (levels[level] - LEVEL_TOLERANCE) * (weight + extra[q])
            # the first rank whose prefix of weights reaches the target; past the end: the largest score
            position, reached, step = 0, 0.0, 1
            while step * 2 <= size:
                step *= 2
            while step > 0:
                if position + step <= size and reached + trees[c, base + position + step - 1] < target:
                    position += step
                    reached += trees[c, base + position - 1]
                step //= 2
            if position >= size:
                position = group_top[c, g] if own[q] else top[c]
            out[q, level] = values[c, base + position]
    return out, own


@dataclass
class CalibrationPool:
    """The errors of one fitted model on tasks it never learned from, each with when its task was created and
    when its label became known. The offsets as of a moment are those of the errors known by then, weighted
    by age from then: the model is never refit, so every error that arrives later stays out of sample and the
    offsets can follow the newest ones (the served model's are recomputed at every history refresh; the
    backtest recomputes them as of each task's submission). Both go through `_offsets`, one sweep through
    time for any number of moments."""

    scores: np.ndarray      # (n, len(levels)): y - predicted quantile, model space; (n, 1): one score, every level
    created: np.ndarray     # int64 ns
    known: np.ndarray       # int64 ns; the largest int64: not labelled (yet)
    groups: np.ndarray      # int codes of each task's group, -1 where it has none
    group_names: list[str]  # the group of each code
    settings: dict          # train.calibration: group, min_group_tasks, half_life_days
    levels: tuple[float, ...] = QUANTILES   # the quantile level of each column of scores
    counted: np.ndarray | None = None       # rows that count towards min_group_tasks (one per task); None: all

    def __post_init__(self):
        if self.scores.shape[1] not in (1, len(self.levels)):
            raise ValueError(f"{self.scores.shape[1]} score columns for {len(self.levels)} levels: give one per "
                             "level, or one for all")
        self._codes = {name: code for code, name in enumerate(self.group_names)}
        # the sweep's rows: those ever known, in the order they become available (known, and created)
        available = np.maximum(self.known, self.created)
        usable = np.flatnonzero((self.known != np.iinfo("int64").max) & ~np.isnan(self.scores).any(axis=1))
        rows = usable[np.argsort(available[usable], kind="stable")]
        self._available = available[rows]
        self._scores = np.ascontiguousarray(self.scores[rows], dtype="float64")
        self._orders = np.stack([np.argsort(self._scores[:, c], kind="stable") for c in range(self._scores.shape[1])])
        self._groups = np.ascontiguousarray(self.groups[rows], dtype="int64")
        counted = np.ones(len(self.scores), dtype=bool) if self.counted is None else self.counted
        self._counted = counted[rows].astype("int64")
        # weights relative to the newest creation (2^-age in half-lives from it): each moment's are these
        # times one factor, which the sweep folds into the new point's weight
        self._newest = int(self.created[rows].max()) if len(rows) else 0
        half_life = self.settings.get("half_life_days")
        self._weights = (np.ones(len(rows)) if half_life is None
                         else np.exp2((self.created[rows] - self._newest) / (half_life * NS_PER_DAY)))

    @classmethod
    def of(cls, y_model: np.ndarray, predicted: np.ndarray, frame: pd.DataFrame, settings: dict,
           levels: tuple[float, ...] = QUANTILES, counted: np.ndarray | None = None) -> CalibrationPool:
        """`predicted`: (n, len(levels)) model-space quantiles of the rows of `frame` (which has creationdate
        and labels_known_at); `y_model`: their labels in model space (NaN: unknown). A row may be a job of a
        task (`frame` repeating its task's row); `counted` then marks one row per task."""
        scores = np.asarray(y_model, dtype="float64")[:, None] - np.asarray(predicted, dtype="float64")
        known = _nanoseconds(frame[LABELS_KNOWN_AT].to_numpy())
        known[np.isnan(scores).any(axis=1)] = np.iinfo("int64").max
        codes, names = pd.factorize(pd.Series(_group_values(frame, settings.get("group")), dtype=object))
        return cls(scores, _nanoseconds(frame["creationdate"].to_numpy()), known, codes.astype("int64"),
                   [str(name) for name in names], dict(settings), tuple(levels), counted)

    def known_by(self, as_of: pd.Timestamp) -> np.ndarray:
        moment = _nanoseconds([as_of])[0]
        return (self.known <= moment) & (self.created <= moment)

    def _offsets(self, moments: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((Q, levels) offsets, (Q,) whether a group's own) of each moment (int64 ns) and group code (-1:
        none): the weighted conformal quantiles of the errors known by the moment, weighted by age from it, of
        the group when it has min_group_tasks known tasks, else of every known error."""
        half_life = self.settings.get("half_life_days")
        with np.errstate(over="ignore"):   # a moment a thousand half-lives on: every error weighs nothing
            extra = (np.ones(len(moments)) if half_life is None
                     else np.exp2((moments - self._newest).astype("float64") / (half_life * NS_PER_DAY)))
        return _swept_offsets(self._scores, self._orders, self._groups, len(self.group_names), self._counted,
                              self._weights, self._available, np.asarray(moments, dtype="int64"), extra,
                              np.asarray(codes, dtype="int64"), np.asarray(self.levels, dtype="float64"),
                              int(self.settings.get("min_group_tasks", 100)))

    def offsets_at(self, as_of: pd.Timestamp) -> ConformalOffsets:
        """Every group's offsets from the errors known by `as_of`."""
        group = self.settings.get("group")
        codes = np.arange(-1, len(self.group_names) if group else 0)
        offsets, own = self._offsets(np.full(len(codes), _nanoseconds([as_of])[0]), codes)
        result = ConformalOffsets(overall=offsets[0].tolist(), group=group, levels=list(self.levels))
        for code in np.flatnonzero(own):
            result.by_group[self.group_names[codes[code]]] = offsets[code].tolist()
        return result

    def apply_as_of(self, predicted: np.ndarray, frame: pd.DataFrame, as_of) -> np.ndarray:
        """`predicted` (n, 3), each row shifted by its group's offsets as of its own moment in `as_of`: what
        a service whose calibration was refreshed at that moment answers (the same offsets as offsets_at)."""
        codes = [self._codes.get(value, -1) if value is not None else -1
                 for value in _group_values(frame, self.settings.get("group"))]
        offsets, _ = self._offsets(_nanoseconds(np.asarray(as_of)), np.asarray(codes, dtype="int64"))
        return np.asarray(predicted, dtype="float64") + offsets
