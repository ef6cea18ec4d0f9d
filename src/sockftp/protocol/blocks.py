"""Block lists and deltas: what a file's fixed blocks hash to, and the ops
that build a new version of a file from an old one. Pure: both ends use it.

A file's blocks are its ``DELTA_BLOCK``-byte pieces, in order; the last may
be shorter, and an empty file has none. A block's digest is XXH3-64 (seed
0) of its bytes: 8 bytes, big-endian, written on the wire as 16 lower-case
hex digits (what ``xxhash.xxh3_64(block).hexdigest()`` gives). A 64-bit
hash may collide; every delta ends with the whole file's XXH3-128 check,
which catches it.

A delta is a list of ops that, in order, produce the new file: ``[first,
count]`` copies ``count`` blocks of the base (the old file) from block
``first``; ``[-1, nbytes]`` takes ``nbytes`` new bytes (literals) from the
stream. The server hashes an upload's blocks as it arrives
(:class:`FileHasher`) and checks a delta's ops (:func:`parse_ops`,
:func:`expand_ops`); the client hashes its file (:func:`file_blocks`) and
plans the ops (:func:`delta_ops`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import xxhash

from .checksum import Hasher
from .errors import BadRequest
from .limits import DELTA_BLOCK, DELTA_MAX_OPS, MAX_FILE_SIZE

#: Bytes of one block digest.
DIGEST_SIZE = 8

_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def block_count(size: int, block_size: int = DELTA_BLOCK) -> int:
    """How many blocks a file of *size* bytes has."""
    return -(-size // block_size)


class BlockHasher:
    """The block digests of a byte stream fed in pieces of any size."""

    __slots__ = ("block_size", "_state", "_filled", "_digests")

    def __init__(self, block_size: int = DELTA_BLOCK):
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.block_size = block_size
        self._state = xxhash.xxh3_64()
        self._filled = 0
        self._digests = bytearray()

    def update(self, data) -> None:
        view = memoryview(data)
        while view:
            room = self.block_size - self._filled
            if len(view) < room:
                self._state.update(view)
                self._filled += len(view)
                return
            self._state.update(view[:room])
            self._digests += self._state.digest()
            self._state.reset()
            self._filled = 0
            view = view[room:]

    @property
    def aligned(self) -> bool:
        """True at a block boundary: no block begun and not finished."""
        return not self._filled

    def extend(self, digests: bytes) -> None:
        """Take whole blocks whose digests are known already (a delta's
        copies of blocks whose list is kept), at a block boundary."""
        if self._filled:
            raise ValueError("known digests can only follow whole blocks")
        self._digests += digests

    def digests(self) -> bytes:
        """The digests so far, the short last block included."""
        if self._filled:
            return bytes(self._digests) + self._state.digest()
        return bytes(self._digests)


class FileHasher:
    """The whole-file checksum and the block digests of one stream, fed once.
    Quacks like :class:`~sockftp.protocol.checksum.Hasher`."""

    __slots__ = ("whole", "blocks")

    def __init__(self, block_size: int = DELTA_BLOCK):
        self.whole = Hasher()
        self.blocks = BlockHasher(block_size)

    def update(self, data) -> None:
        self.whole.update(data)
        self.blocks.update(data)

    def value(self) -> str:
        return self.whole.value()

    def digests(self) -> bytes:
        return self.blocks.digests()


def file_blocks(
    fd: int, size: int | None = None, block_size: int = DELTA_BLOCK, buffer_size: int = 4 * 1024 * 1024
) -> tuple[bytes, str]:
    """The block digests and the whole checksum of the file open as *fd*,
    from byte 0 to *size* (None: to its end), in one read.

    Raises ValueError if the file ends before *size*."""
    hasher = FileHasher(block_size)
    buffer = bytearray(max(1, buffer_size))
    view = memoryview(buffer)
    position = 0
    while size is None or position < size:
        want = len(buffer) if size is None else min(len(buffer), size - position)
        n = os.preadv(fd, [view[:want]], position)
        if not n:
            if size is not None:
                raise ValueError(f"file ended after {position} of {size} bytes")
            break
        hasher.update(view[:n])
        position += n
    return hasher.digests(), hasher.value()


@dataclass(frozen=True, slots=True)
class BlockList:
    """A file's blocks as ``blocks`` describes them: its size, time and
    whole checksum, and the digest of each block (8 bytes each)."""

    size: int
    mtime: float
    checksum: str
    block_size: int
    digests: bytes

    @property
    def count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def hexes(self, start: int = 0, stop: int | None = None) -> list[str]:
        """The digests of blocks *start* to *stop* as the wire writes them."""
        stop = self.count if stop is None else stop
        text = self.digests[start * DIGEST_SIZE : stop * DIGEST_SIZE].hex()
        return [text[i : i + 2 * DIGEST_SIZE] for i in range(0, len(text), 2 * DIGEST_SIZE)]


def parse_hexes(values) -> bytes:
    """Digests from their wire form (a list of 16-hex-digit strings).
    Raises ValueError on anything else."""
    if not isinstance(values, list) or not all(isinstance(v, str) and _HEX16.match(v) for v in values):
        raise ValueError("blocks must be a list of 16 lower-case hex digits each")
    return bytes.fromhex("".join(values))


# -- deltas ---------------------------------------------------------------------------


def delta_ops(
    base_digests: bytes, base_size: int, target_digests: bytes, target_size: int, block_size: int = DELTA_BLOCK
) -> list[list[int]]:
    """The ops that build TARGET from BASE: a block of TARGET whose digest
    (and length) some block of BASE has is copied, the same block number
    first; the rest are literals. Neighbouring ops are merged."""
    for digests, size in ((base_digests, base_size), (target_digests, target_size)):
        if len(digests) != block_count(size, block_size) * DIGEST_SIZE:
            raise ValueError(f"{len(digests) // DIGEST_SIZE} digests do not describe {size} bytes")
    base_count = len(base_digests) // DIGEST_SIZE

    def length(size: int, index: int) -> int:
        return min(block_size, size - index * block_size)

    anywhere: dict[tuple[bytes, int], int] = {}
    for index in range(base_count - 1, -1, -1):  # backwards: the first of equal blocks wins
        anywhere[base_digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE], length(base_size, index)] = index
    ops: list[list[int]] = []
    for index in range(len(target_digests) // DIGEST_SIZE):
        digest = target_digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]
        size = length(target_size, index)
        same = index < base_count and base_digests[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE] == digest
        source = index if same and length(base_size, index) == size else anywhere.get((digest, size))
        last = ops[-1] if ops else None
        if source is None:
            if last is not None and last[0] == -1:
                last[1] += size
            else:
                ops.append([-1, size])
        elif last is not None and last[0] >= 0 and last[0] + last[1] == source:
            last[1] += 1
        else:
            ops.append([source, 1])
    return ops


def parse_ops(value) -> list[tuple[int, int]]:
    """A delta's ops as a request carries them, checked for form: a list of
    at most DELTA_MAX_OPS pairs of integers, ``[first >= -1, count >= 1]``.
    Raises BadRequest."""
    if not isinstance(value, list):
        raise BadRequest("field 'delta.ops' must be a list of [first, count] pairs")
    if len(value) > DELTA_MAX_OPS:
        raise BadRequest(f"a delta has at most {DELTA_MAX_OPS} ops, not {len(value)}")
    ops = []
    for op in value:
        if (
            not isinstance(op, list)
            or len(op) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in op)
            or not -1 <= op[0] <= MAX_FILE_SIZE
            or not 1 <= op[1] <= MAX_FILE_SIZE
        ):
            raise BadRequest(f"a delta op must be [block >= 0, count >= 1] or [-1, bytes >= 1], not {str(op)[:64]}")
        ops.append((op[0], op[1]))
    return ops


def literal_bytes(ops: list[tuple[int, int]]) -> int:
    """The new bytes a delta's ops take from the stream."""
    return sum(count for first, count in ops if first == -1)


def expand_ops(
    ops, base_size: int, size: int | None = None, block_size: int = DELTA_BLOCK
) -> list[tuple[int, int, int | None]]:
    """Each op as (offset in the new file, length, offset in the base, or
    None for a literal). Raises BadRequest if a copy reads past the base's
    end, or if the ops do not make exactly *size* bytes (when given)."""
    base_count = block_count(base_size, block_size)
    spans: list[tuple[int, int, int | None]] = []
    position = 0
    for first, count in ops:
        if first == -1:
            spans.append((position, count, None))
            position += count
            continue
        if first + count > base_count:
            raise BadRequest(
                f"a delta op copies blocks {first} to {first + count - 1}, but the base has {base_count} blocks"
            )
        start = first * block_size
        length = min((first + count) * block_size, base_size) - start
        spans.append((position, length, start))
        position += length
    if size is not None and position != size:
        raise BadRequest(f"the delta's ops make {position} bytes, not the {size} announced")
    return spans
