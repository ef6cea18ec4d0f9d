"""How transfers look on a terminal: progress bars while they run, one line after.

:class:`TransferDisplay` is what the command line and the shell hand to
:class:`~sockftp.client.Client` transfers as their ``progress`` and
``on_file`` callbacks. Bars go to stderr and only to a terminal (or when
forced); the summary line goes to stdout unless quiet. ``rich`` is imported
only once a bar is shown, so that commands which show none start fast.
Bars or not, it keeps how far the transfers got, for the line that
:func:`describe_interruption` writes when they are cut short.
"""

from __future__ import annotations

import os
import sys
import time

from ..protocol.units import human_size  # noqa: F401 - re-exported: the cli formats sizes with it

#: Seconds between two redraws of a bar. The client reports every chunk it
#: moves, often thousands a second; redrawing for each would cost more than
#: the transfer.
REDRAW_INTERVAL = 0.1


def bars_wanted(quiet: bool, force: bool) -> bool:
    """Show bars? Forced on, or else only when both outputs are terminals,
    so that scripts, pipes and log files never receive redraw sequences."""
    if force:
        return True
    return not quiet and sys.stdout.isatty() and sys.stderr.isatty()


class TransferDisplay:
    """Progress bars and summary lines for a run of transfers.

    Use as a context manager around the transfers; call :meth:`start_file`
    before each file (or pass it as ``on_file``), pass the instance itself as
    ``progress``, and :meth:`summary` after.

    Args:
        bars: show progress bars (see :func:`bars_wanted`).
        quiet: print no summary lines.
        force_terminal: draw bars even when stderr is not a terminal.
        counter: number the files (``[3/12] name``), for directories.
        files: how many files the run will move, if known.
        out: where summary lines go (default: stdout).
    """

    def __init__(
        self,
        bars: bool,
        quiet: bool = False,
        force_terminal: bool = False,
        counter: bool = False,
        files: int | None = None,
        out=None,
    ):
        self.bars = bars
        self.quiet = quiet
        self.force_terminal = force_terminal
        self.counter = counter
        self.files = files
        self.out = out
        self.file_number = 0
        #: The current file (as given to start_file) and its last report.
        self.current: str | None = None
        self.done: int | None = None
        self.total: int | None = None
        self._progress = None  # rich.progress.Progress while bars are shown
        self._task = None
        self._fresh = True  # no report yet for the current file
        self._last_redraw = 0.0

    def __enter__(self) -> TransferDisplay:
        if self.bars:
            self._progress = _make_progress(self.force_terminal)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start_file(self, source: str, _target: str | None = None) -> None:
        """A new file begins (the signature of ``on_file``)."""
        self.file_number += 1
        self.current, self.done, self.total = source, None, None
        if self._progress is None:
            return
        description = os.path.basename(source.rstrip("/"))
        if self.counter:
            total = f"/{self.files}" if self.files is not None else ""
            description = f"[{self.file_number}{total}] {description}"
        # A new task rather than a reset one: a reset keeps the old total,
        # which would show until the first report of the new file.
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=None)
        self._fresh = True

    def __call__(self, done: int, total: int) -> None:
        """The client's progress callback: *done* of *total* bytes."""
        self.done, self.total = done, total
        if self._progress is None:
            return
        if self._task is None:
            self.start_file("")
        now = time.monotonic()
        if self._fresh:
            # A resumed transfer starts at its offset: reset, so that the
            # bytes already held do not count as moved in no time.
            self._progress.reset(self._task, total=total, completed=done)
            self._fresh = False
        elif done >= total or now - self._last_redraw >= REDRAW_INTERVAL:
            self._progress.update(self._task, completed=done)
        else:
            return
        self._last_redraw = now

    def summary(self, line: str) -> None:
        """Print *line* unless quiet. Call it after the bars are gone."""
        if not self.quiet:
            print(line, file=self.out or sys.stdout, flush=True)


def describe_transfer(verb: str, source: str, target: str, results: list, seconds: float) -> str:
    """The line printed after a transfer, e.g.::

        put report.pdf -> /inbox/report.pdf  10.0 MiB in 0.05 s (200 MiB/s), verified xxh3-128

    *results* are :class:`~sockftp.client.TransferResult`; more than one
    (a directory) are counted and summed.
    """
    size = sum(r.size for r in results)
    moved = sum(r.sent for r in results)
    rate = human_size(moved / seconds) + "/s" if seconds > 0 else "-"
    count = f"{len(results)} files, " if len(results) != 1 else ""
    line = f"{verb} {source} -> {target}  {count}{human_size(size)} in {seconds:.2f} s ({rate})"
    algorithms = {r.checksum.split(":", 1)[0] for r in results if r.checksum}
    if algorithms and all(r.checksum for r in results):
        line += ", verified " + ", ".join(sorted(algorithms))
    resumed = [r for r in results if r.resumed_from]
    if len(results) == 1 and resumed:
        line += f" (resumed at {human_size(resumed[0].resumed_from)})"
    elif resumed:
        line += f" ({len(resumed)} resumed)"
    return line


def describe_interruption(
    verb: str, source: str, target: str, display: TransferDisplay, *, tree: bool, reason: str | None = None
) -> str:
    """The line printed when a transfer is cut short (Ctrl-C, a lost
    connection: *reason*), how far it got by *display*'s count, e.g.::

        interrupted: put huge.bin -> /huge.bin at 2.7 GiB of 10.0 GiB (27%)
        interrupted (connection to host:9999 lost: ...): put photos -> /photos:
            3 of 10 files done, photos/d.jpg at 1.0 MiB of 4.0 MiB (25%)

    (the second on one line).

    The caller adds how to resume it.
    """
    line = f"interrupted ({reason}): " if reason else "interrupted: "
    line += f"{verb} {source} -> {target}"
    where = _position(display.done, display.total)
    if not tree:
        return f"{line} {where}" if where else f"{line} before any bytes moved"
    done = max(display.file_number - 1, 0)  # files go one at a time: those before the current one are done
    of = f" of {display.files}" if display.files is not None else ""
    line += f": {done}{of} file{'' if done == 1 and not of else 's'} done"
    if display.current is not None and where:
        line += f", {display.current} {where}"
    return line


def _position(done: int | None, total: int | None) -> str | None:
    """``at 2.7 GiB of 10.0 GiB (27%)``; None before the first report."""
    if done is None or total is None:
        return None
    percent = f" ({done * 100 // total}%)" if total else ""
    return f"at {human_size(done)} of {human_size(total)}{percent}"


def _make_progress(force_terminal: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Speed in the binary units of the sizes (rich's own uses MB/s)."""

        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else human_size(speed) + "/s", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True, force_terminal=force_terminal or None),
        transient=True,
        # The summary lines are ours to print, after the bars are gone.
        redirect_stdout=False,
        redirect_stderr=False,
    )
