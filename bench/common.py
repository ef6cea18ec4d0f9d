"""What every workload of the benchmark shares: sizes, samples, interleaving,
the page-cache prewarm, and reading a server process's memory and CPU time.

Nothing here knows sockftp or FTP; it only measures.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Every socket a bench client opens has this timeout, so no workload can
#: hang: a stuck server fails the bench instead of stalling it.
CLIENT_TIMEOUT = 120.0


def parse_size(text: str) -> int:
    """``512M`` -> 536870912. Units K, M, G (binary); no unit: bytes."""
    match = re.fullmatch(r"(\d+)([KMG]?)I?B?", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (try 4K, 10M, 1G)")
    return int(match.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": GiB}[match.group(2)]


def human_size(size: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


@dataclass
class Samples:
    """Measurements of one variant, one per run, in the order taken."""

    unit: str  # "s", "GB/s", "MB", "ms", ...
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> str:
        """``1.23 (1.01-1.40)``: the median, then min to max when there are several."""
        digits = significant_digits(self.median)
        text = f"{self.median:.{digits}f}"
        if len(self.values) > 1:
            text += f" ({min(self.values):.{digits}f}-{max(self.values):.{digits}f})"
        return text


def significant_digits(value: float) -> int:
    magnitude = abs(value)
    return 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 0.1 else 3


def interleave(variants: dict[str, Callable[[], float]], runs: int, on_run=None) -> dict[str, list[float]]:
    """Run every variant once per run, reversing the order on every other
    run (A B C, then C B A), so that drift of a noisy machine hits all of
    them alike. Each variant returns its own measurement (usually seconds
    of the part it times). Returns the measurements per variant, in run
    order, so that ratios can be taken run by run.

    First it waits for what the setup wrote to reach the disk: otherwise the
    kernel writes it out during the first timed runs, on the same two
    cores (measured: 22 s of kernel CPU inside a 3-run ``--only big``, 8 s
    after this ``sync``)."""
    os.sync()
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for run in range(runs):
        for name in names if run % 2 == 0 else names[::-1]:
            results[name].append(variants[name]())
        if on_run is not None:
            on_run(run)
    return results


def timed(action: Callable[[], object]) -> float:
    """Seconds that *action* took."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- the page cache ------------------------------------------------------------------


class Prewarm:
    """Writes and deletes a scratch file just before a timed variant.

    On this VM, writing page cache into memory that has been free for about
    a second runs at 0.35-0.9 GB/s, back-to-back writes at 4-6 GB/s
    (docs/bench-notes.md). Writing as many bytes as the variant is about to
    write, and deleting them, leaves that much memory fresh for it, so every
    variant starts in the fast mode instead of a random one. Measured here:
    512 MiB written 2 s after the last write ran at 0.34-0.59 GB/s, and at
    2.2-5.9 GB/s right after this prewarm. Its own time is not counted.
    """

    def __init__(self, directory: str, enabled: bool = True, limit: int = 4 * GiB):
        self.path = os.path.join(directory, "prewarm.scratch")
        self.enabled = enabled
        self.limit = limit
        self._chunk = bytes(4 * MiB)

    def __call__(self, size: int) -> None:
        if not self.enabled or size <= 0:
            return
        size = min(size, self.limit)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = 0
            while written < size:
                written += os.write(fd, self._chunk[: min(len(self._chunk), size - written)])
        finally:
            os.close(fd)
            os.unlink(self.path)


def describe_filesystem(path: str) -> str:
    """The filesystem *path* is on, for the report: its type and device,
    and for ext4 whether it has a journal.

    It matters here: this VM's root filesystem is ext4 *without* a journal,
    and there the kernel checks, for every new inode, that it was not
    deleted in the last 5 to 35 seconds (``recently_deleted`` in
    ``find_inode_bit``, perf: 1 ms of system time per file after a few
    thousand deletes). Every server then creates files at the same
    ~1,000/s, whatever it does around them.
    """
    path = os.path.realpath(path)
    best = ("", "?", "?")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[4]
            after = fields[fields.index("-") + 1 :]
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, after[0], after[1])
    mount_point, fstype, device = best
    text = f"{fstype} on {device}, mounted at {mount_point}"
    if fstype == "ext4":
        try:
            with open(f"/sys/fs/ext4/{os.path.basename(device)}/journal_task") as f:
                journal = f.read().strip() != "<none>"
        except OSError:
            return text
        text += ", with a journal" if journal else ", WITHOUT a journal (file creation is slow after deletes)"
    return text


def make_file(path: str, size: int) -> str:
    """A file of *size* random bytes (random, so nothing can compress it)."""
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(4 * MiB, left))
            f.write(chunk)
            left -= len(chunk)
    return path


# -- processes ----------------------------------------------------------------------


def _status_field(pid: int, name: str) -> int:
    """The first number of line *name* in /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {name} for process {pid}")


def rss_bytes(pid: int) -> int:
    """Resident memory of process *pid* (VmRSS in /proc/PID/status)."""
    return _status_field(pid, "VmRSS") * 1024


def thread_count(pid: int) -> int:
    """Threads of process *pid*."""
    return _status_field(pid, "Threads")


def open_fds(pid: int) -> int:
    """File descriptors process *pid* has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process *pid* has used so far, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process so far (all threads)."""
    times = os.times()
    return times.user + times.system


def raise_file_limit(want: int) -> int:
    """Raise this process's soft limit on open files towards *want* (children
    inherit it). Returns the limit now in force; never above the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


# -- the run's environment -----------------------------------------------------------


@dataclass
class Env:
    """What every workload gets: where to put files, how many runs, the
    prewarm, and a way to say what it is doing (on stderr, so that the
    table on stdout stays clean)."""

    work: str
    runs: int
    prewarm: Prewarm
    quiet: bool = False

    def path(self, *names: str) -> str:
        return os.path.join(self.work, *names)

    def fresh_dir(self, *names: str) -> str:
        """An empty directory under the work directory."""
        import shutil

        path = self.path(*names)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def say(self, message: str) -> None:
        if not self.quiet:
            import sys

            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
