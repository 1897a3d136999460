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

from models.metrics import QUANTILES


def weighted_conformal_quantile(scores: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The q-quantile of `scores` under `weights`, with the new point's weight 1 placed at +inf: the
    smallest score whose weighted share (of the total plus 1) reaches q; the largest score when none does
    (+inf would refuse to answer). With equal weights it is the ceil((n + 1) q)-th smallest score."""
    known = ~np.isnan(scores)
    scores, weights = scores[known], weights[known]
    if not len(scores):
        return 0.0
    order = np.argsort(scores, kind="stable")
    share = np.cumsum(weights[order]) / (weights.sum() + 1.0)
    reached = np.flatnonzero(share >= q - 1e-12)
    return float(scores[order][reached[0]] if len(reached) else scores[order][-1])


@dataclass
class ConformalOffsets:
    """Offsets (in model space) per quantile level, overall and per group."""

    overall: list[float] = field(default_factory=lambda: [0.0] * len(QUANTILES))
    by_group: dict[str, list[float]] = field(default_factory=dict)
    group: str | None = None

    @classmethod
    def fit(cls, y_model: np.ndarray, predicted: np.ndarray, frame: pd.DataFrame, age_days: np.ndarray,
            settings: dict) -> ConformalOffsets:
        """`predicted`: (n, 3) model-space quantiles of the calibration tasks in `frame`; `age_days`: how long
        before the origin each was created. `settings`: train.calibration (group, min_group_tasks,
        half_life_days)."""
        half_life = settings.get("half_life_days")
        weights = np.ones(len(y_model)) if half_life is None else 0.5 ** (np.clip(age_days, 0, None) / half_life)

        def offsets(rows: np.ndarray) -> list[float]:
            return [weighted_conformal_quantile(y_model[rows] - predicted[rows, i], weights[rows], q)
                    for i, q in enumerate(QUANTILES)]

        everything = np.ones(len(y_model), dtype=bool)
        result = cls(overall=offsets(everything), group=settings.get("group"))
        if result.group and result.group in frame:
            values = frame[result.group].astype("string").to_numpy(dtype=object, na_value=None)
            for value in pd.unique(values[pd.notna(values)]):
                rows = values == value
                if rows.sum() >= settings.get("min_group_tasks", 100):
                    result.by_group[str(value)] = offsets(rows)
        return result

    def apply(self, predicted: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
        """`predicted` (n, 3) shifted by each row's group offsets, else the overall ones."""
        shift = np.tile(np.asarray(self.overall, dtype="float64"), (len(predicted), 1))
        if self.by_group and self.group in frame:
            for i, value in enumerate(frame[self.group].astype("string").tolist()):
                found = self.by_group.get(value) if isinstance(value, str) else None
                if found is not None:
                    shift[i] = found
        return predicted + shift

    def to_dict(self) -> dict:
        return {"overall": self.overall, "by_group": self.by_group, "group": self.group}

    @classmethod
    def from_dict(cls, data: dict) -> ConformalOffsets:
        return cls(overall=list(data["overall"]), by_group={k: list(v) for k, v in data["by_group"].items()},
                   group=data.get("group"))
