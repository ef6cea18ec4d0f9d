"""The open files of a LocalStorage: downloads, uploads, and what they share with the tree.

:class:`LocalDownload` reads a committed file; :class:`LocalUpload` writes a
partial and renames it over its target on commit (a large file it replaces
is freed after, off the commit's path: see :mod:`sockftp.disk.dropper`);
:class:`UnnamedUpload` writes a small upload to an unnamed file and links
it under its name. Below them: the partial files' names, the extended
attributes that mark a partial's announced size and cache a file's
checksum, how an OS error becomes a protocol error, and the low-level
helpers the tree (:mod:`sockftp.storage.local`) calls to open, copy and
probe files.

This module must never import :mod:`sockftp.storage.local` at run time
(which imports it: a cycle), and must never walk a path: it works only on
descriptors the tree has already reached without following links, and on
single names below them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import stat as statmod
import struct
import time
from typing import TYPE_CHECKING

from ..disk.dropper import DROP_LATER_AT, DROPPER, DROPPER_WAIT, hold
from ..disk.prealloc import Preallocation
from ..disk.syscalls import empty_path_linker, link_by_descriptor
from ..protocol import checksum as checksums
from ..protocol.errors import (
    Exists,
    IOFailure,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    PathRefused,
    SockftpError,
)
from ..protocol.limits import DELTA_BLOCK, DELTA_MIN, RESERVED_PREFIX
from ..protocol.paths import RemotePath
from . import blocks as sidecars
from .base import Download, Upload
from .space import Promise

if TYPE_CHECKING:
    # Only for annotations: the uploads are handed their storage, never
    # import it, so the tree and its files do not import each other.
    from .local import LocalStorage

log = logging.getLogger("sockftp.storage")

PARTIAL_PREFIX = RESERVED_PREFIX + "-part-"
_XATTR_CHECKSUM = "user.sockftp.checksum"
_XATTR_UPLOAD_SIZE = "user.sockftp.upload-size"

_HASH_BUFFER = 4 * 1024 * 1024
#: Opening an unnamed file (UnnamedUpload, and the probe in _unnamed_linker).
_CREATE_UNNAMED = os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC


def partial_name(name: str) -> str:
    """The hidden partial file for *name*: fixed length whatever the name."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return PARTIAL_PREFIX + digest


def _error(exc: OSError, path: RemotePath) -> SockftpError:
    """The protocol error for an OS error on *path*."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound("no such file or directory: {path}", path=path)
    if code == errno.EEXIST:
        return Exists("already exists: {path}", path=path)
    if code == errno.ENOTDIR:
        return NotADirectory("not a directory: {path}", path=path)
    if code == errno.EISDIR:
        return IsADirectory("is a directory: {path}", path=path)
    if code == errno.ENOTEMPTY:
        return NotEmpty("directory not empty: {path}", path=path)
    if code == errno.ELOOP:
        return PathRefused("symbolic links are not followed: {path}", path=path)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace("no space left on the server for {path}", path=path)
    if code == errno.ENAMETOOLONG:
        return PathRefused("name too long for the server's filesystem: {path}", path=path)
    if code == errno.EINVAL:
        return PathRefused("invalid operation on {path}", path=path)
    if code in (errno.EMFILE, errno.ENFILE):
        # Passing (descriptors come back as sessions and transfers end), and
        # logged by whoever was refused: one line per failure is enough.
        return IOFailure("the server is out of file descriptors; try again shortly")
    log.warning("storage error on %s: %s", "/".join(path), exc)
    return IOFailure(f"storage error on {{path}}: {exc.strerror}", path=path)


def _open_regular(parent_fd: int, path: RemotePath) -> tuple[int, os.stat_result]:
    """A blocking read descriptor of the regular file *path* (whose parent
    is open as *parent_fd*), and its stat. Raises NotFound, IsADirectory,
    PathRefused (a link, a FIFO, a device...)."""
    try:
        # O_NONBLOCK so that a FIFO placed in the tree cannot block us.
        fd = os.open(path[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent_fd)
    except OSError as exc:
        raise _error(exc, path) from None
    try:
        st = os.fstat(fd)
        if statmod.S_ISDIR(st.st_mode):
            raise IsADirectory("is a directory: {path}", path=path)
        if not statmod.S_ISREG(st.st_mode):
            raise PathRefused("not a regular file: {path}", path=path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _probe_xattrs(fd: int) -> bool:
    try:
        os.listxattr(fd)
        return True
    except OSError:
        return False


def _unnamed_linker(dir_fd: int):
    """How to give an unnamed file a name in *dir_fd*'s filesystem: the
    cheapest way that works there (``linkat`` by descriptor, else through
    /proc), or None if unnamed files cannot be made and named there."""
    for link in (empty_path_linker(), link_by_descriptor):
        if link is None:
            continue
        probe = RESERVED_PREFIX + "-probe-" + secrets.token_hex(8)
        try:
            fd = os.open(".", _CREATE_UNNAMED, 0o644, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            link(fd, probe, dir_fd)
            os.unlink(probe, dir_fd=dir_fd)
            return link
        except OSError:
            continue
        finally:
            os.close(fd)
    return None


def _remove_upload_size(fd: int) -> None:
    try:
        os.removexattr(fd, _XATTR_UPLOAD_SIZE)
    except OSError:
        pass  # there was none


def _copy_prefix(source_fd: int, target_fd: int, count: int) -> None:
    """Copy the first *count* bytes of *source_fd* to the start of
    *target_fd*: in the kernel where it can (copy_file_range shares blocks
    on filesystems that can), through a buffer where it cannot."""
    position = 0
    try:
        while position < count:
            copied = os.copy_file_range(source_fd, target_fd, count - position, position, position)
            if not copied:
                raise IOFailure("file shrank while it was being copied")
            position += copied
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    buffer = bytearray(min(_HASH_BUFFER, max(count - position, 1)))
    view = memoryview(buffer)
    while position < count:
        n = os.preadv(source_fd, [view[: min(len(buffer), count - position)]], position)
        if not n:
            raise IOFailure("file shrank while it was being copied")
        written = 0
        while written < n:
            written += os.pwrite(target_fd, view[written:n], position + written)
        position += n


def _valid_cached_checksum(fd: int, st: os.stat_result | None = None) -> str | None:
    """The checksum cached with the file, if it was cached for the file as
    it is now (same size and modification time), else None."""
    st = st or os.fstat(fd)
    try:
        return _checksum_for(os.getxattr(fd, _XATTR_CHECKSUM), st)
    except OSError:
        return None


# The kept checksum's attribute value: a version byte, the file's size and
# mtime_ns it was kept for, and the XXH3-128 digest: 33 bytes. Binary, so
# that it fits in an ext4 inode (256 bytes, about 90 for attributes): the
# text form of old ("SIZE:MTIME_NS:xxh3-128:HEX", about 66 bytes) did not,
# and cost every file an attribute block of its own, 4 KiB, which doubled
# a 4 KiB file's disk and made its put pay a block allocation. Still read.
_KEPT = struct.Struct(">BQq16s")
_KEPT_VERSION = 1


def decode_kept_checksum(value: bytes | None) -> tuple[int, int, str] | None:
    """(size, mtime_ns, checksum) from a kept checksum's attribute value, or
    None if it is not one."""
    if value is None:
        return None
    if len(value) == _KEPT.size and value[0] == _KEPT_VERSION:
        _, size, mtime_ns, digest = _KEPT.unpack(value)
        return size, mtime_ns, f"{checksums.ALGORITHM}:{digest.hex()}"
    try:
        size, mtime_ns, checksum = value.decode("ascii").split(":", 2)
        kept = int(size), int(mtime_ns), checksum
    except ValueError:
        return None
    return kept if checksums.is_valid(checksum) else None


def _checksum_for(cached: bytes | None, st: os.stat_result) -> str | None:
    """The checksum in attribute value *cached*, if it was kept for a file
    of *st*'s size and modification time, else None."""
    kept = decode_kept_checksum(cached)
    if kept is None or kept[:2] != (st.st_size, st.st_mtime_ns):
        return None
    return kept[2]


def _cache_checksum(fd: int, checksum: str, st: os.stat_result | None = None) -> None:
    """Keep *checksum* with the file, keyed by its size and time now."""
    st = st or os.fstat(fd)
    digest = bytes.fromhex(checksum.partition(":")[2])
    try:
        os.setxattr(fd, _XATTR_CHECKSUM, _KEPT.pack(_KEPT_VERSION, st.st_size, st.st_mtime_ns, digest))
    except (OSError, struct.error):
        pass  # read-only file or filesystem: hash again next time


def _read_upload_size(fd: int) -> int | None:
    try:
        return int(os.getxattr(fd, _XATTR_UPLOAD_SIZE))
    except (OSError, ValueError):
        return None


class LocalDownload(Download):
    def __init__(self, fd: int, st: os.stat_result, xattrs: bool):
        self._fd = fd
        self._st = st
        self._xattrs = xattrs
        self.size = st.st_size
        self.mtime = st.st_mtime_ns / 1e9

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer, offset: int) -> int:
        return os.preadv(self._fd, [buffer], offset)

    def stored_checksum(self) -> str | None:
        return _valid_cached_checksum(self._fd, self._st) if self._xattrs else None

    def checksum(self) -> str:
        # Kept for small files too: a tree's listing reports only checksums
        # that are kept, and a sync --checksum asks for the missing ones once.
        cache = self._xattrs
        if cache:
            cached = _valid_cached_checksum(self._fd, self._st)
            if cached is not None:
                return cached
        hasher = checksums.Hasher()
        buf = bytearray(_HASH_BUFFER)
        view = memoryview(buf)
        position = 0
        while position < self.size:
            n = os.preadv(self._fd, [view[: min(_HASH_BUFFER, self.size - position)]], position)
            if not n:
                break
            hasher.update(view[:n])
            position += n
        value = hasher.value()
        if cache:
            _cache_checksum(self._fd, value, self._st)
        return value

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LocalUpload(Upload):
    def __init__(self, storage: LocalStorage, path, size, offset, parent_fd, fd, marked: bool = True):
        self._storage = storage
        self.path = path
        self.size = size
        self.offset = offset
        self._parent_fd = parent_fd
        self._fd = fd
        self._marked = marked  # the partial may carry an upload-size mark
        self._replaced: tuple[int | None] | None = None  # replaced_size's answer, once asked
        # The large file the commit is to replace, held open so that the
        # rename does not free it: the dropper does, once we have moved on
        # (see disk.dropper). -1: none held.
        self._old_fd = -1
        self._published = False
        # Blocks reserved ahead of the writes (see storage.prealloc); only
        # for an announced size, which also bounds the reservation.
        self._ahead = Preallocation.for_file(fd, offset, size) if size is not None else None
        #: The free space promised to an upload of announced size (see
        #: storage.space); None for an unknown size, checked chunk by chunk.
        self.promise: Promise | None = None

    def hash_existing(self, hasher) -> None:
        buf = bytearray(min(_HASH_BUFFER, max(self.offset, 1)))
        view = memoryview(buf)
        position = 0
        while position < self.offset:
            n = os.preadv(self._fd, [view[: min(len(buf), self.offset - position)]], position)
            if not n:
                raise IOFailure("partial upload of {path} shrank while resuming", path=self.path)
            hasher.update(view[:n])
            position += n

    def write(self, data) -> None:
        view = memoryview(data)
        if self.promise is not None:
            self.promise.landed(len(view))
        else:
            self._storage.space.check(len(view))
        if self._ahead is not None:
            self._ahead.cover(self.offset + len(view))
        waited = False
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                # Files removed or replaced a moment ago may still be on the
                # dropper's queue, their blocks not yet given back: wait for
                # it once before calling the disk full.
                if exc.errno == errno.ENOSPC and not waited and DROPPER.pending:
                    waited = True
                    DROPPER.wait(DROPPER_WAIT)
                    continue
                raise _error(exc, self.path) from None
            view = view[written:]
            self.offset += written

    def replaced_size(self) -> int | None:
        self._let_go()  # an earlier look may have held another file
        try:
            st = os.stat(self.path[-1], dir_fd=self._parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            size = None
        except OSError as exc:
            raise _error(exc, self.path) from None
        else:
            size = st.st_size if statmod.S_ISREG(st.st_mode) else None
            if size is not None and size >= DROP_LATER_AT:
                self._old_fd = hold(self.path[-1], self._parent_fd, st)
        self._replaced = (size,)
        return size

    def _replaced_now(self) -> int | None:
        return self.replaced_size() if self._replaced is None else self._replaced[0]

    def commit(self, checksum: str | None) -> int | None:
        try:
            if self._storage.fsync:
                os.fsync(self._fd)
            if self.mtime is not None:
                os.utime(self._fd, ns=(time.time_ns(), round(self.mtime * 1e9)))
            if checksum:
                self._keep_checksum(checksum)
            replaced = self._publish(self.path[-1], self._parent_fd)
            self._published = True
            if self.blocks is None and replaced is not None and replaced >= DELTA_MIN:
                sidecars.remove(self._parent_fd, self.path[-1])  # the old file's list
            if self._storage.fsync:
                os.fsync(self._parent_fd)
        except OSError as exc:
            raise _error(exc, self.path) from None
        finally:
            self._close()
        return replaced

    def _keep_checksum(self, checksum: str) -> None:
        """Keep the file's checksum with it, small files included (a tree's
        listing reports only kept ones), and its block list if it has one."""
        st = os.fstat(self._fd)
        if self._storage.xattrs:
            _cache_checksum(self._fd, checksum, st)
        if self.blocks is not None and self.blocks[0] == DELTA_BLOCK:
            sidecars.write(self._parent_fd, self.path[-1], st, checksum, self.blocks[1])

    def _publish(self, name: str, parent_fd: int) -> int | None:
        """Put the complete file under *name*, atomically; the size of the
        file it replaced, None if none."""
        replaced = self._replaced_now()
        if self._marked:
            _remove_upload_size(self._fd)
        try:
            os.rename(partial_name(name), name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except IsADirectoryError:
            # A small upload onto a directory (not checked when it opened):
            # nothing to resume, so nothing to keep.
            os.unlink(partial_name(name), dir_fd=parent_fd)
            self.lost = self.offset
            raise
        return replaced

    def keep(self) -> None:
        if not self._marked and self.size is not None and self._storage.xattrs and self._fd >= 0:
            # A small upload stopped short: mark it now, so that a resume of
            # another size is refused (see open_upload).
            try:
                os.setxattr(self._fd, _XATTR_UPLOAD_SIZE, str(self.size).encode())
            except OSError:
                pass  # no mark: a resume is then checked by its checksum alone
            self._marked = True
        if self._ahead is not None:  # None once closed
            self._ahead.release(self.offset)  # a kept partial holds only its bytes
        self._close()

    def discard(self) -> None:
        try:
            os.unlink(partial_name(self.path[-1]), dir_fd=self._parent_fd)
        except OSError:
            pass
        finally:
            self._close()

    def _let_go(self) -> None:
        """Stop holding the file looked at last: the dropper frees it if the
        commit replaced it, else it is still named and closing it is cheap."""
        old, self._old_fd = self._old_fd, -1
        if old >= 0:
            if self._published:
                DROPPER.drop(old)
            else:
                os.close(old)

    def _close(self) -> None:
        self._let_go()
        self._ahead = None  # it holds the descriptor's number, soon another file's
        if self.promise is not None:
            self.promise.release()
        if self._fd >= 0:
            os.close(self._fd)  # also releases the flock
            self._fd = -1
        if self._parent_fd >= 0:
            os.close(self._parent_fd)
            self._parent_fd = -1


class UnnamedUpload(LocalUpload):
    """A small upload (at most ``SMALL_FILE`` bytes, from offset 0) whose
    bytes are all in hand, written to an unnamed file and linked under its
    name when it commits. Appearing under a free name then takes one link,
    where a partial takes a create, a lock, two stats and a rename: 41 µs a
    file against 55 µs on a journaled ext4, most of a small put's storage
    time. An unnamed file cannot be seen, so it needs no lock: the upload
    waits for no one between its start and its commit, so no other request
    can find it in progress (as it could a slow upload's partial)."""

    def commit(self, checksum: str | None) -> int | None:
        try:
            return super().commit(checksum)
        except BaseException:
            self.lost = self.offset  # unnamed: closing it deleted it
            raise

    def _publish(self, name: str, parent_fd: int) -> int | None:
        try:
            self._storage.link_unnamed(self._fd, name, parent_fd)
            return None  # the name was free
        except FileExistsError:
            pass
        # It replaces a file: a name of its own first, renamed over the
        # target (atomic; a link cannot replace). Measured now: the name was
        # taken even if an earlier look found it free.
        replaced = self.replaced_size()
        temporary = PARTIAL_PREFIX + secrets.token_hex(16)
        self._storage.link_unnamed(self._fd, temporary, parent_fd)
        try:
            os.rename(temporary, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            os.unlink(temporary, dir_fd=parent_fd)
            raise
        return replaced

    def keep(self) -> None:
        """Stopped short: its bytes become the path's partial, resumable and
        marked as any other, unless another upload has made one meanwhile."""
        if self._fd >= 0:
            try:
                self._storage.link_unnamed(self._fd, partial_name(self.path[-1]), self._parent_fd)
            except OSError:
                self.lost = self.offset  # dropped: a small upload is cheaper to send again
                self._close()
        super().keep()

    def discard(self) -> None:
        self._close()  # unnamed: closing it is deleting it
