"""A listing's entry as it crosses the wire: what ``ls`` and ``stat`` describe.

Both ends share it: storage backends produce entries, the server sends them
with :meth:`Entry.to_wire`, and the client reads them back. It knows
nothing of where the file lives.
"""

from __future__ import annotations

from dataclasses import dataclass

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
