"""The select stage: per target, the winner among the candidates that can answer at submission time,
promoted only through a quality gate; then the leaderboard, model cards and plots.

Winner: the servable candidate with the lowest `select.metric` on the holdout. Gate: the currently
promoted model of the target is scored again on the same holdout; the winner replaces it only if it
does better (or if nothing is promoted yet). When it does not, the stage fails or warns and keeps the
promoted model, as `select.gate` says. Promotion swaps a fully written folder into
artifacts/promoted/<target>/: the candidate's files, the history snapshot its features need, and
promotion.json (version, data window, holdout metrics).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.build import feature_columns
from models.candidates import Candidate
from models.layout import MODEL_DIR, PROMOTION_FILE, SNAPSHOT_FILE
from models.metrics import QUANTILE_COLUMNS
from models.report import leaderboard, model_card, write_plots
from models.targets import TARGETS
from models.train import holdout_rows, score
from scoutless.params import Params
from scoutless.paths import atomic_path, build_dir, replace_dir, resolve, write_json

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """A new winner did not beat the promoted model and select.gate is "fail"."""


def _finite(value) -> float:
    return value if isinstance(value, int | float) and math.isfinite(value) else math.inf


def choose_winner(metrics: dict[str, dict], metric: str) -> str:
    servable = {name: m for name, m in metrics.items() if m.get("servable") and math.isfinite(_finite(m.get(metric)))}
    if not servable:
        raise ValueError(f"no servable candidate has a finite {metric}")
    return min(servable, key=lambda name: servable[name][metric])


def model_version(folder: Path) -> str:
    """A content hash of the model's files: the same model always has the same version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PROMOTION_FILE):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def read_promotion(folder: Path) -> dict | None:
    path = folder / PROMOTION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def promote(target: str, winner: str, params: Params, metrics: dict, window: dict) -> dict:
    """Copy the winner and its history snapshot into artifacts/promoted/<target>/, atomically."""
    promoted_root = resolve(params.paths.promoted)
    build = build_dir(promoted_root / target)
    shutil.copytree(resolve(params.paths.models) / target / winner, build / MODEL_DIR)
    shutil.copy2(resolve(params.paths.features) / SNAPSHOT_FILE, build / SNAPSHOT_FILE)
    info = {
        "target": target, "candidate": winner, "version": f"{target}-{winner}-{model_version(build)}",
        "unit": TARGETS[target].unit, "request_quantile": params.train.request_quantile.get(target, "q90"),
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "data_window": window,
        "holdout_metrics": metrics,
    }
    write_json(build / PROMOTION_FILE, info)
    replace_dir(build, promoted_root / target)
    return info


def gate(target: str, winner: str, metrics: dict[str, dict], holdout: pd.DataFrame, jobs: pd.DataFrame,
         params: Params) -> tuple[bool, str]:
    """(promote?, why). The promoted model is scored on today's holdout, exactly as the winner was."""
    folder = resolve(params.paths.promoted) / target
    current = read_promotion(folder)
    if current is None:
        return True, "nothing promoted yet"
    spec = TARGETS[target]
    try:
        promoted = Candidate.load(folder / MODEL_DIR, spec)
        predicted = promoted.predict(holdout)
    except (OSError, KeyError, ValueError) as exc:  # a model from an older feature set cannot be scored
        return True, f"promoted model {current['version']} cannot be scored on today's features ({exc})"
    # The same request quantile as the winner's score: otherwise the two numbers measure different things.
    scored = score(spec, holdout, predicted, params.train.request_quantile.get(target, "q90"), jobs)
    metric = params.select.metric
    new, old = _finite(metrics[winner][metric]), _finite(scored.get(metric))
    if new < old:
        return True, f"{winner} {metric}={new:.4g} beats promoted {current['version']} ({old:.4g})"
    return False, f"{winner} {metric}={new:.4g} does not beat promoted {current['version']} ({old:.4g})"


def run_select(params: Params) -> dict:
    """The select stage entry point."""
    artifacts = resolve(params.paths.artifacts)
    features = pd.read_parquet(resolve(params.paths.features) / "features.parquet")
    jobs = pd.read_parquet(resolve(params.paths.validated) / "jobs.parquet")
    metric = params.select.metric
    all_metrics, winners, outcome, refused = {}, {}, {}, []
    for target in params.targets:
        scored = json.loads((artifacts / "metrics" / f"{target}.json").read_text())
        metrics, window = scored["candidates"], scored["data_window"]
        winner = choose_winner(metrics, metric)
        all_metrics[target], winners[target] = metrics, winner
        holdout = holdout_rows(features, target)
        accepted, why = gate(target, winner, metrics, holdout, jobs, params)
        if accepted:
            info = promote(target, winner, params, metrics[winner], window)
            outcome[target] = {"promoted": info["version"], "why": why}
        else:
            refused.append(f"{target}: {why}")
            outcome[target] = {"kept": read_promotion(resolve(params.paths.promoted) / target)["version"], "why": why}
        log.info("%s: %s", target, why)
        write_target_report(target, winner, metrics, window, holdout, params)

    with atomic_path(artifacts / "leaderboard.md") as tmp:
        tmp.write_text(leaderboard(all_metrics, winners, metric))
    summary = {
        target: {"winner": winners[target], **{name: {k: m.get(k) for k in (metric, "coverage_q90", "mape",
                                                                            "failure_share")}
                                               for name, m in all_metrics[target].items()}}
        for target in params.targets
    }
    write_json(artifacts / "metrics.json", summary)
    if refused and params.select.gate == "fail":
        raise GateError("; ".join(refused))
    for message in refused:
        log.warning("kept the promoted model: %s", message)
    return outcome


def write_target_report(target: str, winner: str, metrics: dict, window: dict, holdout: pd.DataFrame,
                        params: Params) -> None:
    """The target's model card and plots, from its holdout predictions."""
    spec = TARGETS[target]
    artifacts = resolve(params.paths.artifacts)
    stored = pd.read_parquet(artifacts / "predictions" / f"{target}.parquet").set_index("jeditaskid")
    predictions = {
        name: stored[[f"{name}_{q}" for q in QUANTILE_COLUMNS]].set_axis(list(QUANTILE_COLUMNS), axis=1)
        .reindex(holdout.index)
        for name in metrics
    }
    write_plots(target, spec.unit, holdout[f"label_{target}"], predictions, holdout["processing_type"], winner,
                artifacts / "plots" / target, log_scale=spec.log_space)
    notes = [
        "Trained and scored on the embedded archive unless the archive URL says otherwise; the holdout "
        "is the newest tasks by creation date.",
        "The scout candidate is known only after the scout jobs ran: shown as the reference to beat.",
    ]
    card = model_card(target, spec.unit, metrics, winner, [n for n, m in metrics.items() if m.get("servable")],
                      window, feature_columns(list(params.targets)),
                      params.train.request_quantile.get(target, "q90"), spec.log_space, notes)
    with atomic_path(artifacts / "cards" / f"{target}.md") as tmp:
        tmp.write_text(card)
