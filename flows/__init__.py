"""Prefect flows: one per stage, the pipeline, the retrain and the drift check, and their deployments.

Thin by design: every task calls a stage function (the same ones the CLI and the DVC stages call) and adds
retries on archive reads, logs, artifacts and schedules.
"""

import logging
import os

# The stages log through their packages' loggers; Prefect ships these to the run's logs too, from INFO up.
STAGE_LOGGERS = "archive,validation,features,models,monitoring,serving,scoutless"
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", STAGE_LOGGERS)
for name in STAGE_LOGGERS.split(","):
    logging.getLogger(name).setLevel(logging.INFO)
