"""Progress for long work, silenced by `--quiet` through one module-level switch: a rich bar on a
terminal; under nohup, SLURM or a pipe (no TTY) plain lines instead, which a log file keeps."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

_quiet = False
PLAIN_EVERY = 0.1  # a plain progress line at each tenth of the work (training: every log_every)


def set_quiet(quiet: bool) -> None:
    """Silence (or restore) every progress bar of this process."""
    global _quiet
    _quiet = quiet


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    s = int(max(seconds, 0))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Bar:
    """One task of a progress display: `advance(n)`, `note(text)` for live metrics on the bar,
    `line(text)` for a log line where there is no bar (no TTY). Silent when quiet."""

    def advance(self, n: float = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


class RichBar(Bar):
    """A rich bar; its lines are the note shown on the bar."""

    def __init__(self, progress: Progress, task: int):
        self._progress, self._task = progress, task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def note(self, text: str) -> None:
        self._progress.update(self._task, info=text)


class PlainBar(Bar):
    """No TTY: `description done/total unit  elapsed  eta  text` lines on stderr, on `line()` and
    at each tenth of the total."""

    def __init__(
        self,
        description: str,
        total: float | None,
        unit: str,
        stream=None,
        every: float | None = PLAIN_EVERY,
    ):
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.done, self.start, self._mark = 0.0, time.monotonic(), 0.0
        self.stream = stream or sys.stderr

    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        count = f"{self.done:g}/{self.total:g}" if self.total else f"{self.done:g}"
        text = f"{self.description} {count} {self.unit}  elapsed {clock(elapsed)}"
        if self.total and self.done > 0:
            text += f"  eta {clock(elapsed * (self.total - self.done) / self.done)}"
        return text

    def advance(self, n: float = 1) -> None:
        self.done += n
        if self.every and self.total and self.done >= self._mark + self.every * self.total:
            self._mark = self.done
            self.line("")

    def line(self, text: str) -> None:
        print(f"{self.status()}  {text}".rstrip(), file=self.stream, flush=True)


def columns(description: str, total: float | None, unit: str, width: int) -> list:
    """The bar's columns: name, count, elapsed and ETA never shrink; the free-text note gets the
    width left (`width`: the terminal's) and is the one cut short, with an ellipsis."""
    count = 2 * len(f"{total:g}") + 1 if total else 8
    widths = [len(description), 20, count, len(unit), 7, 7]  # H:MM:SS twice
    left = max(width - sum(widths) - len(widths), 1)  # a space between columns

    def fixed(w: int) -> Column:
        return Column(no_wrap=True, min_width=w)

    return [
        TextColumn("[bold]{task.description}", table_column=fixed(widths[0])),
        BarColumn(bar_width=20),
        MofNCompleteColumn(table_column=fixed(count)),
        TextColumn(unit, table_column=fixed(len(unit))),
        TimeElapsedColumn(table_column=fixed(7)),
        TimeRemainingColumn(table_column=fixed(7)),
        TextColumn(
            "{task.fields[info]}",
            table_column=Column(no_wrap=True, overflow="ellipsis", max_width=left),
        ),
    ]


@contextmanager
def progress_bar(
    description: str,
    total: float | None,
    unit: str = "",
    console: Console | None = None,
    plain_every: float | None = PLAIN_EVERY,
) -> Iterator[Bar]:
    """A bar with count, ETA and a free-text `info` column (losses, frames/s) on a terminal;
    plain lines without one (see PlainBar: at each `plain_every` of the total, and on line());
    nothing when quiet."""
    if _quiet:
        yield Bar()
        return
    console = console or Console(stderr=False)
    if not console.is_terminal:
        yield PlainBar(description, total, unit, every=plain_every)
        return
    cols = columns(description, total, unit, console.width)
    with Progress(*cols, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")
        yield RichBar(progress, task)
