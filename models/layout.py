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
# Beside the target folders: which promotion they are, all of them, swapped into place together.
SET_FILE = "promotion_set.json"


class PromotedSetError(RuntimeError):
    """The promoted models are not one whole promotion: a folder is missing or from another promotion."""


def read_promotion_set(root: Path) -> dict | None:
    """The promotion the promoted folders under `root` belong to (SET_FILE), or None when nothing is promoted."""
    path = root / SET_FILE
    if path.exists():
        return json.loads(path.read_text())
    if any(root.glob(f"*/{PROMOTION_FILE}")):
        raise PromotedSetError(f"{root} holds promoted models but no {SET_FILE}: run `scoutless select` again")
    return None


def check_promotion(infos: dict[str, dict], promotion: str | None, where: str) -> None:
    """Every promotion.json in `infos` (target -> info) belongs to `promotion`, else one line saying which not."""
    strays = {target: info.get("promotion") for target, info in infos.items() if info.get("promotion") != promotion}
    if strays:
        found = ", ".join(f"{target} from {stray or 'no promotion'}" for target, stray in sorted(strays.items()))
        raise PromotedSetError(f"{where}: the models are not one promotion ({promotion} expected; {found})")


def promoted_infos(root: Path) -> dict[str, dict]:
    """target -> promotion.json of the current promotion under `root`, checked whole ({} when none): a target
    its SET_FILE names but whose folder is missing, or a folder of another promotion, raises PromotedSetError."""
    promotion = read_promotion_set(root)
    if promotion is None:
        return {}
    infos, missing = {}, []
    for target in promotion["targets"]:
        info = read_promotion(root / target)
        if info is None:
            missing.append(target)
        else:
            infos[target] = info
    if missing:
        raise PromotedSetError(f"{root}: promotion {promotion['promotion']} lacks {', '.join(missing)}: restore "
                               f"the folder (`dvc checkout {root.name}`) or remove {root} to promote anew")
    check_promotion(infos, promotion["promotion"], str(root))
    return infos


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
    """The promoted model of each of `targets` that the current promotion under `root` holds."""
    from scoutless.models.candidates import Candidate
    from scoutless.models.targets import TARGETS

    infos = promoted_infos(root)
    return [Promoted(target, infos[target], Candidate.load(root / target / MODEL_DIR, TARGETS[target]))
            for target in targets if target in infos]
