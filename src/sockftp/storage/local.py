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

The open files themselves (LocalDownload, LocalUpload, UnnamedUpload) and
the low-level helpers beneath them are in :mod:`sockftp.storage.local_files`;
the block lists kept beside large files in :mod:`sockftp.storage.blocks`,
and the walk that lists a whole tree in :mod:`sockftp.storage.tree`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as statmod
import time
from collections.abc import Iterator

from ..disk.dropper import hold_large, let_go
from ..disk.syscalls import directory_opener
from ..protocol.blocks import BlockList, file_blocks
from ..protocol.errors import (
    Busy,
    Exists,
    IOFailure,
    IsADirectory,
    NotADirectory,
    NotFound,
    OffsetMismatch,
    PathRefused,
    PermissionDenied,
    SockftpError,
)
from ..protocol.limits import DELTA_BLOCK, DELTA_MIN, MAX_PATH_DEPTH, RESERVED_PREFIX, SMALL_FILE
from ..protocol.paths import RemotePath
from . import blocks as sidecars
from . import tree as trees
from .base import DIRECTORY, FILE, LINK, OTHER, Download, Entry, Storage, TreeEntry, Upload, Usage

# The open files, and the conventions the tree shares with them. PARTIAL_PREFIX
# and partial_name are also imported from here by tests and tools.
from .local_files import (
    _CREATE_UNNAMED,
    _XATTR_CHECKSUM,
    _XATTR_UPLOAD_SIZE,
    PARTIAL_PREFIX,
    LocalDownload,
    LocalUpload,
    UnnamedUpload,
    _cache_checksum,
    _checksum_for,
    _copy_prefix,
    _error,
    _open_regular,
    _probe_xattrs,
    _read_upload_size,
    _remove_upload_size,
    _unnamed_linker,
    _valid_cached_checksum,
    partial_name,
)
from .space import DiskSpace

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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

    def __init__(self, root: str | os.PathLike, fsync: bool = False, min_free: int | float | None = None):
        os.makedirs(root, exist_ok=True)
        self.root = os.path.abspath(root)
        self.fsync = fsync
        #: Free space less a reserve and what uploads under way were promised.
        self.space = DiskSpace(self.root, min_free)
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.xattrs = _probe_xattrs(self._root_fd)
        self._open_below = directory_opener(_DIR_FLAGS, self._root_fd)  # None: walk
        #: Small uploads go to unnamed files (see UnnamedUpload), named by this.
        self.link_unnamed = _unnamed_linker(self._root_fd)
        self.unnamed = self.link_unnamed is not None

    def check_space(self, count: int) -> None:
        self.space.check(count)

    @property
    def keeps_checksums(self) -> bool:
        return self.xattrs

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

    def tree(self, path: RemotePath, checksums: bool = False, max_depth: int = MAX_PATH_DEPTH) -> Iterator[TreeEntry]:
        entry = self.stat(path)
        if entry.type != DIRECTORY:
            stored = None
            if checksums and entry.type == FILE and self.xattrs:
                with self.open_read(path) as download:  # opened for its attribute, never read
                    stored = download.stored_checksum()
            yield TreeEntry(entry.name, entry.type, entry.size, entry.mtime, stored)
            return
        if max_depth < 1:
            return
        attribute = _XATTR_CHECKSUM if checksums and self.xattrs else None
        try:
            yield from trees.walk(self._open_dir(path), max_depth, _display_name, attribute, _checksum_for)
        except OSError as exc:  # a directory below that cannot be read (EMFILE, EIO...)
            raise _error(exc, path) from None

    def kept_blocks(self, path: RemotePath, download: Download) -> bytes | None:
        fd = download.fileno()
        if fd is None or not path:
            return None
        try:
            parent_fd = self._parent(path)
        except SockftpError:
            return None
        try:
            kept = sidecars.read(parent_fd, path[-1], os.fstat(fd), download.stored_checksum())
        finally:
            os.close(parent_fd)
        return None if kept is None else kept[1]

    def blocks(self, path: RemotePath) -> BlockList:
        parent_fd = self._parent(path)
        try:
            fd, st = _open_regular(parent_fd, path)
            try:
                return self._blocks_of(parent_fd, path, fd, st)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(parent_fd)

    def _blocks_of(self, parent_fd: int, path: RemotePath, fd: int, st: os.stat_result) -> BlockList:
        """The block list of file *path*, open as *fd*: as kept beside it if
        that is valid, else computed (one read) and kept, with its checksum."""
        cached = _valid_cached_checksum(fd, st) if self.xattrs else None
        kept = sidecars.read(parent_fd, path[-1], st, cached)
        if kept is not None:
            checksum, digests = kept
            if cached is None and self.xattrs:
                _cache_checksum(fd, checksum, st)  # a delta's base is checked by this attribute
            return BlockList(st.st_size, st.st_mtime_ns / 1e9, checksum, DELTA_BLOCK, digests)
        try:
            digests, checksum = file_blocks(fd, st.st_size)
        except ValueError:
            raise IOFailure("{path} shrank while it was read; try again", path=path) from None
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise IOFailure("{path} changed while it was read; try again", path=path)
        if self.xattrs:
            _cache_checksum(fd, checksum, st)
        if st.st_size >= DELTA_MIN and _still_named(parent_fd, path[-1], st):
            sidecars.write(parent_fd, path[-1], st, checksum, digests)
        return BlockList(st.st_size, st.st_mtime_ns / 1e9, checksum, DELTA_BLOCK, digests)

    def set_mtime(self, path: RemotePath, mtime: float) -> None:
        if not path:
            raise PermissionDenied("the root's time is not the client's to set")
        parent_fd = self._parent(path)
        try:
            # Opened, not changed by name: a link put in the way meanwhile
            # is refused by O_NOFOLLOW rather than followed out of the jail.
            try:
                fd = os.open(path[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent_fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PathRefused("{path} is a symbolic link", path=path) from None
                raise
            try:
                st = os.fstat(fd)
                keep_checksum = self.xattrs and statmod.S_ISREG(st.st_mode)
                cached = _valid_cached_checksum(fd, st) if keep_checksum else None
                listed = sidecars.read(parent_fd, path[-1], st, cached) if cached and st.st_size >= DELTA_MIN else None
                os.utime(fd, ns=(time.time_ns(), round(mtime * 1e9)))
                if cached is not None:
                    # The cached checksum (and block list) is keyed by size and
                    # time, so that a change behind the server's back voids it;
                    # this one is ours.
                    st = os.fstat(fd)
                    _cache_checksum(fd, cached, st)
                    if listed is not None:
                        sidecars.write(parent_fd, path[-1], st, cached, listed[1])
            finally:
                os.close(fd)
        except OSError as exc:
            raise _error(exc, path) from None
        finally:
            os.close(parent_fd)

    def usage(self, path: RemotePath) -> Usage:
        total = files = 0
        for _fd, _directory, name, st in self._walk_files(path):
            if name.startswith(sidecars.BLOCKS_PREFIX):
                continue  # the server's cache, not the user's bytes
            total += st.st_size
            files += not name.startswith(RESERVED_PREFIX)
        return Usage(total, files)

    def expire_partials(self, path: RemotePath, untouched_since: float) -> Iterator[tuple[RemotePath, int]]:
        for fd, directory, name, st in self._walk_files(path):
            if not name.startswith(PARTIAL_PREFIX) or st.st_mtime >= untouched_since:
                continue
            try:
                partial_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue  # taken or committed meanwhile
            try:
                try:
                    # An upload holds its partial's lock while it runs: never
                    # take a partial from under one, however old it looks.
                    fcntl.flock(partial_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                held = os.fstat(partial_fd)
                try:
                    current = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                # Still the same file, and still untouched now we hold it.
                if (current.st_ino, current.st_dev) != (held.st_ino, held.st_dev) or held.st_mtime >= untouched_since:
                    continue
                os.unlink(name, dir_fd=fd)
                yield directory, held.st_size
            finally:
                os.close(partial_fd)

    def _walk_files(self, path: RemotePath) -> Iterator[tuple[int, RemotePath, str, os.stat_result]]:
        """Every regular file under *path*, partials included: its
        directory's descriptor (open while the caller looks), that
        directory's path, its name and its stat. Nothing if *path* is not
        a directory."""
        try:
            fd = self._open_dir(path)
        except (NotFound, NotADirectory):
            return
        # Depth first, holding one descriptor per level of the branch being
        # walked, never one per directory still to walk: a home with more
        # directories than the server has free descriptors must not exhaust
        # them, nor have the ones it could not open go unseen.
        branch: list[tuple[int, RemotePath, list[str]]] = []
        here = path
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
                            yield fd, here, item.name, st
                        elif statmod.S_ISDIR(st.st_mode):
                            subdirectories.append(item.name)
                branch.append((fd, here, subdirectories))
                fd = None
                while branch and fd is None:
                    parent, parent_path, pending = branch[-1]
                    if not pending:
                        os.close(parent)
                        branch.pop()
                        continue
                    name = pending.pop()
                    try:
                        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                        here = (*parent_path, name)
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
            for parent, _, _ in branch:
                os.close(parent)

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
            if not names or any(not n.startswith((PARTIAL_PREFIX, sidecars.BLOCKS_PREFIX)) for n in names):
                return None
            # Block lists left by files removed behind the server's back:
            # nobody holds them, and usage never counted them.
            for name in [n for n in names if n.startswith(sidecars.BLOCKS_PREFIX)]:
                names.remove(name)
                try:
                    os.unlink(name, dir_fd=fd)
                except FileNotFoundError:
                    pass
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
            held = hold_large(path[-1], fd, st)  # freed off this request's path
            try:
                os.unlink(path[-1], dir_fd=fd)
            finally:
                let_go(held)
            sidecars.remove(fd, path[-1])
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
            moved = os.stat(source[-1], dir_fd=source_fd, follow_symlinks=False)
            try:
                existing = os.stat(target[-1], dir_fd=target_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and statmod.S_ISDIR(existing.st_mode) and source != target:
                raise IsADirectory("target is a directory: {path}", path=target)
            held = -1
            if existing is not None and (existing.st_ino, existing.st_dev) != (moved.st_ino, moved.st_dev):
                held = hold_large(target[-1], target_fd, existing)  # the file renamed over
            try:
                os.rename(source[-1], target[-1], src_dir_fd=source_fd, dst_dir_fd=target_fd)
            finally:
                let_go(held)
            if source != target and not statmod.S_ISDIR(moved.st_mode):
                sidecars.move(source_fd, source[-1], target_fd, target[-1])
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
        # Refused before any disk work if the rest cannot fit (a resume
        # re-sends at least size - offset bytes).
        promise = self.space.promise(size - offset) if size is not None else None
        try:
            upload = self._open_upload(path, size, offset, at_once)
        except BaseException:
            if promise is not None:
                promise.release()
            raise
        upload.promise = promise
        return upload

    def _open_upload(self, path: RemotePath, size: int | None, offset: int, at_once: bool) -> Upload:
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
#: What open(O_TMPFILE) answers where the filesystem (or kernel) cannot.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def _still_named(dir_fd: int, name: str, st: os.stat_result) -> bool:
    """True if *name* in *dir_fd* is still the file *st* describes (not
    replaced by an upload meanwhile, whose block list is not ours to write)."""
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return statmod.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
