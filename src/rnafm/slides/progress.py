"""Rich progress bars for cohort runs: one bar for slides, one for the current slide's tiles."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["cohort_progress"]


@contextlib.contextmanager
def cohort_progress(enabled: bool = True) -> Iterator[object | None]:  # noqa: FBT001, FBT002
    """A ``rich.progress.Progress`` showing counts and items per second, or ``None``."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield progress


def rate_text(done: int, seconds: float, unit: str) -> str:
    """``'123 tiles/s'``."""
    return f"{done / seconds:,.0f} {unit}/s" if seconds > 0 else ""
