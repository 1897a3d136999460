"""Telemetry of the tools scoutless drives is off unless the operator turns it on explicitly."""

import os

TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "BENTOML_DO_NOT_TRACK": "True",
    "DO_NOT_TRACK": "1",
}


def disable_telemetry() -> None:
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)
