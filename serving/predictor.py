"""The promoted models of every target, answering for task specs with the features training used.

Used by the BentoML service, by `scoutless predict FILE` and by the tests: one code path from a task's
fields to the values JEDI should set. History features come from the project's history artifact when one
is given (models.refresh; reloaded whenever it is refreshed, checked at every request), else from the
snapshot promoted with the models (a Bento deployed on its own). The artifact's calibration replaces a
model's conformal offsets when it was computed for that very model version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.features.build import submission_features
from scoutless.features.history import history_features
from scoutless.features.history_artifact import INFO_FILE, read_calibration, read_history_info
from scoutless.models.calibration import ConformalOffsets
from scoutless.models.candidates import Candidate
from scoutless.models.layout import (
    MODEL_DIR,
    PROMOTION_FILE,
    SNAPSHOT_FILE,
    PromotedSetError,
    check_promotion,
    promoted_infos,
)
from scoutless.models.requests import job_retry
from scoutless.models.targets import TARGETS
from scoutless.serving.schema import (
    IOPrediction,
    PredictResponse,
    RetryAdvice,
    TargetPrediction,
    TaskPrediction,
    TaskSpec,
)

IO_HIGH_KBPS = 500.0  # JEDI's brokerage threshold for I/O-intensive tasks


def snapshot_targets(snapshot: pd.DataFrame) -> list[str]:
    """The targets a history snapshot holds statistics of (its sum_<target> columns)."""
    return [c[len("sum_"):] for c in snapshot.columns if c.startswith("sum_")]


@dataclass
class PromotedModel:
    target: str
    candidate: Candidate
    snapshot: pd.DataFrame
    history_targets: list[str]
    info: dict
    promoted_calibration: ConformalOffsets | None = None
    promoted_job_calibration: ConformalOffsets | None = None
    calibrated_as_of: str | None = None

    @classmethod
    def load(cls, folder: Path, snapshots: dict[str, pd.DataFrame]) -> PromotedModel:
        """Load one promoted target; targets promoted together share one snapshot (`snapshots`, by
        content), so that a request computes their history features once."""
        info = json.loads((folder / PROMOTION_FILE).read_text())
        content = (folder / SNAPSHOT_FILE).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest not in snapshots:
            snapshots[digest] = pd.read_parquet(folder / SNAPSHOT_FILE)
        snapshot = snapshots[digest]
        candidate = Candidate.load(folder / MODEL_DIR, TARGETS[info["target"]])
        promoted = getattr(candidate, "calibration", None)
        calibrates = promoted is not None or candidate.job_calibration is not None
        return cls(info["target"], candidate, snapshot, snapshot_targets(snapshot), info, promoted,
                   candidate.job_calibration, info.get("as_of") if calibrates else None)

    def take_calibration(self, refreshed: dict) -> None:
        """The offsets (quantiles, request) a history refresh computed for this very model version, else those
        it was promoted with."""
        entry = refreshed.get(self.target)
        if entry is None or entry.get("version") != self.info["version"]:
            entry = {}
        if self.promoted_calibration is not None:
            self.candidate.calibration = (ConformalOffsets.from_dict(entry["offsets"]) if "offsets" in entry
                                          else self.promoted_calibration)
        if self.promoted_job_calibration is not None:
            self.candidate.job_calibration = (ConformalOffsets.from_dict(entry["job_offsets"])
                                              if "job_offsets" in entry else self.promoted_job_calibration)
        if self.calibrated_as_of is not None:
            self.calibrated_as_of = entry.get("as_of", self.info.get("as_of"))


class Predictor:
    def __init__(self, models: list[PromotedModel], history_dir: Path | None = None):
        if not models:
            raise ValueError("no promoted model to serve: run the pipeline (make run) first")
        self.models = models
        versions = "|".join(sorted(m.info["version"] for m in models))
        self.model_version = "scoutless-" + hashlib.sha256(versions.encode()).hexdigest()[:12]
        self.history_dir = history_dir
        self.history_info: dict | None = None
        self._history_stamp: tuple | None = None
        self.refresh_history()

    @classmethod
    def from_folders(cls, folders: list[Path], history_dir: Path | None = None) -> Predictor:
        """The models in `folders`, which must be one promotion: a set of two is refused, naming the strays."""
        infos = {folder.name: json.loads((folder / PROMOTION_FILE).read_text()) for folder in folders}
        if infos:
            check_promotion(infos, next(iter(infos.values())).get("promotion"), "promoted models to serve")
        snapshots: dict[str, pd.DataFrame] = {}
        return cls([PromotedModel.load(folder, snapshots) for folder in folders], history_dir)

    @classmethod
    def from_promoted(cls, root: Path, targets: list[str], history_dir: Path | None = None) -> Predictor:
        """Every one of `targets` from the current promotion under `root`."""
        infos = promoted_infos(root)
        missing = [target for target in targets if target not in infos]
        if infos and missing:
            raise PromotedSetError(f"{root}: the promotion lacks {', '.join(missing)}: run `scoutless select`")
        return cls.from_folders([root / target for target in targets if target in infos], history_dir)

    def refresh_history(self) -> None:
        """Take the history artifact if it changed since the last look (one stat() when it did not)."""
        if self.history_dir is None:
            return
        try:
            stat = (self.history_dir / INFO_FILE).stat()
        except FileNotFoundError:
            return
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._history_stamp:
            return
        snapshot = pd.read_parquet(self.history_dir / SNAPSHOT_FILE)
        calibration = read_calibration(self.history_dir)
        for model in self.models:
            model.snapshot = snapshot
            model.history_targets = snapshot_targets(snapshot)
            model.take_calibration(calibration)
        self.history_info, self._history_stamp = read_history_info(self.history_dir), stamp


    def predict_frame(self, tasks: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Quantiles per target for tasks given as a frame of jedi_tasks fields (plus input totals)."""
        self.refresh_history()
        tasks = tasks.reset_index(drop=True)
        now = pd.Timestamp(datetime.now(UTC).replace(tzinfo=None))
        created = pd.to_datetime(tasks.get("creationdate"), errors="coerce", utc=True)
        tasks = tasks.assign(creationdate=created.dt.tz_convert(None).fillna(now) if created is not None else now)
        own = submission_features(tasks)
        with_own = tasks.assign(**own)
        features: dict[int, pd.DataFrame] = {}
        out = {}
        for model in self.models:
            key = id(model.snapshot)
            if key not in features:
                history = history_features(with_own, model.snapshot, model.history_targets)
                features[key] = pd.concat([own, history], axis=1)
            out[model.target] = model.candidate.predict(features[key])
        return out

    def predict(self, tasks: list[TaskSpec]) -> PredictResponse:
        frame = pd.DataFrame([task.row() for task in tasks])
        quantiles = self.predict_frame(frame)
        predictions = []
        for i, task in enumerate(tasks):
            answer: dict = {"jeditaskid": task.jeditaskid}
            for model in self.models:
                row = quantiles[model.target].iloc[i]
                request_quantile = model.info["request_quantile"]
                values = {q: float(np.round(row[q], 6)) for q in ("q50", "q90", "q95")}
                failure = row.get("expected_job_failure")
                fields = dict(unit=model.info["unit"], **values, request=float(np.round(row["request"], 6)),
                              expected_job_failure=None if pd.isna(failure) else float(np.round(failure, 6)),
                              request_policy=row["request_policy"], request_quantile=request_quantile,
                              model_version=model.info["version"])
                if model.candidate.spec.reserves_memory and task.failed_ramcount is not None:
                    fields["retry"] = self._retry(model, row, task.failed_ramcount)
                if model.target == "iointensity":
                    answer[model.target] = IOPrediction(
                        **fields, io_class="high" if values["q50"] > IO_HIGH_KBPS else "low")
                else:
                    answer[model.target] = TargetPrediction(**fields)
            predictions.append(TaskPrediction(**answer))
        return PredictResponse(model_version=self.model_version, predictions=predictions)

    @staticmethod
    def _retry(model: PromotedModel, row: pd.Series, failed_at: float) -> RetryAdvice:
        """The memory to ask next for a job of this task that ran out at `failed_at`."""
        need = row.get("job_need")
        candidate = model.candidate
        asked, failure = job_retry(candidate.spec, need if isinstance(need, np.ndarray) else None,
                                   candidate.job_calibration.levels if candidate.job_calibration else (),
                                   failed_at, candidate.request_costs)
        return RetryAdvice(failed_at=failed_at, request=float(np.round(asked, 6)),
                           expected_job_failure=None if failure is None else float(np.round(failure, 6)),
                           rule="vpa" if failure is None else "predictive")

    def metadata(self) -> dict:
        self.refresh_history()
        history = ({"source": "history artifact", **self.history_info} if self.history_info else
                   {"source": "promoted snapshot", "as_of": self.models[0].info.get("as_of")})
        return {
            "model_version": self.model_version,
            "promotion": self.models[0].info.get("promotion"),   # one for all targets (from_folders checks)
            "history": history,
            "targets": {
                m.target: {key: m.info.get(key) for key in ("candidate", "version", "unit", "request_quantile",
                                                             "promoted_at", "as_of", "data_window", "test_metrics")}
                | {"calibrated_as_of": m.calibrated_as_of}
                for m in self.models
            },
        }
