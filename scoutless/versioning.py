"""Versioning a run's outputs with DVC: what the scheduled flows do after they ran the stages.

`dvc commit` records the outputs the stage functions wrote (the same ones `dvc repro` would have written)
in dvc.lock and the DVC cache; `dvc push` copies them to the project's DVC remote.
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


def version_outputs(push: bool = True) -> dict:
    """Commit every stage's outputs to dvc.lock and the cache, then push them; skipped outside a DVC project."""
    root = project_dir()
    if not (root / ".dvc").is_dir():
        log.info("%s is not a DVC project: outputs not versioned", root)
        return {"versioned": False, "why": "not a DVC project"}
    done = _dvc("commit", "--force", "--quiet")
    if done.returncode != 0:
        raise VersioningError(f"dvc commit failed: {done.stderr.strip() or done.stdout.strip()}")
    result = {"versioned": True, "pushed": False}
    if push:
        remotes = _dvc("remote", "list")
        if remotes.stdout.strip():
            pushed = _dvc("push", "--quiet")
            if pushed.returncode != 0:
                raise VersioningError(f"dvc push failed: {pushed.stderr.strip() or pushed.stdout.strip()}")
            result["pushed"] = True
        else:
            log.info("no DVC remote configured: committed to the local cache only")
    log.info("outputs versioned in dvc.lock%s", " and pushed" if result["pushed"] else "")
    return result
