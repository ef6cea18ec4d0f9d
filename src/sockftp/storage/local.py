"""Storage on a local filesystem, confined to one root directory.

Every path is walked one name at a time from an open descriptor of the
root, with ``O_NOFOLLOW``: a symbolic link anywhere on the way is refused,
never followed, so no link (and no link swapped in between a check and a
use) can lead outside the root. Names are validated before they get here
(:mod:`sockftp.protocol.paths`); this module trusts them to be single components.

Uploads go to a hidden partial file beside their target
(``.sockftp-part-<hash of the name>``), locked with ``flock`` so two
uploads of one name never interleave, and are renamed over the target
only once complete. A small upload whose bytes are all in hand goes to an
unnamed file instead, linked under its name once complete (UnnamedUpload).
The partial carries its announced size in an extended attribute, and a
committed file carries its checksum, keyed by size and mtime, so downloads
need not hash it again. Where the filesystem has no extended attributes,
both degrade: resumes rely on the final checksum and downloads hash on
demand.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat as statmod
from collections.abc import Iterator

from ..disk.prealloc import Preallocation
from ..disk.syscalls import directory_opener, empty_path_linker, link_by_descriptor
from ..protocol import checksum as checksums
from ..protocol.errors import (
    Busy,
    Exists,
    IOFailure,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    OffsetMismatch,
    PathRefused,
    SockftpError,
)
from ..protocol.limits import RESERVED_PREFIX, SMALL_FILE
from ..protocol.paths import RemotePath
from .base import DIRECTORY, FILE, LINK, OTHER, Download, Entry, Storage, Upload, Usage

log = logging.getLogger("sockftp.storage")

PARTIAL_PREFIX = RESERVED_PREFIX + "-part-"
_XATTR_CHECKSUM = "user.sockftp.checksum"
_XATTR_UPLOAD_SIZE = "user.sockftp.upload-size"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_HASH_BUFFER = 4 * 1024 * 1024


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


def _entry(name: str, st: os.stat_result) -> Entry:
    mode = st.st_mode
    if statmod.S_ISREG(mode):
        kind = FILE
    elif statmod.S_ISDIR(mode):
        kind = DIRECTORY
    elif statmod.S_ISLNK(mode):
        kind = LINK
    else:
        kind = OTHER
    return Entry(name, kind, st.st_size if kind == FILE else 0, st.st_mtime_ns / 1e9)


def _display_name(name: str) -> str:
    # Names that are not UTF-8 on disk arrive with surrogate escapes, which
    # JSON cannot carry; show the raw bytes escaped instead.
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


class LocalStorage(Storage):
    """Files under *root*, which is created if missing."""

    def __init__(self, root: str | os.PathLike, fsync: bool = False):
        os.makedirs(root, exist_ok=True)
        self.root = os.path.abspath(root)
        self.fsync = fsync
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.xattrs = _probe_xattrs(self._root_fd)
        self._open_below = directory_opener(_DIR_FLAGS, self._root_fd)  # None: walk
        #: Small uploads go to unnamed files (see UnnamedUpload), named by this.
        self.link_unnamed = _unnamed_linker(self._root_fd)
        self.unnamed = self.link_unnamed is not None

    def close(self) -> None:
        fd, self._root_fd = self._root_fd, -1
        if fd >= 0:
            os.close(fd)

    # -- walking ---------------------------------------------------------------

    def _open_dir(self, path: RemotePath) -> int:
        """A descriptor of directory *path*, reached without following links."""
        if not path:
            return os.dup(self._root_fd)
        if self._open_below is not None:
            fd = self._open_below(self._root_fd, "/".join(path))
            if fd >= 0:
                return fd
            # Refused: the walk meets the same refusal, and names the part.
        fd = self._root_fd  # never closed here; each level below is
        for depth, name in enumerate(path):
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR and _is_link(name, fd):
                    # O_DIRECTORY answers ENOTDIR before O_NOFOLLOW's ELOOP.
                    exc = OSError(errno.ELOOP, "symbolic link")
                raise _error(exc, path[: depth + 1]) from None
            finally:
                if fd != self._root_fd:
                    os.close(fd)
            fd = next_fd
        return fd

    def _parent(self, path: RemotePath) -> int:
        if not path:
            raise PathRefused("the root itself cannot be used here")
        return self._open_dir(path[:-1])

    # -- metadata -------------------------------------------------------------

    def stat(self, path: RemotePath) -> Entry:
        if not path:
            return _entry("/", os.fstat(self._root_fd))
        fd = self._parent(path)
        try:
            return _entry(path[-1], os.stat(path[-1], dir_fd=fd, follow_symlinks=False))
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(fd)

    def list(self, path: RemotePath) -> Iterator[Entry]:
        fd = self._open_dir(path)
        try:
            with os.scandir(fd) as entries:
                for item in entries:
                    if item.name.startswith(RESERVED_PREFIX):
                        continue
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we listed
                    yield _entry(_display_name(item.name), st)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(fd)

    def checksum(self, path: RemotePath) -> str:
        with self.open_read(path) as download:
            return download.checksum()

    def usage(self, path: RemotePath) -> Usage:
        try:
            fd = self._open_dir(path)
        except (NotFound, NotADirectory):
            return Usage()
        total = files = 0
        # Depth first, holding one descriptor per level of the branch being
        # measured, never one per directory still to measure: a home with
        # more directories than the server has free descriptors must not
        # exhaust them, nor have the ones it could not open go uncounted.
        branch: list[tuple[int, list[str]]] = []
        try:
            while fd is not None:
                subdirectories = []
                with os.scandir(fd) as entries:
                    for item in entries:
                        try:
                            st = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # removed meanwhile
                        if statmod.S_ISREG(st.st_mode):
                            total += st.st_size
                            files += not item.name.startswith(RESERVED_PREFIX)
                        elif statmod.S_ISDIR(st.st_mode):
                            subdirectories.append(item.name)
                branch.append((fd, subdirectories))
                fd = None
                while branch and fd is None:
                    parent, pending = branch[-1]
                    if not pending:
                        os.close(parent)
                        branch.pop()
                        continue
                    try:
                        fd = os.open(pending.pop(), _DIR_FLAGS, dir_fd=parent)
                    except (FileNotFoundError, NotADirectoryError):
                        pass  # removed, or replaced by a file, meanwhile
                    except OSError as exc:
                        if exc.errno != errno.ELOOP:  # replaced by a link meanwhile
                            raise
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            if fd is not None:
                os.close(fd)
            for parent, _ in branch:
                os.close(parent)
        return Usage(total, files)

    # -- directories ----------------------------------------------------------

    def mkdir(self, path: RemotePath, parents: bool = False) -> None:
        if not path:
            if parents:
                return
            raise Exists("the root already exists")
        if parents:
            os.close(self._make_dirs(path))
            return
        fd = self._parent(path)
        try:
            os.mkdir(path[-1], 0o755, dir_fd=fd)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(fd)

    def _make_dirs(self, path: RemotePath) -> int:
        """Walk *path* once, creating what is missing; return its descriptor."""
        fd = os.dup(self._root_fd)
        for depth, name in enumerate(path):
            try:
                try:
                    next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    try:
                        os.mkdir(name, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made by someone else meanwhile
                    next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    if _is_link(name, fd):
                        exc = OSError(errno.ELOOP, "symbolic link")
                    elif depth == len(path) - 1:
                        exc = OSError(errno.EEXIST, "exists")  # the target is a file
                raise _error(exc, path[: depth + 1]) from None
            finally:
                os.close(fd)
            fd = next_fd
        return fd

    def rmdir(self, path: RemotePath) -> int:
        fd = self._parent(path)
        freed = 0
        try:
            try:
                os.rmdir(path[-1], dir_fd=fd)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                freed = self._drop_partials(fd, path)
                if freed is None:
                    raise
                os.rmdir(path[-1], dir_fd=fd)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(fd)
        return freed

    def _drop_partials(self, parent_fd: int, path: RemotePath) -> int | None:
        """Remove the partial uploads in a directory that holds nothing else.

        A directory the client sees as empty must be removable even if an
        abandoned upload left a partial in it. Returns the bytes freed, or
        None if the directory holds anything else.
        """
        fd = os.open(path[-1], _DIR_FLAGS, dir_fd=parent_fd)
        try:
            names = os.listdir(fd)
            if not names or any(not n.startswith(PARTIAL_PREFIX) for n in names):
                return None
            # Lock every partial first: a locked one is an upload under way,
            # not debris, and then nothing is removed. Unlink while holding
            # the locks, so no upload takes one over in between (uploads
            # check the name after locking).
            held: list[int] = []
            try:
                for name in names:
                    partial_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                    held.append(partial_fd)
                    try:
                        fcntl.flock(partial_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise Busy("an upload into {path} is under way", path=path) from None
                freed = 0
                for name, partial_fd in zip(names, held, strict=True):
                    freed += os.fstat(partial_fd).st_size
                    os.unlink(name, dir_fd=fd)
            finally:
                for partial_fd in held:
                    os.close(partial_fd)
            return freed
        finally:
            os.close(fd)

    # -- files -----------------------------------------------------------------

    def remove(self, path: RemotePath) -> None:
        fd = self._parent(path)
        try:
            st = os.stat(path[-1], dir_fd=fd, follow_symlinks=False)
            if statmod.S_ISDIR(st.st_mode):
                raise IsADirectory("is a directory (use rmdir): {path}", path=path)
            os.unlink(path[-1], dir_fd=fd)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(fd)

    def rename(self, source: RemotePath, target: RemotePath) -> None:
        if not source or not target:
            raise PathRefused("the root cannot be renamed or replaced")
        if target[: len(source)] == source and target != source:
            raise PathRefused("cannot move {path} into itself", path=source)
        source_fd = self._parent(source)
        try:
            target_fd = self._parent(target)
        except BaseException:
            os.close(source_fd)
            raise
        try:
            os.stat(source[-1], dir_fd=source_fd, follow_symlinks=False)
            try:
                existing = os.stat(target[-1], dir_fd=target_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and statmod.S_ISDIR(existing.st_mode) and source != target:
                raise IsADirectory("target is a directory: {path}", path=target)
            os.rename(source[-1], target[-1], src_dir_fd=source_fd, dst_dir_fd=target_fd)
        except FileNotFoundError:
            raise NotFound("no such file or directory: {path}", path=source) from None
        except OSError as exc:
            raise _error(exc, target) from None
        finally:
            os.close(source_fd)
            os.close(target_fd)

    def open_read(self, path: RemotePath) -> Download:
        fd = self._parent(path)
        try:
            file_fd, st = _open_regular(fd, path)
        finally:
            os.close(fd)
        return LocalDownload(file_fd, st, self.xattrs)

    def partial_size(self, path: RemotePath, size: int | None) -> int:
        try:
            fd = self._parent(path)
        except (NotFound, NotADirectory):
            return 0
        try:
            name = partial_name(path[-1])
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not statmod.S_ISREG(st.st_mode):
                return 0
            if size is None:
                return st.st_size
            if st.st_size > size:
                return 0
            if self.xattrs:
                pfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                try:
                    if _read_upload_size(pfd) not in (None, size):
                        return 0
                finally:
                    os.close(pfd)
            return st.st_size
        except OSError:
            return 0
        finally:
            os.close(fd)

    def open_upload(self, path: RemotePath, size: int | None, offset: int = 0, *, at_once: bool = False) -> Upload:
        # A small upload's storage work is most of its cost, so it skips
        # what only a long upload needs: a directory in its way is met by
        # the rename, and its partial carries no size mark unless it stops
        # short (keep). All in hand, it needs no partial at all.
        small = size is not None and size <= SMALL_FILE
        parent_fd = self._parent(path)
        if at_once and small and not offset and self.unnamed:
            upload = self._open_unnamed(parent_fd, path, size)
            if upload is not None:
                return upload
        try:
            if not small:
                try:
                    existing = os.stat(path[-1], dir_fd=parent_fd, follow_symlinks=False)
                    if statmod.S_ISDIR(existing.st_mode):
                        raise IsADirectory("is a directory: {path}", path=path)
                except FileNotFoundError:
                    pass
            partial_fd, locked, created = self._lock_partial(parent_fd, path)
        except OSError as exc:
            os.close(parent_fd)
            raise _error(exc, path) from None
        except BaseException:
            os.close(parent_fd)
            raise
        try:
            held = locked.st_size
            if offset:
                # An upload of unknown size may continue any partial.
                announced = _read_upload_size(partial_fd) if self.xattrs and size is not None else None
                if offset > held or announced not in (None, size):
                    usable = held if announced in (None, size) and (size is None or held <= size) else 0
                    if not held:
                        # We just created it to lock it: leave no debris.
                        os.unlink(partial_name(path[-1]), dir_fd=parent_fd)
                    raise OffsetMismatch(
                        f"cannot resume {{path}} at {offset}: the server holds {usable} bytes",
                        path=path,
                        offset=usable,
                    )
            if held != offset:
                os.ftruncate(partial_fd, offset)
            marked = self.xattrs and not created  # a partial we found may carry a mark
            if self.xattrs and not offset:
                if size is None or small:
                    if marked:
                        _remove_upload_size(partial_fd)
                    marked = False
                else:
                    # Set now, not when the upload stops: if the server dies
                    # midway, the mark must still guard the resume.
                    os.setxattr(partial_fd, _XATTR_UPLOAD_SIZE, str(size).encode())
                    marked = True
            if offset:  # a new descriptor is at 0 already
                os.lseek(partial_fd, offset, os.SEEK_SET)
        except OSError as exc:
            os.close(partial_fd)
            os.close(parent_fd)
            raise _error(exc, path) from None
        except BaseException:
            os.close(partial_fd)
            os.close(parent_fd)
            raise
        upload = LocalUpload(self, path, size, offset, parent_fd, partial_fd, marked)
        upload.dropped = max(0, held - offset)
        return upload

    def open_append(self, path: RemotePath, offset: int | None = None) -> Upload:
        parent_fd = self._parent(path)
        try:
            source_fd = partial_fd = -1
            try:
                source_fd, st = _open_regular(parent_fd, path)
                keep = st.st_size if offset is None else offset
                if keep > st.st_size:
                    raise OffsetMismatch(
                        f"cannot resume {{path}} at {keep}: the file holds {st.st_size} bytes",
                        path=path,
                        offset=st.st_size,
                    )
                partial_fd, _, _ = self._lock_partial(parent_fd, path)
                dropped = os.fstat(partial_fd).st_size
                os.ftruncate(partial_fd, 0)
                if self.xattrs:
                    _remove_upload_size(partial_fd)
                _copy_prefix(source_fd, partial_fd, keep)
                os.lseek(partial_fd, keep, os.SEEK_SET)
            except BaseException:
                if partial_fd >= 0:
                    # We hold the lock: what we began copying is debris.
                    try:
                        os.unlink(partial_name(path[-1]), dir_fd=parent_fd)
                    except OSError:
                        pass
                    os.close(partial_fd)
                raise
            finally:
                if source_fd >= 0:
                    os.close(source_fd)
        except OSError as exc:
            os.close(parent_fd)
            raise _error(exc, path) from None
        except BaseException:
            os.close(parent_fd)
            raise
        upload = LocalUpload(self, path, None, keep, parent_fd, partial_fd)
        upload.dropped = dropped
        return upload

    def _open_unnamed(self, parent_fd: int, path: RemotePath, size: int) -> Upload | None:
        """A small upload, all in hand, into an unnamed file (``O_TMPFILE``)
        linked under its name when it commits: no partial to create, lock
        and rename, which is most of a small put's cost. None (*parent_fd*
        still open) when a partial of *path* is there: another upload's
        (busy), or an old one this upload must drop; the named way handles
        both."""
        try:
            if os.access(partial_name(path[-1]), os.F_OK, dir_fd=parent_fd, follow_symlinks=False):
                return None  # (access, not stat: no exception to raise and catch when absent)
            try:
                fd = os.open(".", _CREATE_UNNAMED, 0o644, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno in _NO_UNNAMED:
                    self.unnamed = False  # this filesystem cannot: never try again
                # Else the named way meets the cause, and says it plainly (a
                # directory removed meanwhile answers EPERM here, ENOENT there).
                return None
        except OSError as exc:
            os.close(parent_fd)
            raise _error(exc, path) from None
        return UnnamedUpload(self, path, size, 0, parent_fd, fd, marked=False)

    def _lock_partial(self, parent_fd: int, path: RemotePath) -> tuple[int, os.stat_result, bool]:
        """Open and lock the partial of *path*, making sure the lock is on
        the file the name still points to (a committing upload may have
        renamed it away between our open and our lock). Also returns its
        stat, taken under the lock: another upload may have written to it
        between our open and our lock; and whether we created it."""
        name = partial_name(path[-1])
        for _ in range(10):
            try:
                fd = os.open(name, _CREATE_PARTIAL | os.O_EXCL, 0o644, dir_fd=parent_fd)
                created = True
            except FileExistsError:
                fd = os.open(name, _CREATE_PARTIAL, 0o644, dir_fd=parent_fd)
                created = False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise Busy("another upload of {path} is under way", path=path) from None
            try:
                current = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            held = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                return fd, held, created
            os.close(fd)
        raise Busy("uploads of {path} keep racing; try again", path=path)


#: Opening a partial: created if missing, never through a link.
_CREATE_PARTIAL = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_UNNAMED = os.O_RDWR | os.O_TMPFILE | os.O_CLOEXEC
#: What open(O_TMPFILE) answers where the filesystem (or kernel) cannot.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


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


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return statmod.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


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

    def checksum(self) -> str:
        key = f"{self._st.st_size}:{self._st.st_mtime_ns}:"
        cache = self._xattrs and self.size > SMALL_FILE
        if cache:
            try:
                cached = os.getxattr(self._fd, _XATTR_CHECKSUM).decode()
                if cached.startswith(key) and checksums.is_valid(cached[len(key) :]):
                    return cached[len(key) :]
            except (OSError, UnicodeDecodeError):
                pass
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
            try:
                os.setxattr(self._fd, _XATTR_CHECKSUM, (key + value).encode())
            except OSError:
                pass  # read-only file or filesystem: hash again next time
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
        # Blocks reserved ahead of the writes (see storage.prealloc); only
        # for an announced size, which also bounds the reservation.
        self._ahead = Preallocation.for_file(fd, offset, size) if size is not None else None

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
        if self._ahead is not None:
            self._ahead.cover(self.offset + len(view))
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.offset += written
        except OSError as exc:
            raise _error(exc, self.path) from None

    def replaced_size(self) -> int | None:
        try:
            st = os.stat(self.path[-1], dir_fd=self._parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            size = None
        except OSError as exc:
            raise _error(exc, self.path) from None
        else:
            size = st.st_size if statmod.S_ISREG(st.st_mode) else None
        self._replaced = (size,)
        return size

    def _replaced_now(self) -> int | None:
        return self.replaced_size() if self._replaced is None else self._replaced[0]

    def commit(self, checksum: str | None) -> int | None:
        try:
            if self._storage.fsync:
                os.fsync(self._fd)
            if checksum and self._storage.xattrs and self.offset > SMALL_FILE:
                st = os.fstat(self._fd)
                os.setxattr(self._fd, _XATTR_CHECKSUM, f"{st.st_size}:{st.st_mtime_ns}:{checksum}".encode())
            replaced = self._publish(self.path[-1], self._parent_fd)
            if self._storage.fsync:
                os.fsync(self._parent_fd)
        except OSError as exc:
            raise _error(exc, self.path) from None
        finally:
            self._close()
        return replaced

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

    def _close(self) -> None:
        self._ahead = None  # it holds the descriptor's number, soon another file's
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
