"""Progress bars for long commands (``wait``, ``submit`` of big clusters), on a terminal only.

The bar goes to standard error and disappears when done, so standard output stays the
command's answer; when standard error is not a terminal (a script, a pipe, a batch job)
nothing is drawn at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: A cluster at least this big shows its submission's progress.
BIG_CLUSTER = 100

#: ``report(what, done, total)``: the bar now says ``what`` and stands at done/total.
Report = Callable[[str, int, int], None]


def on_terminal() -> bool:
    """Whether progress may be drawn: standard error is a terminal."""
    return sys.stderr.isatty()


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


@contextmanager
def progress_bar(min_total: int = 0) -> Iterator[Report]:
    """A progress bar on standard error, drawn from the first report of at least
    ``min_total`` items (a do-nothing report off a terminal)."""
    if not on_terminal():
        yield _quiet
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, console=Console(stderr=True), transient=True)
    task = progress.add_task("", total=None)
    started = False

    def report(what: str, done: int, total: int) -> None:
        nonlocal started
        if not started:
            if total < min_total:
                return
            progress.start()
            started = True
        progress.update(task, description=what, completed=done, total=total or None)

    try:
        yield report
    finally:
        if started:
            progress.stop()
