"""Linux system calls storage uses and Python has no binding for, called
through ctypes; where the kernel, the C library or a seccomp filter
refuses them, their factory returns None and storage does without.

* ``openat2(2)`` opens a directory below another in one call, the kernel
  refusing any symbolic link on the way. Walking ``users/alice/docs`` one
  name at a time with ``O_NOFOLLOW`` takes three opens and two closes:
  that was a tenth of a small put's server time.
* ``linkat(2)`` with ``AT_EMPTY_PATH`` gives an unnamed (``O_TMPFILE``)
  file its name by its descriptor (unprivileged since Linux 6.10), 1.6 µs
  a file cheaper than the link through ``/proc/self/fd`` that works
  everywhere else.
* ``fallocate(2)`` with its mode flags (Python has only
  ``posix_fallocate``, which grows the file): blocks reserved ahead of a
  large write, see :mod:`sockftp.disk.prealloc`.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Callable

#: openat2's number: 437 on every architecture of the unified table
#: (Linux 5.6 on), which alpha and ia64 are not part of.
_SYS_OPENAT2 = 437
_ARCHITECTURES = frozenset({"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x", "i686", "armv7l"})

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
AT_EMPTY_PATH = 0x1000


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _libc():
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def directory_opener(flags: int, probe_fd: int) -> Callable[[int, str], int] | None:
    """A function ``open(dir_fd, relative_path) -> fd`` (-1 on any failure)
    opening with *flags* and no symbolic link followed, nor any path
    leaving *dir_fd*; or None if ``openat2`` does not work here (tried on
    ``"."`` below *probe_fd*)."""
    libc = _libc()
    if libc is None or platform.machine() not in _ARCHITECTURES or not hasattr(libc, "syscall"):
        return None
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    how = _OpenHow(flags, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH)
    how_pointer, how_size = ctypes.byref(how), ctypes.sizeof(how)

    def open_below(dir_fd: int, path: str) -> int:
        return syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), how_pointer, how_size)

    fd = open_below(probe_fd, ".")
    if fd < 0:
        return None
    os.close(fd)
    # The opener keeps the structure alive: ctypes.byref does not.
    open_below.how = how  # type: ignore[attr-defined]
    return open_below


def link_by_descriptor(fd: int, name: str, dir_fd: int) -> None:
    """Give the open file *fd* the name *name* in *dir_fd*, through
    ``/proc/self/fd``: works unprivileged on any Linux with /proc mounted.
    FileExistsError if the name is taken."""
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)


def empty_path_linker() -> Callable[[int, str, int], None] | None:
    """A function like :func:`link_by_descriptor` through ``linkat`` with
    ``AT_EMPTY_PATH``, or None without libc's ``linkat``. Whether the
    kernel allows it is for the caller to try (see storage.local_files)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "linkat"):
        return None
    linkat = libc.linkat
    linkat.restype = ctypes.c_int
    linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]

    def link(fd: int, name: str, dir_fd: int) -> None:
        if linkat(fd, b"", dir_fd, os.fsencode(name), AT_EMPTY_PATH) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), name)

    return link


def block_reserver() -> Callable[[int, int, int, int], int] | None:
    """libc's ``fallocate(fd, mode, offset, length)``, returning 0 or -1
    (errno left unread: every caller only needs to know it was refused);
    None without one."""
    libc = _libc()
    if libc is None:
        return None
    function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if function is None:
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return function


__all__ = ["block_reserver", "directory_opener", "empty_path_linker", "link_by_descriptor"]
