"""Progress display for long CLI work: a live bar on a terminal, nothing when output is piped.

Results still go to stdout line by line (scripts parse them); the bar lives on stderr and
is drawn only when stderr is a terminal, so logs, pipes and tests see plain output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[[int], None]


def _ignore(n: int = 1) -> None:
    pass


@contextmanager
def progress(description: str, total: int | None = None, console: Console | None = None) -> Iterator[Advance]:
    """Yields ``advance(n)``; ``total=None`` shows a running count instead of a bar."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield _ignore
        return
    columns = [SpinnerColumn(), TextColumn("[progress.description]{task.description}")]
    columns += [BarColumn(), MofNCompleteColumn()] if total else [TextColumn("{task.completed}")]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance
