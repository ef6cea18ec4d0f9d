"""Free disk space, less a reserve and what uploads under way were promised.

An upload that announces its size is refused at once, with
``insufficient_storage``, when the filesystem cannot hold the rest of it:
a user uploading 100 GB to a disk with 50 GB free learns it before the
first byte, not after 50 GB. Each admitted upload is *promised* its
remaining bytes until they land, so two uploads that each fit alone but
not together cannot both start. An upload of unknown size (FTP's ``STOR``)
is checked chunk by chunk instead, and stops at the chunk that would eat
into the reserve.

The reserve (``min_free``) keeps the disk usable for the server's own
state and for the system: by default the smaller of 1% of the filesystem
and 1 GiB. The figures come from ``statvfs``, the space an unprivileged
process may use. This module only counts: it never writes a file.
"""

from __future__ import annotations

import os
import threading

from ..disk.dropper import DROPPER, DROPPER_WAIT
from ..protocol.errors import InsufficientStorage
from ..protocol.units import human_size as human

GiB = 1 << 30

#: The default reserve: the smaller of this share of the filesystem...
DEFAULT_RESERVE_SHARE = 0.01
#: ...and this many bytes, so a big disk does not keep tens of GB idle.
DEFAULT_RESERVE_BYTES = GiB


class DiskSpace:
    """The room left for uploads on the filesystem of *path*.

    Args:
        path: a directory on the filesystem to watch.
        min_free: the reserve: bytes (an int), a share of the filesystem
            (a float below 1, e.g. 0.01 for 1%), or None for the default.
    """

    def __init__(self, path: str, min_free: int | float | None = None):
        self.path = path
        self.min_free = min_free
        self.promised = 0
        self._lock = threading.Lock()

    def reserve(self, total: int) -> int:
        """The bytes kept free on a filesystem of *total* bytes."""
        if self.min_free is None:
            return min(int(total * DEFAULT_RESERVE_SHARE), DEFAULT_RESERVE_BYTES)
        if isinstance(self.min_free, float):
            return int(total * self.min_free)
        return self.min_free

    def _free(self) -> int:
        """Free bytes less the reserve, before any promise."""
        st = os.statvfs(self.path)
        total = st.f_blocks * st.f_frsize
        return st.f_bavail * st.f_frsize - self.reserve(total)

    def available(self) -> int:
        """Bytes a new upload may still claim (may be negative)."""
        with self._lock:
            return self._free() - self.promised

    def promise(self, count: int) -> Promise:
        """Claim *count* bytes for an upload, or raise InsufficientStorage."""
        if count <= 0:
            return Promise(self, 0)
        if count > self.available() and DROPPER.pending:
            # Files just removed or replaced, still held by the dropper,
            # give their blocks back in a moment: let it finish first.
            DROPPER.wait(DROPPER_WAIT)
        with self._lock:
            left = self._free() - self.promised
            if count > left:
                raise InsufficientStorage(
                    f"not enough free space on the server: {human(count)} to come, {human(max(0, left))} free",
                    free_bytes=max(0, left),
                )
            self.promised += count
        return Promise(self, count)

    def check(self, count: int) -> None:
        """Raise InsufficientStorage unless *count* more bytes fit now (an
        upload that announced no size, before each chunk)."""
        left = self.available()
        if count > left and DROPPER.pending:
            DROPPER.wait(DROPPER_WAIT)
            left = self.available()
        if count > left:
            raise InsufficientStorage(
                f"not enough free space on the server for the next {human(count)}: {human(max(0, left))} free",
                free_bytes=max(0, left),
            )

    def _settle(self, count: int) -> None:
        with self._lock:
            self.promised -= count


class Promise:
    """Bytes promised to one upload. They leave the promise as they land on
    disk (where ``statvfs`` then counts them), and the rest when the upload
    ends, whichever way."""

    __slots__ = ("_space", "left")

    def __init__(self, space: DiskSpace, count: int):
        self._space = space
        self.left = count

    def landed(self, count: int) -> None:
        count = min(count, self.left)
        if count:
            self.left -= count
            self._space._settle(count)

    def release(self) -> None:
        self.landed(self.left)
