"""A listing's entry as it crosses the wire: what ``ls``, ``stat`` and ``tree`` describe.

Both ends share it: storage backends produce entries, the server sends them
with :meth:`Entry.to_wire` (:meth:`TreeEntry.to_wire` for ``tree``), and
the client reads them back. It knows nothing of where the file lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

FILE = "file"
DIRECTORY = "dir"
LINK = "link"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Entry:
    """One file or directory as listings and ``stat`` show it."""

    name: str
    type: str  # FILE, DIRECTORY, LINK or OTHER
    size: int
    mtime: float  # seconds since the epoch

    def to_wire(self) -> dict:
        return {"name": self.name, "type": self.type, "size": self.size, "mtime": self.mtime}


class TreeEntry(NamedTuple):
    """One entry of a whole tree's listing (``tree``): its path relative to
    the listed directory ("/"-separated, never empty), and the checksum
    the server keeps for a file, if it has one valid for the file as it is.
    (A named tuple, not a frozen dataclass: a listing makes one per entry,
    and a frozen dataclass takes four times as long to make.)"""

    path: str
    type: str  # FILE, DIRECTORY, LINK or OTHER
    size: int
    mtime: float
    checksum: str | None = None

    def to_wire(self) -> dict:
        wire = {"path": self.path, "type": self.type, "size": self.size, "mtime": self.mtime}
        if self.checksum is not None:
            wire["checksum"] = self.checksum
        return wire
