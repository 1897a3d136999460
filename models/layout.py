"""The layout of a promoted model's folder, shared by selection (which writes it), serving and monitoring
(which read it): the candidate's files, the history snapshot its features need, and promotion.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scoutless.models.candidates import Candidate

MODEL_DIR = "model"
PROMOTION_FILE = "promotion.json"
SNAPSHOT_FILE = "history_snapshot.parquet"


def read_promotion(folder: Path) -> dict | None:
    """A promoted folder's promotion.json, or None when nothing is promoted there."""
    path = folder / PROMOTION_FILE
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Promoted:
    target: str
    info: dict               # promotion.json
    candidate: Candidate     # with the offsets it was promoted with


def load_promoted(root: Path, targets: list[str]) -> list[Promoted]:
    """The promoted model of each of `targets` that has one under `root`."""
    from scoutless.models.candidates import Candidate
    from scoutless.models.targets import TARGETS

    out = []
    for target in targets:
        info = read_promotion(root / target)
        if info is not None:
            out.append(Promoted(target, info, Candidate.load(root / target / MODEL_DIR, TARGETS[target])))
    return out
