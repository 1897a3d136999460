"""The select stage: per target, the winner among the candidates that can answer at submission time,
through a quality gate, refit as of now and promoted; then the leaderboard, model cards and plots.

Winner: the servable candidate with the lowest `select.metric` on the validation window. Gate: the promoted
configuration (candidate and settings) is trained again by the same protocol as the winner, as of the test
window's start, and both are scored on the test window; the winner replaces it if it does at least as well
(or if nothing is promoted yet). When it does not, the stage fails, or warns and keeps the promoted
configuration, as `select.gate` says. Whatever configuration goes on is refit as of now (models.protocol:
every label known by now, the newest validation_days of them as its calibration) and promoted: a folder
artifacts/promoted/<target>/ holding the candidate's files, the history snapshot as of now and promotion.json
(version, data window, the configuration's test metrics). The targets are one promotion (promotion_set.json),
written whole beside the current one and swapped into place together. The history artifact the service
reads is the next stage's (models.refresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from scoutless.features.build import feature_columns
from scoutless.features.history_artifact import snapshot_as_of
from scoutless.models.layout import MODEL_DIR, PROMOTION_FILE, SET_FILE, SNAPSHOT_FILE, promoted_infos, read_promotion
from scoutless.models.metrics import QUANTILE_COLUMNS
from scoutless.models.protocol import DAY, Windows, as_of_view, pipeline_now
from scoutless.models.report import leaderboard, model_card, write_plots
from scoutless.models.targets import TARGETS
from scoutless.models.train import by_task, fit_as_of, load_training_data, predict_test, score
from scoutless.params import Params
from scoutless.paths import atomic_path, build_dir, replace_dir, resolve, write_json

log = logging.getLogger(__name__)


class GateError(RuntimeError):
    """A new winner did not beat the promoted model and select.gate is "fail"."""


def _finite(value) -> float:
    return value if isinstance(value, int | float) and math.isfinite(value) else math.inf


def choose_winner(metrics: dict[str, dict], metric: str) -> str:
    """The servable candidate with the lowest validation `metric`."""
    def chosen_on(name: str) -> float:
        return _finite(metrics[name].get("validation", {}).get(metric))

    servable = [name for name, m in metrics.items() if m.get("servable") and math.isfinite(chosen_on(name))]
    if not servable:
        raise ValueError(f"no servable candidate has a finite validation {metric}")
    return min(servable, key=chosen_on)


def model_version(folder: Path) -> str:
    """A content hash of the model's files: the same model always has the same version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != PROMOTION_FILE):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def stored_configuration(folder: Path) -> tuple[str, dict]:
    """(candidate name, settings) of a saved candidate: what the gate retrains."""
    manifest = json.loads((folder / "candidate.json").read_text())
    return manifest["candidate"], manifest["config"]


def promote(target: str, configuration: tuple[str, dict], params: Params, features: pd.DataFrame,
            jobs: pd.DataFrame, snapshot: pd.DataFrame, now: pd.Timestamp, test_metrics: dict, promotion: str,
            build: Path) -> dict:
    """Refit `configuration` as of `now` and write it, with `snapshot` (the history as of now), into
    `build` (the target's folder of the next promotion)."""
    name, config = configuration
    windows = Windows.at(now, params.split)
    candidate, fit, validation = fit_as_of(name, config, TARGETS[target], features, jobs, windows)
    build.mkdir()
    candidate.save(build / MODEL_DIR)
    snapshot.to_parquet(build / SNAPSHOT_FILE, index=False)
    info = {
        "target": target, "candidate": name, "version": f"{target}-{name}-{model_version(build)}",
        "unit": TARGETS[target].unit, "request_quantile": params.train.request_quantile.get(target, "q90"),
        "promotion": promotion, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "as_of": str(now),
        "data_window": windows.describe(fit, validation, None), "test_metrics": test_metrics,
    }
    write_json(build / PROMOTION_FILE, info)
    return info


def keep(target: str, promoted_root: Path, promotion: str, build: Path) -> dict:
    """Carry the promoted model of `target` into `build` (the next promotion) unchanged."""
    shutil.copytree(promoted_root / target, build)
    info = {**read_promotion(build), "promotion": promotion}
    write_json(build / PROMOTION_FILE, info)
    return info


def gate(target: str, current: dict | None, winner: tuple[str, dict], winner_test: dict, features: pd.DataFrame,
         jobs: pd.DataFrame, params: Params,
         test_origin: pd.Timestamp) -> tuple[bool, str, tuple[str, dict] | None, dict | None]:
    """(promote the winner?, why, the promoted configuration, its test metrics). `current` is the target's
    promotion.json (None: nothing promoted). The promoted configuration is trained by the same protocol as the
    winner, as of `test_origin`, and scored on the same test window."""
    folder = resolve(params.paths.promoted) / target
    if current is None:
        return True, "nothing promoted yet", None, None
    try:
        promoted = stored_configuration(folder / MODEL_DIR)
    except (OSError, KeyError, ValueError) as exc:
        return True, f"promoted model {current['version']} has no configuration to retrain ({exc})", None, None
    if promoted == winner:
        return True, f"{winner[0]} is the promoted configuration: refit as of now", promoted, winner_test
    spec, metric = TARGETS[target], params.select.metric
    windows = Windows.at(test_origin, params.split)
    try:
        candidate, _, _ = fit_as_of(*promoted, spec, features, jobs, windows)
        test = by_task(windows.test_rows(features, target))
        scored = score(spec, test, predict_test(candidate, features, jobs, target, windows, test),
                       params.train.request_quantile.get(target, "q90"), jobs)
    except (KeyError, ValueError) as exc:  # a configuration of an older feature set may not train today
        return True, f"promoted configuration {promoted[0]} cannot be retrained on today's features ({exc})", None, None
    new, old = _finite(winner_test.get(metric)), _finite(scored.get(metric))
    if new <= old:
        return True, f"{winner[0]} test {metric}={new:.4g} is no worse than promoted {promoted[0]} ({old:.4g})", \
            promoted, scored
    return False, f"{winner[0]} test {metric}={new:.4g} is worse than promoted {promoted[0]} ({old:.4g})", \
        promoted, scored


def run_select(params: Params) -> dict:
    """The select stage entry point."""
    artifacts = resolve(params.paths.artifacts)
    features, jobs = load_training_data(params)
    now = pipeline_now(features, params.split)
    features = as_of_view(features, now)
    test_origin = now - params.split.test_days * DAY
    snapshot = snapshot_as_of(pd.read_parquet(resolve(params.paths.features) / "history.parquet"), now)
    metric = params.select.metric
    all_metrics, winners, outcome, refused = {}, {}, {}, []
    # The next promotion is written whole beside the current one and swapped in as one step: a reader sees
    # one promotion or the other, never some targets of each.
    promoted_root = resolve(params.paths.promoted)
    current = promoted_infos(promoted_root)   # a damaged promotion stops the stage here: the gate never skips
    promotion = f"{datetime.now(UTC):%Y%m%dt%H%M%S}-{uuid.uuid4().hex[:6]}"
    build = build_dir(promoted_root)
    for target in params.targets:
        scored = json.loads((artifacts / "metrics" / f"{target}.json").read_text())
        metrics, window = scored["candidates"], scored["data_window"]
        winner = choose_winner(metrics, metric)
        all_metrics[target], winners[target] = metrics, winner
        configuration = stored_configuration(resolve(params.paths.models) / target / winner)
        accepted, why, promoted, promoted_test = gate(target, current.get(target), configuration, metrics[winner],
                                                      features, jobs, params, test_origin)
        if accepted:
            info = promote(target, configuration, params, features, jobs, snapshot, now, metrics[winner], promotion,
                           build / target)
            outcome[target] = {"promoted": info["version"], "why": why}
        elif params.select.gate == "fail":
            refused.append(f"{target}: {why}")
            outcome[target] = {"kept": keep(target, promoted_root, promotion, build / target)["version"], "why": why}
        else:
            info = promote(target, promoted, params, features, jobs, snapshot, now, promoted_test, promotion,
                           build / target)
            refused.append(f"{target}: {why}")
            outcome[target] = {"kept": info["version"], "why": why}
        log.info("%s: %s", target, why)
        test = by_task(Windows.at(test_origin, params.split).test_rows(features, target))
        write_target_report(target, winner, metrics, window, test, params, scored.get("skipped", {}))

    versions = {target: read_promotion(build / target)["version"] for target in params.targets}
    write_json(build / SET_FILE, {"promotion": promotion, "targets": versions,
                                  "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")})
    replace_dir(build, promoted_root)

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
        log.warning("kept the promoted configuration: %s", message)
    return outcome


def scaling_notes(metrics: dict, window: dict, skipped: dict[str, str]) -> list[str]:
    """What train.scaling did: the candidates not trained, and those that learned from part of the fit window."""
    notes = [f"{name}: {why}." for name, why in skipped.items()]
    for name, scores in metrics.items():
        if scores.get("fit_tasks") is not None and scores["fit_tasks"] < window["n_train"]:
            notes.append(f"{name} learned from the newest {scores['fit_tasks']:,} of the {window['n_train']:,} tasks "
                         "of its fit window (train.scaling.max_fit_tasks).")
    return notes


def write_target_report(target: str, winner: str, metrics: dict, window: dict, test: pd.DataFrame,
                        params: Params, skipped: dict[str, str]) -> None:
    """The target's model card and plots, from its test-window predictions; `skipped`: the candidates
    train.scaling left out, and why."""
    spec = TARGETS[target]
    artifacts = resolve(params.paths.artifacts)
    stored = pd.read_parquet(artifacts / "predictions" / f"{target}.parquet").set_index("jeditaskid")
    predictions = {
        name: stored[[f"{name}_{q}" for q in QUANTILE_COLUMNS]].set_axis(list(QUANTILE_COLUMNS), axis=1)
        .reindex(test.index)
        for name in metrics
    }
    write_plots(target, spec.unit, test[f"label_{target}"], predictions, test["processing_type"], winner,
                artifacts / "plots" / target, log_scale=spec.log_space)
    notes = [
        "Trained and scored on the embedded archive unless the archive URL says otherwise. The scores are "
        "those of the configuration trained as of the test window's start; the served model is the same "
        "configuration refit as of now.",
        "The scout candidate is known only after the scout jobs ran: shown as the reference to beat.",
        *scaling_notes(metrics, window, skipped),
    ]
    card = model_card(target, spec.unit, metrics, winner, [n for n, m in metrics.items() if m.get("servable")],
                      window, feature_columns(list(params.targets)),
                      params.train.request_quantile.get(target, "q90"), spec.log_space, notes)
    with atomic_path(artifacts / "cards" / f"{target}.md") as tmp:
        tmp.write_text(card)
