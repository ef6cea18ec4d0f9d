"""A replaced file freed after its replacer has moved on, not inside the
rename that replaced it.

Why: a rename over a file, like an unlink, frees that file there and then
if nothing else holds it: the kernel drops every page the file has in the
page cache (waiting for any of them still being written out) and gives its
blocks back. For a large file just written, as a file a sync tool uploads
again usually is, that is the most expensive step of the rename. perf on
this project's VM, a 512 MiB file over one just as large (journaled ext4,
blocks reserved ahead as uploads have them): the rename spends its time in
``evict`` -> ``truncate_inode_pages_range``, 25-35 ms of it, as long as an
unlink of the same file; on the VM's ext4 without a journal, mounted with
``discard``, 60-95 ms. A first upload to a new name pays none of it, so
replacing a file was that much slower than writing a new one.

How: the replacer first opens the file it is about to replace with
``O_PATH`` (:func:`hold`: it reads nothing, and opens no FIFO or device),
so the rename only removes a name and the file lives on, nameless, until
that descriptor is closed; then it hands the descriptor to :data:`DROPPER`,
whose thread closes it while the replacer answers its client. The kernel
does the same work, off the request's path. A reader with the old file
open is unaffected either way: it holds the file too.

Not ext4's ``auto_da_alloc``, as first suspected: it writes a file renamed
over another out at the rename only if its blocks are still to be
allocated, and uploads of 1 MiB or more have theirs reserved ahead
(:mod:`sockftp.disk.prealloc`; the ``ext4_alloc_da_blocks`` tracepoint
counts 0 blocks for them). Swapping the names with ``renameat2``'s
``RENAME_EXCHANGE`` and then unlinking the old file would free it in the
unlink, at the same cost, and would lose what ``auto_da_alloc`` gives
smaller uploads without ``--fsync``: their data starts for the disk at the
rename, instead of up to 30 s later (tests/test_power_cut.py).

The same goes for a file removed (``rm``, FTP's ``DELE``) or renamed over
(``mv`` onto an existing file): storage holds it the same way
(:func:`hold_large`) before the unlink or the rename.

Nothing here changes what reaches the disk, or in which order; only the
replaced file's blocks come back a few milliseconds later. A crash frees
the nameless file (ext4 keeps an orphan list for it).
"""

from __future__ import annotations

import collections
import os
import stat as statmod
import threading
from contextlib import contextmanager

#: Files smaller than this are freed at once: handing them over costs more
#: than it saves (1,500 replaces of a 4 KiB file on a journaled ext4: 390 µs
#: each with the file handed over, 308 µs freed at once).
DROP_LATER_AT = 1024 * 1024

#: Seconds a caller short of disk space waits for the dropper to free what
#: it holds before it says the disk is full (storage's space checks and
#: writes): a file removed a moment ago is still on its queue.
DROPPER_WAIT = 5.0

#: Linux only; elsewhere nothing is held and replaced files are freed at once.
_O_PATH = getattr(os, "O_PATH", None)


def hold(name: str, dir_fd: int, st: os.stat_result) -> int:
    """A descriptor that keeps alive the regular file *name* in *dir_fd*,
    which *st* describes (so the file is the one just looked at), or -1 if
    it cannot be had (no ``O_PATH`` here, the name changed meanwhile...):
    the caller then frees the file itself, as it would have."""
    if _O_PATH is None or not statmod.S_ISREG(st.st_mode):
        return -1
    try:
        fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return -1
    try:
        held = os.fstat(fd)
    except OSError:
        os.close(fd)
        return -1
    if (held.st_ino, held.st_dev) != (st.st_ino, st.st_dev) or not statmod.S_ISREG(held.st_mode):
        os.close(fd)
        return -1
    return fd


def hold_large(name: str, dir_fd: int, st: os.stat_result) -> int:
    """:func:`hold` for a file about to lose its last name (an unlink, a
    rename over it) that is worth freeing off the request's path: a
    regular file of at least :data:`DROP_LATER_AT` with no other link.
    -1 for anything else, which the caller frees at once as before."""
    if not statmod.S_ISREG(st.st_mode) or st.st_size < DROP_LATER_AT or st.st_nlink != 1:
        return -1
    return hold(name, dir_fd, st)


def let_go(fd: int) -> None:
    """Hand a hold from :func:`hold_large` (or -1: nothing) to :data:`DROPPER`."""
    if fd >= 0:
        DROPPER.drop(fd)


class Dropper:
    """Closes descriptors on a thread of its own, in the order given: the
    last references to replaced files, so that freeing them is not the
    replacer's wait."""

    #: Descriptors waiting at most: past it, :meth:`drop` closes in its
    #: caller (so descriptors held stay bounded, and a dropper that falls
    #: behind slows its callers down instead of piling files up).
    max_pending = 64

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # something to close, or unpaused
        self._done = threading.Condition(self._lock)  # nothing left to close
        self._queue: collections.deque[int] = collections.deque()
        self._pending = 0  # queued, or being closed
        self._paused = 0
        self._thread: threading.Thread | None = None

    def drop(self, fd: int) -> None:
        """Close *fd*, soon, on the dropper's thread."""
        with self._lock:
            if self._pending < self.max_pending:
                self._queue.append(fd)
                self._pending += 1
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="sockftp dropper", daemon=True)
                    self._thread.start()
                self._work.notify()
                return
        os.close(fd)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue or self._paused:
                    self._work.wait()
                fd = self._queue.popleft()
            try:
                os.close(fd)  # the GIL is released while the kernel frees the file
            except OSError:
                pass
            with self._lock:
                self._pending -= 1
                if not self._pending:
                    self._done.notify_all()

    @property
    def pending(self) -> int:
        """Descriptors handed over and not closed yet."""
        return self._pending

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every descriptor handed over so far is closed; False if
        *timeout* seconds passed first."""
        with self._lock:
            return self._done.wait_for(lambda: not self._pending, timeout)

    @contextmanager
    def paused(self):
        """Close nothing until the block ends (what was handed over waits):
        lets a test see a replaced file still held after its commit."""
        with self._lock:
            self._paused += 1
        try:
            yield self
        finally:
            with self._lock:
                self._paused -= 1
                self._work.notify()


#: The process's dropper: one thread, started by its first drop.
DROPPER = Dropper()

# A forked child has none of the parent's threads: it starts its own.
os.register_at_fork(after_in_child=DROPPER._reset)

__all__ = ["DROPPER", "DROPPER_WAIT", "DROP_LATER_AT", "Dropper", "hold", "hold_large", "let_go"]
