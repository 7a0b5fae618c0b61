"""The CLI's consoles, made on first use: rich.console costs ~50 ms at start, and `up` of a
lab in sync prints two plain lines, which need none of it."""

from __future__ import annotations

import shutil
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 160  # piped output keeps whole rows: a table cut at 80 columns helps no reader


class LazyConsole:
    """A rich ``Console`` created when first used; ``line`` prints plain text without it."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _stream(self) -> Any:
        return sys.stderr if self._stderr else sys.stdout

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            if self._stderr:
                self._console = Console(stderr=True, highlight=False)
            else:
                width = None if sys.stdout.isatty() else PIPED_WIDTH
                self._console = Console(highlight=False, width=width)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)

    def line(self, text: str) -> None:
        """``text``, a line without markup, as ``print`` would show it; rich prints it (and
        wraps it) only when it is not short plain ASCII that fits the width rich wraps at."""
        if self._console is None and text.isascii() and text.isprintable():
            stream = self._stream()
            if stream.isatty():
                width = shutil.get_terminal_size().columns
            else:  # rich's own default for a stream that is no terminal: 80 columns
                width = 80 if self._stderr else PIPED_WIDTH
            if len(text) <= width:
                print(text, file=stream)
                return
        self.console.print(text, markup=False)
