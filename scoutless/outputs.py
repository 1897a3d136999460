"""Where a pipeline run left what an operator looks at: reports, models, the Bento."""

from __future__ import annotations

import json

from scoutless.params import Params
from scoutless.paths import resolve


def output_locations(params: Params) -> dict[str, str]:
    """The main outputs that exist, by name; the Bento by its tag in the project's BentoML store."""
    artifacts = resolve(params.paths.artifacts)
    drift = resolve(params.paths.drift_reports)
    replay = resolve(params.paths.replay_reports)
    candidates = {
        "validation report": resolve(params.paths.validation_reports) / "index.html",
        "leaderboard": artifacts / "leaderboard.md",
        "model cards": artifacts / "cards",
        "plots": artifacts / "plots",
        "promoted models": resolve(params.paths.promoted),
        "drift report": drift / "index.html",
        "drift numbers": drift.parent / "drift.json",
        "replay report": replay / "index.html",
        "replay numbers": replay.parent / "replay.json",
    }
    found = {name: str(path) for name, path in candidates.items() if path.exists()}
    bento = artifacts / "bento.json"
    if bento.exists():
        built = json.loads(bento.read_text())
        found["bento"] = f"{built['bento']} (BentoML store {built['bentoml_home']})"
    return found
