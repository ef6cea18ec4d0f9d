"""Disk blocks reserved just ahead of a file written from start to end: an
upload on the server, a download on the client.

Why: ext4 writes page cache into blocks a file already owns far faster than
into blocks it must first reserve for later allocation (delayed
allocation, at every page). Measured on this project's VM, 1 GiB in 4 MiB
writes to a fresh file: 6.3 GB/s as is, 10.4 GB/s with the blocks
reserved first, whether 16 MiB ahead or all at once; and writing the file
is 70% of a large download's time on the client (docs/BENCHMARKS.md).

How, with ``fallocate(2)``:

* ``FALLOC_FL_KEEP_SIZE``: the file's size stays the count of bytes
  written, which is what a partial's resume goes by;
* at most :data:`WINDOW` ahead of the writer: an upload announced at a
  terabyte that then stalls holds 16 MiB of disk, not a terabyte;
* :meth:`Preallocation.release` gives back what was reserved past the end
  when a transfer stops short, so a kept partial holds no more disk than
  its bytes need.

Anything the filesystem or the C library refuses (no ``fallocate``, no
space, a quota) turns it off for that file: the writes then go as they
would have, and meet any real error themselves.
"""

from __future__ import annotations

import os

from .syscalls import block_reserver

FALLOC_FL_KEEP_SIZE = 0x01

#: How far ahead of the writer blocks are reserved.
WINDOW = 16 * 1024 * 1024
#: Transfers smaller than this are not worth a system call.
MINIMUM = 1024 * 1024

_fallocate = block_reserver()


class Preallocation:
    """Blocks reserved ahead of sequential writes to *fd*, which will end at
    byte *end*. Call :meth:`cover` before each write, :meth:`release` if the
    transfer stops before *end*."""

    __slots__ = ("_fd", "_end", "_reserved")

    def __init__(self, fd: int, start: int, end: int):
        self._fd = fd
        self._end = end
        # Blocks may be reserved up to here: a refused call may still have
        # reserved part of its range (ext4 keeps what it got before ENOSPC).
        self._reserved = start

    @classmethod
    def for_file(cls, fd: int, start: int, end: int) -> Preallocation | None:
        """A preallocation for writes from *start* to *end*, or None where it
        cannot help (no ``fallocate``, or too few bytes to matter)."""
        if _fallocate is None or end - start < MINIMUM:
            return None
        return cls(fd, start, end)

    def cover(self, upto: int) -> None:
        """Make sure blocks are reserved up to byte *upto* (and a window
        beyond it), before the bytes up to there are written."""
        if upto <= self._reserved or self._fd < 0:
            return
        stop = min(upto + WINDOW, self._end)
        if stop <= self._reserved:
            return
        refused = _fallocate(self._fd, FALLOC_FL_KEEP_SIZE, self._reserved, stop - self._reserved) != 0
        self._reserved = stop
        if refused:
            self._end = stop  # write without it from now on

    def release(self, written_to: int) -> None:
        """The transfer stopped with the file ending at *written_to*: give
        back the blocks reserved past it. Best effort, once; the descriptor
        is not used again (call it before closing).

        By truncating the file to its own size: ext4 frees the blocks past
        the end that way (the tests check it), where a punched hole stops at
        the end of the file."""
        fd, self._fd = self._fd, -1
        if fd < 0 or self._reserved <= written_to:
            return
        try:
            os.ftruncate(fd, os.fstat(fd).st_size)
        except OSError:
            pass
