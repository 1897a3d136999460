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

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """A float matrix: category codes (NaN = unseen or missing) then the numeric columns."""
        out = np.full((len(frame), len(self.columns)), np.nan, dtype="float64")
        for i, (column, values) in enumerate(self.categories.items()):
            raw = frame[column].astype("string") if column in frame else pd.Series(pd.NA, index=frame.index)
            index = pd.Index(values)
            codes = index.get_indexer(raw.fillna("\x00")).astype("float64")
            unknown = (codes < 0) & raw.notna().to_numpy()
            codes[codes < 0] = np.nan
            if OTHER in values:
                codes[unknown] = index.get_loc(OTHER)
            out[:, i] = codes
        offset = len(self.categories)
        for j, column in enumerate(self.numeric):
            if column in frame:
                out[:, offset + j] = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")
        return out

    def frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Pandas input for estimators with native categorical support (category dtype, fixed levels)."""
        codes = self.codes(frame)
        data = {}
        for i, (column, values) in enumerate(self.categories.items()):
            data[column] = pd.Categorical.from_codes(
                np.nan_to_num(codes[:, i], nan=-1).astype(int), categories=range(len(values))
            )
        for j, column in enumerate(self.numeric):
            data[column] = codes[:, len(self.categories) + j]
        return pd.DataFrame(data, index=frame.index)

    def to_dict(self) -> dict:
        return {"categories": self.categories, "numeric": self.numeric}

    @classmethod
    def from_dict(cls, data: dict) -> CategoryEncoder:
        return cls(categories={k: list(v) for k, v in data["categories"].items()}, numeric=list(data["numeric"]))
