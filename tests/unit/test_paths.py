"""Folder swaps: one step where the filesystem can, mended after a kill where it cannot; leftovers of a killed
run are removed by the next write."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoutless import paths
from scoutless.paths import atomic_path, build_dir, recover_dir, replace_dir


def version(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text(text)
    return folder


def test_a_swap_replaces_the_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    left, right = version(tmp_path / "left", "L"), version(tmp_path / "right", "R")
    assert paths._exchange(left, right)     # this filesystem swaps in one step
    assert (left / "a.txt").read_text() == "R" and (right / "a.txt").read_text() == "L"
    for folder in (left, right):
        (folder / "a.txt").unlink()
        folder.rmdir()

    target = version(tmp_path / "raw", "old")
    (target / "only-in-old.txt").write_text("x")
    build = version(build_dir(target), "new")
    replace_dir(build, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"] and (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_without_an_atomic_exchange_a_kill_between_the_renames_is_mended(tmp_path, monkeypatch):
    target = version(tmp_path / "promoted", "old")
    build = version(build_dir(target), "new")
    monkeypatch.setattr(paths, "_exchange", lambda a, b: False)

    def killed(step):
        if step == "replace-renamed:promoted":
            raise KeyboardInterrupt(step)   # stands in for the kill: the process stops right here

    monkeypatch.setattr(paths, "pause_point", killed)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(build, target)
    assert not target.exists()              # between the two renames: the old version is aside
    recover_dir(target)                     # what the next run (or reader) does first
    assert (target / "a.txt").read_text() == "old"
    monkeypatch.setattr(paths, "pause_point", lambda step: None)
    replace_dir(version(build_dir(target), "newer"), target)
    assert (target / "a.txt").read_text() == "newer"
    assert [p.name for p in tmp_path.iterdir()] == ["promoted"]


def test_leftovers_of_a_killed_write_go_with_the_next_one(tmp_path):
    target = tmp_path / "tasks.parquet"
    (tmp_path / ".tasks.parquet.k1ll3d.tmp").write_text("half")
    (tmp_path / ".tasks.parquet.build").mkdir()
    (tmp_path / ".other.parquet.k1ll3d.tmp").write_text("not ours")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.parquet.k1ll3d.tmp", "tasks.parquet"]
