"""The train stage, one target at a time: every candidate trained as of the test window's start, calibrated
and scored on the validation window, and scored on the test window (models.protocol) as it is served: each
test task with the offsets recomputed from the labels known just before its submission.

Inputs: data/features/features.parquet and data/validated/jobs.parquet (to count the jobs a request would
have failed). Outputs, per target: artifacts/models/<target>/<candidate>/ (the fitted candidates, in safe
formats), and artifacts/metrics/<target>.json + artifacts/predictions/<target>.parquet (test scores and
quantiles; each candidate's validation scores, which selection reads, under "validation").
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from scoutless.features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from scoutless.features.history import history_feature_names
from scoutless.models.candidates import CANDIDATES, Candidate
from scoutless.models.metrics import QUANTILE_COLUMNS, evaluate
from scoutless.models.protocol import (
    DAY,
    LABELS_KNOWN_AT,
    Windows,
    as_of_view,
    calibration_rows,
    pipeline_now,
)
from scoutless.models.targets import TARGETS, TargetSpec
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
    skipped: dict[str, str]


def candidate_config(name: str, target: str, params: Params) -> dict:
    """The configuration a candidate is built from (saved with it, so that it can be rebuilt)."""
    train = params.train
    shared = {
        "request": {"quantile": train.request_quantile.get(target, "q90"),
                    "max_job_failure": params.request.max_job_failure,
                    "policy": params.request.policy, "cost": params.request.cost.model_dump(),
                    "default_preset": params.extract.jedi.cpuefficiency_if_null},
        "calibration": train.calibration.model_dump(),
    }
    if name == "default":
        return {"value": train.default_values.get(target), **shared}
    if name == "history":
        return {**train.history.model_dump(), **shared}
    if name in ("hgb", "xgboost", "mlp"):
        return {
            "params": getattr(train, name).model_dump(),
            "categorical": list(CATEGORICAL_FEATURES),
            "numeric": [*NUMERIC_FEATURES, *history_feature_names(list(params.targets))],
            "max_categories": train.max_categories,
            "max_fit_tasks": train.scaling.max_fit_tasks.get(name),
            **shared,
        }
    return shared


def score(spec: TargetSpec, rows: pd.DataFrame, predicted: pd.DataFrame, request_quantile: str,
          jobs: pd.DataFrame | None) -> dict:
    """Metrics of one candidate's answers on `rows` (indexed by jeditaskid): its label quantiles, and its
    request against the jobs it would have failed."""
    job_values = jobs[["jeditaskid", spec.job_column]] if jobs is not None and spec.job_column else None
    return evaluate(rows[f"label_{spec.name}"], predicted, log_space=spec.log_space,
                    request_quantile=request_quantile, jobs=job_values, job_value_column=spec.job_column)


def by_task(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` indexed by its task ids, sharing its columns (a window's rows, a copy already: not copied again)."""
    keyed = frame.copy(deep=False)
    keyed.index = pd.Index(frame["jeditaskid"], name="jeditaskid")
    return keyed


def fit_window(features: pd.DataFrame, target: str, windows: Windows, newest: int | None = None,
               columns: list[str] | None = None) -> pd.DataFrame:
    """The fit window's tasks indexed by task, copied from `features` once: only the `newest` by creation when
    it holds more, only `columns` when given (at a million tasks, a copy of every column is gigabytes)."""
    positions = np.flatnonzero(windows.fit_mask(features, target).to_numpy())
    if newest and len(positions) > newest:
        created = pd.to_datetime(features["creationdate"]).to_numpy()[positions]
        positions = positions[np.argsort(created, kind="stable")[-newest:]]
    return by_task((features if columns is None else features[columns]).take(positions))


def fit_as_of(name: str, config: dict, spec: TargetSpec, features: pd.DataFrame, jobs: pd.DataFrame | None,
              windows: Windows, validation: pd.DataFrame | None = None
              ) -> tuple[Candidate, pd.DataFrame, pd.DataFrame]:
    """(the candidate as of windows.origin, its fit rows, its validation rows): fitted on the labels known by
    the validation window's start, its quantiles and its request (on the validation tasks' `jobs`)
    calibrated on the validation window (whose labels were known at the origin): nothing it learns was
    unknown at the origin. `validation`: the validation window's tasks (by_task), when the caller has them.
    A candidate that learns nothing from the features fits on the window's task ids, dates and labels."""
    label = f"label_{spec.name}"
    reads = None if CANDIDATES[name].learns_from_features else ["jeditaskid", "creationdate", LABELS_KNOWN_AT, label]
    fit = fit_window(features, spec.name, windows, config.get("max_fit_tasks"), reads)
    if validation is None:
        validation = by_task(windows.validation_rows(features, spec.name))
    if not len(fit):
        raise ValueError(f"{spec.name}: no task's label was known by {windows.validation_start} "
                         "(split.validation_days and split.test_days leave nothing to train on)")
    candidate = CANDIDATES[name](spec, config).fit(fit, fit[label].to_numpy(dtype="float64"),
                                                   (validation, validation[label].to_numpy(dtype="float64")))
    if len(validation):
        candidate.calibrate(validation, validation[f"label_{spec.name}"].to_numpy(dtype="float64"), windows.origin)
        candidate.calibrate_jobs(validation, jobs, windows.origin)
    return candidate, fit, validation


def predict_test(candidate: Candidate, features: pd.DataFrame, jobs: pd.DataFrame | None, target: str,
                 windows: Windows, test: pd.DataFrame, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The candidate's answers for the test tasks as a service refreshed as labels arrive gives them: each
    with the offsets of the errors known just before its creation (models.refresh). `rows`: the calibration
    rows of the windows, when the caller has them already."""
    if rows is None:
        rows = calibration_rows(features, target, windows.validation_start, windows.test_end)
    return candidate.predict_as_submitted(
        test, candidate.calibration_pool(rows, rows[f"label_{target}"].to_numpy(dtype="float64")),
        candidate.job_pool(rows, jobs))


def train_target(features: pd.DataFrame, jobs: pd.DataFrame | None, target: str, params: Params,
                 origin: pd.Timestamp, candidates: list[str] | None = None) -> TargetResult:
    """Every candidate as of `origin`, scored on its validation window (selection) and on the test window
    after `origin` (the report and the gate). The windows take only what was known at `origin` to fit and
    calibrate, and a test task's offsets take only the labels known before its creation; the test window is
    scored with whatever labels `features` holds: the pipeline passes what it knows now (`as_of_view`), the
    backtest every label the archive has."""
    spec: TargetSpec = TARGETS[target]
    windows = Windows.at(origin, params.split)
    test = by_task(windows.test_rows(features, target))
    # taken once for every candidate (each a copy of its rows); the fit window, the largest, by each candidate
    # (fit_as_of), here only its dates, which describe it
    fit_dates = windows.fit_rows(features[["creationdate", LABELS_KNOWN_AT, f"label_{target}"]], target)
    validation_window = by_task(windows.validation_rows(features, target))
    calibration = calibration_rows(features, target, windows.validation_start, windows.test_end)
    for window, rows in (("validation", validation_window), ("test", test)):
        if not len(rows):
            raise ValueError(f"{target}: no labelled task in the {window} window as of {windows.origin} "
                             f"(split: validation_days={windows.validation_days:g}, test_days={windows.test_days:g})")
    request = params.train.request_quantile.get(target, "q90")
    jobs = jobs_after(jobs, features, windows.validation_start)

    metrics, predictions, fitted, seconds, skipped = {}, {}, {}, {}, {}
    fit_tasks = len(fit_dates)
    for name in candidates or params.train.candidates:
        limit = params.train.scaling.skip_above_tasks.get(name)
        if limit is not None and fit_tasks > limit:
            skipped[name] = (f"not trained: its fit window holds {fit_tasks:,} tasks, above "
                             f"train.scaling.skip_above_tasks ({limit:,})")
            log.info("%s/%s: %s", target, name, skipped[name])
            continue
        started = time.perf_counter()
        candidate, fit, validation = fit_as_of(name, candidate_config(name, target, params), spec, features,
                                               jobs, windows, validation_window)
        fit_size = len(fit)
        del fit   # a copy of the fit window's features: not held while the candidate is scored
        y_validation = validation[f"label_{target}"].to_numpy(dtype="float64")
        out_of_sample = candidate.calibrated_out_of_sample(validation, y_validation, windows.origin)
        predicted = predict_test(candidate, features, jobs, target, windows, test, calibration)
        seconds[name] = round(time.perf_counter() - started, 3)
        fitted[name], predictions[name] = candidate, predicted
        metrics[name] = {
            **score(spec, test, predicted, request, jobs),
            "validation": score(spec, validation, out_of_sample, request, jobs),
            "servable": candidate.servable,
            "train_seconds": seconds[name],
            "fit_tasks": fit_size,
        }
        log.info("%s/%s: validation %s=%.4g, test %s=%.4g coverage_q90=%.3f (%.1f s)", target, name,
                 params.select.metric, metrics[name]["validation"].get(params.select.metric, np.nan),
                 params.select.metric, metrics[name].get(params.select.metric, np.nan),
                 metrics[name].get("coverage_q90", np.nan), seconds[name])
    window = windows.describe(fit_dates, validation_window, test)
    return TargetResult(target, metrics, predictions, fitted, window, seconds, skipped)


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
               {"target": result.target, "data_window": result.data_window, "candidates": result.metrics,
                "skipped": result.skipped})


# What training, selection and the backtest read of a finished job: its task, each target's need, and what
# JEDI's walltime limit is derived from.
TRAINING_JOB_COLUMNS = ["jeditaskid", "nevents", "cores", "corepower", "wall_s",
                        *dict.fromkeys(spec.job_column for spec in TARGETS.values() if spec.job_column)]


def load_training_data(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_features(params), load_jobs(params)


def load_features(params: Params) -> pd.DataFrame:
    """The features, their text columns held by Arrow: the same values and missing values as Python strings,
    in a quarter of the memory, which every window's copy of its rows repeats."""
    with pd.option_context("mode.string_storage", "pyarrow"):
        return pd.read_parquet(resolve(params.paths.features) / "features.parquet")


def load_jobs(params: Params, tasks: np.ndarray | None = None) -> pd.DataFrame:
    """The finished jobs' TRAINING_JOB_COLUMNS; with `tasks` (task ids), only theirs, filtered batch by batch
    as the file is read: memory holds the jobs kept, not the archive's."""
    path = resolve(params.paths.validated) / "jobs.parquet"
    if tasks is None:
        return pd.read_parquet(path, columns=TRAINING_JOB_COLUMNS)
    wanted = pc.field("jeditaskid").isin(pa.array(tasks, type=pa.int64()))
    return ds.dataset(path, format="parquet").to_table(columns=TRAINING_JOB_COLUMNS, filter=wanted).to_pandas()


def tasks_created_after(features: pd.DataFrame, moment: pd.Timestamp) -> np.ndarray:
    return features.loc[pd.to_datetime(features["creationdate"]) > moment, "jeditaskid"].to_numpy()


def jobs_after(jobs: pd.DataFrame | None, features: pd.DataFrame, moment: pd.Timestamp) -> pd.DataFrame | None:
    """The jobs of the tasks created after `moment`: all that calibrating and scoring models whose knowledge
    ends at `moment` reads (the rest are a fit's, which learns from task labels)."""
    if jobs is None:
        return None
    return jobs[jobs["jeditaskid"].isin(tasks_created_after(features, moment))]


def run_train(params: Params, target: str) -> dict:
    """The train stage entry point for one target: the CLI, DVC and Prefect call this."""
    if target not in params.targets:
        raise ValueError(f"unknown target {target!r}; params.yaml targets are {list(params.targets)}")
    features = load_features(params)
    now = pipeline_now(features, params.split)
    features = as_of_view(features, now)   # the archive's frame is let go: one frame in memory, not two
    origin = now - params.split.test_days * DAY
    # the only jobs train_target reads (jobs_after): those of the validation and test windows
    jobs = load_jobs(params, tasks_created_after(features, Windows.at(origin, params.split).validation_start))
    result = train_target(features, jobs, target, params, origin)
    save_result(result, params)
    return {"target": target, "data_window": result.data_window,
            "candidates": {name: {k: m.get(k) for k in (params.select.metric, "coverage_q90", "mae")}
                           for name, m in result.metrics.items()}}
