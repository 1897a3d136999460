"""Progress bars for long stages: rich in a terminal, silent when disabled (tests, Prefect logs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class _Silent:
    def track(self, items: Iterable[T], description: str = "", total: int | None = None) -> Iterable[T]:
        return items


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A context whose `.track(items, description)` shows progress over `items` when enabled."""
    if not enabled:
        yield _Silent()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    ) as progress:
        yield progress
