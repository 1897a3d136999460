"""Where scoutless reads and writes, anchored at the project folder (the one holding params.yaml)."""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scoutless.params import project_dir


def resolve(path: Path | str, root: Path | None = None) -> Path:
    """A path from params.yaml, made absolute against the project folder."""
    path = Path(path)
    return path if path.is_absolute() else (root or project_dir()) / path


def resolve_sqlite_url(url: str, root: Path | None = None) -> str:
    """Relative SQLite file URLs in params.yaml mean relative to the project folder, not the cwd."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        target = resolve(url[len(prefix):], root)
        target.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(target)
    return url


# A test sets this to a step's name to stop a stage there (tests/integration/test_crash_safety.py kills it).
PAUSE_ENV = "SCOUTLESS_TEST_PAUSE_AT"
PAUSED_FILE = ".paused"   # in the project folder, naming the step: the stage (or a subprocess of it) is there


def pause_point(step: str) -> None:
    """Where a kill would hurt most: a test names the step in $SCOUTLESS_TEST_PAUSE_AT, and the stage writes
    the step's name to the project's PAUSED_FILE and waits there to be killed. Otherwise nothing."""
    if os.environ.get(PAUSE_ENV) == step:
        (project_dir() / PAUSED_FILE).write_text(step)
        while True:
            time.sleep(60)


def _remove_leftovers(target: Path) -> None:
    """What a killed run left beside `target`: its temporary files and build folders (`.<name>.*`)."""
    for leftover in target.parent.glob(f".{target.name}.*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    A run killed mid-write leaves the previous `target` untouched (rename is atomic on one filesystem), and
    its temporary file is removed by the next write of `target`. One writer per target at a time.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes private files; outputs are ordinary ones
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build_dir(target: Path) -> Path:
    """A new, empty folder beside `target` to write its next version in, then swap it in with replace_dir.
    Leftovers of a killed run beside `target` go first (after a cut swap is mended: recover_dir)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    _remove_leftovers(target)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(build, 0o777 & ~_umask())   # mkdtemp makes private folders; outputs are ordinary ones
    return build


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE): a reader sees one or
    the other, never neither. False where the system or the filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


def replace_dir(build: Path, target: Path) -> None:
    """Swap a fully written folder `build` into place at `target`, as one step where the filesystem can
    (else two renames that recover_dir completes after a kill between them); the old one is removed."""
    recover_dir(target)
    pause_point(f"replace:{target.name}")
    if target.exists() and _exchange(build, target):
        shutil.rmtree(build)   # it holds the old version now
        return
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)   # a finished swap's, which recover_dir left alone
        target.rename(old)
    pause_point(f"replace-renamed:{target.name}")
    build.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(target: Path) -> None:
    """Mend a swap that a kill cut between its two renames: the old version comes back into place."""
    old = target.with_name(f".{target.name}.old")
    if old.is_dir() and not target.exists():
        old.rename(target)


def _json_safe(value):
    """Strict JSON: NaN and infinities (no value) become null; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_parquet(frame, path: Path) -> None:
    """Write a DataFrame as Parquet (without its index), atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_json(path: Path, payload) -> None:
    """Write `payload` as strict, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2, default=str) + "\n")
