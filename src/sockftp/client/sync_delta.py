"""Big files that a sync finds on both ends: only their changed blocks move.

The server keeps the block list of every big file it stores (fixed
``DELTA_BLOCK`` blocks, XXH3-64 each; :mod:`sockftp.protocol.blocks`). A
sync asks for it (``blocks``), hashes its own copy of the file in one
read, and then:

* **up**: sends only the blocks the server lacks (:meth:`put_delta`); the
  server builds the new version from its old one, verifies the whole and
  commits it as it commits any upload;
* **down**: fetches only the ranges this side lacks (pipelined ranged
  ``get``), builds the new version in the usual partial from the old
  local file and those ranges, in order and hashing as it goes, and
  renames it into place once the whole checksum matches.

If the content turns out to be the same (only the time differs), only the
time is set. If the file on the other end changed in the meantime (the
server says ``delta_base_changed``, or the built file does not match),
the file goes whole, as a put or get would send it: a delta never leaves
a wrong file behind, only a slower transfer.
"""

from __future__ import annotations

import os
import time
from collections import deque

from ..protocol import checksum as checksums
from ..protocol.blocks import delta_ops, expand_ops, file_blocks
from ..protocol.errors import ChecksumMismatch, DeltaBaseChanged
from ..protocol.frames import encoded_size
from ..protocol.limits import DELTA_MAX_OPS, DELTA_MIN, MAX_HEADER_SIZE
from .single import partial_path

#: How a big file went: whole, by a delta, or only its time was set (its content matched).
WHOLE, DELTA, TOUCHED = "whole", "delta", "touched"

#: Bytes copied at a time from the old local file into the new one.
_COPY_BUFFER = 4 * 1024 * 1024


def delta_worthwhile(client, size: int, old_size: int | None) -> bool:
    """A file of *size* bytes replacing one of *old_size* (None: none) goes
    by delta: both big enough to have block lists, and a server that takes
    deltas."""
    return old_size is not None and min(size, old_size) >= DELTA_MIN and client.supports("delta")


# -- up ------------------------------------------------------------------------------------


def delta_up(client, local: str, remote: str, progress) -> tuple[int, str]:
    """Send file *local* over *remote*, which exists, by a delta where it
    pays. Returns (bytes sent, WHOLE, DELTA or TOUCHED)."""
    base = client.blocks(remote)
    with open(local, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        digests, checksum = file_blocks(f.fileno(), st.st_size, base.block_size)
    if checksum == base.checksum and st.st_size == base.size:
        # The same content: only the time differs.
        if "utime" in client.server_info.get("commands", ()):
            client.utime(remote, st.st_mtime_ns / 1e9)
            return 0, TOUCHED
    ops = delta_ops(base.digests, base.size, digests, st.st_size, base.block_size)
    if not _fits_one_request(ops, remote):
        return _whole_put(client, local, remote, progress)
    try:
        result = client.put_delta(
            local, remote, base, local_blocks=(digests, checksum), progress=progress, fallback=False
        )
    except (DeltaBaseChanged, ChecksumMismatch):
        # Changed on the server since its block list (or by this side,
        # since it was hashed): the server stored nothing; send it whole.
        return _whole_put(client, local, remote, progress)
    return result.sent, DELTA


def _fits_one_request(ops: list[list[int]], remote: str) -> bool:
    """Whether a delta of *ops* fits one put header (as put_delta checks)."""
    if len(ops) > DELTA_MAX_OPS:
        return False
    # The rest of the header is far below this margin.
    return encoded_size(ops) + encoded_size(remote) + 512 <= MAX_HEADER_SIZE


def _whole_put(client, local: str, remote: str, progress) -> tuple[int, str]:
    return client.put(local, remote, progress=progress).sent, WHOLE


# -- down ------------------------------------------------------------------------------------


def delta_down(client, remote: str, local: str, progress) -> tuple[int, str]:
    """Make file *local*, which exists, the same as *remote* by a delta
    where it pays. Returns (bytes received, WHOLE, DELTA or TOUCHED)."""
    target = client.blocks(remote)
    with open(local, "rb", buffering=0) as old:
        old_fd = old.fileno()
        old_size = os.fstat(old_fd).st_size
        digests, checksum = file_blocks(old_fd, old_size, target.block_size)
        if checksum == target.checksum and old_size == target.size:
            _set_time(local, target.mtime)  # the same content: only the time differs
            return 0, TOUCHED
        ops = delta_ops(digests, old_size, target.digests, target.size, target.block_size)
        spans = expand_ops(ops, old_size, target.size, target.block_size)
        try:
            received = _build(client, remote, local, old_fd, target, spans, progress)
        except (DeltaBaseChanged, ChecksumMismatch):
            received = None
    if received is None:
        # The server's file changed since its block list: get it whole.
        return client.get(remote, local, progress=progress).sent, WHOLE
    os.replace(partial_path(local), local)
    return received, DELTA


def _build(client, remote: str, local: str, old_fd: int, target, spans, progress) -> int:
    """Write the new version of *local* into its partial, from the old
    file (descriptor *old_fd*) and the ranges of *remote* the *spans* say
    to fetch, in order, hashing as it goes. Returns the bytes received,
    the partial complete, verified and given the file's time; or raises
    DeltaBaseChanged or ChecksumMismatch (the partial then removed)."""
    partial = partial_path(local)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    hasher = checksums.Hasher()
    copies = deque((at, length, source) for at, length, source in spans if source is not None)
    literals = [(at, length) for at, length, source in spans if source is None]
    from ..disk.prealloc import Preallocation  # here: ctypes, which it loads, costs start-up

    ahead = Preallocation.for_file(fd, 0, target.size)
    buffer = bytearray(min(_COPY_BUFFER, max(target.size, 1)))
    done = 0

    def wrote(count: int) -> None:
        nonlocal done
        done += count
        if ahead is not None:
            ahead.cover(done)
        if progress is not None:
            progress(done, target.size)

    def copy_until(limit: int) -> None:
        # The old file's blocks that come before *limit* in the new one.
        while copies and copies[0][0] < limit:
            at, length, source = copies.popleft()
            view = memoryview(buffer)
            while length:
                n = os.preadv(old_fd, [view[: min(length, len(view))]], source)
                if not n:
                    raise ChecksumMismatch(f"{local} shrank while being read")  # (found by the check anyway)
                hasher.update(view[:n])
                _pwrite_all(fd, view[:n], at)
                at, source, length = at + n, source + n, length - n
                wrote(n)

    def write(position: int, chunk) -> None:
        copy_until(position)
        hasher.update(chunk)
        _pwrite_all(fd, chunk, position)
        wrote(len(chunk))

    try:
        try:
            result = client.get_ranges(remote, literals, write)
            copy_until(target.size + 1)
        finally:
            if ahead is not None:
                ahead.release(done)
        if (result.size, result.checksum) != (target.size, target.checksum):
            raise DeltaBaseChanged(f"{remote} changed since its block list was read")
        actual = hasher.value()
        if actual != target.checksum or done != target.size:
            raise ChecksumMismatch(f"the delta of {remote} built {actual}, not {target.checksum}")
        mtime = result.mtime if isinstance(result.mtime, (int, float)) else target.mtime
        os.utime(fd, ns=(time.time_ns(), round(mtime * 1e9)))
    except (DeltaBaseChanged, ChecksumMismatch):
        os.close(fd)
        os.unlink(partial)
        raise
    except BaseException:
        os.close(fd)  # a prefix of the new file: a later get may resume it
        raise
    os.close(fd)
    return result.received


def _pwrite_all(fd: int, data, position: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, position)
        view, position = view[n:], position + n


def _set_time(path: str, mtime: float) -> None:
    os.utime(path, ns=(time.time_ns(), round(mtime * 1e9)), follow_symlinks=False)
