"""The promoted models of every target, answering for task specs with the features training used.

Used by the BentoML service, by `scoutless predict FILE` and by the tests. Two ways from a task's fields to
the values JEDI should set, giving the same answers (tests/service/test_service.py): `predict_frame`, with
pandas over a frame of tasks (files, the backtest), and `answer`, the service's hot path, task by task over
dicts: the same feature functions, the history snapshot as dictionaries (HistoryIndex), one encoding per
model, the trees compiled (models.compiled), the response as plain dicts. History features come from the
project's history artifact when one is given (models.refresh; reloaded whenever it is refreshed, checked at
every request), else from the snapshot promoted with the models (a Bento deployed on its own). The
artifact's calibration replaces a model's conformal offsets when it was computed for that very model version.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from scoutless.features.build import submission_features, task_features
from scoutless.features.history import HistoryIndex, history_features
from scoutless.features.history_artifact import INFO_FILE, read_calibration, read_history_info
from scoutless.models.calibration import ConformalOffsets
from scoutless.models.candidates import Candidate, LearnedCandidate
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
from scoutless.serving.schema import PredictResponse, TaskSpec

IO_HIGH_KBPS = 500.0  # JEDI's brokerage threshold for I/O-intensive tasks
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROUNDED = ("q50", "q90", "q95", "request", "expected_job_failure")   # answered to 6 decimals


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
    def load(cls, folder: Path, snapshots: dict[str, pd.DataFrame], compiled: bool = True) -> PromotedModel:
        """Load one promoted target; targets promoted together share one snapshot (`snapshots`, by
        content), so that a request computes their history features once. `compiled`: the candidate answers
        through models.compiled (a learned one's trees where its model can be compiled)."""
        info = json.loads((folder / PROMOTION_FILE).read_text())
        content = (folder / SNAPSHOT_FILE).read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest not in snapshots:
            snapshots[digest] = pd.read_parquet(folder / SNAPSHOT_FILE)
        snapshot = snapshots[digest]
        candidate = Candidate.load(folder / MODEL_DIR, TARGETS[info["target"]])
        if compiled:
            candidate.compile()
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
        self._indexes: dict[int, tuple[pd.DataFrame, HistoryIndex]] = {}   # by id of the snapshot they index
        # Candidates fitted on the same features keep the same categories: a request encodes once per encoding.
        self._encodings = {model.target: json.dumps(model.candidate.encoder.to_dict(), sort_keys=True)
                           for model in models if isinstance(model.candidate, LearnedCandidate)}
        versions = "|".join(sorted(m.info["version"] for m in models))
        self.model_version = "scoutless-" + hashlib.sha256(versions.encode()).hexdigest()[:12]
        self.history_dir = history_dir
        self.history_info: dict | None = None
        self._history_stamp: tuple | None = None
        self.refresh_history()

    @classmethod
    def from_folders(cls, folders: list[Path], history_dir: Path | None = None, compiled: bool = True) -> Predictor:
        """The models in `folders`, which must be one promotion: a set of two is refused, naming the strays."""
        infos = {folder.name: json.loads((folder / PROMOTION_FILE).read_text()) for folder in folders}
        if infos:
            check_promotion(infos, next(iter(infos.values())).get("promotion"), "promoted models to serve")
        snapshots: dict[str, pd.DataFrame] = {}
        return cls([PromotedModel.load(folder, snapshots, compiled) for folder in folders], history_dir)

    @classmethod
    def from_promoted(cls, root: Path, targets: list[str], history_dir: Path | None = None,
                      compiled: bool = True) -> Predictor:
        """Every one of `targets` from the current promotion under `root`."""
        infos = promoted_infos(root)
        missing = [target for target in targets if target not in infos]
        if infos and missing:
            raise PromotedSetError(f"{root}: the promotion lacks {', '.join(missing)}: run `scoutless select`")
        return cls.from_folders([root / target for target in targets if target in infos], history_dir, compiled)

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

    def _history_index(self, model: PromotedModel) -> HistoryIndex:
        """The snapshot of `model` as dictionaries, built once per snapshot (and again after a refresh)."""
        entry = self._indexes.get(id(model.snapshot))
        if entry is None or entry[0] is not model.snapshot:   # kept with its snapshot: an id is never reused
            live = {id(m.snapshot): m.snapshot for m in self.models}
            self._indexes = {k: v for k, v in self._indexes.items() if live.get(k) is v[0]}
            entry = self._indexes[id(model.snapshot)] = (model.snapshot, HistoryIndex(model.snapshot,
                                                                                      model.history_targets))
        return entry[1]

    def index_history(self) -> None:
        """Build every snapshot's dictionaries now rather than at the first request."""
        for model in self.models:
            self._history_index(model)

    def answer(self, tasks: list[dict], failed_ramcount: list[float | None] | None = None) -> dict:
        """The response to tasks given as dicts of their fields (TaskSpec.row()), as plain dicts: what
        `predict_frame` gives for them, without pandas. `failed_ramcount`: per task, the ramcount a job of
        it ran out of memory at (None: none did)."""
        self.refresh_history()
        now = _nanoseconds(datetime.now(UTC))
        own = [task_features(task) for task in tasks]
        created = [_created_ns(task.get("creationdate"), now) for task in tasks]
        failed = failed_ramcount or [None] * len(tasks)
        predictions: list[dict] = [{"jeditaskid": task.get("jeditaskid")} for task in tasks]
        rows: dict[int, list[dict]] = {}
        codes: dict[tuple, np.ndarray] = {}
        for model in self.models:
            if id(model.snapshot) not in rows:
                index = self._history_index(model)
                rows[id(model.snapshot)] = [row | dict(zip(index.names, index.features(row, at).tolist(), strict=True))
                                            for row, at in zip(own, created, strict=True)]
            mine = rows[id(model.snapshot)]
            encoding = (id(model.snapshot), self._encodings.get(model.target))
            if encoding[1] is not None and encoding not in codes:
                codes[encoding] = model.candidate.encoder.encode(mine)
            columns = model.candidate.predict_rows(mine, codes.get(encoding))
            fixed = dict(request_policy=None, unit=model.info["unit"], request_quantile=model.info["request_quantile"],
                         model_version=model.info["version"], retry=None)
            # one array rounded in place: cheap for one task (column_stack and a new array are not) and for 1,000
            block = np.empty((len(ROUNDED), len(tasks)))
            for k, name in enumerate(ROUNDED):
                block[k] = columns[name]
            values = np.round(block, 6, out=block).T.tolist()
            for i, prediction in enumerate(predictions):
                answer = dict(zip(ROUNDED, values[i], strict=True)) | fixed
                if math.isnan(answer["expected_job_failure"]):
                    answer["expected_job_failure"] = None
                answer["request_policy"] = columns["request_policy"][i]
                if model.candidate.spec.reserves_memory and failed[i] is not None:
                    need = columns.get("job_need")
                    answer["retry"] = self._retry(model, None if need is None else need[i], failed[i])
                if model.target == "iointensity":
                    answer["class"] = "high" if answer["q50"] > IO_HIGH_KBPS else "low"
                prediction[model.target] = answer
        return {"model_version": self.model_version, "predictions": predictions}

    def predict(self, tasks: list[TaskSpec]) -> PredictResponse:
        return self.predict_many([tasks])[0]

    def predict_many(self, requests: list[list[TaskSpec]]) -> list[PredictResponse]:
        """The response to each of several requests, answered together (serving.batching)."""
        tasks = [task for request in requests for task in request]
        answer = self.answer([task.row() for task in tasks], [task.failed_ramcount for task in tasks])
        responses, start = [], 0
        for request in requests:
            predictions = answer["predictions"][start:start + len(request)]
            responses.append(PredictResponse.model_validate({"model_version": answer["model_version"],
                                                             "predictions": predictions}))
            start += len(request)
        return responses

    @staticmethod
    def _retry(model: PromotedModel, need: np.ndarray | None, failed_at: float) -> dict:
        """The memory to ask next for a job of this task that ran out at `failed_at`."""
        candidate = model.candidate
        asked, failure = job_retry(candidate.spec, need, candidate.job_calibration.levels
                                   if candidate.job_calibration else (), failed_at, candidate.request_costs)
        return dict(failed_at=failed_at, request=float(np.round(asked, 6)),
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


def _nanoseconds(moment: datetime) -> int:
    """A moment (naive: UTC) in nanoseconds since the epoch, to the microsecond a datetime holds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _created_ns(value, now: int) -> int:
    """A task's creationdate in nanoseconds since the epoch (UTC), as predict_frame reads it: `now` when it has
    none or it is not a date."""
    if value is None:
        return now
    if isinstance(value, datetime) and not isinstance(value, pd.Timestamp) and value is not pd.NaT:
        return _nanoseconds(value)   # what TaskSpec gives: the fast way
    moment = pd.to_datetime(value, errors="coerce", utc=True)
    return now if pd.isna(moment) else int(moment.value)
