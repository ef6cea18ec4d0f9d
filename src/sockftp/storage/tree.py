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


def kind(mode: int) -> str:
    if statmod.S_ISREG(mode):
        return FILE
    if statmod.S_ISDIR(mode):
        return DIRECTORY
    if statmod.S_ISLNK(mode):
        return LINK
    return OTHER


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
    checksum: Callable[[int, str, os.stat_result], str | None] | None = None,
) -> Iterator[TreeEntry]:
    """Everything below the directory open as *top_fd* (which this closes),
    at most *max_depth* names deep. *display* turns an on-disk name into
    the one a client sees; *checksum(dir_fd, name, stat)*, if given, gives
    a file's stored checksum or None."""
    try:
        top = _entries(top_fd)
    except BaseException:
        os.close(top_fd)
        raise
    stack: list[tuple[int, str, Iterator[tuple[str, os.stat_result]]]] = [(top_fd, "", iter(top))]
    try:
        while stack:
            fd, prefix, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                os.close(fd)
                continue
            name, st = item
            type_ = kind(st.st_mode)
            path = prefix + display(name)
            stored = checksum(fd, name, st) if checksum is not None and type_ == FILE else None
            yield TreeEntry(path, type_, st.st_size if type_ == FILE else 0, st.st_mtime_ns / 1e9, stored)
            if type_ == DIRECTORY and len(stack) < max_depth:
                child = _open_below(fd, name)
                if child is None:
                    continue
                try:
                    entries = _entries(child)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((child, path + "/", iter(entries)))
    finally:
        for fd, _, _ in stack:
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
