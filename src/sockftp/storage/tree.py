"""A whole tree's listing from a LocalStorage (the ``tree`` command).

One ``scandir`` and one ``stat`` per entry, depth first, each directory
before what it holds and siblings sorted by name. A file's checksum comes
from the extended attribute its upload left on it, read by name through
the directory's descriptor (``/proc/self/fd/DIRFD/NAME``, without
following a link at the end): the file is never opened, let alone read.
Measured on ext4 for 10,000 files, that read cost 5.0 µs a file against
4.6 µs for open, fgetxattr and close; it is kept all the same, because it
needs no descriptor (a tree never fails for want of one) and opens nothing
that a watcher of the tree would see. Where ``/proc`` is missing, files
are opened (never read) instead.

Directories are reached as the rest of the store reaches them: opened one
name at a time below an open descriptor, never through a link. Names the
server keeps for itself (partials, block lists) never appear.
"""

from __future__ import annotations

import errno
import os
import stat as statmod
from collections.abc import Callable, Iterator

from ..protocol.entries import DIRECTORY, FILE, LINK, OTHER, TreeEntry
from ..protocol.limits import RESERVED_PREFIX

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_BY_NAME = os.path.isdir("/proc/self/fd")


_KINDS = {statmod.S_IFREG: FILE, statmod.S_IFDIR: DIRECTORY, statmod.S_IFLNK: LINK}
_FORMAT = 0o170000  # statmod.S_IFMT's mask, inlined: this runs once per entry


def kind(mode: int) -> str:
    return _KINDS.get(mode & _FORMAT, OTHER)


def attribute_by_name(dir_fd: int, name: str, attribute: str) -> bytes | None:
    """The extended attribute *attribute* of file *name* in *dir_fd*, or
    None; the file is not read (nor, where /proc is there, opened)."""
    try:
        if _BY_NAME:
            return os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", attribute, follow_symlinks=False)
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        try:
            return os.getxattr(fd, attribute)
        finally:
            os.close(fd)
    except OSError:
        return None


def walk(
    top_fd: int,
    max_depth: int,
    display: Callable[[str], str],
    attribute: str | None = None,
    decode: Callable[[bytes | None, os.stat_result], str | None] | None = None,
) -> Iterator[TreeEntry]:
    """Everything below the directory open as *top_fd* (which this closes),
    at most *max_depth* names deep. *display* turns an on-disk name into
    the one a client sees. With *attribute*, each file's extended attribute
    of that name is read, and ``decode(value, stat)`` makes it the entry's
    checksum (or None)."""
    try:
        top = _entries(top_fd)
    except BaseException:
        os.close(top_fd)
        raise
    # (descriptor, path prefix, /proc path prefix, entries): one per level.
    stack = [(top_fd, "", f"/proc/self/fd/{top_fd}/", iter(top))]
    getxattr = os.getxattr
    try:
        while stack:
            fd, prefix, proc, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                os.close(fd)
                continue
            name, st = item
            type_ = _KINDS.get(st.st_mode & _FORMAT, OTHER)
            path = prefix + display(name)
            stored = None
            if type_ == FILE:
                if attribute is not None:
                    # Inlined attribute_by_name: this is most of a listing's time.
                    if _BY_NAME:
                        try:
                            value = getxattr(proc + name, attribute, follow_symlinks=False)
                        except OSError:
                            value = None
                    else:
                        value = attribute_by_name(fd, name, attribute)
                    stored = decode(value, st)
                yield TreeEntry(path, FILE, st.st_size, st.st_mtime_ns / 1e9, stored)
                continue
            yield TreeEntry(path, type_, 0, st.st_mtime_ns / 1e9)
            if type_ == DIRECTORY and len(stack) < max_depth:
                child = _open_below(fd, name)
                if child is None:
                    continue
                try:
                    entries = _entries(child)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((child, path + "/", f"/proc/self/fd/{child}/", iter(entries)))
    finally:
        for fd, _, _, _ in stack:
            os.close(fd)


def _open_below(fd: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=fd)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed, or replaced by a file, since it was listed
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # replaced by a link since it was listed: never followed
        raise


def _entries(fd: int) -> list[tuple[str, os.stat_result]]:
    """The names in directory *fd* with their stat, sorted, without the
    server's own."""
    found = []
    with os.scandir(fd) as entries:
        for item in entries:
            if item.name.startswith(RESERVED_PREFIX):
                continue
            try:
                found.append((item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue  # removed meanwhile
    found.sort(key=lambda pair: pair[0])
    return found
