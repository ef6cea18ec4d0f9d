"""Linux's ``openat2(2)``: open a directory below another in one system
call, the kernel refusing any symbolic link on the way.

Walking ``users/alice/docs`` one name at a time with ``O_NOFOLLOW`` takes
three opens and two closes; ``openat2`` with ``RESOLVE_NO_SYMLINKS`` and
``RESOLVE_BENEATH`` takes one open, with the same guarantee. That was a
tenth of a small put's server time. Python has no binding for it, so it is
called through ctypes; where the kernel, the C library or a seccomp filter
refuses it, :func:`directory_opener` returns None and storage walks.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Callable

#: The system call's number: 437 on every architecture of the unified
#: table (Linux 5.6 on), which alpha and ia64 are not part of.
_SYS_OPENAT2 = 437
_ARCHITECTURES = frozenset({"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x", "i686", "armv7l"})

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def directory_opener(flags: int, probe_fd: int) -> Callable[[int, str], int] | None:
    """A function ``open(dir_fd, relative_path) -> fd`` (-1 on any failure)
    opening with *flags* and no symbolic link followed, nor any path
    leaving *dir_fd*; or None if ``openat2`` does not work here (tried on
    ``"."`` below *probe_fd*)."""
    if sys.platform != "linux" or platform.machine() not in _ARCHITECTURES:
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
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


__all__ = ["directory_opener"]
