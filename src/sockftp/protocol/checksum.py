"""End-to-end checksums: which algorithm, and how it is written on the wire.

A checksum travels as ``"ALGORITHM:HEX"``, today only ``xxh3-128:`` and 32
lower-case hex digits. XXH3-128 was chosen for speed: about 10 GB/s per core
here against 5 GB/s for BLAKE3 and 1.1 GB/s for SHA-256, so hashing costs a
few percent of a transfer that moves 2-3 GB/s. It detects corruption (a flipped
bit, a truncated or misplaced range, a resume from the wrong file), not
forgery: against a hostile network use TLS, which authenticates every byte.
"""

from __future__ import annotations

import re

import xxhash

ALGORITHM = "xxh3-128"
ALGORITHMS = (ALGORITHM,)

_FORMAT = re.compile(r"^xxh3-128:[0-9a-f]{32}$")


class Hasher:
    """Incremental checksum of a byte stream."""

    __slots__ = ("_state",)

    def __init__(self):
        self._state = xxhash.xxh3_128()

    def update(self, data) -> None:
        self._state.update(data)

    def value(self) -> str:
        return f"{ALGORITHM}:{self._state.hexdigest()}"


def is_valid(text) -> bool:
    """True if *text* is a checksum this version understands."""
    return isinstance(text, str) and bool(_FORMAT.match(text))


def of_bytes(data: bytes) -> str:
    hasher = Hasher()
    hasher.update(data)
    return hasher.value()


def of_file(file, buffer_size: int = 4 * 1024 * 1024, limit: int | None = None) -> str:
    """Checksum of a binary file object from its current position.

    Reads to the end, or *limit* bytes if given.
    """
    return hash_file_into(Hasher(), file, buffer_size, limit).value()


def hash_file_into(hasher: Hasher, file, buffer_size: int = 4 * 1024 * 1024, limit: int | None = None) -> Hasher:
    """Feed *hasher* from *file*'s current position (to the end, or *limit* bytes)."""
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    remaining = limit
    while remaining is None or remaining > 0:
        want = buffer_size if remaining is None else min(buffer_size, remaining)
        n = file.readinto(view[:want])
        if not n:
            break
        hasher.update(view[:n])
        if remaining is not None:
            remaining -= n
    return hasher
