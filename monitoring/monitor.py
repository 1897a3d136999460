"""The monitor stage: has the world moved away from what the promoted models learned?

Windows (by creationdate, from data/features/features.parquet):
- reference: the promoted models' training window (the newest one among them), only its newest
  `monitor.reference_days` when set;
- current: the tasks of the newest `monitor.current_days`, all created after that training window, so the
  models never saw them;
- error reference: the labelled tasks after the training window and before the current one (the models'
  validation window, which their fit never saw): out-of-sample errors of the very models, unlike
  training-window ones.

Three comparisons, each an Evidently report: the submission features; each target's request prediction;
and, where labels have arrived, each target's per-task error (the pinball loss of the request quantile, in
the space the selection metric uses, so its mean is the `pinball_request` of the model card).

The retrain rule (`monitor.retrain`) fires on a share of drifted features, or on a target whose mean error
on the labelled current tasks exceeds its mean error on the error reference by the margin (with fewer than
`min_labelled` labelled reference tasks: its configuration's test-window error, promotion.json test_metrics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from scoutless.features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from scoutless.models.layout import Promoted, load_promoted
from scoutless.models.metrics import QUANTILE_COLUMNS, QUANTILES, quantile_losses
from scoutless.models.targets import TARGETS
from scoutless.monitoring.drift import ColumnDrift, DriftMethods, DriftResult, column_drift
from scoutless.monitoring.report import write_index
from scoutless.params import MonitorParams, Params
from scoutless.paths import build_dir, replace_dir, resolve, write_json

log = logging.getLogger(__name__)

DRIFT_JSON = "drift.json"


class NoPromotedModelError(RuntimeError):
    """Nothing to monitor: no model has been promoted yet."""


@dataclass(frozen=True)
class Windows:
    reference: pd.DataFrame
    current: pd.DataFrame
    error_reference: pd.DataFrame
    trained_until: pd.Timestamp

    def describe(self) -> dict:
        def span(frame: pd.DataFrame) -> dict:
            created = frame["creationdate"]
            return {"start": str(created.min()) if len(frame) else None,
                    "end": str(created.max()) if len(frame) else None, "tasks": len(frame)}

        return {"trained_until": str(self.trained_until), "reference": span(self.reference),
                "current": span(self.current), "error_reference": span(self.error_reference)}


def choose_windows(features: pd.DataFrame, trained_from: pd.Timestamp, trained_until: pd.Timestamp,
                   settings: MonitorParams) -> Windows:
    created = pd.to_datetime(features["creationdate"])
    newest = created.max()
    current_start = max(newest - pd.Timedelta(days=settings.current_days), trained_until)
    current = features[(created > current_start) & (created > trained_until)]
    reference_start = trained_from
    if settings.reference_days is not None:
        reference_start = max(trained_from, trained_until - pd.Timedelta(days=settings.reference_days))
    reference = features[(created >= reference_start) & (created <= trained_until)]
    error_reference = features[(created > trained_until) & (created <= current_start)]
    return Windows(reference, current, error_reference, trained_until)


def request_quantile_alpha(name: str) -> float:
    return dict(zip(QUANTILE_COLUMNS, QUANTILES, strict=True))[name]


def task_errors(target: str, labels: pd.Series, request: pd.Series, request_quantile: str) -> pd.Series:
    """Per task, the pinball loss of the request quantile (on log1p for skewed targets); NaN without a label."""
    spec = TARGETS[target]
    losses = quantile_losses(spec.to_model_space(labels), spec.to_model_space(request),
                             request_quantile_alpha(request_quantile))
    return pd.Series(losses, index=labels.index)


def _promoted(params: Params) -> list[Promoted]:
    promoted = load_promoted(resolve(params.paths.promoted), list(params.targets))
    if not promoted:
        raise NoPromotedModelError("no promoted model to monitor: run the pipeline (make run) first")
    return promoted


def _predictions(promoted: list[Promoted], frame: pd.DataFrame) -> pd.DataFrame:
    """Each promoted target's request prediction (and, with a label, its error) for feature rows."""
    out = {}
    for model in promoted:
        if len(frame) == 0:
            out[f"pred_{model.target}"] = pd.Series(dtype="float64")
            out[f"error_{model.target}"] = pd.Series(dtype="float64")
            continue
        quantile = model.info["request_quantile"]
        request = model.candidate.predict(frame)[quantile].set_axis(frame.index)
        out[f"pred_{model.target}"] = request
        out[f"error_{model.target}"] = task_errors(model.target, frame[f"label_{model.target}"], request, quantile)
    return pd.DataFrame(out, index=frame.index)


def _reference_error(model, reference_errors: pd.Series, min_labelled: int) -> tuple[float, str]:
    """The served model's own mean error on the tasks after its training window and before the current one
    (out of sample for its fit), when enough are labelled; else its configuration's test-window error."""
    known = reference_errors.dropna()
    if len(known) >= min_labelled:
        return float(known.mean()), f"{len(known)} labelled tasks before the current window"
    return float(model.info["test_metrics"].get("pinball_request", float("nan"))), "the test window (promotion)"


def decide(features: DriftResult, errors: dict[str, dict], rule) -> tuple[bool, list[str]]:
    """(retrain?, reasons) by the retrain rule of params.yaml."""
    reasons = []
    share = features.drifted_share
    if features.columns and share >= rule.drifted_features_share:
        drifted = sorted(c for c, d in features.columns.items() if d.drifted)
        reasons.append(f"{share:.0%} of the features drifted (rule: >= {rule.drifted_features_share:.0%}): "
                       + ", ".join(drifted))
    for target, error in errors.items():
        if error["exceeds_margin"]:
            reasons.append(f"{target}: mean error {error['current']:.4g} on {error['labelled']} labelled current "
                           f"tasks vs {error['reference']:.4g} on {error['reference_from']} "
                           f"(rule: > x{1 + rule.error_margin:g})")
    return bool(reasons), reasons


def _drift_dict(result: DriftResult) -> dict:
    return {"columns": {c: d.to_dict() for c, d in result.columns.items()}, "skipped": result.skipped}


def monitor(features: pd.DataFrame, promoted: list[Promoted], params: Params, out_dir: Path) -> dict:
    """Compare the windows, write the Evidently pages into `out_dir`, and return drift.json's content."""
    settings = params.monitor
    methods = DriftMethods(settings.num_method, settings.cat_method, settings.num_threshold,
                           settings.cat_threshold)
    windows_of = [m.info["data_window"] for m in promoted]
    trained_until = max(pd.Timestamp(w["train_end"]) for w in windows_of)
    trained_from = min(pd.Timestamp(w["train_start"]) for w in windows_of)
    windows = choose_windows(features, trained_from, trained_until, settings)
    report = {
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": {m.target: m.info["version"] for m in promoted},
        "windows": windows.describe(),
        "rule": settings.retrain.model_dump(),
    }
    if len(windows.current) < settings.min_tasks or len(windows.reference) < settings.min_tasks:
        why = (f"{len(windows.current)} current and {len(windows.reference)} reference tasks: fewer than "
               f"monitor.min_tasks={settings.min_tasks}, so no verdict")
        log.warning(why)
        report |= {"verdict": "insufficient_data", "retrain": False, "reasons": [why], "features": None,
                   "predictions": None, "errors": None, "pages": {}}
        write_index(out_dir / "index.html", report)
        return report

    feature_result = column_drift(
        windows.reference, windows.current, list(NUMERIC_FEATURES), list(CATEGORICAL_FEATURES), methods,
        "Feature drift", out_dir / "features.html")
    reference_out = _predictions(promoted, windows.reference)
    current_out = _predictions(promoted, windows.current)
    prediction_columns = [f"pred_{m.target}" for m in promoted]
    prediction_result = column_drift(reference_out, current_out, prediction_columns, [], methods,
                                     "Prediction drift", out_dir / "predictions.html")

    error_reference = _predictions(promoted, windows.error_reference)
    error_result = column_drift(error_reference, current_out, [f"error_{m.target}" for m in promoted], [],
                                methods, "Error drift", out_dir / "errors.html")
    errors = {}
    for model in promoted:
        column = f"error_{model.target}"
        labelled = int(current_out[column].notna().sum())
        current_error = float(current_out[column].mean()) if labelled else float("nan")
        reference_error, source = _reference_error(model, error_reference[column], settings.retrain.min_labelled)
        enough = labelled >= settings.retrain.min_labelled
        drift: ColumnDrift | None = error_result.columns.get(column)
        errors[model.target] = {
            "labelled": labelled, "current": current_error, "reference": reference_error, "reference_from": source,
            "ratio": current_error / reference_error if reference_error > 0 else float("nan"),
            "exceeds_margin": bool(enough and current_error > reference_error * (1 + settings.retrain.error_margin)),
            "drift": drift.to_dict() if drift else None,
            "skipped": error_result.skipped.get(column) or (None if enough else
                                                             f"{labelled} labelled current tasks < min_labelled"),
        }

    retrain, reasons = decide(feature_result, errors, settings.retrain)
    report |= {
        "verdict": "drift" if retrain else "no_drift",
        "retrain": retrain,
        "reasons": reasons,
        "features": {"drifted_share": feature_result.drifted_share,
                     "drifted": sorted(c for c, d in feature_result.columns.items() if d.drifted),
                     **_drift_dict(feature_result)},
        "predictions": _drift_dict(prediction_result),
        "errors": errors,
        "pages": {name: result.html.name for name, result in (
            ("features", feature_result), ("predictions", prediction_result), ("errors", error_result))
            if result.html is not None},
    }
    write_index(out_dir / "index.html", report)
    return report


def run_monitor(params: Params) -> dict:
    """The monitor stage entry point: reports/drift/*.html and reports/drift.json, both replaced atomically."""
    promoted = _promoted(params)
    features = pd.read_parquet(resolve(params.paths.features) / "features.parquet")
    pages = resolve(params.paths.drift_reports)
    build = build_dir(pages)
    report = monitor(features, promoted, params, build)
    replace_dir(build, pages)
    report["pages"] = {name: str(pages / page) for name, page in report["pages"].items()}
    report["pages"]["index"] = str(pages / "index.html")
    write_json(drift_json_path(params), report)
    log.info("drift check: %s%s", report["verdict"], "; retrain: " + "; ".join(report["reasons"])
             if report["retrain"] else "")
    return report


def drift_json_path(params: Params) -> Path:
    pages = resolve(params.paths.drift_reports)
    return pages.parent / DRIFT_JSON
