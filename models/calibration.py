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

import numpy as np
import pandas as pd

from scoutless.models.metrics import QUANTILES
from scoutless.models.protocol import LABELS_KNOWN_AT


def weighted_conformal_quantile(scores: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `scores` under `weights`, with the new point's weight 1 placed at +inf: the
    smallest score whose weighted share (of the total plus 1) reaches q; the largest score when none does
    (+inf would refuse to answer). With equal weights it is the ceil((n + 1) q)-th smallest score."""
    known = ~np.isnan(scores)
    order = np.argsort(scores[known], kind="stable")
    return float(_sorted_conformal_quantiles(scores[known][order], weights[known][order], (q,))[0])


def _sorted_conformal_quantiles(scores: np.ndarray, weights: np.ndarray, levels) -> np.ndarray:
    """weighted_conformal_quantile at every one of `levels`, of scores already in ascending order, without
    NaN."""
    if not len(scores):
        return np.zeros(len(levels))
    share = np.cumsum(weights) / (weights.sum() + 1.0)
    reached = np.searchsorted(share, np.asarray(levels, dtype="float64") - 1e-12, side="left")
    return scores[np.minimum(reached, len(scores) - 1)]


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


@dataclass
class CalibrationPool:
    """The errors of one fitted model on tasks it never learned from, each with when its task was created and
    when its label became known. The offsets as of a moment are those of the errors known by then, weighted
    by age from then: the model is never refit, so every error that arrives later stays out of sample and the
    offsets can follow the newest ones (the served model's are recomputed at every history refresh; the
    backtest recomputes them as of each task's submission). Both go through `_offsets`."""

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
        # each level's scores in ascending order once (NaN last): a subset's order is this one, filtered
        self._order = [np.argsort(self.scores[:, i], kind="stable") for i in range(self.scores.shape[1])]
        self._codes = {name: code for code, name in enumerate(self.group_names)}

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
        return self._known_by(moment)

    def _known_by(self, moment: int) -> np.ndarray:
        return (self.known <= moment) & (self.created <= moment)

    def _offsets(self, rows: np.ndarray, moment: int) -> list[float]:
        half_life = self.settings.get("half_life_days")
        if half_life is None:
            weights = np.ones(len(rows))
        else:
            age_days = (moment - self.created) / NS_PER_DAY
            weights = 0.5 ** (np.clip(age_days, 0, None) / half_life)
        # the levels each score column answers: one column answers every level (one sort, one cumulative share)
        per_column = [self.levels] if self.scores.shape[1] == 1 else [(q,) for q in self.levels]
        out = []
        for i, levels in enumerate(per_column):
            chosen = self._order[i][rows[self._order[i]]]
            out += [float(v) for v in _sorted_conformal_quantiles(self.scores[chosen, i], weights[chosen], levels)]
        return out

    def _group_rows(self, known: np.ndarray, code: int) -> np.ndarray | None:
        """The known rows of group `code` when they are enough for offsets of their own."""
        if code < 0:
            return None
        rows = known & (self.groups == code)
        tasks = rows.sum() if self.counted is None else (rows & self.counted).sum()
        return rows if tasks >= self.settings.get("min_group_tasks", 100) else None

    def offsets_at(self, as_of: pd.Timestamp) -> ConformalOffsets:
        """Every group's offsets from the errors known by `as_of`."""
        moment = _nanoseconds([as_of])[0]
        known = self._known_by(moment)
        result = ConformalOffsets(overall=self._offsets(known, moment), group=self.settings.get("group"),
                                  levels=list(self.levels))
        if result.group:
            for code, name in enumerate(self.group_names):
                rows = self._group_rows(known, code)
                if rows is not None:
                    result.by_group[name] = self._offsets(rows, moment)
        return result

    def apply_as_of(self, predicted: np.ndarray, frame: pd.DataFrame, as_of) -> np.ndarray:
        """`predicted` (n, 3), each row shifted by its group's offsets as of its own moment in `as_of`: what
        a service whose calibration was refreshed at that moment answers (the same offsets as offsets_at)."""
        groups = _group_values(frame, self.settings.get("group"))
        moments = _nanoseconds(np.asarray(as_of))
        shifted = np.array(predicted, dtype="float64")
        for i, (moment, value) in enumerate(zip(moments, groups, strict=True)):
            known = self._known_by(moment)
            rows = self._group_rows(known, self._codes.get(value, -1) if value is not None else -1)
            shifted[i] += self._offsets(known if rows is None else rows, moment)
        return shifted
