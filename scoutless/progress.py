"""Progress of long stages: rich bars in a terminal; without bars (Prefect runs, DVC stages, tests) a log
line at every tenth of the way, which reads cleanly in Prefect's run logs."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
LOG_STEPS = 10


class _Logged:
    def track(self, items: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
        total = total if total is not None else len(items) if hasattr(items, "__len__") else None
        marks = {max(1, round(total * k / LOG_STEPS)) for k in range(1, LOG_STEPS + 1)} if total else set()
        for done, item in enumerate(items, start=1):
            yield item
            if done in marks:
                log.info("%s: %d/%d", description, done, total)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A context whose `.track(items, description)` shows progress over `items`: bars when enabled, else
    log lines."""
    if not enabled:
        yield _Logged()
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
