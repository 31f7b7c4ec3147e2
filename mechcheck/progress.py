"""Progress on the terminal for long commands (``mechcheck check``, ``zoo build``).

On a terminal, a bar on the last line, redrawn in place, with the progress lines
printed above it; elsewhere (a log, CI), the lines only, each with a ``[k/N]``
counter, and at most about ten counter lines for the bar itself.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """A bar from 0 to ``total`` with lines above it.

    Args:
        total: the number of units of work.
        unit: what a unit is, e.g. ``file(s)`` or ``steps``.
        stream: where to write (stderr by default).
        enabled: False for silence (``--quiet``).
        counter_lines: without a terminal, also print a line at every tenth of the
            work (for work whose steps print nothing themselves).
    """

    WIDTH = 28

    def __init__(self, total: int, *, unit: str, stream: TextIO | None = None,
                 enabled: bool = True, counter_lines: bool = False) -> None:
        self.total = max(0, total)
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.counter_lines = counter_lines
        self.done = 0
        self.label = ""
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._shown_tenth = -1
        self._drawn = False

    def line(self, text: str) -> None:
        """Print one line of progress above the bar."""
        if not self.enabled:
            return
        self._clear()
        step = min(self.done + 1, self.total) if self.total else 0
        prefix = f"[{step}/{self.total}] " if self.total else ""
        self.stream.write(f"{prefix}{text}\n")
        self._draw()

    def update(self, done: int, label: str = "") -> None:
        """Move the bar to ``done`` units."""
        self.done = min(max(0, done), self.total)
        self.label = label
        if not self.enabled:
            return
        if self.tty:
            self._draw()
            return
        tenth = 10 * self.done // self.total if self.total else 10
        if self.counter_lines and tenth > self._shown_tenth:
            self._shown_tenth = tenth
            self.stream.write(f"{self._text()}\n")
            self.stream.flush()

    def close(self) -> None:
        """Remove the bar (the lines above it stay)."""
        if self.enabled:
            self._clear()
            self.stream.flush()

    def _text(self) -> str:
        seconds = time.perf_counter() - self._start
        label = f"  {self.label}" if self.label else ""
        return f"{self.done}/{self.total} {self.unit} ({seconds:.0f} s){label}"

    def _draw(self) -> None:
        if not self.tty:
            self.stream.flush()
            return
        filled = self.WIDTH * self.done // self.total if self.total else self.WIDTH
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self._text()}"[:200] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
