"""The commands sync is built on: ``tree``, ``blocks`` and ``utime``.

``tree`` lists a whole tree in one request, streamed, with the checksum
the server keeps for each file (never one it would have to compute);
``blocks`` gives a file's block list for a delta; ``utime`` sets a file's or
a directory's modification time (sync sets a directory's after filling
it). The transfers themselves are ``get`` with ``length`` and ``put`` with
``delta``, in :mod:`sockftp.server.commands`, whose registry these join:
:mod:`sockftp.server.handler` imports this module for that.
"""

from __future__ import annotations

import re
from contextlib import closing

from ..protocol import fields as protocol
from ..protocol.errors import BadRequest
from ..protocol.frames import encoded_size
from ..protocol.limits import LIST_BATCH_ENTRIES, MAX_HEADER_SIZE, MAX_PATH_DEPTH, MAX_PATH_LENGTH
from ..protocol.tree_pack import TreeBatch
from ..storage import DIRECTORY
from .commands import Context, _path, command

#: Room a frame keeps for its own fields and framing, besides the entries.
_SLACK = 1024


@command("tree")
def tree(ctx: Context, req: dict) -> None:
    """A whole tree's listing, depth first, streamed like ``ls``."""
    target = _path(ctx, req, default="")
    checksums = protocol.boolean(req, "checksums")
    packed = protocol.boolean(req, "packed")
    shown = ctx.session.display(target)
    # Entries a client could not name (deeper or longer paths than the
    # protocol allows, which only a tree made outside sockftp can hold) are
    # left out, and the walk does not go below them.
    depth = MAX_PATH_DEPTH - len(ctx.session.relative(target))
    listed = ctx.session.storage.stat(target).type == DIRECTORY  # else: the file's own entry
    room = MAX_PATH_LENGTH - len(shown.rstrip("/").encode()) - 1 if listed else MAX_PATH_LENGTH
    if packed:
        ctx.bytes = _packed_tree(ctx, target, checksums, depth, room, shown)
        return None
    budget = MAX_HEADER_SIZE - _SLACK - encoded_size(shown)
    batch: list[dict] = []
    used = count = 0
    with closing(ctx.session.storage.tree(target, checksums, depth)) as entries:
        for entry in entries:
            if len(entry.path.encode()) > room:
                continue
            wire_entry = entry.to_wire()
            size = _entry_size(entry.path, wire_entry)
            if batch and (len(batch) >= LIST_BATCH_ENTRIES or used + size > budget):
                ctx.wire.send_header(protocol.ok(entries=batch, more=True))
                batch, used = [], 0
            batch.append(wire_entry)
            used += size
            count += 1
    ctx.wire.send_header(protocol.ok(path=shown, entries=batch, more=False))
    ctx.bytes = count
    return None


def _packed_tree(ctx: Context, target, checksums: bool, depth: int, room: int, shown: str) -> int:
    """``tree`` with ``packed``: each frame a header and a binary body of
    columns (protocol.tree_pack); the entries a count."""
    batch = TreeBatch(checksums)
    count = 0
    with closing(ctx.session.storage.tree(target, checksums, depth)) as entries:
        for path, kind, size, mtime, checksum in entries:
            length = len(path.encode())
            if length > room:
                continue
            batch.add(path, length, kind, size, mtime, checksum)
            count += 1
            if batch.full:
                body = batch.body()
                ctx.wire.send_header(protocol.ok(count=len(batch), body=len(body), more=True), body)
                batch = TreeBatch(checksums)
    body = batch.body() if len(batch) else b""
    ctx.wire.send_header(protocol.ok(path=shown, count=len(batch), body=len(body), more=False), body)
    return count


#: Most bytes an entry takes besides its path, checksum included.
_ENTRY_FIELDS = 160
#: What JSON escapes in a string (the rest of UTF-8 is written as it is).
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def _entry_size(path: str, wire_entry: dict) -> int:
    """An upper bound of the bytes *wire_entry* takes in a frame: exact
    sizes cost a JSON encoding per entry, a third of a listing's time."""
    if _ESCAPED.search(path):
        return encoded_size(wire_entry) + 1
    return len(path.encode()) + _ENTRY_FIELDS


@command("blocks")
def blocks(ctx: Context, req: dict) -> None:
    """A file's block list, streamed: every frame carries the file's size,
    time, checksum and block size, the index of its first block, and as
    many block digests as fit."""
    target = _path(ctx, req)
    ctx.wire.flush()  # a file without a kept list is read whole first
    listing = ctx.session.storage.blocks(target)
    head = {
        "path": ctx.session.display(target),
        "size": listing.size,
        "mtime": listing.mtime,
        "checksum": listing.checksum,
        "block_size": listing.block_size,
    }
    # A digest is 16 hex digits in quotes and a comma: 19 bytes.
    per_frame = max(1, (MAX_HEADER_SIZE - _SLACK - encoded_size(head)) // 19)
    first = 0
    while True:
        stop = min(first + per_frame, listing.count)
        more = stop < listing.count
        ctx.wire.send_header(protocol.ok(**head, first=first, blocks=listing.hexes(first, stop), more=more))
        if not more:
            break
        first = stop
    ctx.bytes = listing.count
    return None


@command("utime", writes=True)
def utime(ctx: Context, req: dict) -> dict:
    """Set a file's or a directory's modification time."""
    target = _path(ctx, req)
    mtime = protocol.timestamp(req, "mtime")
    if mtime is None:
        raise BadRequest("missing field 'mtime'")
    ctx.session.storage.set_mtime(target, mtime)
    return protocol.ok(path=ctx.session.display(target))
