"""Block lists kept beside the files they describe, for block-level deltas.

A file of at least ``DELTA_MIN`` bytes that a LocalStorage commits gets a
hidden sidecar in its directory, ``.sockftp-blocks-<hash of its name>``,
holding its block digests and what they were computed for: the file's
inode, size, ``mtime_ns`` and whole-file checksum. A sidecar is used only
while all of these match the file as it is now, so a file changed behind
the server's back (or a sidecar left stale by a crash between two renames)
is never trusted: its list is computed again, from one read of the file.

Why a file and not an extended attribute, as the whole-file checksum is: a
list takes 8 bytes per MiB of file, and an attribute holds 4 KiB on ext4
(64 KiB at most on Linux): lists of files past 512 MiB would not fit.

The tree keeps sidecars in step (:mod:`sockftp.storage.local`): a rename
moves a file's sidecar with it, ``rm`` and ``rmdir`` remove it, and usage
(so quotas) does not count it (8 bytes per MiB). Like
:mod:`sockftp.storage.local_files`, everything here works on a directory
descriptor and single names, and never walks a path.

A sidecar is a cache: losing one costs a read of its file, and one that
is damaged is caught by its own hash, or at worst by the whole-file check
that ends every delta. So it is written without fsync.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat as statmod

import xxhash

from ..protocol import checksum as checksums
from ..protocol.blocks import DIGEST_SIZE, block_count
from ..protocol.limits import DELTA_BLOCK, RESERVED_PREFIX

BLOCKS_PREFIX = RESERVED_PREFIX + "-blocks-"

_MAGIC = b"sockftp-blocks 1\n"
#: A sidecar's header line is far shorter; anything longer is not ours.
_MAX_HEADER = 1024


def sidecar_name(name: str) -> str:
    """The hidden sidecar of file *name*: fixed length whatever the name."""
    return BLOCKS_PREFIX + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def read(dir_fd: int, name: str, st: os.stat_result, checksum: str | None = None) -> tuple[str, bytes] | None:
    """The (whole checksum, block digests) kept for file *name* in *dir_fd*,
    whose stat is *st*, if they were kept for the file as it is now (and
    for *checksum*, when the file carries one); else None."""
    try:
        fd = os.open(sidecar_name(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        own = os.fstat(fd)
        expected = block_count(st.st_size, DELTA_BLOCK) * DIGEST_SIZE
        if not statmod.S_ISREG(own.st_mode) or own.st_size > len(_MAGIC) + _MAX_HEADER + expected:
            return None
        data = os.pread(fd, own.st_size, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not data.startswith(_MAGIC):
        return None
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(data[len(_MAGIC) : end])
    except ValueError:
        return None
    digests = data[end + 1 :]
    if not isinstance(header, dict) or len(digests) != expected:
        return None
    kept = header.get("checksum")
    valid = (
        header.get("ino") == st.st_ino
        and header.get("size") == st.st_size
        and header.get("mtime_ns") == st.st_mtime_ns
        and header.get("block_size") == DELTA_BLOCK
        and header.get("digests") == xxhash.xxh3_64_hexdigest(digests)
        and checksums.is_valid(kept)
        and (checksum is None or kept == checksum)
    )
    return (kept, digests) if valid else None


def write(dir_fd: int, name: str, st: os.stat_result, checksum: str, digests: bytes) -> None:
    """Keep *digests* (of ``DELTA_BLOCK`` blocks) and *checksum* for file
    *name*, whose stat is *st*. Best effort: a list that cannot be kept
    (a full disk) is computed again when it is next asked for."""
    header = {
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "checksum": checksum,
        "block_size": DELTA_BLOCK,
        "digests": xxhash.xxh3_64_hexdigest(digests),
    }
    data = _MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + digests
    # Written under a name of its own and renamed into place: a reader
    # never sees half a sidecar.
    temporary = f"{sidecar_name(name)}-{secrets.token_hex(8)}"
    try:
        fd = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd
        )
    except OSError:
        return
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temporary, sidecar_name(name), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass


def remove(dir_fd: int, name: str) -> None:
    """Drop the sidecar of file *name*, if it has one."""
    try:
        os.unlink(sidecar_name(name), dir_fd=dir_fd)
    except OSError:
        pass  # none (the common case), or gone already


def move(source_fd: int, source: str, target_fd: int, target: str) -> None:
    """File *source* was renamed to *target*: its sidecar follows it (the
    inode it is keyed by is the same), replacing the target's old one."""
    try:
        os.rename(sidecar_name(source), sidecar_name(target), src_dir_fd=source_fd, dst_dir_fd=target_fd)
    except FileNotFoundError:
        remove(target_fd, target)  # the file it replaced had one: stale now
    except OSError:
        remove(source_fd, source)
        remove(target_fd, target)
