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
afterwards, so the offsets belong to the model that answers, and they can be recomputed as later labels
arrive (every task created after the fit's knowledge cut is out of sample). The quantiles are sorted so that
they never cross.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from scoutless.features.history import group_key, row_group_key
from scoutless.models.calibration import CalibrationPool, ConformalOffsets
from scoutless.models.encoding import CategoryEncoder
from scoutless.models.metrics import QUANTILE_COLUMNS, QUANTILES
from scoutless.models.protocol import interleaved_halves
from scoutless.models.requests import (
    EFFICIENCY_PRESET,
    cost_aware_requests,
    job_pool,
    preset_efficiency,
    presets_of,
    quantile_requests,
)
from scoutless.models.targets import TargetSpec
from scoutless.params import RequestCosts

DEFAULT_COSTS = RequestCosts().model_dump()
PAPER_CATEGORICAL = ["prodsourcelabel", "processing_type", "framework", "corecount_class"]
PAPER_NUMERIC = ["total_nfiles", "total_nevents", "n_input_datasets"]


def sorted_quantiles(values: np.ndarray, spec: TargetSpec, model_space: bool) -> np.ndarray:
    """(n, 3) quantiles -> the same in target units with q50 <= q90 <= q95 on every row."""
    values = np.sort(np.asarray(values, dtype="float64"), axis=1)  # NaN sorts last: only all-NaN rows have any
    return spec.from_model_space(values) if model_space else values


def as_quantile_frame(values: np.ndarray, index: pd.Index, spec: TargetSpec, model_space: bool) -> pd.DataFrame:
    """`sorted_quantiles` as a frame (columns q50, q90, q95)."""
    return pd.DataFrame(sorted_quantiles(values, spec, model_space), index=index, columns=list(QUANTILE_COLUMNS))


class Candidate(ABC):
    name: ClassVar[str]
    servable: ClassVar[bool] = True
    learns_from_features: ClassVar[bool] = True   # False: its fit reads no feature (given none but the labels)

    def __init__(self, spec: TargetSpec, config: dict):
        self.spec, self.config = spec, config
        self.job_calibration: ConformalOffsets | None = None
        self._cost_aware_requests = cost_aware_requests   # models.compiled's once compiled

    @abstractmethod
    def fit(self, train: pd.DataFrame, y: np.ndarray, validation: tuple[pd.DataFrame, np.ndarray] | None = None
            ) -> Candidate:
        """Fit on `train` (its features) and `y` (target units); `validation` (the validation window's tasks
        and labels) tells a learned candidate when to stop adding trees."""

    def calibration_pool(self, frame: pd.DataFrame, y: np.ndarray) -> CalibrationPool | None:
        """Its errors on tasks it did not learn from (`frame`, labels `y` in target units, NaN: unknown);
        None for the candidates that have nothing to calibrate."""
        return None

    def calibrate(self, frame: pd.DataFrame, y: np.ndarray, as_of: pd.Timestamp) -> Candidate:
        """Calibrate on tasks it did not learn from, with the labels known by `as_of`."""
        pool = self.calibration_pool(frame, y)
        return self if pool is None else self.recalibrate(pool, as_of)

    def recalibrate(self, pool: CalibrationPool, as_of: pd.Timestamp) -> Candidate:
        """Take the offsets of `pool` as of `as_of` (a history refresh, without refitting)."""
        return self

    def job_pool(self, frame: pd.DataFrame, jobs: pd.DataFrame | None) -> CalibrationPool | None:
        """Its request's errors on the finished jobs of tasks it did not learn from (models.requests); None
        when the target has no per-job limit."""
        request = self.config.get("request", {})
        return job_pool(self.spec, frame, self._quantiles_and_base(frame, None)[1], jobs,
                        self.config.get("calibration", {}), request.get("max_job_failure", 0.02))

    def calibrate_jobs(self, frame: pd.DataFrame, jobs: pd.DataFrame | None, as_of: pd.Timestamp) -> Candidate:
        """Calibrate the request on the jobs of tasks it did not learn from, known by `as_of`."""
        pool = self.job_pool(frame, jobs)
        self.job_calibration = None if pool is None else pool.offsets_at(as_of)
        return self

    def calibrated_out_of_sample(self, frame: pd.DataFrame, y: np.ndarray, as_of: pd.Timestamp) -> pd.DataFrame:
        """Predictions for the calibration tasks themselves, each half calibrated on the other half: what
        selection scores, so that a candidate is not judged on the offsets it was fitted to."""
        return self.predict(frame)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """q50, q90, q95 of the label, and the `request` JEDI should set, with `expected_job_failure`: the
        share of the task's jobs it is calibrated to leave above it."""
        quantiles, base = self._quantiles_and_base(frame, None)
        return self._with_request(frame, quantiles, base, self._request_shift(frame))

    def predict_rows(self, rows: list[dict], codes: np.ndarray | None = None) -> dict[str, np.ndarray | list]:
        """What `predict` answers, column by column, for tasks given as dicts of their features (submission
        and history): the service's hot path, without a frame where the candidate has one of its own. `codes`:
        the rows as its encoder encodes them, when the caller has them already."""
        quantiles, base = self._rows_quantiles_and_base(rows, codes)
        shift = None
        if self.job_calibration is not None:
            groups = [row.get(self.job_calibration.group) for row in rows] if self.job_calibration.group else []
            shift = self.job_calibration.levels, self.job_calibration.shifts(groups, len(rows))
        presets = np.array([row.get(EFFICIENCY_PRESET, np.nan) for row in rows], dtype="float64")
        return dict(zip(QUANTILE_COLUMNS, quantiles.T, strict=True)) | self._requests(quantiles, base, shift, presets)

    def _rows_quantiles_and_base(self, rows: list[dict], codes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """`_quantiles_and_base` of tasks given as feature dicts, the quantiles as an (n, 3) array."""
        quantiles, base = self._quantiles_and_base(pd.DataFrame(rows, index=range(len(rows))), None)
        return quantiles.to_numpy(dtype="float64"), base

    def _label_quantiles_and_base(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3) label quantiles in target units, as a candidate without a model gives them -> what
        `_rows_quantiles_and_base` returns (sorted, and the request quantile in model space)."""
        quantiles = sorted_quantiles(values, self.spec, model_space=False)
        return quantiles, self.spec.to_model_space(quantiles[:, QUANTILE_COLUMNS.index(self.request_quantile)])

    def predict_as_submitted(self, frame: pd.DataFrame, pool: CalibrationPool | None,
                             jobs: CalibrationPool | None) -> pd.DataFrame:
        """Each task's answer with the offsets of `pool` (quantiles) and `jobs` (request) as of just before
        its creation: what a service whose calibration is refreshed as labels arrive answers at submission."""
        just_before = pd.to_datetime(frame["creationdate"]) - pd.Timedelta(1, "ns")
        quantiles, base = self._quantiles_and_base(frame, None if pool is None else just_before, pool)
        shift = None if jobs is None else (
            jobs.levels, jobs.apply_as_of(np.zeros((len(frame), len(jobs.levels))), frame, just_before))
        return self._with_request(frame, quantiles, base, shift)

    def _quantiles_and_base(self, frame: pd.DataFrame, moments: pd.Series | None,
                            pool: CalibrationPool | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """(the label quantiles, the model-space value the request builds on: the request quantile before
        any offset). Learned candidates calibrate the quantiles as of `moments` with `pool` when given."""
        quantiles = self.predict_quantiles(frame)
        return quantiles, self.spec.to_model_space(quantiles[self.request_quantile].to_numpy(dtype="float64"))

    def _request_shift(self, frame: pd.DataFrame) -> tuple[list[float], np.ndarray] | None:
        """(the levels, each task's job-level offsets at them) from the calibration it holds (None: the target
        has none)."""
        if self.job_calibration is None:
            return None
        levels = self.job_calibration.levels
        return levels, self.job_calibration.apply(np.zeros((len(frame), len(levels))), frame)

    def compile(self) -> bool:
        """Answer through models.compiled from now on: the same values, without numpy's per-call cost on a
        few rows (the cost-aware policy here; a learned candidate's trees too). False where some part cannot
        be compiled and keeps its original."""
        from scoutless.models.compiled import cost_aware_requests as compiled

        self._cost_aware_requests = compiled
        return True

    @property
    def request_quantile(self) -> str:
        return self.config.get("request", {}).get("quantile", "q90")

    @property
    def request_costs(self) -> dict:
        """What a request costs (params request.cost; its defaults for a model saved without)."""
        return {**DEFAULT_COSTS, **self.config.get("request", {}).get("cost", {})}

    def _with_request(self, frame: pd.DataFrame, quantiles: pd.DataFrame, base: np.ndarray,
                      shift: tuple[list[float], np.ndarray] | None) -> pd.DataFrame:
        """The quantiles with the columns of `_requests`."""
        columns = self._requests(quantiles.to_numpy(dtype="float64"), base, shift, presets_of(frame))
        return quantiles.assign(**columns)

    def _requests(self, quantiles: np.ndarray, base: np.ndarray, shift: tuple[list[float], np.ndarray] | None,
                  presets: np.ndarray) -> dict[str, np.ndarray | list]:
        """The request of the configured policy (`request`, `expected_job_failure`, `request_policy`) and both
        policies' requests beside it (`quantile_request`, `cost_aware_request`), for tasks with these label
        quantiles (n, 3), request bases, job-level offsets and preset efficiencies (NaN: none); for reserved
        memory also each task's job need at the calibration's levels (`job_need`: what an out-of-memory retry is
        advised from)."""
        request = self.config.get("request", {})
        n = len(quantiles)
        if self.spec.request_is_preset:
            asked = preset_efficiency(presets, request.get("default_preset", 90.0))
            return dict(request=asked, expected_job_failure=np.full(n, np.nan), request_policy=["preset"] * n,
                        quantile_request=asked, cost_aware_request=asked)
        if shift is None:
            asked = quantiles[:, QUANTILE_COLUMNS.index(self.request_quantile)]
            return dict(request=asked, expected_job_failure=np.full(n, np.nan), request_policy=["label quantile"] * n,
                        quantile_request=asked, cost_aware_request=asked)
        levels, offsets = np.asarray(shift[0], dtype="float64"), shift[1]
        points = self.spec.from_model_space(np.asarray(base, dtype="float64")[:, None] + offsets)
        max_failure = request.get("max_job_failure", 0.02)
        fixed = quantile_requests(points, levels, max_failure)
        cheapest, cheapest_failure = self._cost_aware_requests(self.spec, points, levels, self.request_costs)
        policy = request.get("policy", "quantile")
        out = dict(request=cheapest if policy == "cost-aware" else fixed,
                   expected_job_failure=cheapest_failure if policy == "cost-aware" else np.full(n, max_failure),
                   request_policy=[policy] * n, quantile_request=fixed, cost_aware_request=cheapest)
        if self.spec.reserves_memory:
            out["job_need"] = list(points)
        return out

    @abstractmethod
    def predict_quantiles(self, frame: pd.DataFrame) -> pd.DataFrame:
        """q50, q90, q95 of the label."""

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
        manifest = {"candidate": self.name, "target": self.spec.name, "config": self.config, "state": self.state(),
                    "job_calibration": None if self.job_calibration is None else self.job_calibration.to_dict()}
        (folder / "candidate.json").write_text(json.dumps(manifest, indent=2, default=float) + "\n")

    @staticmethod
    def load(folder: Path, spec: TargetSpec) -> Candidate:
        manifest = json.loads((folder / "candidate.json").read_text())
        candidate = CANDIDATES[manifest["candidate"]](spec, manifest["config"])
        candidate.set_state(manifest["state"])
        if manifest.get("job_calibration") is not None:
            candidate.job_calibration = ConformalOffsets.from_dict(manifest["job_calibration"])
        candidate.load_files(folder)
        return candidate

    def set_state(self, state: dict) -> None:
        return None


class DefaultCandidate(Candidate):
    name = "default"
    learns_from_features = False

    def fit(self, train, y, validation=None):
        return self

    def _values(self, n: int) -> np.ndarray:
        value = self.config.get("value")
        return np.full((n, 3), np.nan if value is None else float(value))

    def predict_quantiles(self, frame):
        return as_quantile_frame(self._values(len(frame)), frame.index, self.spec, model_space=False)

    def _rows_quantiles_and_base(self, rows, codes):
        return self._label_quantiles_and_base(self._values(len(rows)))


class ScoutCandidate(Candidate):
    name = "scout"
    servable = False  # the scouts' values exist only once the scouts have run
    learns_from_features = False

    def fit(self, train, y, validation=None):
        return self

    def predict_quantiles(self, frame):
        column = f"scout_{self.spec.name}"
        value = frame[column] if column in frame else pd.Series(np.nan, index=frame.index)
        values = np.repeat(pd.to_numeric(value, errors="coerce").to_numpy(dtype="float64")[:, None], 3, axis=1)
        return as_quantile_frame(values, frame.index, self.spec, model_space=False)


class HistoryCandidate(Candidate):
    """Quantiles of the training labels of the finest kind with at least `min_tasks` tasks."""

    name = "history"

    def fit(self, train, y, validation=None):
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
        self._index_table()
        return self

    def _index_table(self) -> None:
        """Per level, finest first: its columns and each key's quantiles (the service looks tasks up here)."""
        self._levels = []
        for level, columns in enumerate(self.config["groups"]):
            rows = self.table[self.table["level"] == level]
            quantiles = rows[list(QUANTILE_COLUMNS)].to_numpy(dtype="float64").tolist()
            self._levels.append((tuple(columns), dict(zip(rows["key"].tolist(), quantiles, strict=True))))

    def _rows_quantiles_and_base(self, rows, codes):
        values = np.empty((len(rows), 3))
        for i, row in enumerate(rows):
            values[i] = self.overall
            for columns, by_key in self._levels:
                found = by_key.get(row_group_key(row, columns))
                if found is not None and not math.isnan(found[0]):
                    values[i] = found
                    break
        return self._label_quantiles_and_base(values)

    def predict_quantiles(self, frame):
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
        self._index_table()


class LearnedCandidate(Candidate):
    """Shared by the learned candidates: encoding, log space, conformal calibration."""

    def features(self) -> tuple[list[str], list[str]]:
        return self.config["categorical"], self.config["numeric"]

    def fit(self, train, y, validation=None):
        categorical, numeric = self.features()
        self.encoder = CategoryEncoder.fit(train, categorical, numeric, self.config.get("max_categories", 255))
        y_model = self.spec.to_model_space(y)
        known = ~np.isnan(y_model)
        if not known.any():
            raise ValueError(f"{self.name}: no labelled task to fit {self.spec.name} on")
        stop_on = None
        if validation is not None:
            y_validation = self.spec.to_model_space(np.asarray(validation[1], dtype="float64"))
            labelled = ~np.isnan(y_validation)
            if labelled.any():
                stop_on = (self.encoder.codes(validation[0][labelled]), y_validation[labelled])
        # a fit window holds labelled tasks only: no copy of it when every label is usable
        self._fit(train if known.all() else train[known], y_model[known], stop_on)
        self.calibration = ConformalOffsets()
        return self

    def _pool(self, frame, raw, y) -> CalibrationPool:
        return CalibrationPool.of(self.spec.to_model_space(np.asarray(y, dtype="float64")), raw, frame,
                                  self.config.get("calibration", {}))

    def calibration_pool(self, frame, y):
        return self._pool(frame, self._predict(frame), y)

    def recalibrate(self, pool, as_of):
        self.calibration = pool.offsets_at(as_of)
        return self

    def calibrated_out_of_sample(self, frame, y, as_of):
        raw, half = self._predict(frame), interleaved_halves(frame)
        y = np.asarray(y, dtype="float64")
        calibrated = np.full_like(raw, np.nan)
        for part in (0, 1):
            mine, other = half == part, half != part
            offsets = self._pool(frame[other], raw[other], y[other]).offsets_at(as_of)
            calibrated[mine] = offsets.apply(raw[mine], frame[mine])
        quantiles = as_quantile_frame(calibrated, frame.index, self.spec, model_space=True)
        return self._with_request(frame, quantiles, raw[:, QUANTILE_COLUMNS.index(self.request_quantile)],
                                  self._request_shift(frame))

    def predict_quantiles(self, frame):
        return self._quantiles_and_base(frame, None)[0]

    def _quantiles_and_base(self, frame, moments, pool=None):
        raw = self._predict(frame)
        calibrated = self.calibration.apply(raw, frame) if pool is None else pool.apply_as_of(raw, frame, moments)
        return (as_quantile_frame(calibrated, frame.index, self.spec, model_space=True),
                raw[:, QUANTILE_COLUMNS.index(self.request_quantile)])

    def _rows_quantiles_and_base(self, rows, codes):
        raw = self._raw(self.encoder.encode(rows) if codes is None else codes)
        groups = [row.get(self.calibration.group) for row in rows] if self.calibration.group else []
        calibrated = raw + self.calibration.shifts(groups, len(rows))
        return (sorted_quantiles(calibrated, self.spec, model_space=True),
                raw[:, QUANTILE_COLUMNS.index(self.request_quantile)])

    def compile(self) -> bool:
        """The requests, and the model's predictions, through models.compiled from now on: the same values
        without the library's per-call cost. False, and the library's own predict kept, where the fitted model
        cannot be compiled."""
        super().compile()
        try:
            self._compiled = self._compiled_raw()
        except (KeyError, ValueError, TypeError, AttributeError, IndexError):   # a model layout it does not know
            self._compiled = None
        return self._compiled is not None

    def _raw(self, codes: np.ndarray) -> np.ndarray:
        """(n, 3) quantiles in model space, before calibration, from the encoded features."""
        compiled = getattr(self, "_compiled", None)
        return compiled(codes) if compiled is not None else self._library_raw(codes)

    def _predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self._raw(self.encoder.codes(frame))

    @abstractmethod
    def _fit(self, frame: pd.DataFrame, y_model: np.ndarray, stop_on: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Fit on `frame` and its model-space labels; `stop_on` (codes, model-space labels of the validation
        window; None: none) is where the boosted candidates stop early."""

    @abstractmethod
    def _library_raw(self, codes: np.ndarray) -> np.ndarray:
        """`_raw` by the fitted library model itself."""

    @abstractmethod
    def _compiled_raw(self):
        """A function of the codes giving `_library_raw`'s values faster."""

    def state(self):
        return {"encoder": self.encoder.to_dict(), "calibration": self.calibration.to_dict()}

    def set_state(self, state):
        self.encoder = CategoryEncoder.from_dict(state["encoder"])
        self.calibration = ConformalOffsets.from_dict(state["calibration"])


class XGBoostCandidate(LearnedCandidate):
    name = "xgboost"

    def _matrix(self, codes: np.ndarray, label: np.ndarray):
        import xgboost as xgb

        types = ["c"] * len(self.encoder.categories) + ["q"] * len(self.encoder.numeric)
        return xgb.DMatrix(codes, label=label, feature_types=types, feature_names=self.encoder.columns,
                           enable_categorical=True, nthread=self.config["params"].get("nthread", 0) or -1)

    def _fit(self, frame, y_model, stop_on):
        import xgboost as xgb

        settings = dict(self.config["params"])
        rounds, patience = settings.pop("n_estimators", 300), settings.pop("early_stopping_rounds", None)
        params = {"objective": "reg:quantileerror", "quantile_alpha": [float(q) for q in QUANTILES],
                  "tree_method": "hist", "max_cat_to_onehot": 1, **settings}
        train = self._matrix(self.encoder.codes(frame), y_model)
        if stop_on is None or patience is None:
            self.booster = xgb.train(params, train, num_boost_round=rounds)
            return
        # the mean pinball loss of the three quantiles on the validation window; the trees up to its best kept
        booster = xgb.train(params, train, num_boost_round=rounds, evals=[(self._matrix(*stop_on), "validation")],
                            early_stopping_rounds=patience, verbose_eval=False)
        self.booster = booster[: booster.best_iteration + 1]

    def _library_raw(self, codes):
        # Numpy straight into the booster (it keeps the categorical feature types): a DMatrix per call
        # would cost tens of milliseconds for a single task.
        return self.booster.inplace_predict(codes).reshape(len(codes), len(QUANTILES))

    def _compiled_raw(self):
        # numba is loaded where models are compiled (the service), not by training
        from scoutless.models.compiled import TreeEnsemble

        return TreeEnsemble.from_xgboost(self.booster).predict

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

    def _fit(self, frame, y_model, stop_on):
        from sklearn.ensemble import HistGradientBoostingRegressor

        n_categorical = len(self.encoder.categories)
        mask = [i < n_categorical for i in range(len(self.encoder.columns))]
        settings = dict(self.config["params"])
        # early stopping on the validation window: sklearn's own would hold out a random tenth of the fit rows
        validation = {"X_val": stop_on[0], "y_val": stop_on[1]} if stop_on is not None and settings.get(
            "early_stopping") else {}
        codes = self.encoder.codes(frame)
        self.models = [
            HistGradientBoostingRegressor(loss="quantile", quantile=q, categorical_features=mask,
                                          random_state=0, **settings).fit(codes, y_model, **validation)
            for q in QUANTILES
        ]

    def _library_raw(self, codes):
        return np.column_stack([model.predict(codes) for model in self.models])

    def _compiled_raw(self):
        from scoutless.models.compiled import TreeEnsemble

        return TreeEnsemble.from_hist_gradient_boosting(self.models).predict

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

    def _inputs(self, codes: np.ndarray) -> np.ndarray:
        blocks = []
        for i, values in enumerate(self.encoder.categories.values()):
            one_hot = np.zeros((len(codes), len(values)))
            known = ~np.isnan(codes[:, i])
            one_hot[np.flatnonzero(known), codes[known, i].astype(int)] = 1.0
            blocks.append(one_hot)
        numeric = np.log1p(np.clip(codes[:, len(self.encoder.categories):], 0, None))
        if not hasattr(self, "scale"):
            self.scale = (np.nanmean(numeric, axis=0), np.nanstd(numeric, axis=0) + 1e-9)
        scaled = (numeric - self.scale[0]) / self.scale[1]
        blocks += [np.nan_to_num(scaled), np.isnan(numeric).astype(float)]
        return np.hstack(blocks)

    def _fit(self, frame, y_model, stop_on):
        from sklearn.neural_network import MLPRegressor

        self.__dict__.pop("scale", None)
        params = dict(self.config["params"])
        params["hidden_layer_sizes"] = tuple(params.get("hidden_layer_sizes", (64, 32)))
        self.model = MLPRegressor(random_state=0, **params).fit(self._inputs(self.encoder.codes(frame)), y_model)

    def _library_raw(self, codes):
        return np.repeat(self.model.predict(self._inputs(codes))[:, None], len(QUANTILES), axis=1)

    def _compiled_raw(self):
        from sklearn.neural_network._base import ACTIVATIONS

        hidden = ACTIVATIONS[self.model.activation]
        layers = list(zip(self.model.coefs_, self.model.intercepts_, strict=True))

        def forward(codes: np.ndarray) -> np.ndarray:
            # MLPRegressor's forward pass (its _forward_pass_fast) without its input checks
            values = self._inputs(codes)
            for i, (weights, intercepts) in enumerate(layers):
                values = values @ weights
                values += intercepts
                if i < len(layers) - 1:
                    hidden(values)
            return np.repeat(values.reshape(len(codes), -1)[:, :1], len(QUANTILES), axis=1)

        return forward

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
