"""The packed form of a ``tree`` listing: one binary body per frame instead
of one JSON object per entry (feature ``tree-packed``, docs/PROTOCOL.md).

A re-sync of an unchanged tree is mostly its listing, and most of a JSON
listing's cost was per entry: a dict made, encoded and decoded for each of
100,000 files. Packed, a frame of N entries carries its fields in columns,
each one piece of C work at both ends (struct, bytes.join, str.split):

====================  =======================================================
``N`` bytes           each entry's type: ``f`` file, ``d`` dir, ``l`` link, ``o`` other
``8 N`` bytes         sizes, unsigned 64-bit little-endian
``8 N`` bytes         modification times, IEEE-754 doubles (seconds), little-endian
``N`` bytes           with ``checksums`` only: 1 if the entry has a checksum, else 0
``16 N`` bytes        with ``checksums`` only: each XXH3-128 digest (zeros if none)
the rest              the paths, UTF-8, separated by one NUL byte (no path holds NUL)
====================  =======================================================

Both ends use this module: the server's ``tree`` command packs with
:class:`TreeBatch`, the client unpacks with :func:`unpack`, which refuses a
body that does not add up (never a crash, never an entry made up).
Whether each path's directory was listed before it is the reader's to
check, across frames.
"""

from __future__ import annotations

import math
import struct

from .checksum import ALGORITHM
from .entries import DIRECTORY, FILE, LINK, OTHER
from .errors import BadFrame, PathRefused
from .limits import MAX_PATH_LENGTH

#: A frame's body is flushed once it holds this much (plus, at most, one entry).
BODY_TARGET = 256 * 1024
#: The most entries one frame holds.
MAX_ENTRIES = 8192
#: The largest body a client accepts: the target, and one more entry of the longest path.
MAX_BODY = BODY_TARGET + MAX_PATH_LENGTH + 64

_CODE = {FILE: "f", DIRECTORY: "d", LINK: "l", OTHER: "o"}
_KIND = {ord("f"): FILE, ord("d"): DIRECTORY, ord("l"): LINK}
_PREFIX = ALGORITHM + ":"
_NO_DIGEST = bytes(16)
#: Bytes of fixed fields per entry, without and with checksums.
FIXED = 17
FIXED_WITH_CHECKSUMS = FIXED + 17


class TreeBatch:
    """The entries of one frame, gathered column by column."""

    __slots__ = ("checksums", "codes", "sizes", "mtimes", "flags", "digests", "paths", "used")

    def __init__(self, checksums: bool):
        self.checksums = checksums
        self.codes: list[str] = []
        self.sizes: list[int] = []
        self.mtimes: list[float] = []
        self.flags = bytearray()
        self.digests: list[bytes] = []
        self.paths: list[str] = []
        self.used = 0  # bytes of the body so far

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def full(self) -> bool:
        return self.used >= BODY_TARGET or len(self.paths) >= MAX_ENTRIES

    def add(self, path: str, length: int, kind: str, size: int, mtime: float, checksum: str | None = None) -> None:
        """Add an entry; *length* is the bytes of *path* in UTF-8."""
        self.codes.append(_CODE.get(kind, "o"))
        self.sizes.append(size)
        self.mtimes.append(mtime)
        self.paths.append(path)
        self.used += length + FIXED + 1
        if self.checksums:
            if checksum is not None and checksum.startswith(_PREFIX):
                self.flags.append(1)
                self.digests.append(bytes.fromhex(checksum[len(_PREFIX) :]))
            else:
                self.flags.append(0)
                self.digests.append(_NO_DIGEST)
            self.used += 17

    def body(self) -> bytes:
        n = len(self.paths)
        parts = [
            "".join(self.codes).encode(),
            struct.pack(f"<{n}Q", *self.sizes),
            struct.pack(f"<{n}d", *self.mtimes),
        ]
        if self.checksums:
            parts += [bytes(self.flags), b"".join(self.digests)]
        parts.append("\0".join(self.paths).encode("utf-8"))
        return b"".join(parts)


def _unsafe(joined: str) -> bool:
    """True if a path of *joined* (paths separated by NUL) has an empty name
    (a path that is empty, starts or ends with "/", or holds "//"), a "." or
    ".." name, or a backslash. A few searches over all the paths at once:
    a regular expression tried at every position took 20 ms for 10,000."""
    wrapped = "/" + joined.replace("\0", "/") + "/"
    return "//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\\" in joined


def unpack(
    body: bytes, count: int, checksums: bool
) -> tuple[list[str], list[str], tuple[int, ...], list[float], list[str | None] | None]:
    """(paths, types, sizes, mtimes, checksums or None) of a packed body of
    *count* entries. Raises BadFrame if the body does not add up, and
    PathRefused if a path could lead outside the listed directory (``..``,
    empty names, a backslash). Times that are not finite read as 0."""
    fixed = FIXED_WITH_CHECKSUMS if checksums else FIXED
    if type(count) is not int or count < 1 or len(body) < count * (fixed + 1) - 1:
        raise BadFrame("a packed tree frame whose size does not match its count")
    codes = body[:count]
    at = count
    sizes = struct.unpack_from(f"<{count}Q", body, at)
    at += 8 * count
    mtimes = list(struct.unpack_from(f"<{count}d", body, at))
    at += 8 * count
    sums = None
    if checksums:
        flags = body[at : at + count]
        at += count
        digests = body[at : at + 16 * count]
        at += 16 * count
        sums = [_PREFIX + digests[16 * i : 16 * i + 16].hex() if flag == 1 else None for i, flag in enumerate(flags)]
    try:
        joined = body[at:].decode("utf-8")
    except UnicodeDecodeError:
        raise BadFrame("a packed tree frame with paths that are not UTF-8") from None
    paths = joined.split("\0")
    if len(paths) != count:
        raise BadFrame("a packed tree frame whose paths do not match its count")
    if _unsafe(joined):
        bad = next(path for path in paths if _unsafe(path))
        raise PathRefused(f"the server listed an unsafe path: {bad!r}")
    kinds = [_KIND.get(code, OTHER) for code in codes]
    if not all(map(math.isfinite, mtimes)):
        mtimes = [t if math.isfinite(t) else 0.0 for t in mtimes]
    return paths, kinds, sizes, mtimes, sums
