"""Prefect flows: one per stage, the pipeline, the retrain and the drift check, and their deployments.

Thin by design: every task calls a stage function (the same ones the CLI and the DVC stages call) and adds
retries on archive reads, logs, artifacts and schedules.
"""

import logging
import os

# The stages log through the loggers of their modules, all under `scoutless`; Prefect ships these to the
# run's logs too, from INFO up.
STAGE_LOGGER = "scoutless"
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", STAGE_LOGGER)
logging.getLogger(STAGE_LOGGER).setLevel(logging.INFO)
