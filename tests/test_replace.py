"""Replacing a file: the file replaced is freed after the commit returns, by
the dropper's thread (sockftp.disk.dropper), and nothing else changes: the
name holds the old file or the new one, whole, a reader of the old file
keeps reading it, quotas stay exact, and no descriptor is left behind.

Real files in the test's temporary directory, a real LocalStorage. What
the process still holds is read from /proc/self/fd: a replaced file it
holds shows there as ``PATH (deleted)``.
"""

from __future__ import annotations

import os
import threading

import pytest

from sockftp.disk.dropper import DROP_LATER_AT, DROPPER, Dropper
from sockftp.protocol import checksum, errors
from sockftp.protocol.limits import SMALL_FILE
from sockftp.server.quota import QuotaLedger
from sockftp.server.quota_storage import QuotaStorage
from sockftp.storage import LocalStorage
from sockftp.storage.local import partial_name

MiB = 1024 * 1024
LARGE = 2 * MiB


@pytest.fixture
def store(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    yield storage
    storage.close()
    assert DROPPER.wait(10), "the dropper did not finish"


def put(storage, name: str, data: bytes, at_once: bool = False) -> int | None:
    upload = storage.open_upload((name,), len(data), at_once=at_once)
    upload.write(data)
    return upload.commit(checksum.of_bytes(data))


def held_deleted(directory) -> list[os.stat_result]:
    """The files once named in *directory* that this process holds with no
    name left: the replaced files not freed yet."""
    prefix = str(directory) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(prefix) and target.endswith(" (deleted)"):
                found.append(os.fstat(int(fd)))
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, the dropper's)
    return found


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_large_replaced_file_is_freed_after_the_commit_returns_not_inside_it(store, tmp_path):
    # The rename used to free the file it replaced, which for a large file
    # just written is most of the rename's time (disk.dropper's docstring).
    root = tmp_path / "root"
    old, new = os.urandom(LARGE), os.urandom(LARGE + 1)
    put(store, "f", old)
    with DROPPER.paused():
        assert put(store, "f", new) == len(old)
        assert (root / "f").read_bytes() == new
        (kept,) = held_deleted(root)  # the old file, no longer named, still alive
        assert (kept.st_size, kept.st_nlink) == (len(old), 0)
    assert DROPPER.wait(10)
    assert held_deleted(root) == []


@pytest.mark.parametrize("size, at_once", [(SMALL_FILE, True), (SMALL_FILE + 1, False), (DROP_LATER_AT - 1, False)])
def test_a_file_below_the_threshold_is_freed_inside_the_commit(store, tmp_path, size, at_once):
    root = tmp_path / "root"
    put(store, "f", os.urandom(size), at_once=at_once)
    with DROPPER.paused():
        assert put(store, "f", os.urandom(size), at_once=at_once) == size
        assert held_deleted(root) == []
        assert DROPPER.pending == 0


def test_a_small_upload_replacing_a_large_file_leaves_the_freeing_to_the_dropper(store, tmp_path):
    # An upload of a few bytes, all in hand (an unnamed file, linked then
    # renamed over the name), pays for the file it replaces as any other.
    root = tmp_path / "root"
    put(store, "f", os.urandom(LARGE))
    with DROPPER.paused():
        assert put(store, "f", b"tiny", at_once=True) == LARGE
        assert [st.st_size for st in held_deleted(root)] == [LARGE]
    assert (root / "f").read_bytes() == b"tiny"
    assert sorted(os.listdir(root)) == ["f"]


def test_a_download_of_the_old_file_reads_it_whole_after_it_was_replaced_and_freed(store, tmp_path):
    old = os.urandom(LARGE)
    put(store, "f", old)
    with store.open_read(("f",)) as download:
        put(store, "f", os.urandom(LARGE))
        assert DROPPER.wait(10)  # the dropper let go of it: only the download holds it now
        buffer = bytearray(len(old))
        got = 0
        while got < len(old):
            got += download.readinto(memoryview(buffer)[got:], got)
    assert bytes(buffer) == old


@pytest.mark.parametrize("stop", ["keep", "discard"])
def test_an_upload_that_looked_at_a_large_file_and_stopped_holds_nothing(store, tmp_path, stop):
    root = tmp_path / "root"
    old = os.urandom(LARGE)
    put(store, "f", old)
    before = open_descriptors()
    upload = store.open_upload(("f",), LARGE)
    upload.write(os.urandom(MiB))
    assert upload.replaced_size() == LARGE  # holds the file (a limited quota asks first)
    assert upload.replaced_size() == LARGE  # a second look lets go of the first
    getattr(upload, stop)()
    assert open_descriptors() == before
    assert DROPPER.pending == 0
    assert (root / "f").read_bytes() == old


def test_a_commit_that_fails_after_looking_at_a_large_file_holds_nothing_and_keeps_it(store, tmp_path):
    root = tmp_path / "root"
    old = os.urandom(LARGE)
    put(store, "f", old)
    before = open_descriptors()
    upload = store.open_upload(("f",), MiB)
    upload.write(os.urandom(MiB))
    os.unlink(root / partial_name("f"))  # the rename now fails
    with pytest.raises(errors.NotFound):
        upload.commit(None)
    assert open_descriptors() == before
    assert DROPPER.pending == 0
    assert (root / "f").read_bytes() == old


def test_a_directory_that_took_the_name_after_the_look_is_still_refused_and_nothing_is_held(store, tmp_path):
    root = tmp_path / "root"
    put(store, "f", os.urandom(LARGE))
    before = open_descriptors()
    upload = store.open_upload(("f",), MiB)
    upload.write(os.urandom(MiB))
    assert upload.replaced_size() == LARGE  # held from here
    os.unlink(root / "f")
    os.mkdir(root / "f")
    with pytest.raises(errors.IsADirectory):
        upload.commit(None)
    assert open_descriptors() == before
    assert (root / "f").is_dir() and os.listdir(root / "f") == []


def test_past_its_backlog_the_replacer_frees_the_file_itself(store, tmp_path, monkeypatch):
    # Descriptors waiting for the dropper stay bounded, whatever the rate of
    # replacements: past the bound, each replacer frees its own.
    monkeypatch.setattr(DROPPER, "max_pending", 2)
    root = tmp_path / "root"
    data = os.urandom(DROP_LATER_AT)
    for name in "abcd":
        put(store, name, data)
    with DROPPER.paused():
        for name in "abcd":
            put(store, name, data)
        assert DROPPER.pending == 2
        assert len(held_deleted(root)) == 2
    assert DROPPER.wait(10)
    assert held_deleted(root) == []


@pytest.mark.parametrize("limited", [True, False], ids=["limited", "unlimited"])
def test_replacing_large_files_keeps_usage_exact(tmp_path, limited):
    # A limited ledger asks what the upload replaces before its commit (and
    # the file is held from then on); an unlimited one lets the commit say.
    inner = LocalStorage(tmp_path / "root")
    ledger = QuotaLedger("alice", 0, 0, quota_bytes=10 * MiB if limited else None)
    storage = QuotaStorage(inner, ledger)
    try:
        for size in (2 * MiB, 3 * MiB, MiB + 7, 4 * MiB):
            put(storage, "f", os.urandom(size))
            assert (ledger.used_bytes, ledger.used_files, ledger.reserved_bytes) == (size, 1, 0)
            assert inner.usage(()).bytes == size
        assert DROPPER.wait(10)
        assert held_deleted(tmp_path / "root") == []
    finally:
        inner.close()


def test_a_dropper_closes_what_it_is_given_and_says_when_it_is_done(tmp_path):
    dropper = Dropper()
    for n in range(5):
        (tmp_path / f"{n}").write_bytes(b"x")
        fd = os.open(tmp_path / f"{n}", os.O_RDONLY)
        os.unlink(tmp_path / f"{n}")
        with dropper.paused():
            dropper.drop(fd)
            assert not dropper.wait(0.01)  # paused: still waiting
            assert dropper.pending == 1
        assert dropper.wait(10)
        assert held_deleted(tmp_path) == []


def test_a_large_file_removed_is_freed_after_the_remove_returns(store, tmp_path):
    # rm of a large file used to free its blocks and pages inside the
    # request, as a rename over it once did.
    root = tmp_path / "root"
    put(store, "f", os.urandom(LARGE))
    put(store, "small", os.urandom(DROP_LATER_AT - 1))
    with DROPPER.paused():
        store.remove(("f",))
        store.remove(("small",))
        assert not (root / "f").exists()
        assert [st.st_size for st in held_deleted(root)] == [LARGE]
    assert DROPPER.wait(10)
    assert held_deleted(root) == []


def test_a_large_file_a_move_lands_on_is_freed_after_the_move_returns(store, tmp_path):
    root = tmp_path / "root"
    put(store, "old", os.urandom(LARGE))
    new = os.urandom(LARGE + 1)
    put(store, "new", new)
    with DROPPER.paused():
        store.rename(("new",), ("old",))
        assert (root / "old").read_bytes() == new
        assert [st.st_size for st in held_deleted(root)] == [LARGE]
        store.rename(("old",), ("old",))  # onto itself: nothing to free
        assert DROPPER.pending == 1
    assert DROPPER.wait(10)
    assert held_deleted(root) == []


def test_a_file_with_another_link_is_not_held_when_removed(store, tmp_path):
    root = tmp_path / "root"
    put(store, "f", os.urandom(LARGE))
    os.link(root / "f", tmp_path / "elsewhere")
    with DROPPER.paused():
        store.remove(("f",))
        assert DROPPER.pending == 0  # it keeps a name: nothing is freed
    assert (tmp_path / "elsewhere").stat().st_size == LARGE


def test_space_freed_by_a_remove_is_there_for_the_next_upload_even_before_the_dropper_ran(tmp_path):
    # rm hands the file to the dropper; an upload right after must not be
    # told the disk is full because the blocks come back a moment later.
    from faults import small_disk

    with small_disk(tmp_path / "disk", 6 * MiB) as disk:
        storage = LocalStorage(disk / "root", min_free=0)
        try:
            put(storage, "ballast", os.urandom(5 * MiB))
            data = os.urandom(4 * MiB)
            entered, release = threading.Event(), threading.Event()

            def hold_the_dropper():
                with DROPPER.paused():
                    entered.set()
                    release.wait(10)

            holder = threading.Thread(target=hold_the_dropper)
            holder.start()
            entered.wait(5)
            storage.remove(("ballast",))
            assert DROPPER.pending == 1
            threading.Timer(0.3, release.set).start()  # the dropper gets its turn a moment later
            assert put(storage, "new", data) is None
            holder.join(10)
            assert (disk / "root" / "new").read_bytes() == data
        finally:
            storage.close()
