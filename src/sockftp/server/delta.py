"""The server's half of a delta ``put``: checking it, and building the new
file from the stored one's blocks and the literal bytes that arrive.

A delta put (docs/PROTOCOL.md, "Delta put") names the file it was built
against by its checksum. That file must be the one stored now, with that
checksum kept with it: the server checks it before it reads a byte, and
answers ``delta_base_changed`` otherwise (the client then sends the whole
file). It keeps the base open from then on, so a replace of the name
meanwhile does not change what it copies from. Everything after that is an
ordinary upload (:func:`sockftp.server.commands.put`): a hidden partial
that the quota reserves the whole new size for, a whole-file checksum
over every byte written, an atomic commit. A delta put is never resumed:
cut short, it leaves no partial.

Copied blocks go through user space (read, hash, write), not
``copy_file_range`` plus a read to hash them: on ext4 the first moved a
64 MiB copy in 22 ms against 24 ms, it hashes exactly the bytes it writes,
and it writes through the same path as an upload's bytes (blocks reserved
ahead, free space accounted). A copy-on-write filesystem would share the
blocks instead (left out: every byte must be read to hash it anyway).
Their block digests are taken from the base's kept list rather than
computed again, where the copy starts at a block boundary of the new file:
of the four passes over a copied byte (read, whole-file hash, block hash,
write), that drops one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..protocol import checksum as checksums
from ..protocol.blocks import DIGEST_SIZE, FileHasher, expand_ops, literal_bytes, parse_ops
from ..protocol.errors import BadRequest, DeltaBaseChanged, Internal, NotFound, SockftpError
from ..protocol.limits import DELTA_BLOCK, MAX_FILE_SIZE
from ..protocol.paths import RemotePath
from ..storage import Download, Storage, Upload

log = logging.getLogger("sockftp.commands")


@dataclass(frozen=True)
class Delta:
    """A delta put's ``delta`` field, checked for form."""

    base: str  # the checksum of the file it was built against
    block_size: int
    ops: list[tuple[int, int]]
    literals: int  # the raw bytes that follow the header


def parse(value) -> Delta:
    """The ``delta`` field of a put. Raises BadRequest if it is malformed:
    then the number of raw bytes that follow is unknown."""
    if not isinstance(value, dict):
        raise BadRequest("field 'delta' must be an object with 'base', 'block_size' and 'ops'")
    base = value.get("base")
    if not checksums.is_valid(base):
        raise BadRequest(f"field 'delta.base' must be one of {list(checksums.ALGORITHMS)} 'ALG:HEX'")
    block_size = value.get("block_size")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise BadRequest("field 'delta.block_size' must be a positive integer")
    ops = parse_ops(value.get("ops"))
    literals = literal_bytes(ops)
    if literals > MAX_FILE_SIZE:
        raise BadRequest("a delta's literal bytes add up past the largest file")
    return Delta(base, block_size, ops, literals)


class DeltaPut:
    """A checked delta put: its base, open, and its ops as spans of the new
    file (offset, length, offset in the base or None for new bytes)."""

    def __init__(self, base: Download, spans: list[tuple[int, int, int | None]], digests: bytes | None = None):
        self.base = base
        self.spans = spans
        self.digests = digests  # the base's kept block digests, if any

    def receive(self, wire, upload: Upload, write, hasher, failures: list[SockftpError]) -> None:
        """Build the new file in *upload*, in op order: literals from *wire*
        (through *write*, which notes failures and drops bytes after one),
        copies from the base. Every byte feeds *hasher*. After a failure the
        literals are still read, to keep the stream in step."""
        for _, length, source in self.spans:
            if source is None:
                wire.receive(length, write, hasher)
            elif not failures:
                feed = hasher
                if self.digests is not None and isinstance(hasher, FileHasher):
                    feed = _KnownBlocks(hasher, self.digests, source)
                try:
                    upload.copy_from(self.base, source, length, feed)
                except SockftpError as exc:
                    failures.append(exc)
                except Exception:  # noqa: BLE001 - a bug, but the stream must stay in step
                    log.exception("copying a delta's blocks into %s failed", "/".join(upload.path))
                    failures.append(Internal("building the new file failed; see the server log"))

    def close(self) -> None:
        self.base.close()


class _KnownBlocks:
    """Feeds a FileHasher the bytes copied from the base from *position*:
    the whole-file hash gets every byte, the block list the base's kept
    digests for the whole blocks, where the new file is at a block
    boundary (else, and for a short last block, they are hashed)."""

    __slots__ = ("hasher", "digests", "position")

    def __init__(self, hasher: FileHasher, digests: bytes, position: int):
        self.hasher, self.digests, self.position = hasher, digests, position

    def update(self, data) -> None:
        blocks = self.hasher.blocks
        size = blocks.block_size
        whole = len(data) // size
        first = self.position // size
        self.position += len(data)
        if not blocks.aligned or self.position - len(data) != first * size:
            self.hasher.update(data)
            return
        self.hasher.whole.update(data)
        blocks.extend(self.digests[first * DIGEST_SIZE : (first + whole) * DIGEST_SIZE])
        if len(data) > whole * size:
            blocks.update(memoryview(data)[whole * size :])


def open_base(storage: Storage, target: RemotePath, size: int, delta: Delta) -> DeltaPut:
    """Open the file at *target* as the delta's base and check the delta
    against it. Raises DeltaBaseChanged if it is not the file the delta was
    built against (none there, another checksum, or no checksum kept: it
    changed behind the server's back), BadRequest if the ops do not fit it,
    and what opening a file raises."""
    try:
        base = storage.open_read(target)
    except NotFound:
        raise DeltaBaseChanged("no file at {path} to apply a delta to; send the whole file", path=target) from None
    try:
        stored = base.stored_checksum()
        if stored != delta.base:
            raise DeltaBaseChanged(
                "{path} is no longer the file the delta was built against; send the whole file", path=target
            )
        if delta.block_size != DELTA_BLOCK:
            raise BadRequest(f"this server's delta blocks are {DELTA_BLOCK} bytes, not {delta.block_size}")
        spans = expand_ops(delta.ops, base.size, size, DELTA_BLOCK)
        digests = storage.kept_blocks(target, base)
    except BaseException:
        base.close()
        raise
    return DeltaPut(base, spans, digests)
