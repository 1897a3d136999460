"""Synthetic feature frames with the real feature columns, for model behaviour tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoutless.features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from scoutless.features.history import history_feature_names
from scoutless.params import TARGETS

KIND_CPU = {"simul": 300.0, "evgen": 30.0, "deriv": 0.5, "merge": 0.05}


def synthetic_features(n: int, seed: int = 0) -> pd.DataFrame:
    """Tasks whose CPU per event is set by their processing type (a strong planted signal) times noise,
    and does not depend on how many events they have."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(list(KIND_CPU), size=n)
    frame = pd.DataFrame({c: pd.Series(rng.choice(["a", "b", "c"], size=n), dtype="string")
                          for c in CATEGORICAL_FEATURES})
    frame["processing_type"] = pd.Series(kinds, dtype="string")
    for column in (*NUMERIC_FEATURES, *history_feature_names(list(TARGETS))):
        frame[column] = rng.normal(size=n)
    frame["total_nevents"] = rng.integers(1_000, 1_000_000, size=n).astype(float)
    frame["jeditaskid"] = np.arange(n)
    frame["creationdate"] = pd.date_range("2025-01-01", periods=n, freq="h")
    frame["labels_known_at"] = frame["creationdate"] + pd.Timedelta(hours=6)
    frame["split"] = np.where(np.arange(n) < int(n * 0.7), "train", "holdout")
    frame["label_cputime"] = np.array([KIND_CPU[k] for k in kinds]) * rng.lognormal(0, 0.3, size=n)
    frame["scout_cputime"] = frame["label_cputime"] * rng.lognormal(0, 0.05, size=n)
    return frame


@pytest.fixture(scope="session")
def synthetic() -> pd.DataFrame:
    return synthetic_features(3000)
