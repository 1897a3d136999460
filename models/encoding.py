"""Turning feature frames into model inputs, the same way at training and at serving time.

Categories are learned from the training rows only and stored with the model: the `max_categories`
most frequent values of each column keep their own code; every other value — rare in training, or never
seen there (a new processing type or release) — shares an "other" code, or is missing when training
saw no more values than it kept. Either way a new value gets a prediction, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

OTHER = "__other__"


@dataclass
class CategoryEncoder:
    categories: dict[str, list[str]]
    numeric: list[str]

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical: list[str], numeric: list[str], max_categories: int):
        categories = {}
        for column in categorical:
            counts = frame[column].astype("string").value_counts()
            kept = counts.index[: max_categories - 1].tolist()
            categories[column] = [*kept, OTHER] if len(counts) > len(kept) else kept
        return cls(categories=categories, numeric=list(numeric))

    @property
    def columns(self) -> list[str]:
        return [*self.categories, *self.numeric]

    def _lookups(self) -> list[tuple[str, dict[str, int], float]]:
        """Per categorical column: value -> code, and the code of every other (non-missing) value."""
        if not hasattr(self, "_cached_lookups"):
            self._cached_lookups = [
                (column, {value: code for code, value in enumerate(values)},
                 float(values.index(OTHER)) if OTHER in values else np.nan)
                for column, values in self.categories.items()
            ]
        return self._cached_lookups

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """A float matrix: category codes (NaN = missing) then the numeric columns. Plain dictionary
        look-ups: as cheap for the service's single task as for a training set."""
        out = np.full((len(frame), len(self.columns)), np.nan, dtype="float64")
        for i, (column, lookup, other) in enumerate(self._lookups()):
            if column in frame:
                out[:, i] = [lookup.get(v, other) if isinstance(v, str) else np.nan
                             for v in frame[column].astype("string").tolist()]
        offset = len(self.categories)
        for j, column in enumerate(self.numeric):
            if column in frame:
                values = frame[column]
                if values.dtype != "float64":
                    values = pd.to_numeric(values, errors="coerce")
                out[:, offset + j] = values.to_numpy(dtype="float64", na_value=np.nan)
        return out

    def to_dict(self) -> dict:
        return {"categories": self.categories, "numeric": self.numeric}

    @classmethod
    def from_dict(cls, data: dict) -> CategoryEncoder:
        return cls(categories={k: list(v) for k, v in data["categories"].items()}, numeric=list(data["numeric"]))
