"""The BentoML service: POST /predict, GET /metadata, and BentoML's own /livez and /readyz.

The promoted model of every target is a class attribute (`BentoModel`), so `bentoml build` packages
them into the Bento; `scoutless serve` registers the project's promoted models first and serves those.
/predict is asynchronous: a request is validated on the worker's event loop, then waits for its batch
(serving.batching).
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import bentoml
from fastapi import FastAPI

from scoutless.params import TARGETS
from scoutless.serving.registry import ACCESS_LOG_ENV, SERVICE_CONFIG, WORKERS_ENV, model_name
from scoutless.serving.request_gate import DEFAULT_MAX_BYTES, LIMITS, RequestGate, quiet_client_error_tracebacks
from scoutless.serving.schema import PredictResponse, TaskSpec, check_limits
from scoutless.telemetry import disable_telemetry

disable_telemetry()
info_app = FastAPI(title="scoutless metadata")
# serving.workers and serving.access_log as `scoutless serve` passes them; a Bento run on its own: one worker per
# core, no access log (the params' defaults)
WORKERS = os.environ.get(WORKERS_ENV, "cpu_count")
ACCESS_LOG = os.environ.get(ACCESS_LOG_ENV, "false") == "true"


@bentoml.service(name="scoutless", workers=int(WORKERS) if WORKERS.isdigit() else WORKERS, traffic={"timeout": 60},
                  logging={"access": {"enabled": ACCESS_LOG}})
@bentoml.asgi_app(info_app, path="/metadata")
class Scoutless:
    ramcount = bentoml.models.BentoModel(f"{model_name('ramcount')}:latest")
    cputime = bentoml.models.BentoModel(f"{model_name('cputime')}:latest")
    cpuefficiency = bentoml.models.BentoModel(f"{model_name('cpuefficiency')}:latest")
    iointensity = bentoml.models.BentoModel(f"{model_name('iointensity')}:latest")
    outdiskcount = bentoml.models.BentoModel(f"{model_name('outdiskcount')}:latest")
    workdiskcount = bentoml.models.BentoModel(f"{model_name('workdiskcount')}:latest")

    def __init__(self) -> None:
        from scoutless.serving.batching import MicroBatcher
        from scoutless.serving.predictor import Predictor
        from scoutless.serving.stage import HISTORY_DIR_ENV

        folders = [Path(getattr(self, target).path) for target in TARGETS]
        history = os.environ.get(HISTORY_DIR_ENV)
        self.predictor = Predictor.from_folders(folders, Path(history) if history else None)
        config = json.loads((folders[0] / SERVICE_CONFIG).read_text())
        self.max_batch, self.max_corecount = config["max_batch"], config.get("max_corecount")
        # concurrent requests answered together, up to a request's own limit of tasks
        self.batcher = MicroBatcher(self.predictor.predict_many, len, self.max_batch)
        self.predictor.index_history()
        # The models and the snapshot's dictionaries live as long as the worker: millions of objects at 1M
        # tasks, which every full collection would walk again, a pause felt by the requests of that moment.
        gc.collect()
        gc.freeze()
        quiet_client_error_tracebacks()
        LIMITS.update(max_request_bytes=config.get("max_request_bytes", DEFAULT_MAX_BYTES),
                      max_batch=self.max_batch, max_corecount=self.max_corecount)

    @info_app.get("/")
    def metadata(self) -> dict:
        """Per target: the winner, its version, data windows and test metrics; the history's as-of."""
        return self.predictor.metadata()

    @bentoml.api(route="/predict")
    async def predict(self, tasks: list[TaskSpec]) -> PredictResponse:
        """Resources for each task, in the order given, in PanDA's units, with q50/q90/q95 and the
        value JEDI should set (`request`)."""
        if not tasks:
            raise bentoml.exceptions.InvalidArgument("tasks: the list is empty; send at least one task")
        if len(tasks) > self.max_batch:
            raise bentoml.exceptions.InvalidArgument(
                f"tasks: {len(tasks)} tasks exceed the batch limit of {self.max_batch} (serving.max_batch)")
        if self.max_corecount is not None:
            try:
                check_limits(tasks, self.max_corecount)
            except ValueError as exc:
                raise bentoml.exceptions.InvalidArgument(str(exc)) from exc
        return await self.batcher.answer(tasks)


Scoutless.add_asgi_middleware(RequestGate)
