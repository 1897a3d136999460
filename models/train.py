"""The train stage, one target at a time: every candidate trained and scored on the same holdout.

Inputs: data/features/features.parquet (the time-ordered split is in its `split` and `fold` columns) and
data/validated/jobs.parquet (to count the jobs a request would have failed). Outputs, per target:
artifacts/models/<target>/<candidate>/ (the fitted candidates, in safe formats), and
artifacts/metrics/<target>.json + artifacts/predictions/<target>.parquet (holdout scores and quantiles).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from features.history import history_feature_names
from models.candidates import CANDIDATES, Candidate
from models.metrics import QUANTILE_COLUMNS, evaluate
from models.targets import TARGETS, TargetSpec
from scoutless.params import Params
from scoutless.paths import build_dir, replace_dir, resolve, write_json, write_parquet

log = logging.getLogger(__name__)


@dataclass
class TargetResult:
    target: str
    metrics: dict[str, dict]
    predictions: dict[str, pd.DataFrame]
    candidates: dict[str, Candidate]
    data_window: dict
    seconds: dict[str, float]


def candidate_config(name: str, target: str, params: Params) -> dict:
    """The configuration a candidate is built from (saved with it, so that it can be rebuilt)."""
    train = params.train
    if name == "default":
        return {"value": train.default_values.get(target)}
    if name == "history":
        return train.history.model_dump()
    if name in ("hgb", "xgboost", "mlp"):
        return {
            "params": getattr(train, name).model_dump(),
            "categorical": list(CATEGORICAL_FEATURES),
            "numeric": [*NUMERIC_FEATURES, *history_feature_names(list(params.targets))],
            "max_categories": train.max_categories,
            "refit_on_all": train.refit_on_all,
        }
    return {}


def data_window(train: pd.DataFrame, holdout: pd.DataFrame) -> dict:
    def span(frame: pd.DataFrame) -> tuple[str | None, str | None]:
        created = frame["creationdate"]
        return (str(created.min()), str(created.max())) if len(frame) else (None, None)

    (train_start, train_end), (holdout_start, holdout_end) = span(train), span(holdout)
    return {"train_start": train_start, "train_end": train_end, "holdout_start": holdout_start,
            "holdout_end": holdout_end, "n_train": len(train), "n_holdout": len(holdout)}


def holdout_rows(features: pd.DataFrame, target: str) -> pd.DataFrame:
    """The labelled holdout tasks of `target`, indexed by jeditaskid: where every candidate is scored."""
    label = f"label_{target}"
    rows = features[(features["split"] == "holdout") & features[label].notna()]
    return rows.set_index("jeditaskid", drop=False)


def score(spec: TargetSpec, holdout: pd.DataFrame, predicted: pd.DataFrame, request_quantile: str,
          jobs: pd.DataFrame | None) -> dict:
    """Holdout metrics of one candidate's quantiles, with the jobs its request would have failed."""
    job_values = jobs[["jeditaskid", spec.job_column]] if jobs is not None and spec.job_column else None
    return evaluate(holdout[f"label_{spec.name}"], predicted, log_space=spec.log_space,
                    request_quantile=request_quantile, jobs=job_values, job_value_column=spec.job_column)


def train_target(features: pd.DataFrame, jobs: pd.DataFrame | None, target: str, params: Params) -> TargetResult:
    """Fit every candidate on the training rows of `target` and score it on the holdout rows."""
    spec: TargetSpec = TARGETS[target]
    label = f"label_{target}"
    labelled = features[features[label].notna()]
    train = labelled[labelled["split"] == "train"]
    holdout = holdout_rows(features, target)
    y_train = train[label].to_numpy(dtype="float64")
    calibration = (train["fold"] == train["fold"].max()).to_numpy() if len(train) else np.zeros(0, bool)
    request = params.train.request_quantile.get(target, "q90")

    metrics, predictions, fitted, seconds = {}, {}, {}, {}
    for name in params.train.candidates:
        started = time.perf_counter()
        candidate = CANDIDATES[name](spec, candidate_config(name, target, params)).fit(train, y_train, calibration)
        predicted = candidate.predict(holdout)
        seconds[name] = round(time.perf_counter() - started, 3)
        fitted[name], predictions[name] = candidate, predicted
        metrics[name] = {
            **score(spec, holdout, predicted, request, jobs),
            "servable": candidate.servable,
            "train_seconds": seconds[name],
        }
        log.info("%s/%s: %s=%.4g coverage_q90=%.3f (%.1f s)", target, name, params.select.metric,
                 metrics[name].get(params.select.metric, np.nan), metrics[name].get("coverage_q90", np.nan),
                 seconds[name])
    return TargetResult(target, metrics, predictions, fitted, data_window(train, holdout), seconds)


def save_result(result: TargetResult, params: Params) -> None:
    models_dir = resolve(params.paths.models)
    artifacts = resolve(params.paths.artifacts)
    build = build_dir(models_dir / result.target)
    for name, candidate in result.candidates.items():
        candidate.save(build / name)
    (build / "window.json").write_text(json.dumps(result.data_window, indent=2) + "\n")
    replace_dir(build, models_dir / result.target)

    predictions = pd.concat(
        {name: frame[list(QUANTILE_COLUMNS)] for name, frame in result.predictions.items()}, axis=1
    )
    predictions.columns = [f"{name}_{q}" for name, q in predictions.columns]
    write_parquet(predictions.reset_index(), artifacts / "predictions" / f"{result.target}.parquet")
    write_json(artifacts / "metrics" / f"{result.target}.json",
               {"target": result.target, "data_window": result.data_window, "candidates": result.metrics})


def load_training_data(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    features = pd.read_parquet(resolve(params.paths.features) / "features.parquet")
    jobs = pd.read_parquet(resolve(params.paths.validated) / "jobs.parquet")
    return features, jobs


def run_train(params: Params, target: str) -> dict:
    """The train stage entry point for one target: the CLI, DVC and Prefect call this."""
    if target not in params.targets:
        raise ValueError(f"unknown target {target!r}; params.yaml targets are {list(params.targets)}")
    features, jobs = load_training_data(params)
    result = train_target(features, jobs, target, params)
    save_result(result, params)
    return {"target": target, "data_window": result.data_window,
            "candidates": {name: {k: m.get(k) for k in (params.select.metric, "coverage_q90", "mae")}
                           for name, m in result.metrics.items()}}
