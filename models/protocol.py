"""Honest in time: what a model as of T may learn from, where it is calibrated and chosen, where it is judged.

A task's labels exist from `labels_known_at` (its endtime, never before its creation). For an origin T:
- fit: the tasks whose labels were known by T - validation_days (an embargo on knowledge, not a creation
  cut: a task created long before but ended after that moment is not there);
- validation: the tasks created in (T - validation_days, T] whose labels were known by T: calibration,
  selection;
- test: the tasks created in (T, T + test_days]: reported, and the gate's comparison; never tuned on.
After T the model is never refit, but every task created after its knowledge cut (T - validation_days) is
out of sample for it: as their labels arrive they recalibrate it (`calibration_rows`; models.refresh for the
service, each test task as of just before its creation for the test window).

The pipeline's "now" is `split.as_of` (null: the archive's newest known time). It trains every candidate as of
now - test_days, so that the test window is real, then refits the chosen configuration as of now: the model
it serves learned every label known by now (the newest validation_days of them through calibration). The
backtest replays exactly this at earlier "nows" (`as_of_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoutless.params import SplitParams

LABELS_KNOWN_AT = "labels_known_at"
DAY = pd.Timedelta(days=1)


def archive_now(features: pd.DataFrame) -> pd.Timestamp:
    """The newest moment the archive knows of: its newest creation or label."""
    newest = [pd.to_datetime(features[c]).max() for c in ("creationdate", LABELS_KNOWN_AT)]
    known = [t for t in newest if pd.notna(t)]
    if not known:
        raise ValueError("the features hold no task with a creationdate: nothing to train on")
    return max(known)


def pipeline_now(features: pd.DataFrame, split: SplitParams) -> pd.Timestamp:
    return pd.Timestamp(split.as_of) if split.as_of is not None else archive_now(features)


def as_of_view(features: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """The features as they were at `as_of`: tasks created by then, labels only where known by then. When it
    keeps every task, the view shares its other columns with `features` (the memory of one frame, not two):
    replace a column of it whole rather than writing into it."""
    created = pd.to_datetime(features["creationdate"])
    kept = (created <= as_of).to_numpy()
    # one new frame: the rows kept (a shallow copy when they all are), each label column replaced whole, so
    # that `features` stays as it was without a second copy of every column
    view = features.copy(deep=False) if kept.all() else features.take(np.flatnonzero(kept))
    unknown = ~(pd.to_datetime(view[LABELS_KNOWN_AT]) <= as_of)
    for label in [c for c in view.columns if c.startswith("label_")]:
        view[label] = view[label].mask(unknown)
    return view


@dataclass(frozen=True)
class Windows:
    """The three windows around one origin (see the module docstring)."""

    origin: pd.Timestamp
    validation_days: float
    test_days: float

    @classmethod
    def at(cls, origin: pd.Timestamp, split: SplitParams) -> Windows:
        return cls(pd.Timestamp(origin), split.validation_days, split.test_days)

    @property
    def validation_start(self) -> pd.Timestamp:
        return self.origin - self.validation_days * DAY

    @property
    def test_end(self) -> pd.Timestamp:
        return self.origin + self.test_days * DAY

    def _labelled(self, features: pd.DataFrame, target: str) -> pd.Series:
        return features[f"label_{target}"].notna()

    def fit_rows(self, features: pd.DataFrame, target: str) -> pd.DataFrame:
        return features[self.fit_mask(features, target)]

    def fit_mask(self, features: pd.DataFrame, target: str) -> pd.Series:
        """Which tasks the fit window holds: labelled, their labels known by the validation window's start."""
        known = pd.to_datetime(features[LABELS_KNOWN_AT]) <= self.validation_start
        return known & self._labelled(features, target)

    def validation_rows(self, features: pd.DataFrame, target: str) -> pd.DataFrame:
        created = pd.to_datetime(features["creationdate"])
        known = pd.to_datetime(features[LABELS_KNOWN_AT]) <= self.origin
        inside = (created > self.validation_start) & (created <= self.origin)
        return features[inside & known & self._labelled(features, target)]

    def test_rows(self, features: pd.DataFrame, target: str) -> pd.DataFrame:
        created = pd.to_datetime(features["creationdate"])
        inside = (created > self.origin) & (created <= self.test_end)
        return features[inside & self._labelled(features, target)]

    def describe(self, fit: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame | None) -> dict:
        """The data window of a model, for its metrics, card and promotion record."""
        created = pd.to_datetime(fit["creationdate"])
        return {
            "origin": str(self.origin), "labels_known_by": str(self.validation_start),
            "train_start": str(created.min()) if len(fit) else None,
            "train_end": str(created.max()) if len(fit) else None,
            "validation_start": str(self.validation_start), "validation_end": str(self.origin),
            "test_start": str(self.origin) if test is not None else None,
            "test_end": str(self.test_end) if test is not None else None,
            "n_train": len(fit), "n_validation": len(validation), "n_test": 0 if test is None else len(test),
        }


def calibration_rows(features: pd.DataFrame, target: str, after: pd.Timestamp, until: pd.Timestamp) -> pd.DataFrame:
    """The labelled tasks created in (after, until]: with `after` a model's knowledge cut (its validation
    window's start), none of them was learned from, so all of them can calibrate it as their labels arrive."""
    created = pd.to_datetime(features["creationdate"])
    inside = (created > after) & (created <= until)
    return features[inside & features[f"label_{target}"].notna()]


def interleaved_halves(frame: pd.DataFrame) -> np.ndarray:
    """0/1 per row, alternating in creation order: two halves that both span the whole window."""
    order = np.argsort(pd.to_datetime(frame["creationdate"]).to_numpy(), kind="stable")
    half = np.zeros(len(frame), dtype="int64")
    half[order[1::2]] = 1
    return half
