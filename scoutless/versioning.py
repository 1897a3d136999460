"""Versioning a flow's run with DVC: what the scheduled flows do after they ran the stages.

A flow runs the stage functions the `scoutless` commands of dvc.yaml run, with the same params; `dvc commit`
of exactly the stages it ran then records their dependencies and outputs in dvc.lock and the DVC cache as
`dvc repro` would have, and `dvc push` copies them to the project's DVC remote. Stages the flow did not run
keep their entries, so `dvc status` shows what their inputs changed.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from scoutless.params import project_dir

log = logging.getLogger(__name__)


class VersioningError(RuntimeError):
    """DVC could not record or push the outputs."""


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project_dir(), capture_output=True, text=True)


def version_outputs(stages: list[str], push: bool = True) -> dict:
    """Commit the outputs of `stages` (the ones this run ran) to dvc.lock and the cache, then push them;
    skipped outside a DVC project."""
    root = project_dir()
    if not (root / ".dvc").is_dir():
        log.info("%s is not a DVC project: outputs not versioned", root)
        return {"versioned": False, "why": "not a DVC project"}
    done = _dvc("commit", "--force", *stages)
    if done.returncode != 0:
        raise VersioningError(f"dvc commit {' '.join(stages)} failed in {root}: "
                              f"{_said(done) or f'exit code {done.returncode} and no message'}")
    result = {"versioned": True, "stages": list(stages), "pushed": False}
    if push:
        remotes = _dvc("remote", "list")
        if remotes.stdout.strip():
            pushed = _dvc("push", *stages)
            if pushed.returncode != 0:
                raise VersioningError(f"dvc push failed in {root}: {_said(pushed) or f'exit code {pushed.returncode}'}")
            result["pushed"] = True
        else:
            log.info("no DVC remote configured: committed to the local cache only")
    log.info("outputs of %s versioned in dvc.lock%s", ", ".join(stages), " and pushed" if result["pushed"] else "")
    return result


def _said(done: subprocess.CompletedProcess) -> str:
    return "\n".join(text.strip() for text in (done.stderr, done.stdout) if text and text.strip())
