"""Client paths to validated paths inside the session's root. Pure: no filesystem.

A client names files with ``/``-separated UTF-8 paths. ``/`` is the root of
the session (its home or the anonymous area), never the server's own
filesystem root; a path without a leading ``/`` is taken from the session's
current directory. The result is a :data:`RemotePath`, a tuple of names that
storage backends join under their own root.

What is refused, with :class:`~sockftp.protocol.errors.PathRefused`:

* ``..`` that would climb above the root (``..`` inside it is resolved
  here, lexically, which is sound because storage never follows symlinks);
* backslashes, NUL and every other control character, and text that is not
  valid Unicode;
* names longer than ``MAX_NAME_LENGTH`` bytes, paths longer than
  ``MAX_PATH_LENGTH`` bytes or deeper than ``MAX_PATH_DEPTH``;
* names starting with ``RESERVED_PREFIX`` (the server's partial uploads).
"""

from __future__ import annotations

import re

from .errors import PathRefused
from .limits import MAX_NAME_LENGTH, MAX_PATH_DEPTH, MAX_PATH_LENGTH, RESERVED_PREFIX

RemotePath = tuple[str, ...]

ROOT: RemotePath = ()

# C0 controls, DEL and C1 controls: invisible in listings, dangerous in logs
# and terminals. The backslash is a separator on Windows clients.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def resolve(cwd: RemotePath, raw: str) -> RemotePath:
    """The path *raw* names, seen from directory *cwd*.

    An empty *raw* names *cwd* itself.

    Raises:
        PathRefused: see the module docstring.
    """
    if not isinstance(raw, str):
        raise PathRefused("a path must be a string")
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:
        raise PathRefused("path is not valid Unicode (lone surrogate)") from None
    if size > MAX_PATH_LENGTH:
        raise PathRefused(f"path is {size} bytes long; the limit is {MAX_PATH_LENGTH}")
    match = _FORBIDDEN.search(raw)
    if match:
        what = "a backslash" if match.group() == "\\" else f"control character {ord(match.group()):#04x}"
        raise PathRefused(f"path contains {what}")

    parts = [] if raw.startswith("/") else list(cwd)
    for name in raw.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise PathRefused(f"path leaves the root: {raw!r}")
            parts.pop()
            continue
        check_name(name)
        parts.append(name)
    if len(parts) > MAX_PATH_DEPTH:
        raise PathRefused(f"path is {len(parts)} levels deep; the limit is {MAX_PATH_DEPTH}")
    # A short relative path from a deep cwd can still make a long path, and
    # replies echo the full path: bound that too.
    full = len("/".join(parts).encode("utf-8"))
    if full > MAX_PATH_LENGTH:
        raise PathRefused(f"path would be {full} bytes long; the limit is {MAX_PATH_LENGTH}")
    return tuple(parts)


def check_name(name: str) -> None:
    """Refuse a single path component that may not be created or named."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_LENGTH:
        raise PathRefused(f"name is {size} bytes long; the limit is {MAX_NAME_LENGTH}")
    if name.startswith(RESERVED_PREFIX):
        raise PathRefused(f"names starting with {RESERVED_PREFIX!r} are reserved")


def to_text(path: RemotePath) -> str:
    """The path as the client sees it: ``/`` for the root, ``/a/b`` below."""
    return "/" + "/".join(path)


def parent(path: RemotePath) -> RemotePath:
    return path[:-1]


def is_within(path: RemotePath, ancestor: RemotePath) -> bool:
    """True if *path* is *ancestor* or lies below it."""
    return path[: len(ancestor)] == ancestor
