"""LocalStorage on a tmp dir, without a server."""

from __future__ import annotations

import os

import pytest
from conftest import LineStops, have_xattrs, partials_in

from sockftp.disk.syscalls import link_by_descriptor
from sockftp.protocol import checksum, errors
from sockftp.protocol.limits import SMALL_FILE
from sockftp.storage import DIRECTORY, FILE, LINK, OTHER, LocalStorage
from sockftp.storage.local import PARTIAL_PREFIX, partial_name
from sockftp.storage.local_files import decode_kept_checksum


@pytest.fixture
def store(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    yield storage
    storage.close()


@pytest.fixture
def root(store):
    from pathlib import Path

    return Path(store.root)


def upload(store, path, data: bytes, offset: int = 0, size: int | None = None):
    up = store.open_upload(path, len(data) if size is None else size, offset)
    up.write(data)
    return up


def put(store, path, data: bytes) -> None:
    up = upload(store, path, data)
    up.commit(checksum.of_bytes(data))


def names(root) -> list[str]:
    return sorted(os.listdir(root))


# --- construction, stat, list ------------------------------------------------------------------


@pytest.mark.parametrize("one_call", [True, False], ids=["openat2", "walk"])
def test_paths_are_resolved_without_links_and_errors_name_the_part(store, root, one_call):
    # openat2 resolves a path in one call where it can; refused, the walk
    # finds which part failed. Both must refuse a link anywhere on the way.
    if one_call and store._open_below is None:
        pytest.skip("openat2 is not available here")
    if not one_call:
        store._open_below = None
    (root / "a" / "b").mkdir(parents=True)
    put(store, ("a", "b", "f"), b"x")
    os.symlink("a", root / "la")
    os.symlink("b", root / "a" / "lb")
    os.symlink(str(root), root / "a" / "up")
    assert store.stat(("a", "b", "f")).size == 1
    for linked in (("la", "b", "f"), ("a", "lb", "f"), ("a", "up", "a", "b", "f")):
        with pytest.raises(errors.PathRefused):
            store.stat(linked)
        with pytest.raises(errors.PathRefused):
            store.open_upload(linked, 1, at_once=True)
    with pytest.raises(errors.NotFound) as info:
        store.stat(("a", "nope", "f"))
    assert "/a/nope" in str(info.value)
    with pytest.raises(errors.NotADirectory):
        store.stat(("a", "b", "f", "g"))
    assert names(root / "a") == ["b", "lb", "up"]


def test_root_is_created_if_missing(tmp_path):
    storage = LocalStorage(tmp_path / "a" / "b")
    try:
        assert (tmp_path / "a" / "b").is_dir()
        assert storage.stat(()).type == DIRECTORY
    finally:
        storage.close()


def test_stat_reports_type_size_and_mtime(store, root):
    (root / "f").write_bytes(b"12345")
    (root / "d").mkdir()
    os.symlink("f", root / "l")
    os.mkfifo(root / "p")
    f = store.stat(("f",))
    assert (f.name, f.type, f.size) == ("f", FILE, 5)
    assert f.mtime == pytest.approx(os.stat(root / "f").st_mtime, abs=1e-6)
    assert store.stat(("d",)).type == DIRECTORY
    assert store.stat(("l",)).type == LINK
    assert store.stat(("p",)).type == OTHER
    with pytest.raises(errors.NotFound):
        store.stat(("missing",))
    with pytest.raises(errors.NotFound):
        store.stat(("missing", "x"))
    with pytest.raises(errors.NotADirectory):
        store.stat(("f", "x"))


def test_list_hides_partials(store, root):
    (root / "a").write_bytes(b"")
    (root / "d").mkdir()
    upload(store, ("hidden",), b"xx", size=10).keep()
    assert any(n.startswith(PARTIAL_PREFIX) for n in names(root))
    assert sorted(e.name for e in store.list(())) == ["a", "d"]


def test_list_shows_undecodable_names_escaped(store, root):
    os.mkdir(os.path.join(os.fsencode(root), b"bad\xffname"))
    [entry] = list(store.list(()))
    assert entry.name == "bad\\xffname"
    entry.name.encode("utf-8")  # JSON can carry it


def test_list_of_missing_or_file_fails(store, root):
    (root / "f").write_bytes(b"")
    with pytest.raises(errors.NotFound):
        list(store.list(("nope",)))
    with pytest.raises(errors.NotADirectory):
        list(store.list(("f",)))


# --- mkdir, rmdir, remove, rename ------------------------------------------------------------------


def test_mkdir_semantics(store, root):
    store.mkdir(("a",))
    assert (root / "a").is_dir()
    with pytest.raises(errors.Exists):
        store.mkdir(("a",))
    store.mkdir(("a",), parents=True)
    store.mkdir(("x", "y", "z"), parents=True)
    assert (root / "x" / "y" / "z").is_dir()
    with pytest.raises(errors.NotFound):
        store.mkdir(("m", "n"))
    (root / "f").write_bytes(b"")
    with pytest.raises(errors.Exists):
        store.mkdir(("f",), parents=True)
    with pytest.raises(errors.NotADirectory):
        store.mkdir(("f", "sub"), parents=True)
    with pytest.raises(errors.Exists):
        store.mkdir(())
    store.mkdir((), parents=True)


def test_rmdir_semantics(store, root):
    (root / "empty").mkdir()
    (root / "full").mkdir()
    (root / "full" / "x").write_bytes(b"")
    (root / "f").write_bytes(b"")
    store.rmdir(("empty",))
    assert not (root / "empty").exists()
    with pytest.raises(errors.NotEmpty):
        store.rmdir(("full",))
    with pytest.raises(errors.NotADirectory):
        store.rmdir(("f",))
    with pytest.raises(errors.NotFound):
        store.rmdir(("gone",))
    with pytest.raises(errors.PathRefused):
        store.rmdir(())


def test_rmdir_drops_abandoned_partials_only_when_nothing_else_is_there(store, root):
    (root / "d").mkdir()
    upload(store, ("d", "x"), b"abc", size=10).keep()
    upload(store, ("d", "y"), b"abc", size=10).keep()
    (root / "d" / "visible").write_bytes(b"")
    with pytest.raises(errors.NotEmpty):
        store.rmdir(("d",))
    assert len([n for n in names(root / "d") if n.startswith(PARTIAL_PREFIX)]) == 2
    (root / "d" / "visible").unlink()
    store.rmdir(("d",))
    assert not (root / "d").exists()


def test_remove_semantics(store, root):
    (root / "f").write_bytes(b"")
    (root / "d").mkdir()
    os.symlink("d", root / "link")
    store.remove(("f",))
    assert not (root / "f").exists()
    with pytest.raises(errors.NotFound):
        store.remove(("f",))
    with pytest.raises(errors.IsADirectory):
        store.remove(("d",))
    store.remove(("link",))  # the link, not its target
    assert (root / "d").is_dir() and not os.path.lexists(root / "link")


def test_rename_semantics(store, root):
    (root / "a").write_bytes(b"A")
    (root / "b").write_bytes(b"B")
    (root / "d").mkdir()
    (root / "d" / "sub").mkdir()
    (root / "e").mkdir()
    store.rename(("a",), ("b",))  # replaces a file
    assert (root / "b").read_bytes() == b"A" and not (root / "a").exists()
    store.rename(("b",), ("d", "b2"))
    assert (root / "d" / "b2").read_bytes() == b"A"
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
    assert (root / "e" / "moved" / "sub").is_dir()
    store.rename(("e",), ("e",))  # onto itself: nothing happens
    assert (root / "e").is_dir()


# --- uploads ------------------------------------------------------------------------------------------


def test_upload_is_invisible_until_commit(store, root):
    up = upload(store, ("f",), b"hello")
    assert names(root) == [partial_name("f")]
    with pytest.raises(errors.NotFound):
        store.stat(("f",))
    up.commit(checksum.of_bytes(b"hello"))
    assert names(root) == ["f"]
    assert (root / "f").read_bytes() == b"hello"


def test_commit_replaces_atomically_an_open_download_keeps_old_content(store, root):
    put(store, ("f",), b"old content")
    with store.open_read(("f",)) as download:
        put(store, ("f",), b"new")
        buf = bytearray(100)
        n = download.readinto(memoryview(buf), 0)
        assert bytes(buf[:n]) == b"old content"
        assert download.size == len(b"old content")
    assert (root / "f").read_bytes() == b"new"


def test_discard_drops_the_bytes(store, root):
    up = upload(store, ("f",), b"abc", size=10)
    up.discard()
    assert names(root) == []
    assert store.partial_size(("f",), 10) == 0


def test_keep_leaves_a_resumable_partial(store, root):
    upload(store, ("f",), b"abcd", size=10).keep()
    assert store.partial_size(("f",), 10) == 4
    up = store.open_upload(("f",), 10, offset=4)
    assert up.offset == 4
    hasher = checksum.Hasher()
    up.hash_existing(hasher)
    assert hasher.value() == checksum.of_bytes(b"abcd")
    up.write(b"efghij")
    up.commit(None)
    assert (root / "f").read_bytes() == b"abcdefghij"
    assert store.partial_size(("f",), 10) == 0


def test_resume_at_a_smaller_offset_truncates_the_partial(store, root):
    upload(store, ("f",), b"abcdef", size=10).keep()
    up = store.open_upload(("f",), 10, offset=2)
    up.write(b"XXXXXXXX")
    up.commit(None)
    assert (root / "f").read_bytes() == b"abXXXXXXXX"


def test_new_upload_at_offset_zero_restarts(store, root):
    upload(store, ("f",), b"abcdef", size=10).keep()
    up = store.open_upload(("f",), 3, offset=0)
    up.write(b"xyz")
    up.commit(None)
    assert (root / "f").read_bytes() == b"xyz"


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


def test_open_upload_refuses_a_resume_announced_with_another_size(store, root):
    if not store.xattrs:
        pytest.skip("no extended attributes: the announced size is not recorded")
    upload(store, ("f",), b"abcd", size=10).keep()
    assert store.partial_size(("f",), 11) == 0
    with pytest.raises(errors.OffsetMismatch) as info:
        store.open_upload(("f",), 11, offset=4)
    assert info.value.details["offset"] == 0


def test_a_large_upload_is_marked_with_its_size_from_the_start(store, root):
    # If the server dies midway, keep() never runs: the mark must be there
    # already for the resume check above. A small upload is marked by keep().
    if not store.xattrs:
        pytest.skip("no extended attributes: the announced size is not recorded")
    large = store.open_upload(("big",), SMALL_FILE + 1)
    large.write(b"abcd")
    assert os.getxattr(root / partial_name("big"), "user.sockftp.upload-size") == str(SMALL_FILE + 1).encode()
    large.keep()


@pytest.fixture(params=["by descriptor", "through /proc"])
def unnamed(store, request):
    """A store making unnamed files, named each way the kernel may allow."""
    if not store.unnamed:
        pytest.skip("this filesystem cannot make unnamed files (O_TMPFILE)")
    if request.param == "through /proc":
        store.link_unnamed = link_by_descriptor
    elif store.link_unnamed is link_by_descriptor:
        pytest.skip("this kernel does not let linkat name a file by its descriptor")
    return store


def test_an_upload_all_in_hand_shows_nothing_until_it_commits(unnamed, root):
    up = unnamed.open_upload(("f",), 5, at_once=True)
    up.write(b"hello")
    assert names(root) == []  # not even a partial
    up.commit(checksum.of_bytes(b"hello"))
    assert names(root) == ["f"] and (root / "f").read_bytes() == b"hello"
    up = unnamed.open_upload(("f",), 3, at_once=True)
    up.write(b"new")
    assert (root / "f").read_bytes() == b"hello"
    up.commit(None)
    assert names(root) == ["f"] and (root / "f").read_bytes() == b"new"  # replaced, no debris


def test_an_upload_all_in_hand_that_fails_leaves_nothing_or_a_partial(unnamed, root):
    (root / "d").mkdir()
    up = unnamed.open_upload(("d",), 1, at_once=True)
    up.write(b"x")
    with pytest.raises(errors.IsADirectory):
        up.commit(None)
    up = unnamed.open_upload(("gone",), 2, at_once=True)
    up.write(b"ab")
    up.discard()
    assert names(root) == ["d"]
    # Stopped short (a full disk, say): its bytes become the partial.
    up = unnamed.open_upload(("cut",), 10, at_once=True)
    up.write(b"abcd")
    up.keep()
    assert names(root) == [partial_name("cut"), "d"]
    assert unnamed.partial_size(("cut",), 10) == 4
    if unnamed.xattrs:
        assert unnamed.partial_size(("cut",), 11) == 0  # marked with its size


def test_an_upload_all_in_hand_meets_a_partial_as_any_upload_does(unnamed, root):
    first = upload(unnamed, ("f",), b"one", size=10)
    with pytest.raises(errors.Busy):
        unnamed.open_upload(("f",), 3, at_once=True)
    first.keep()
    second = unnamed.open_upload(("f",), 3, at_once=True)  # the old partial is dropped
    assert second.dropped == 3
    second.write(b"two")
    second.commit(None)
    assert names(root) == ["f"] and (root / "f").read_bytes() == b"two"


def test_a_directory_removed_under_an_upload_all_in_hand_is_not_found(unnamed, root):
    # Removed between the walk and the unnamed file's creation: the client
    # is told, and unnamed files stay in use (it is not the filesystem).
    (root / "gone").mkdir()
    parent_fd = os.open(root / "gone", os.O_RDONLY | os.O_DIRECTORY)
    (root / "gone").rmdir()
    try:
        assert unnamed._open_unnamed(parent_fd, ("gone", "f"), 1) is None  # the named way says why
    finally:
        os.close(parent_fd)
    with pytest.raises(errors.NotFound):
        unnamed.open_upload(("gone", "f"), 1, at_once=True)
    assert unnamed.unnamed


def test_without_unnamed_files_an_upload_all_in_hand_takes_a_partial(store, root):
    store.unnamed = False
    up = store.open_upload(("f",), 5, at_once=True)
    up.write(b"hello")
    assert names(root) == [partial_name("f")]
    up.commit(None)
    assert names(root) == ["f"]


def test_second_upload_of_a_path_is_busy_until_the_first_ends(store, root):
    first = upload(store, ("f",), b"one", size=3)
    with pytest.raises(errors.Busy):
        store.open_upload(("f",), 3)
    first.commit(None)
    second = store.open_upload(("f",), 3)
    second.write(b"two")
    second.commit(None)
    assert (root / "f").read_bytes() == b"two"


def test_open_upload_refusals(store, root):
    (root / "d").mkdir()
    (root / "f").write_bytes(b"")
    with pytest.raises(errors.IsADirectory):
        store.open_upload(("d",), SMALL_FILE + 1)
    # A small upload meets the directory when it commits, and leaves nothing.
    small = store.open_upload(("d",), 1)
    small.write(b"x")
    with pytest.raises(errors.IsADirectory):
        small.commit(None)
    assert (root / "d").is_dir() and partials_in(root) == []
    with pytest.raises(errors.NotFound):
        store.open_upload(("nodir", "x"), 1)
    with pytest.raises(errors.NotADirectory):
        store.open_upload(("f", "x"), 1)
    with pytest.raises(errors.PathRefused):
        store.open_upload((), 1)


def test_open_read_refusals(store, root):
    (root / "d").mkdir()
    os.symlink("d", root / "l")
    os.mkfifo(root / "p")
    with pytest.raises(errors.IsADirectory):
        store.open_read(("d",))
    with pytest.raises(errors.PathRefused):
        store.open_read(("l",))
    with pytest.raises(errors.PathRefused):
        store.open_read(("p",))
    with pytest.raises(errors.NotFound):
        store.open_read(("x",))


# --- uploads of unknown size, and appends (FTP's STOR, APPE, REST + STOR) ----------------------------


def test_an_upload_of_unknown_size_commits_whatever_arrived(store, root):
    up = store.open_upload(("f",), None)
    assert up.size is None
    up.write(b"abc")
    up.write(b"def")
    up.commit(None)
    assert (root / "f").read_bytes() == b"abcdef"


def test_a_partial_of_unknown_size_is_resumed_by_any_size_and_announces_none(store, root):
    upload(store, ("f",), b"abcd", size=10).keep()
    assert store.partial_size(("f",), None) == 4
    up = store.open_upload(("f",), None, offset=4)  # size unknown: the announced 10 does not bind it
    up.write(b"efghijklmn")  # longer than the first upload announced
    up.commit(None)
    assert (root / "f").read_bytes() == b"abcdefghijklmn"

    store.open_upload(("g",), None).keep()
    up = store.open_upload(("g",), None)
    up.write(b"xy")
    up.keep()
    assert store.partial_size(("g",), None) == 2
    assert store.partial_size(("g",), 5) == 2  # no size recorded: any announced size may resume it
    assert store.partial_size(("g",), 1) == 0  # but not one shorter than what is held


def test_starting_over_with_an_unknown_size_forgets_the_announced_one(xattr_store, root):
    upload(xattr_store, ("f",), b"abcd", size=10).keep()
    up = xattr_store.open_upload(("f",), None)
    up.write(b"xyz")
    up.keep()
    assert xattr_store.partial_size(("f",), 7) == 3  # 10 would have been required before


def test_append_keeps_the_old_file_visible_until_commit(store, root):
    put(store, ("f",), b"hello")
    up = store.open_append(("f",))
    assert (up.offset, up.size, up.dropped) == (5, None, 0)
    up.write(b" world")
    assert (root / "f").read_bytes() == b"hello"
    up.commit(None)
    assert (root / "f").read_bytes() == b"hello world"
    assert names(root) == ["f"]


def test_append_at_an_offset_keeps_that_prefix_only(store, root):
    put(store, ("f",), b"0123456789")
    up = store.open_append(("f",), 4)
    assert up.offset == 4
    hasher = checksum.Hasher()
    up.hash_existing(hasher)
    assert hasher.value() == checksum.of_bytes(b"0123")
    up.write(b"xy")
    up.commit(None)
    assert (root / "f").read_bytes() == b"0123xy"


def test_append_replaces_an_abandoned_partial_and_says_how_much_it_dropped(store, root):
    put(store, ("f",), b"abc")
    upload(store, ("f",), b"stale bytes", size=20).keep()
    up = store.open_append(("f",))
    assert up.dropped == len(b"stale bytes")
    up.write(b"d")
    up.commit(None)
    assert (root / "f").read_bytes() == b"abcd"


def test_an_abandoned_append_leaves_a_partial_that_continues(store, root):
    put(store, ("f",), b"abc")
    up = store.open_append(("f",))
    up.write(b"de")
    up.keep()
    assert (root / "f").read_bytes() == b"abc"
    assert store.partial_size(("f",), None) == 5
    up = store.open_upload(("f",), None, offset=5)
    up.write(b"f")
    up.commit(None)
    assert (root / "f").read_bytes() == b"abcdef"


def test_append_of_a_large_file_copies_it_exactly(store, root):
    data = os.urandom(9 * 1024 * 1024 + 3)
    (root / "big").write_bytes(data)
    up = store.open_append(("big",))
    up.write(b"tail")
    up.commit(None)
    assert (root / "big").read_bytes() == data + b"tail"


def test_append_refusals(store, root):
    put(store, ("f",), b"abc")
    (root / "d").mkdir()
    os.symlink("f", root / "l")
    with pytest.raises(errors.NotFound):
        store.open_append(("nothing",))
    with pytest.raises(errors.IsADirectory):
        store.open_append(("d",))
    with pytest.raises(errors.PathRefused):
        store.open_append(("l",))
    with pytest.raises(errors.OffsetMismatch) as info:
        store.open_append(("f",), 4)
    assert info.value.details["offset"] == 3
    busy = store.open_upload(("f",), None)
    with pytest.raises(errors.Busy):
        store.open_append(("f",))
    busy.discard()
    assert names(root) == ["d", "f", "l"]  # refusals leave no partial behind


# --- the checksum cache -------------------------------------------------------------------------------


@pytest.fixture
def xattr_store(store, root):
    if not store.xattrs or not have_xattrs(root):
        pytest.skip("the filesystem has no user extended attributes")
    return store


# Every committed file keeps its checksum in an attribute, small ones too:
# a tree's listing reports only kept checksums, and never hashes a file.
LARGE = b"payload!" * (SMALL_FILE // 8 + 1)


def test_commit_records_the_checksum_in_an_xattr(xattr_store, root):
    put(xattr_store, ("f",), LARGE)
    st = os.stat(root / "f")
    kept = decode_kept_checksum(os.getxattr(root / "f", "user.sockftp.checksum"))
    assert kept == (st.st_size, st.st_mtime_ns, checksum.of_bytes(LARGE))
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(LARGE)


def test_a_small_file_keeps_its_checksum_too_and_one_asked_for_is_kept(xattr_store, root):
    for name, data in (("f", b"payload"), ("g", b"x" * SMALL_FILE), ("empty", b"")):
        put(xattr_store, (name,), data)
        st = os.stat(root / name)
        kept = decode_kept_checksum(os.getxattr(root / name, "user.sockftp.checksum"))
        assert kept == (st.st_size, st.st_mtime_ns, checksum.of_bytes(data))
    (root / "placed").write_bytes(b"put there without sockftp")
    assert xattr_store.checksum(("placed",)) == checksum.of_bytes(b"put there without sockftp")
    kept = decode_kept_checksum(os.getxattr(root / "placed", "user.sockftp.checksum"))
    assert kept[2] == checksum.of_bytes(b"put there without sockftp")


def test_a_kept_checksum_takes_no_disk_block_of_its_own(xattr_store, root):
    # A small file's checksum must fit in its inode: an attribute block of
    # its own would double a 4 KiB file's disk and slow its put.
    (root / "plain").write_bytes(b"p" * 4096)
    (root / "probe").write_bytes(b"p" * 4096)
    os.setxattr(root / "probe", "user.sockftp.probe", b"x" * 33)
    if os.stat(root / "probe").st_blocks != os.stat(root / "plain").st_blocks:
        pytest.skip("this filesystem keeps no attribute in the inode")
    put(xattr_store, ("kept",), b"k" * 4096)
    assert os.getxattr(root / "kept", "user.sockftp.checksum")
    assert os.stat(root / "kept").st_blocks == os.stat(root / "plain").st_blocks


def test_an_upload_taken_over_before_its_lock_starts_from_what_the_lock_holds(store, root):
    # Upload A creates the partial, and before A locks it upload B of the
    # same file takes it, writes 60 bytes and stops (its client gone). A
    # must see those bytes under its lock and start over, not commit its 10
    # bytes over the start of B's 60. B runs at every line of A's opening.
    stops = LineStops()
    opened = []
    stops.run(lambda: opened.append(store.open_upload(("f",), 10)))

    def other_upload(_):
        if not (root / partial_name("f")).exists():
            return  # A has not created it yet
        try:
            other = store.open_upload(("f",), 100)
        except errors.Busy:
            return  # A holds the lock already
        other.write(b"B" * 60)
        other.keep()

    stops.each_stop(other_upload)
    (mine,) = opened
    assert mine.dropped == 60
    mine.write(b"A" * 10)
    mine.commit(checksum.of_bytes(b"A" * 10))
    assert (root / "f").read_bytes() == b"A" * 10


def test_checksum_cache_is_used_when_size_and_mtime_match(xattr_store, root):
    (root / "f").write_bytes(LARGE)
    st = os.stat(root / "f")
    planted = "xxh3-128:" + "ab" * 16  # not the real checksum: only the cache can give it
    os.setxattr(root / "f", "user.sockftp.checksum", f"{st.st_size}:{st.st_mtime_ns}:{planted}".encode())
    assert xattr_store.checksum(("f",)) == planted


def test_checksum_is_computed_and_cached_on_first_use(xattr_store, root):
    (root / "f").write_bytes(LARGE)
    with pytest.raises(OSError):
        os.getxattr(root / "f", "user.sockftp.checksum")
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(LARGE)
    assert decode_kept_checksum(os.getxattr(root / "f", "user.sockftp.checksum"))[2] == checksum.of_bytes(LARGE)


def test_checksum_cache_is_invalidated_when_the_file_changes_on_disk(xattr_store, root):
    put(xattr_store, ("f",), b"version 1" + LARGE)
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(b"version 1" + LARGE)
    st = os.stat(root / "f")
    with open(root / "f", "r+b") as f:  # same size, new content, in place
        f.write(b"version 2")
    os.utime(root / "f", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(b"version 2" + LARGE)
    with open(root / "f", "ab") as f:  # a new size
        f.write(b"!")
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(b"version 2" + LARGE + b"!")


def test_checksum_cache_with_garbage_is_ignored(xattr_store, root):
    (root / "f").write_bytes(LARGE)
    st = os.stat(root / "f")
    os.setxattr(root / "f", "user.sockftp.checksum", f"{st.st_size}:{st.st_mtime_ns}:not-a-checksum".encode())
    assert xattr_store.checksum(("f",)) == checksum.of_bytes(LARGE)


def test_checksum_of_a_large_file_matches(store, root):
    data = os.urandom(9 * 1024 * 1024 + 3)  # more than one hash buffer
    (root / "big").write_bytes(data)
    assert store.checksum(("big",)) == checksum.of_bytes(data)


# --- symlinks never followed ---------------------------------------------------------------------------


def test_storage_never_walks_through_a_symlink(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "s").write_bytes(b"secret")
    os.symlink(outside, root / "ld")
    for call in (
        lambda: store.stat(("ld", "s")),
        lambda: store.open_read(("ld", "s")),
        lambda: list(store.list(("ld",))),
        lambda: store.open_upload(("ld", "new"), 1),
        lambda: store.mkdir(("ld", "new")),
        lambda: store.remove(("ld", "s")),
        lambda: store.rename(("ld", "s"), ("stolen",)),
    ):
        with pytest.raises(errors.SockftpError):
            call()
    assert sorted(os.listdir(outside)) == ["s"]
    assert not (root / "stolen").exists()
