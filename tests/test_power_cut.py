"""What a power cut leaves under a name that an upload replaced, on a real
ext4 (docs/PROTOCOL.md, "Durability").

A power cut is simulated by copying the filesystem's image file while it
is mounted: the copy holds exactly what the disk held at that instant,
nothing of the page cache. Mounting the copy replays its journal, as a
reboot would. The copy is taken when nothing else writes to the little
filesystem; the flusher writes dirty data back only after 30 s, so what
an upload left in the page cache is not in the copy.

What this cannot show: a disk that reorders or loses writes it
acknowledged (the loop device's backing file is in the host's page cache;
the copy reads it back as written), or a cut in the middle of a write. And
a ``sync`` run by another process on the machine writes everything out,
which can only turn a "new or old" into "new": it never makes a failing
case pass as another failure.

Needs root (loop mounts); skipped otherwise, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from faults import small_ext4

from sockftp.protocol import checksum
from sockftp.storage import LocalStorage

KiB = 1024
MiB = 1024 * KiB

#: (size, all in hand, announced): which of the upload's ways it takes. A
#: small upload all in hand goes to an unnamed file; one of up to 1 MiB to
#: a partial with no blocks reserved; a larger one announced has its blocks
#: reserved ahead (disk.prealloc); one not announced (FTP's STOR) has none.
SMALL_UNNAMED = (4 * KiB, True, True)
MEDIUM = (200 * KiB, False, True)
LARGE_RESERVED = (4 * MiB, False, True)
LARGE_UNANNOUNCED = (4 * MiB, False, False)

#: Ample time for the loop device to write out the few MiB a rename started
#: writing (well under a second here); the flusher waits 30 s.
WRITE_OUT = 1.0


@pytest.fixture
def disk(tmp_path):
    with small_ext4(tmp_path / "disk", 64 * MiB) as path:
        yield path


def put(storage: LocalStorage, name: str, data: bytes, at_once: bool = False, announced: bool = True) -> None:
    upload = storage.open_upload((name,), len(data) if announced else None, at_once=at_once)
    upload.write(data)
    upload.commit(checksum.of_bytes(data))


def stored_then_durable(disk: Path, name: str, data: bytes) -> None:
    """*data* under *name*, on disk for sure before the test goes on."""
    storage = LocalStorage(disk / "root", fsync=True)
    try:
        put(storage, name, data)
    finally:
        storage.close()


def commit_the_journal(disk: Path) -> None:
    """Make ext4 commit its journal now, as it does every 5 s: an fsync of
    a new file commits the transaction that holds everything done so far
    (a rename included), and writes no other file's data."""
    fd = os.open(disk / "journal-commit", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def after_a_power_cut(disk: Path, scratch: Path, name: str) -> bytes | None:
    """What *name* holds once the machine comes back from a power cut now;
    None if nothing has that name."""
    image = disk.with_suffix(".img")  # small_ext4's image file: the disk
    copy = scratch / "power-cut.img"
    shutil.copyfile(image, copy)
    at = scratch / "power-cut"
    at.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "loop", str(copy), str(at)], check=True, capture_output=True)
    try:
        path = at / "root" / name
        return path.read_bytes() if path.exists() else None
    finally:
        subprocess.run(["umount", str(at)], check=True)
        copy.unlink()


def verdict(found: bytes | None, old: bytes, new: bytes) -> str:
    if found == new:
        return "new"
    if found == old:
        return "old"
    if found is None:
        return "no file"
    if not found:
        return "empty"
    return f"a mix of {len(found)} bytes"


@pytest.mark.parametrize(
    "way", [SMALL_UNNAMED, MEDIUM, LARGE_RESERVED, LARGE_UNANNOUNCED], ids=["unnamed", "medium", "large", "unannounced"]
)
def test_with_fsync_the_new_file_is_under_its_name_once_the_commit_returns(disk, tmp_path, way):
    size, at_once, announced = way
    old, new = os.urandom(size), os.urandom(size)
    stored_then_durable(disk, "f", old)
    storage = LocalStorage(disk / "root", fsync=True)
    try:
        put(storage, "f", new, at_once, announced)
        # The cut comes right after the reply: nothing else ran meanwhile.
        assert verdict(after_a_power_cut(disk, tmp_path, "f"), old, new) == "new"
    finally:
        storage.close()


def test_with_fsync_a_first_upload_is_under_its_name_once_the_commit_returns(disk, tmp_path):
    new = os.urandom(4 * MiB)
    storage = LocalStorage(disk / "root", fsync=True)
    try:
        put(storage, "f", new)
        assert after_a_power_cut(disk, tmp_path, "f") == new
    finally:
        storage.close()


@pytest.mark.parametrize("way", [SMALL_UNNAMED, MEDIUM, LARGE_UNANNOUNCED], ids=["unnamed", "medium", "unannounced"])
def test_without_fsync_a_replace_whose_blocks_were_not_reserved_is_written_out_at_once(disk, tmp_path, way):
    # ext4 (auto_da_alloc, on by default) starts writing the new file's data
    # out when a rename replaces a file with it, so a cut a moment later
    # finds the new file, where it would otherwise be an empty one for up to
    # 30 s. Swapping the names instead (renameat2's RENAME_EXCHANGE, then an
    # unlink of the old file) gets no such start: the commit must go on
    # renaming over the old file.
    size, at_once, announced = way
    old, new = os.urandom(size), os.urandom(size)
    stored_then_durable(disk, "f", old)
    storage = LocalStorage(disk / "root", fsync=False)
    try:
        put(storage, "f", new, at_once, announced)
        time.sleep(WRITE_OUT)
        commit_the_journal(disk)
        assert verdict(after_a_power_cut(disk, tmp_path, "f"), old, new) in ("old", "new")
    finally:
        storage.close()
