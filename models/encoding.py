"""Turning feature frames into model inputs, the same way at training and at serving time.

Categories are learned from the training rows only and stored with the model: the `max_categories`
most frequent values of each column keep their own code; every other value — rare in training, or never
seen there (a new processing type) — shares an "other" code, or is missing when training saw no more
values than it kept. Either way a new value gets a prediction, never an error.

Releases are ordered: a release without its own code ("24.0.13" when training kept 24.0.1..24.0.12)
takes the code of the nearest earlier kept release of its series (24.0.12), since a new patch release
behaves like the one it replaces. A release with no earlier kept one in its series, or not of the form
"A.B.C", is "other" as before.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from scoutless.features.parse import release_series

OTHER = "__other__"
# Columns whose values are releases, placed by series and number when they have no code of their own.
RELEASE_COLUMNS = ("release",)
# Placed values remembered per column: bounded, since the service encodes whatever clients send.
PLACED_CACHE_SIZE = 10_000


class _ReleasePlacer:
    """Code of a release without its own code: that of the kept release of the same series with the
    largest number below its own; `other` when there is none."""

    def __init__(self, lookup: dict[str, int], other: float):
        self.other = other
        by_series: dict[str, list[tuple[int, int]]] = {}
        for value, code in lookup.items():
            parsed = release_series(value)
            if parsed:
                by_series.setdefault(parsed[0], []).append((parsed[1], code))
        # per series: numbers ascending, and their codes
        self.series = {s: ([n for n, _ in sorted(pairs)], [c for _, c in sorted(pairs)])
                       for s, pairs in by_series.items()}
        self.placed: dict[str, float] = {}

    def __call__(self, value: str) -> float:
        if value in self.placed:
            return self.placed[value]
        code = self.other
        parsed = release_series(value)
        if parsed and parsed[0] in self.series:
            numbers, codes = self.series[parsed[0]]
            earlier = bisect_left(numbers, parsed[1])
            if earlier:
                code = float(codes[earlier - 1])
        if len(self.placed) < PLACED_CACHE_SIZE:
            self.placed[value] = code
        return code


@dataclass
class CategoryEncoder:
    categories: dict[str, list[str]]
    numeric: list[str]
    # Encoders stored before releases were placed have none: they keep mapping new releases to "other",
    # as their models were trained.
    releases: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical: list[str], numeric: list[str], max_categories: int):
        categories = {}
        for column in categorical:
            counts = frame[column].astype("string").value_counts()
            kept = counts.index[: max_categories - 1].tolist()
            categories[column] = [*kept, OTHER] if len(counts) > len(kept) else kept
        return cls(categories=categories, numeric=list(numeric),
                   releases=[c for c in categorical if c in RELEASE_COLUMNS])

    @property
    def columns(self) -> list[str]:
        return [*self.categories, *self.numeric]

    def _lookups(self) -> list[tuple[str, dict[str, int], float, _ReleasePlacer | None]]:
        """Per categorical column: value -> code, the code of every other (non-missing) value, and for
        release columns what places those other values instead."""
        if not hasattr(self, "_cached_lookups"):
            self._cached_lookups = []
            for column, values in self.categories.items():
                lookup = {value: code for code, value in enumerate(values)}
                other = float(values.index(OTHER)) if OTHER in values else np.nan
                placer = _ReleasePlacer(lookup, other) if column in self.releases else None
                self._cached_lookups.append((column, lookup, other, placer))
        return self._cached_lookups

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """A float matrix: category codes (NaN = missing) then the numeric columns. Plain dictionary
        look-ups: as cheap for the service's single task as for a training set."""
        out = np.full((len(frame), len(self.columns)), np.nan, dtype="float64")
        for i, (column, lookup, other, placer) in enumerate(self._lookups()):
            if column in frame:
                values = frame[column].astype("string").tolist()
                if placer is None:
                    out[:, i] = [lookup.get(v, other) if isinstance(v, str) else np.nan for v in values]
                else:
                    out[:, i] = [(lookup[v] if v in lookup else placer(v)) if isinstance(v, str) else np.nan
                                 for v in values]
        offset = len(self.categories)
        for j, column in enumerate(self.numeric):
            if column in frame:
                values = frame[column]
                if values.dtype != "float64":
                    values = pd.to_numeric(values, errors="coerce")
                out[:, offset + j] = values.to_numpy(dtype="float64", na_value=np.nan)
        return out

    def encode(self, rows: list[dict]) -> np.ndarray:
        """`codes` of tasks given as dicts of their features (text or None, floats): the service's hot path."""
        out = np.full((len(rows), len(self.columns)), np.nan, dtype="float64")
        lookups, offset = self._lookups(), len(self.categories)
        for r, row in enumerate(rows):
            for i, (column, lookup, other, placer) in enumerate(lookups):
                value = row.get(column)
                if isinstance(value, str):
                    out[r, i] = lookup[value] if value in lookup else placer(value) if placer else other
            out[r, offset:] = [row.get(column, np.nan) for column in self.numeric]
        return out

    def to_dict(self) -> dict:
        return {"categories": self.categories, "numeric": self.numeric, "releases": self.releases}

    @classmethod
    def from_dict(cls, data: dict) -> CategoryEncoder:
        return cls(categories={k: list(v) for k, v in data["categories"].items()}, numeric=list(data["numeric"]),
                   releases=list(data.get("releases", [])))
