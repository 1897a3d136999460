"""The layout of a promoted model's folder, shared by selection (which writes it) and serving (which
reads it): the candidate's files, the history snapshot its features need, and promotion.json."""

import json
from pathlib import Path

MODEL_DIR = "model"
PROMOTION_FILE = "promotion.json"
SNAPSHOT_FILE = "history_snapshot.parquet"


def read_promotion(folder: Path) -> dict | None:
    """A promoted folder's promotion.json, or None when nothing is promoted there."""
    path = folder / PROMOTION_FILE
    return json.loads(path.read_text()) if path.exists() else None
