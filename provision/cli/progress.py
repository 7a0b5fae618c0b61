"""Progress for long operations, drawn with rich on stderr (stdout stays for results)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)


class RichProgress:
    """The converge.Progress protocol on a rich progress display; a no-op when disabled.

    The display starts with the first task: an operation that fails before any (a bad lab
    file, a held lock) leaves stderr to its one-line error."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[dim]{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started:
            self._progress.stop()

    def task(self, description: str, total: int) -> Any:
        if not self._started:
            self._progress.start()
            self._started = True
        return self._progress.add_task(description, total=total, note="")

    def advance(self, task: Any, note: str = "", step: int = 1) -> None:
        self._progress.update(task, advance=step, note=note)
