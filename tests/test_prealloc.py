"""Blocks reserved ahead of a sequential writer (sockftp.disk.prealloc), on a real
file in the test's temporary directory."""

from __future__ import annotations

import os

import pytest
from conftest import reserves_blocks
from faults import small_ext4

from sockftp.disk import prealloc
from sockftp.disk.prealloc import MINIMUM, WINDOW, Preallocation

MiB = 1024 * 1024
#: What a filesystem may round an allocation up to (a block, an extent's end).
SLACK = 256 * 1024


def held(fd: int) -> int:
    """Bytes of disk the file holds."""
    return os.fstat(fd).st_blocks * 512


@pytest.fixture
def fd(tmp_path):
    if not reserves_blocks(tmp_path):
        pytest.skip("this filesystem reserves no blocks with fallocate")
    fd = os.open(tmp_path / "file.bin", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def test_blocks_are_reserved_a_window_ahead_and_the_size_stays_what_was_written(fd):
    ahead = Preallocation.for_file(fd, 0, 64 * MiB)
    ahead.cover(4 * MiB)
    assert os.fstat(fd).st_size == 0  # a partial's size is what a resume goes by
    assert held(fd) >= 4 * MiB + WINDOW
    os.write(fd, os.urandom(4 * MiB))
    assert os.fstat(fd).st_size == 4 * MiB


def test_an_announced_size_far_beyond_what_is_sent_reserves_one_window(fd):
    # A client announcing a terabyte and sending 1 MiB holds 1 MiB + a window.
    ahead = Preallocation.for_file(fd, 0, 1 << 40)
    ahead.cover(MiB)
    assert MiB + WINDOW <= held(fd) <= MiB + WINDOW + SLACK


def test_nothing_is_reserved_past_the_end(fd):
    ahead = Preallocation.for_file(fd, 0, 3 * MiB)
    ahead.cover(MiB)
    assert held(fd) <= 3 * MiB + SLACK


def test_release_gives_back_what_was_reserved_past_the_bytes_written(fd):
    ahead = Preallocation.for_file(fd, 0, 64 * MiB)
    ahead.cover(2 * MiB)
    os.write(fd, os.urandom(2 * MiB + 5))
    ahead.release(2 * MiB + 5)
    assert os.fstat(fd).st_size == 2 * MiB + 5
    assert held(fd) <= 2 * MiB + SLACK
    ahead.cover(8 * MiB)  # released: it reserves nothing more
    assert held(fd) <= 2 * MiB + SLACK


def test_a_resumed_file_is_reserved_ahead_too(fd):
    os.write(fd, os.urandom(3 * MiB))
    ahead = Preallocation.for_file(fd, 3 * MiB, 40 * MiB)
    ahead.cover(4 * MiB)
    assert held(fd) >= 4 * MiB + WINDOW
    assert os.fstat(fd).st_size == 3 * MiB


def test_small_transfers_get_none(fd):
    assert Preallocation.for_file(fd, 0, MINIMUM - 1) is None
    assert Preallocation.for_file(fd, 5 * MiB, 5 * MiB + MINIMUM - 1) is None


def test_a_refusal_turns_it_off_and_the_writer_goes_on(tmp_path, monkeypatch):
    path = tmp_path / "read-only.bin"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)  # fallocate needs a writable descriptor: EBADF, every time
    calls = []

    def counted(*args):
        calls.append(args)
        return real(*args)

    real = prealloc._fallocate
    if real is None:
        pytest.skip("no fallocate here")
    monkeypatch.setattr(prealloc, "_fallocate", counted)
    try:
        ahead = Preallocation.for_file(fd, 0, 64 * MiB)
        ahead.cover(4 * MiB)  # refused, and no exception
        ahead.cover(30 * MiB)
        ahead.cover(60 * MiB)
        assert len(calls) == 1  # asked once, then written without
        ahead.release(0)
        assert held(fd) == 0
    finally:
        os.close(fd)


def test_a_refusal_for_want_of_space_still_gives_back_what_it_reserved(tmp_path):
    # ext4 keeps the part of a refused fallocate it managed before ENOSPC:
    # a partial kept on a nearly full disk must not hold it.
    with small_ext4(tmp_path / "disk", 64 * MiB) as disk:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(disk / "ballast", "wb") as ballast:
            ballast.write(bytes(free - 8 * MiB))
            os.fsync(ballast.fileno())
        fd = os.open(disk / "partial", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            ahead = Preallocation.for_file(fd, 0, 1 << 40)
            ahead.cover(MiB)  # 17 MiB asked, about 8 free
            os.write(fd, os.urandom(MiB))
            ahead.release(MiB)
            assert os.fstat(fd).st_size == MiB
            assert held(fd) <= MiB + SLACK
        finally:
            os.close(fd)
