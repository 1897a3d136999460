"""The candidates compared for every target. Each predicts q50, q90 and q95 in the target's units.

- default  JEDI's value when a task has no estimate (a constant from params.yaml)
- scout    the task's own scout values: accurate but known only hours after submission (not servable)
- history  quantiles of earlier tasks of the same kind, backing off to coarser kinds
- mlp      a neural network on the paper's inputs (the paper's model family), quantiles by conformal
           residuals
- hgb      scikit-learn HistGradientBoosting with quantile loss, conformalised
- xgboost  XGBoost with the quantile objective, conformalised

Learned candidates model skewed targets in log space and are calibrated by conformalized quantile
regression (models.calibration) on the validation window, which they did not learn from; they are not refit
afterwards, so the offsets belong to the model that answers. The quantiles are sorted so that they never cross.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from features.history import group_key
from models.calibration import ConformalOffsets
from models.encoding import CategoryEncoder
from models.metrics import QUANTILE_COLUMNS, QUANTILES
from models.protocol import interleaved_halves
from models.targets import TargetSpec

PAPER_CATEGORICAL = ["prodsourcelabel", "processing_type", "framework", "corecount_class"]
PAPER_NUMERIC = ["total_nfiles", "total_nevents", "n_input_datasets"]


def as_quantile_frame(values: np.ndarray, index: pd.Index, spec: TargetSpec, model_space: bool) -> pd.DataFrame:
    """(n, 3) quantiles -> a frame in target units with q50 <= q90 <= q95 on every row."""
    values = np.sort(np.asarray(values, dtype="float64"), axis=1)  # NaN sorts last: only all-NaN rows have any
    if model_space:
        values = spec.from_model_space(values)
    return pd.DataFrame(values, index=index, columns=list(QUANTILE_COLUMNS))


class Candidate(ABC):
    name: ClassVar[str]
    servable: ClassVar[bool] = True

    def __init__(self, spec: TargetSpec, config: dict):
        self.spec, self.config = spec, config

    @abstractmethod
    def fit(self, train: pd.DataFrame, y: np.ndarray) -> Candidate:
        """Fit on `train` (its features) and `y` (target units)."""

    def calibrate(self, frame: pd.DataFrame, y: np.ndarray, age_days: np.ndarray) -> Candidate:
        """Calibrate on tasks it did not learn from (`age_days`: how long before the origin each was
        created). Only the learned candidates have anything to calibrate."""
        return self

    def calibrated_out_of_sample(self, frame: pd.DataFrame, y: np.ndarray, age_days: np.ndarray) -> pd.DataFrame:
        """Predictions for the calibration tasks themselves, each half calibrated on the other half: what
        selection scores, so that a candidate is not judged on the offsets it was fitted to."""
        return self.predict(frame)

    @abstractmethod
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame: ...

    def state(self) -> dict:
        return {}

    def save_files(self, folder: Path) -> None:
        """Model files beside candidate.json (none for the simple candidates)."""
        return None

    def load_files(self, folder: Path) -> None:
        return None

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.save_files(folder)
        manifest = {"candidate": self.name, "target": self.spec.name, "config": self.config, "state": self.state()}
        (folder / "candidate.json").write_text(json.dumps(manifest, indent=2, default=float) + "\n")

    @staticmethod
    def load(folder: Path, spec: TargetSpec) -> Candidate:
        manifest = json.loads((folder / "candidate.json").read_text())
        candidate = CANDIDATES[manifest["candidate"]](spec, manifest["config"])
        candidate.set_state(manifest["state"])
        candidate.load_files(folder)
        return candidate

    def set_state(self, state: dict) -> None:
        return None


class DefaultCandidate(Candidate):
    name = "default"

    def fit(self, train, y):
        return self

    def predict(self, frame):
        value = self.config.get("value")
        values = np.full((len(frame), 3), np.nan if value is None else float(value))
        return as_quantile_frame(values, frame.index, self.spec, model_space=False)


class ScoutCandidate(Candidate):
    name = "scout"
    servable = False  # the scouts' values exist only once the scouts have run

    def fit(self, train, y):
        return self

    def predict(self, frame):
        column = f"scout_{self.spec.name}"
        value = frame[column] if column in frame else pd.Series(np.nan, index=frame.index)
        values = np.repeat(pd.to_numeric(value, errors="coerce").to_numpy(dtype="float64")[:, None], 3, axis=1)
        return as_quantile_frame(values, frame.index, self.spec, model_space=False)


class HistoryCandidate(Candidate):
    """Quantiles of the training labels of the finest kind with at least `min_tasks` tasks."""

    name = "history"

    def fit(self, train, y):
        rows = []
        for level, columns in enumerate(self.config["groups"]):
            keyed = pd.DataFrame({"key": group_key(train, tuple(columns)), "y": y}).dropna()
            by_key = keyed.groupby("key")["y"]
            stats = by_key.quantile(list(QUANTILES)).unstack()
            stats.columns = list(QUANTILE_COLUMNS)
            stats.insert(0, "n", by_key.size())
            stats = stats[stats["n"] >= self.config["min_tasks"]]
            rows.append(stats.assign(level=level).rename_axis("key").reset_index())
        self.table = pd.concat(rows, ignore_index=True)
        self.overall = [float(np.nanquantile(y, q)) for q in QUANTILES]
        return self

    def predict(self, frame):
        result = np.full((len(frame), 3), np.nan)
        for level, columns in enumerate(self.config["groups"]):
            key = group_key(frame.reindex(columns=columns), tuple(columns))
            level_table = self.table[self.table["level"] == level].set_index("key")[list(QUANTILE_COLUMNS)]
            found = level_table.reindex(key.to_numpy()).to_numpy(dtype="float64")
            missing = np.isnan(result[:, 0])
            result[missing] = found[missing]
        result[np.isnan(result[:, 0])] = self.overall
        return as_quantile_frame(result, frame.index, self.spec, model_space=False)

    def state(self):
        return {"overall": self.overall, "table": self.table.to_dict(orient="list")}

    def set_state(self, state):
        self.overall = state["overall"]
        self.table = pd.DataFrame(state["table"])


class LearnedCandidate(Candidate):
    """Shared by the learned candidates: encoding, log space, conformal calibration."""

    def features(self) -> tuple[list[str], list[str]]:
        return self.config["categorical"], self.config["numeric"]

    def fit(self, train, y):
        categorical, numeric = self.features()
        self.encoder = CategoryEncoder.fit(train, categorical, numeric, self.config.get("max_categories", 255))
        y_model = self.spec.to_model_space(y)
        known = ~np.isnan(y_model)
        if not known.any():
            raise ValueError(f"{self.name}: no labelled task to fit {self.spec.name} on")
        self._fit(train[known], y_model[known])
        self.calibration = ConformalOffsets()
        return self

    def _offsets(self, frame, raw, y, age_days) -> ConformalOffsets:
        return ConformalOffsets.fit(self.spec.to_model_space(y), raw, frame, np.asarray(age_days, dtype="float64"),
                                    self.config.get("calibration", {}))

    def calibrate(self, frame, y, age_days):
        self.calibration = self._offsets(frame, self._predict(frame), y, age_days)
        return self

    def calibrated_out_of_sample(self, frame, y, age_days):
        raw, half = self._predict(frame), interleaved_halves(frame)
        y, age_days = np.asarray(y, dtype="float64"), np.asarray(age_days, dtype="float64")
        calibrated = np.full_like(raw, np.nan)
        for part in (0, 1):
            mine, other = half == part, half != part
            offsets = self._offsets(frame[other], raw[other], y[other], age_days[other])
            calibrated[mine] = offsets.apply(raw[mine], frame[mine])
        return as_quantile_frame(calibrated, frame.index, self.spec, model_space=True)

    def predict(self, frame):
        return as_quantile_frame(self.calibration.apply(self._predict(frame), frame), frame.index, self.spec,
                                 model_space=True)

    @abstractmethod
    def _fit(self, frame: pd.DataFrame, y_model: np.ndarray) -> None: ...

    @abstractmethod
    def _predict(self, frame: pd.DataFrame) -> np.ndarray:
        """(n, 3) quantiles in model space, before calibration."""

    def state(self):
        return {"encoder": self.encoder.to_dict(), "calibration": self.calibration.to_dict()}

    def set_state(self, state):
        self.encoder = CategoryEncoder.from_dict(state["encoder"])
        self.calibration = ConformalOffsets.from_dict(state["calibration"])


class XGBoostCandidate(LearnedCandidate):
    name = "xgboost"

    def _matrix(self, frame: pd.DataFrame, label: np.ndarray):
        import xgboost as xgb

        types = ["c"] * len(self.encoder.categories) + ["q"] * len(self.encoder.numeric)
        return xgb.DMatrix(self.encoder.codes(frame), label=label, feature_types=types,
                           feature_names=self.encoder.columns, enable_categorical=True, nthread=-1)

    def _fit(self, frame, y_model):
        import xgboost as xgb

        settings = {k: v for k, v in self.config["params"].items() if k != "n_estimators"}
        params = {"objective": "reg:quantileerror", "quantile_alpha": [float(q) for q in QUANTILES],
                  "tree_method": "hist", "max_cat_to_onehot": 1, **settings}
        self.booster = xgb.train(params, self._matrix(frame, y_model), num_boost_round=self.config["params"]
                                 .get("n_estimators", 300))

    def _predict(self, frame):
        # Numpy straight into the booster (it keeps the categorical feature types): a DMatrix per call
        # would cost tens of milliseconds for a single task.
        return self.booster.inplace_predict(self.encoder.codes(frame)).reshape(len(frame), len(QUANTILES))

    def save_files(self, folder):
        self.booster.save_model(folder / "model.json")

    def load_files(self, folder):
        import xgboost as xgb

        self.booster = xgb.Booster()
        self.booster.load_model(folder / "model.json")


def _save_skops(estimator, path: Path) -> None:
    import skops.io as sio

    sio.dump(estimator, path)


def _load_skops(path: Path):
    import skops.io as sio

    # Only the types scoutless writes are trusted; anything else in the file is refused.
    untrusted = sio.get_untrusted_types(file=path)
    allowed = [t for t in untrusted if t.startswith(("sklearn.", "numpy.", "builtins.")) or t == "functools.partial"]
    if len(allowed) != len(untrusted):
        raise ValueError(f"{path} holds types scoutless does not write: {sorted(set(untrusted) - set(allowed))}")
    return sio.load(path, trusted=allowed)


class HGBCandidate(LearnedCandidate):
    name = "hgb"

    def _fit(self, frame, y_model):
        from sklearn.ensemble import HistGradientBoostingRegressor

        n_categorical = len(self.encoder.categories)
        mask = [i < n_categorical for i in range(len(self.encoder.columns))]
        self.models = [
            HistGradientBoostingRegressor(loss="quantile", quantile=q, categorical_features=mask,
                                          random_state=0, **self.config["params"])
            .fit(self.encoder.codes(frame), y_model)
            for q in QUANTILES
        ]

    def _predict(self, frame):
        codes = self.encoder.codes(frame)
        return np.column_stack([model.predict(codes) for model in self.models])

    def save_files(self, folder):
        for q, model in zip(QUANTILE_COLUMNS, self.models, strict=True):
            _save_skops(model, folder / f"{q}.skops")

    def load_files(self, folder):
        self.models = [_load_skops(folder / f"{q}.skops") for q in QUANTILE_COLUMNS]


class MLPCandidate(LearnedCandidate):
    """The paper's family: a small neural network on the paper's inputs (one-hot categories, scaled log
    counts). It predicts the median; its quantiles are the median plus calibration residual quantiles."""

    name = "mlp"

    def features(self):
        return PAPER_CATEGORICAL, PAPER_NUMERIC

    def _inputs(self, frame: pd.DataFrame) -> np.ndarray:
        codes = self.encoder.codes(frame)
        blocks = []
        for i, values in enumerate(self.encoder.categories.values()):
            one_hot = np.zeros((len(frame), len(values)))
            known = ~np.isnan(codes[:, i])
            one_hot[np.flatnonzero(known), codes[known, i].astype(int)] = 1.0
            blocks.append(one_hot)
        numeric = np.log1p(np.clip(codes[:, len(self.encoder.categories):], 0, None))
        if not hasattr(self, "scale"):
            self.scale = (np.nanmean(numeric, axis=0), np.nanstd(numeric, axis=0) + 1e-9)
        scaled = (numeric - self.scale[0]) / self.scale[1]
        blocks += [np.nan_to_num(scaled), np.isnan(numeric).astype(float)]
        return np.hstack(blocks)

    def _fit(self, frame, y_model):
        from sklearn.neural_network import MLPRegressor

        self.__dict__.pop("scale", None)
        params = dict(self.config["params"])
        params["hidden_layer_sizes"] = tuple(params.get("hidden_layer_sizes", (64, 32)))
        self.model = MLPRegressor(random_state=0, **params).fit(self._inputs(frame), y_model)

    def _predict(self, frame):
        median = self.model.predict(self._inputs(frame))
        return np.repeat(median[:, None], len(QUANTILES), axis=1)

    def state(self):
        return {**super().state(), "scale": [s.tolist() for s in self.scale]}

    def set_state(self, state):
        super().set_state(state)
        self.scale = tuple(np.asarray(s) for s in state["scale"])

    def save_files(self, folder):
        _save_skops(self.model, folder / "model.skops")

    def load_files(self, folder):
        self.model = _load_skops(folder / "model.skops")


CANDIDATES: dict[str, type[Candidate]] = {
    c.name: c for c in (DefaultCandidate, ScoutCandidate, HistoryCandidate, MLPCandidate, HGBCandidate,
                        XGBoostCandidate)
}
