"""The Storage contract, run against every backend: LocalStorage on a tmp
dir and S3Storage on a real SeaweedFS (tests/s3_support.py).

Only the interface is used here (storage/base.py): what a test plants, it
plants through the store. What only one backend does (symbolic links and
extended attributes on a local disk; parts, leases and the SeaweedFS
quirks on S3) is tested in tests/test_storage_local.py and
tests/test_storage_s3.py.
"""

from __future__ import annotations

import os

import pytest

from sockftp.protocol import checksum, errors
from sockftp.protocol.limits import SMALL_FILE
from sockftp.storage import DIRECTORY, FILE, LocalStorage

#: The part size the S3 store is given here: S3's smallest, so that a few
#: MiB make several parts.
PART = 5 * 1024 * 1024


def make_s3_store(seaweed, prefix: str, state, **options):
    from sockftp.storage.s3 import S3Storage

    options = {"part_size": PART, "lease_time": 2.0, **options}
    return S3Storage("sockftp-test", prefix, state=state, client=seaweed.client(), **options)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        storage = LocalStorage(tmp_path / "root")
    else:
        from sockftp.accounts.sqlite import SqliteUserStore

        seaweed = request.getfixturevalue("seaweed")
        state = SqliteUserStore(str(tmp_path / "users.db"))
        storage = make_s3_store(seaweed, request.getfixturevalue("s3_prefix"), state, spool_dir=str(tmp_path / "spool"))
    yield storage
    storage.close()


def upload(store, path, data: bytes, offset: int = 0, size: int | None = None):
    up = store.open_upload(path, len(data) if size is None else size, offset)
    up.write(data)
    return up


def put(store, path, data: bytes) -> None:
    upload(store, path, data).commit(checksum.of_bytes(data))


def read(store, path) -> bytes:
    with store.open_read(path) as download:
        buffer = bytearray(download.size)
        view = memoryview(buffer)
        done = 0
        while done < download.size:
            n = download.readinto(view[done:], done)
            assert n
            done += n
        return bytes(buffer)


def names(store, path=()) -> list[str]:
    return sorted(entry.name for entry in store.list(path))


# --- stat, list ------------------------------------------------------------------------------------


def test_stat_and_list(store):
    put(store, ("f",), b"12345")
    store.mkdir(("d",))
    f = store.stat(("f",))
    assert (f.name, f.type, f.size) == ("f", FILE, 5)
    assert store.stat(("d",)).type == DIRECTORY
    assert store.stat(()).type == DIRECTORY
    assert names(store) == ["d", "f"]
    assert list(store.list(("d",))) == []
    with pytest.raises(errors.NotFound):
        store.stat(("missing",))
    with pytest.raises(errors.NotFound):
        store.stat(("missing", "x"))
    with pytest.raises(errors.NotADirectory):
        store.stat(("f", "x"))
    with pytest.raises(errors.NotFound):
        list(store.list(("nope",)))
    with pytest.raises(errors.NotADirectory):
        list(store.list(("f",)))


def test_list_hides_partials_and_names_keep_their_characters(store):
    store.mkdir(("d",))
    upload(store, ("hidden",), b"xx", size=10).keep()
    odd = "naïve €uro & 100% + spaces ?"
    put(store, (odd,), b"x")
    put(store, ("d", "inner"), b"y")
    assert names(store) == ["d", odd]
    assert read(store, (odd,)) == b"x"


# --- mkdir, rmdir, remove, rename ----------------------------------------------------------------


def test_mkdir_semantics(store):
    store.mkdir(("a",))
    with pytest.raises(errors.Exists):
        store.mkdir(("a",))
    store.mkdir(("a",), parents=True)
    store.mkdir(("x", "y", "z"), parents=True)
    assert store.stat(("x", "y", "z")).type == DIRECTORY
    assert store.stat(("x", "y")).type == DIRECTORY
    with pytest.raises(errors.NotFound):
        store.mkdir(("m", "n"))
    put(store, ("f",), b"")
    with pytest.raises(errors.Exists):
        store.mkdir(("f",), parents=True)
    with pytest.raises(errors.NotADirectory):
        store.mkdir(("f", "sub"), parents=True)
    with pytest.raises(errors.Exists):
        store.mkdir(())
    store.mkdir((), parents=True)


def test_rmdir_semantics(store):
    store.mkdir(("empty",))
    store.mkdir(("full",))
    put(store, ("full", "x"), b"")
    put(store, ("f",), b"")
    store.rmdir(("empty",))
    with pytest.raises(errors.NotFound):
        store.stat(("empty",))
    with pytest.raises(errors.NotEmpty):
        store.rmdir(("full",))
    store.mkdir(("full", "sub"))
    store.remove(("full", "x"))
    with pytest.raises(errors.NotEmpty):
        store.rmdir(("full",))
    with pytest.raises(errors.NotADirectory):
        store.rmdir(("f",))
    with pytest.raises(errors.NotFound):
        store.rmdir(("gone",))
    with pytest.raises(errors.PathRefused):
        store.rmdir(())


def test_rmdir_drops_abandoned_partials_only_when_nothing_else_is_there(store):
    store.mkdir(("d",))
    upload(store, ("d", "x"), b"abc", size=10).keep()
    upload(store, ("d", "y"), b"abcd", size=10).keep()
    put(store, ("d", "visible"), b"")
    with pytest.raises(errors.NotEmpty):
        store.rmdir(("d",))
    assert store.partial_size(("d", "x"), 10) == 3
    store.remove(("d", "visible"))
    assert store.rmdir(("d",)) == 7
    with pytest.raises(errors.NotFound):
        store.stat(("d",))
    assert store.partial_size(("d", "x"), 10) == 0


def test_rmdir_of_a_directory_with_an_upload_under_way_is_refused(store):
    store.mkdir(("d",))
    running = upload(store, ("d", "x"), b"abc", size=10)
    with pytest.raises((errors.Busy, errors.NotEmpty)):
        store.rmdir(("d",))
    running.discard()
    store.rmdir(("d",))


def test_remove_semantics(store):
    put(store, ("f",), b"")
    store.mkdir(("d",))
    store.remove(("f",))
    with pytest.raises(errors.NotFound):
        store.stat(("f",))
    with pytest.raises(errors.NotFound):
        store.remove(("f",))
    with pytest.raises(errors.IsADirectory):
        store.remove(("d",))


def test_rename_semantics(store):
    put(store, ("a",), b"A")
    put(store, ("b",), b"B")
    store.mkdir(("d",))
    store.mkdir(("d", "sub"))
    store.mkdir(("e",))
    store.rename(("a",), ("b",))  # replaces a file
    assert read(store, ("b",)) == b"A" and names(store) == ["b", "d", "e"]
    store.rename(("b",), ("d", "b2"))
    assert read(store, ("d", "b2")) == b"A"
    with pytest.raises(errors.NotFound):
        store.rename(("ghost",), ("x",))
    with pytest.raises(errors.NotFound):
        store.rename(("d", "b2"), ("nodir", "x"))
    with pytest.raises(errors.PathRefused):
        store.rename(("d",), ("d", "sub", "d"))
    with pytest.raises(errors.IsADirectory):
        store.rename(("d", "b2"), ("e",))
    with pytest.raises(errors.IsADirectory):
        store.rename(("d",), ("e",))
    with pytest.raises(errors.PathRefused):
        store.rename((), ("x",))
    store.rename(("d",), ("e", "moved"))
    assert store.stat(("e", "moved", "sub")).type == DIRECTORY
    assert read(store, ("e", "moved", "b2")) == b"A"
    with pytest.raises(errors.NotFound):
        store.stat(("d",))
    store.rename(("e",), ("e",))  # onto itself: nothing happens
    assert store.stat(("e",)).type == DIRECTORY


# --- uploads -------------------------------------------------------------------------------------


def test_upload_is_invisible_until_commit(store):
    up = upload(store, ("f",), b"hello")
    with pytest.raises(errors.NotFound):
        store.stat(("f",))
    assert names(store) == []
    up.commit(checksum.of_bytes(b"hello"))
    assert names(store) == ["f"] and read(store, ("f",)) == b"hello"


def test_a_large_upload_is_invisible_until_commit_and_keeps_its_checksum(store):
    data = os.urandom(2 * PART + 12345)
    up = upload(store, ("big",), data)
    with pytest.raises(errors.NotFound):
        store.stat(("big",))
    up.commit(checksum.of_bytes(data))
    assert read(store, ("big",)) == data
    with store.open_read(("big",)) as download:
        assert download.checksum() == checksum.of_bytes(data)
    assert store.checksum(("big",)) == checksum.of_bytes(data)


def test_commit_replaces_a_file_and_says_how_big_it_was(store):
    put(store, ("f",), b"old content")
    up = upload(store, ("f",), b"new")
    assert up.replaced_size() == 11
    assert read(store, ("f",)) == b"old content"
    assert up.commit(None) == 11
    assert read(store, ("f",)) == b"new" and names(store) == ["f"]


def test_discard_drops_the_bytes(store):
    up = upload(store, ("f",), b"abc", size=10)
    up.discard()
    assert names(store) == []
    assert store.partial_size(("f",), 10) == 0


def test_keep_leaves_a_resumable_partial(store):
    upload(store, ("f",), b"abcd", size=10).keep()
    assert store.partial_size(("f",), 10) == 4
    up = store.open_upload(("f",), 10, offset=4)
    assert up.offset == 4
    hasher = checksum.Hasher()
    up.hash_existing(hasher)
    assert hasher.value() == checksum.of_bytes(b"abcd")
    up.write(b"efghij")
    up.commit(None)
    assert read(store, ("f",)) == b"abcdefghij"
    assert store.partial_size(("f",), 10) == 0


@pytest.mark.parametrize("cut", [3, PART - 1, PART, PART + 7, 2 * PART + 1])
def test_a_large_upload_resumes_at_any_byte(store, cut):
    data = os.urandom(2 * PART + 4321)
    upload(store, ("f",), data[:cut], size=len(data)).keep()
    assert store.partial_size(("f",), len(data)) == cut
    up = store.open_upload(("f",), len(data), offset=cut)
    hasher = checksum.Hasher()
    up.hash_existing(hasher)
    hasher.update(data[cut:])
    up.write(data[cut:])
    assert hasher.value() == checksum.of_bytes(data)
    up.commit(hasher.value())
    assert read(store, ("f",)) == data


def test_resume_at_a_smaller_offset_drops_the_rest(store):
    upload(store, ("f",), b"abcdef", size=10).keep()
    up = store.open_upload(("f",), 10, offset=2)
    assert up.dropped == 4
    up.write(b"XXXXXXXX")
    up.commit(None)
    assert read(store, ("f",)) == b"abXXXXXXXX"


def test_new_upload_at_offset_zero_restarts(store):
    upload(store, ("f",), b"abcdef", size=10).keep()
    up = store.open_upload(("f",), 3, offset=0)
    assert up.dropped == 6
    up.write(b"xyz")
    up.commit(None)
    assert read(store, ("f",)) == b"xyz"
    assert store.partial_size(("f",), 10) == 0


def test_partial_size_of_unknown_paths_is_zero(store):
    assert store.partial_size(("nothing",), 5) == 0
    assert store.partial_size(("no", "dir"), 5) == 0


def test_open_upload_offset_mismatch(store):
    with pytest.raises(errors.OffsetMismatch) as info:
        store.open_upload(("f",), 10, offset=3)
    assert info.value.details["offset"] == 0
    upload(store, ("f",), b"abcd", size=10).keep()
    with pytest.raises(errors.OffsetMismatch) as info:
        store.open_upload(("f",), 10, offset=5)
    assert info.value.details["offset"] == 4
    assert store.partial_size(("f",), 10) == 4  # a refused resume keeps what is held


def test_second_upload_of_a_path_is_busy_until_the_first_ends(store):
    first = upload(store, ("f",), b"one", size=3)
    with pytest.raises(errors.Busy):
        store.open_upload(("f",), 3)
    first.commit(None)
    second = store.open_upload(("f",), 3)
    second.write(b"two")
    second.commit(None)
    assert read(store, ("f",)) == b"two"


def test_open_upload_refusals(store):
    store.mkdir(("d",))
    put(store, ("f",), b"")
    with pytest.raises(errors.IsADirectory):
        store.open_upload(("d",), SMALL_FILE + 1)
    small = store.open_upload(("d",), 1)  # a small one meets the directory when it commits
    small.write(b"x")
    with pytest.raises(errors.IsADirectory):
        small.commit(None)
    small.discard()
    assert store.stat(("d",)).type == DIRECTORY
    with pytest.raises(errors.NotFound):
        store.open_upload(("nodir", "x"), 1)
    with pytest.raises(errors.NotADirectory):
        store.open_upload(("f", "x"), 1)
    with pytest.raises(errors.PathRefused):
        store.open_upload((), 1)


def test_open_read_refusals(store):
    store.mkdir(("d",))
    with pytest.raises(errors.IsADirectory):
        store.open_read(("d",))
    with pytest.raises(errors.NotFound):
        store.open_read(("x",))


def test_an_upload_all_in_hand(store):
    up = store.open_upload(("f",), 5, at_once=True)
    up.write(b"hello")
    assert names(store) == []
    up.commit(checksum.of_bytes(b"hello"))
    assert read(store, ("f",)) == b"hello"
    first = upload(store, ("g",), b"one", size=10)
    with pytest.raises(errors.Busy):
        store.open_upload(("g",), 3, at_once=True)
    first.keep()
    second = store.open_upload(("g",), 3, at_once=True)  # the old partial is dropped
    assert second.dropped == 3
    second.write(b"two")
    second.commit(None)
    assert read(store, ("g",)) == b"two" and store.partial_size(("g",), 10) == 0


# --- uploads of unknown size, and appends ---------------------------------------------------------


def test_an_upload_of_unknown_size_commits_whatever_arrived(store):
    up = store.open_upload(("f",), None)
    assert up.size is None
    up.write(b"abc")
    up.write(b"def")
    up.commit(None)
    assert read(store, ("f",)) == b"abcdef"


def test_a_partial_of_unknown_size_is_resumed_by_any_size(store):
    upload(store, ("f",), b"abcd", size=10).keep()
    assert store.partial_size(("f",), None) == 4
    up = store.open_upload(("f",), None, offset=4)
    up.write(b"efghijklmn")
    up.commit(None)
    assert read(store, ("f",)) == b"abcdefghijklmn"


def test_append_keeps_the_old_file_visible_until_commit(store):
    put(store, ("f",), b"hello")
    up = store.open_append(("f",))
    assert (up.offset, up.size, up.dropped) == (5, None, 0)
    up.write(b" world")
    assert read(store, ("f",)) == b"hello"
    up.commit(None)
    assert read(store, ("f",)) == b"hello world"
    assert names(store) == ["f"]


def test_append_at_an_offset_keeps_that_prefix_only(store):
    put(store, ("f",), b"0123456789")
    up = store.open_append(("f",), 4)
    hasher = checksum.Hasher()
    up.hash_existing(hasher)
    assert hasher.value() == checksum.of_bytes(b"0123")
    up.write(b"xy")
    up.commit(None)
    assert read(store, ("f",)) == b"0123xy"


def test_append_to_a_large_file_copies_it_exactly(store):
    data = os.urandom(2 * PART + 3)
    put(store, ("big",), data)
    up = store.open_append(("big",))
    up.write(b"tail")
    up.commit(None)
    assert read(store, ("big",)) == data + b"tail"


def test_an_abandoned_append_leaves_a_partial_that_continues(store):
    put(store, ("f",), b"abc")
    up = store.open_append(("f",))
    up.write(b"de")
    up.keep()
    assert read(store, ("f",)) == b"abc"
    assert store.partial_size(("f",), None) == 5
    up = store.open_upload(("f",), None, offset=5)
    up.write(b"f")
    up.commit(None)
    assert read(store, ("f",)) == b"abcdef"


def test_append_refusals(store):
    put(store, ("f",), b"abc")
    store.mkdir(("d",))
    with pytest.raises(errors.NotFound):
        store.open_append(("nothing",))
    with pytest.raises(errors.IsADirectory):
        store.open_append(("d",))
    with pytest.raises(errors.OffsetMismatch) as info:
        store.open_append(("f",), 4)
    assert info.value.details["offset"] == 3
    busy = store.open_upload(("f",), None)
    with pytest.raises(errors.Busy):
        store.open_append(("f",))
    busy.discard()
    assert names(store) == ["d", "f"]


# --- what a subtree holds ------------------------------------------------------------------------


def test_usage_counts_files_and_partials(store):
    store.mkdir(("d",))
    put(store, ("d", "a"), b"12345")
    put(store, ("b",), b"123")
    upload(store, ("d", "p"), b"xy", size=10).keep()
    assert store.usage(()) == type(store.usage(()))(bytes=10, files=2)
    assert store.usage(("d",)).files == 1
    assert store.usage(("nothing",)).bytes == 0


def test_expire_partials_removes_only_untouched_ones(store):
    import time

    store.mkdir(("d",))
    upload(store, ("d", "old"), b"abc", size=10).keep()
    running = upload(store, ("d", "live"), b"abcd", size=10)
    removed = list(store.expire_partials((), time.time() + 60))
    assert removed == [(("d",), 3)]
    assert store.partial_size(("d", "old"), 10) == 0
    running.commit(None)
    assert read(store, ("d", "live")) == b"abcd"
