"""Where scoutless reads and writes, anchored at the project folder (the one holding params.yaml)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
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


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    A run killed mid-write leaves the previous `target` untouched (rename is atomic on one filesystem).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
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
    """A new, empty folder beside `target` to write its next version in, then swap it in with replace_dir."""
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(build, 0o777 & ~_umask())   # mkdtemp makes private folders; outputs are ordinary ones
    return build


def replace_dir(build: Path, target: Path) -> None:
    """Swap a fully written folder `build` into place at `target`; the old one is removed after the swap."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    build.rename(target)
    shutil.rmtree(old, ignore_errors=True)


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
