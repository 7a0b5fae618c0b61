"""Progress for long operations, drawn with rich on stderr (stdout stays for results).

``rich.progress`` (and the console, when it is a ``LazyConsole``) loads with the first task:
`up` of a lab in sync starts none.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from provision.cli.console import LazyConsole

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


class RichProgress:
    """The converge.Progress protocol on a rich progress display; a no-op when disabled.

    The display starts with the first task: an operation that fails before any (a bad lab
    file, a held lock) leaves stderr to its one-line error."""

    def __init__(self, console: Console | LazyConsole, enabled: bool = True) -> None:
        self._console = console
        self._enabled = enabled
        self._progress: Progress | None = None

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def task(self, description: str, total: int) -> Any:
        if self._progress is None:
            self._progress = self._start()
        return self._progress.add_task(description, total=total, note="")

    def advance(self, task: Any, note: str = "", step: int = 1) -> None:
        if self._progress is None:  # no task made yet: as rich does for an unknown task
            raise KeyError(task)
        self._progress.update(task, advance=step, note=note)

    def _start(self) -> Progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[dim]{task.fields[note]}"),
            TimeElapsedColumn(),
            console=(self._console.console if isinstance(self._console, LazyConsole)
                     else self._console),
            disable=not self._enabled,
            transient=False,
        )
        progress.start()
        return progress
