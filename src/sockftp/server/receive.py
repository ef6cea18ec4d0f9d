"""What every door does around an upload's bytes: the hasher, the check, the commit.

The native ``put``, the HTTP door's ``PUT`` and its tus uploads all hash
an upload as it arrives, keep block lists for a large one (for later
deltas), refuse a checksum that does not match (dropping the bytes), and
commit with the checksum so that downloads need not hash the file again.
They share these steps from here, so that the three cannot drift apart.
"""

from __future__ import annotations

from ..protocol import checksum as checksums
from ..protocol.blocks import FileHasher
from ..protocol.errors import ChecksumMismatch
from ..protocol.limits import DELTA_BLOCK, DELTA_MIN


def keeps_blocks(storage, size: int | None) -> bool:
    """Whether an upload of *size* bytes to *storage* keeps a block list."""
    return (size or 0) >= DELTA_MIN and storage.keeps_checksums


def hasher_for(lists: bool):
    """The hasher of an upload: whole-file, and per block with *lists*."""
    return FileHasher(DELTA_BLOCK) if lists else checksums.Hasher()


def verify_and_commit(upload, hasher, expected: str | None, lists: bool, name: str) -> str:
    """Commit *upload*, whose bytes *hasher* has seen, if they match
    *expected* (None: anything); return their checksum. On a mismatch,
    drop the bytes and raise ChecksumMismatch (*name*: the path, for the
    message)."""
    actual = hasher.value()
    if expected is not None and actual != expected:
        upload.discard()
        raise ChecksumMismatch(
            f"upload of {name} arrived damaged: expected {expected}, got {actual}; nothing was stored",
            checksum=actual,
        )
    if lists:
        upload.set_blocks(DELTA_BLOCK, hasher.digests())
    upload.commit(actual)
    return actual
