"""Every command, through the client library, against a real server."""

from __future__ import annotations

import json
import os

import pytest
from conftest import (
    assert_closed,
    encode_frame,
    partials_in,
    recv_frame,
    recv_frame_raw,
    round_trip,
    send_frame,
    wait_until,
)

import sockftp
from sockftp import SockftpError
from sockftp.protocol import checksum
from sockftp.protocol.frames import encoded_size
from sockftp.protocol.limits import MAX_HEADER_SIZE
from sockftp.server.commands import LIST_BATCH_ENTRIES

pytestmark = pytest.mark.usefixtures("no_server_errors")


def code_of(excinfo) -> str:
    return str(excinfo.value.code)


def abandon_upload(srv, path: str, data: bytes) -> None:
    """Start an upload on a raw socket, send part of it, and vanish."""
    with srv.raw() as sock:
        round_trip(sock)  # the session is running: wait_idle below waits for its end
        send_frame(sock, {"cmd": "put", "path": path, "size": len(data) * 2}, data)
    srv.wait_idle()


# --- session commands ----------------------------------------------------------------------


def test_hello_reports_version_features_and_limits(srv):
    with srv.client() as c:
        info = c.hello()
    assert info["ok"] is True
    assert info["version"] == 1
    assert info["versions"] == [1]
    assert info["server"] == f"sockftp/{sockftp.__version__}"
    assert {"resume", "checksum", "ls-stream"} <= set(info["features"])
    assert "xxh3-128" in info["checksums"]
    assert {"hello", "ping", "put", "get", "ls", "mv", "quit"} <= set(info["commands"])
    assert info["user"] == "anonymous"
    assert info["limits"] == {
        "max_header_size": 65536,
        "max_path_length": 4096,
        "max_name_length": 255,
        "max_path_depth": 256,
        "max_file_size": 2**62,
    }


def test_client_connect_stores_the_hello_reply(srv):
    with srv.client() as c:
        assert c.server_info["version"] == 1


def test_ping_answers(srv):
    with srv.client() as c:
        assert c.ping() is None
        assert c.request({"cmd": "ping"}) == {"ok": True}


def test_quit_says_bye_and_closes(srv):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "quit"})
        assert recv_frame(sock) == {"ok": True, "message": "bye"}
        assert_closed(sock)


# --- pwd and cd ----------------------------------------------------------------------------------


def test_pwd_starts_at_root_and_follows_cd(srv):
    (srv.anon_dir / "docs" / "deep").mkdir(parents=True)
    with srv.client() as c:
        assert c.pwd() == "/"
        assert c.cd("docs") == "/docs"
        assert c.pwd() == "/docs"
        assert c.cd("deep") == "/docs/deep"
        assert c.cd("..") == "/docs"
        assert c.cd("../docs/./deep/..") == "/docs"
        assert c.cd("/") == "/"
        assert c.cd("/docs/deep") == "/docs/deep"
        assert c.request({"cmd": "cd"})["path"] == "/"  # no path: the root


def test_cd_above_root_is_refused(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.PathRefused):
            c.cd("..")
        assert c.pwd() == "/"


def test_cd_into_a_file_is_not_a_directory(srv):
    (srv.anon_dir / "file.txt").write_bytes(b"x")
    with srv.client() as c:
        with pytest.raises(sockftp.NotADirectory):
            c.cd("file.txt")
        assert c.pwd() == "/"


def test_cd_into_missing_directory_is_not_found(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound) as info:
            c.cd("nowhere/deeper")
        assert c.pwd() == "/"
    assert "anonymous" not in info.value.message  # the jail's storage prefix stays hidden
    assert "/nowhere" in info.value.message


def test_relative_paths_resolve_from_the_current_directory(srv, files):
    (srv.anon_dir / "docs").mkdir()
    local = files("a.txt", b"in docs")
    with srv.client() as c:
        c.cd("docs")
        c.put(local, "a.txt")
        assert [e.name for e in c.ls()] == ["a.txt"]
        assert c.stat("/docs/a.txt").size == 7
    assert (srv.anon_dir / "docs" / "a.txt").read_bytes() == b"in docs"


# --- ls and stat ---------------------------------------------------------------------------------


def test_ls_lists_name_type_size_and_mtime(srv):
    (srv.anon_dir / "sub").mkdir()
    (srv.anon_dir / "one.bin").write_bytes(b"1" * 123)
    (srv.anon_dir / "empty").write_bytes(b"")
    with srv.client() as c:
        entries = {e.name: e for e in c.ls("/")}
    assert set(entries) == {"sub", "one.bin", "empty"}
    assert entries["sub"].type == "dir" and entries["sub"].size == 0
    assert entries["one.bin"].type == "file" and entries["one.bin"].size == 123
    assert entries["empty"].type == "file" and entries["empty"].size == 0
    for name, entry in entries.items():
        assert entry.mtime == pytest.approx(os.stat(srv.anon_dir / name).st_mtime, abs=1e-6)


def test_ls_of_empty_directory_and_of_a_file(srv):
    (srv.anon_dir / "empty-dir").mkdir()
    (srv.anon_dir / "f.txt").write_bytes(b"abc")
    with srv.client() as c:
        assert c.ls("empty-dir") == []
        [entry] = c.ls("f.txt")
    assert (entry.name, entry.type, entry.size) == ("f.txt", "file", 3)


def test_ls_of_missing_path_is_not_found(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.ls("missing")


def test_ls_never_lists_partial_uploads(srv):
    (srv.anon_dir / "d").mkdir()
    abandon_upload(srv, "d/upload.bin", b"p" * 1000)
    assert partials_in(srv.anon_dir / "d"), "the abandoned upload should have left a partial"
    with srv.client() as c:
        assert c.ls("d") == []
        assert not c.exists("d/upload.bin")


def test_stat_of_file_directory_and_root(srv):
    (srv.anon_dir / "dir").mkdir()
    (srv.anon_dir / "f").write_bytes(b"12345")
    with srv.client() as c:
        f = c.stat("f")
        d = c.stat("dir")
        root = c.request({"cmd": "stat", "path": "/"})
        with pytest.raises(sockftp.NotFound):
            c.stat("nope")
    assert (f.name, f.type, f.size) == ("f", "file", 5)
    assert (d.name, d.type) == ("dir", "dir")
    assert root["name"] == "/" and root["type"] == "dir" and root["path"] == "/"


def test_stat_with_checksum_gives_the_xxh3_of_the_file(srv):
    data = os.urandom(5000)
    (srv.anon_dir / "f").write_bytes(data)
    with srv.client() as c:
        assert c.checksum("f") == checksum.of_bytes(data)
        assert "checksum" not in c.request({"cmd": "stat", "path": "f"})


def test_checksum_of_a_directory_is_a_protocol_error(srv):
    (srv.anon_dir / "d").mkdir()
    with srv.client() as c:
        with pytest.raises(SockftpError):
            c.checksum("d")


def test_exists(srv):
    (srv.anon_dir / "f").write_bytes(b"")
    with srv.client() as c:
        assert c.exists("f")
        assert not c.exists("g")


# --- mkdir, rmdir, rm, mv ------------------------------------------------------------------------


def test_mkdir_creates_and_refuses_existing(srv):
    with srv.client() as c:
        assert c.mkdir("new") == "/new"
        assert (srv.anon_dir / "new").is_dir()
        with pytest.raises(sockftp.Exists):
            c.mkdir("new")


def test_mkdir_parents_creates_the_chain_and_accepts_existing(srv):
    with srv.client() as c:
        c.mkdir("a/b/c", parents=True)
        assert (srv.anon_dir / "a" / "b" / "c").is_dir()
        c.mkdir("a/b/c", parents=True)  # already there: fine
        c.mkdir("a/b/d", parents=True)
        assert (srv.anon_dir / "a" / "b" / "d").is_dir()


def test_mkdir_without_parents_needs_the_parent(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.mkdir("x/y")
    assert not (srv.anon_dir / "x").exists()


def test_mkdir_over_or_under_a_file_is_refused(srv):
    (srv.anon_dir / "f").write_bytes(b"")
    with srv.client() as c:
        with pytest.raises(sockftp.Exists):
            c.mkdir("f")
        with pytest.raises(sockftp.Exists):
            c.mkdir("f", parents=True)
        with pytest.raises(sockftp.NotADirectory):
            c.mkdir("f/sub")
        with pytest.raises(sockftp.NotADirectory):
            c.mkdir("f/sub/deeper", parents=True)
    assert (srv.anon_dir / "f").is_file()


def test_mkdir_of_the_root_is_exists(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.Exists):
            c.mkdir("/")


def test_rmdir_removes_an_empty_directory(srv):
    (srv.anon_dir / "d").mkdir()
    with srv.client() as c:
        c.rmdir("d")
    assert not (srv.anon_dir / "d").exists()


def test_rmdir_of_non_empty_directory_is_not_empty(srv):
    (srv.anon_dir / "d").mkdir()
    (srv.anon_dir / "d" / "keep").write_bytes(b"")
    with srv.client() as c:
        with pytest.raises(sockftp.NotEmpty):
            c.rmdir("d")
    assert (srv.anon_dir / "d" / "keep").exists()


def test_rmdir_removes_a_directory_holding_only_an_abandoned_partial(srv):
    (srv.anon_dir / "d").mkdir()
    abandon_upload(srv, "d/gone.bin", b"x" * 100)
    assert partials_in(srv.anon_dir / "d")
    with srv.client() as c:
        c.rmdir("d")
    assert not (srv.anon_dir / "d").exists()


def test_rmdir_with_a_partial_and_a_file_is_not_empty(srv):
    (srv.anon_dir / "d").mkdir()
    (srv.anon_dir / "d" / "real").write_bytes(b"")
    abandon_upload(srv, "d/gone.bin", b"x" * 100)
    with srv.client() as c:
        with pytest.raises(sockftp.NotEmpty):
            c.rmdir("d")
    assert (srv.anon_dir / "d" / "real").exists()
    assert partials_in(srv.anon_dir / "d")  # a resumable upload is not thrown away


def test_rmdir_of_a_directory_with_an_upload_under_way_is_busy_and_the_upload_survives(srv):
    (srv.anon_dir / "d").mkdir()
    data = b"u" * 10_000
    with srv.raw() as sock:
        round_trip(sock)
        send_frame(sock, {"cmd": "put", "path": "d/live.bin", "size": len(data)}, data[:4000])
        wait_until(lambda: [p.stat().st_size for p in partials_in(srv.anon_dir / "d")] == [4000])
        with srv.client() as c:
            with pytest.raises(sockftp.Busy):
                c.rmdir("d")
        sock.sendall(data[4000:])
        assert recv_frame(sock)["ok"] is True
    assert (srv.anon_dir / "d" / "live.bin").read_bytes() == data


def test_small_puts_that_arrive_whole_are_stored_at_once(srv, monkeypatch):
    # Storage hears at_once exactly when the bytes came with the header and
    # nothing can make the upload wait: not with a trailer still to come.
    heard = []
    storage = srv.server.storage
    open_upload = storage.open_upload

    def spy(path, size, offset=0, *, at_once=False):
        heard.append((path[-1], at_once))
        return open_upload(path, size, offset, at_once=at_once)

    monkeypatch.setattr(storage, "open_upload", spy)
    frames = b""
    for n in range(3):
        data = b"%d" % n
        header = {"cmd": "put", "path": f"f{n}", "size": len(data), "checksum": checksum.of_bytes(data)}
        frames += encode_frame(header) + data
    with srv.raw() as sock:
        sock.sendall(frames)
        assert [recv_frame(sock)["ok"] for _ in range(3)] == [True] * 3
        send_frame(sock, {"cmd": "put", "path": "t", "size": 1, "checksum": "trailer"}, b"x")
        send_frame(sock, {"checksum": checksum.of_bytes(b"x")})
        assert recv_frame(sock)["ok"] is True
    assert heard == [("f0", True), ("f1", True), ("f2", True), ("t", False)]
    assert sorted(p.name for p in srv.anon_dir.iterdir()) == ["f0", "f1", "f2", "t"]


def test_a_small_upload_slowed_by_a_rate_limit_is_seen_under_way(server):
    # All its bytes came with the header, but the rate limit makes it wait
    # before its commit: it must take a partial, so rmdir is busy meanwhile.
    srv = server(session_rate=16 * 1024)
    (srv.anon_dir / "d").mkdir()
    data = os.urandom(40_000)
    with srv.raw() as sock:
        header = {"cmd": "put", "path": "d/slow.bin", "size": len(data), "checksum": checksum.of_bytes(data)}
        send_frame(sock, header, data)
        wait_until(lambda: partials_in(srv.anon_dir / "d") != [])
        with srv.client() as c:
            with pytest.raises(sockftp.Busy):
                c.rmdir("d")
        sock.settimeout(10)
        assert recv_frame(sock)["ok"] is True
    assert (srv.anon_dir / "d" / "slow.bin").read_bytes() == data


def test_rmdir_refuses_files_missing_paths_and_the_root(srv):
    (srv.anon_dir / "f").write_bytes(b"")
    with srv.client() as c:
        with pytest.raises(sockftp.NotADirectory):
            c.rmdir("f")
        with pytest.raises(sockftp.NotFound):
            c.rmdir("missing")
        with pytest.raises(sockftp.PathRefused):
            c.rmdir("/")
    assert srv.anon_dir.is_dir()


def test_rmdir_of_the_current_directory_moves_cwd_to_its_parent(srv):
    (srv.anon_dir / "a" / "b").mkdir(parents=True)
    with srv.client() as c:
        c.cd("a/b")
        c.rmdir("/a/b")
        assert c.pwd() == "/a"


def test_rm_removes_a_file(srv):
    (srv.anon_dir / "f").write_bytes(b"")
    with srv.client() as c:
        c.rm("f")
        with pytest.raises(sockftp.NotFound):
            c.rm("f")
    assert not (srv.anon_dir / "f").exists()


def test_rm_of_a_directory_is_is_a_directory(srv):
    (srv.anon_dir / "d").mkdir()
    with srv.client() as c:
        with pytest.raises(sockftp.IsADirectory):
            c.rm("d")
        with pytest.raises(sockftp.PathRefused):
            c.rm("/")
    assert (srv.anon_dir / "d").is_dir()


def test_mv_renames_a_file(srv):
    (srv.anon_dir / "a").write_bytes(b"A")
    (srv.anon_dir / "dir").mkdir()
    with srv.client() as c:
        c.mv("a", "b")
        c.mv("b", "dir/c")
    assert not (srv.anon_dir / "a").exists()
    assert (srv.anon_dir / "dir" / "c").read_bytes() == b"A"


def test_mv_file_over_file_replaces_it(srv):
    (srv.anon_dir / "src").write_bytes(b"new")
    (srv.anon_dir / "dst").write_bytes(b"old old old")
    with srv.client() as c:
        c.mv("src", "dst")
        assert [e.name for e in c.ls()] == ["dst"]
    assert (srv.anon_dir / "dst").read_bytes() == b"new"


def test_mv_directory_into_itself_is_refused(srv):
    (srv.anon_dir / "d" / "sub").mkdir(parents=True)
    with srv.client() as c:
        with pytest.raises(sockftp.PathRefused):
            c.mv("d", "d/sub/d")
        with pytest.raises(sockftp.PathRefused):
            c.mv("d", "d/x")
    assert (srv.anon_dir / "d" / "sub").is_dir()


def test_mv_missing_source_is_not_found(srv):
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound) as info:
            c.mv("ghost", "target")
    assert "/ghost" in info.value.message and "anonymous" not in info.value.message


def test_mv_onto_an_existing_directory_is_refused(srv):
    (srv.anon_dir / "f").write_bytes(b"f")
    (srv.anon_dir / "d").mkdir()
    (srv.anon_dir / "d2").mkdir()
    with srv.client() as c:
        with pytest.raises(sockftp.IsADirectory):
            c.mv("f", "d")
        with pytest.raises(sockftp.IsADirectory):
            c.mv("d2", "d")
    assert (srv.anon_dir / "f").read_bytes() == b"f"


def test_mv_renames_a_directory_with_its_content(srv):
    (srv.anon_dir / "d").mkdir()
    (srv.anon_dir / "d" / "x").write_bytes(b"x")
    with srv.client() as c:
        c.mv("d", "renamed")
        assert [e.name for e in c.ls("renamed")] == ["x"]


def test_mv_of_the_root_is_refused(srv):
    (srv.anon_dir / "d").mkdir()
    with srv.client() as c:
        with pytest.raises(sockftp.PathRefused):
            c.mv("/", "d/root")
        with pytest.raises(sockftp.PathRefused):
            c.mv("d", "/")


# --- names ---------------------------------------------------------------------------------------


def test_unicode_names_round_trip(srv, files, tmp_path):
    data = "données 日本語 🚀\n".encode() * 100
    local = files("src.txt", data)
    with srv.client() as c:
        c.mkdir("données")
        c.put(local, "données/日本語 file.txt")
        assert [e.name for e in c.ls("/")] == ["données"]
        [entry] = c.ls("données")
        assert entry.name == "日本語 file.txt" and entry.size == len(data)
        c.get("données/日本語 file.txt", tmp_path / "back.txt")
        c.cd("données")
        assert c.pwd() == "/données"
    assert (srv.anon_dir / "données" / "日本語 file.txt").read_bytes() == data
    assert (tmp_path / "back.txt").read_bytes() == data


@pytest.mark.parametrize(
    "name", ["new\nline", "tab\tname", "bell\x07", "esc\x1b[2J", "back\\slash", "c1\x9b", "del\x7f"]
)
def test_names_with_control_characters_or_backslash_are_path_refused(srv, files, name):
    (srv.anon_dir / "ok").write_bytes(b"")
    local = files("f.txt", b"data")
    with srv.client() as c:
        with pytest.raises(sockftp.PathRefused):
            c.mkdir(name)
        with pytest.raises(sockftp.PathRefused):
            c.put(local, name)
        with pytest.raises(sockftp.PathRefused):
            c.mv("ok", name)
        c.ping()  # the connection is still in step after the refused put
    assert sorted(p.name for p in srv.anon_dir.iterdir()) == ["ok"]


def test_reserved_names_cannot_be_created_or_addressed(srv, files):
    (srv.anon_dir / "d").mkdir()
    abandon_upload(srv, "d/x", b"12345")
    [partial] = partials_in(srv.anon_dir / "d")
    with srv.client() as c:
        with pytest.raises(sockftp.PathRefused):
            c.stat(f"d/{partial.name}")
        with pytest.raises(sockftp.PathRefused):
            c.rm(f"d/{partial.name}")
        with pytest.raises(sockftp.PathRefused):
            c.put(files("f", b"x"), ".sockftp-mine")
        with pytest.raises(sockftp.PathRefused):
            c.mkdir(".sockftp")


# --- listings in several frames -----------------------------------------------------------------


def read_listing(sock) -> tuple[list[int], list[dict], dict]:
    """Frame sizes, all entries, and the last frame of an ls reply."""
    sizes, entries = [], []
    while True:
        raw = recv_frame_raw(sock)
        sizes.append(len(raw))
        frame = json.loads(raw)
        assert frame["ok"] is True, frame
        entries += frame["entries"]
        if not frame["more"]:
            return sizes, entries, frame


def test_listing_of_3000_files_arrives_complete_in_several_bounded_frames(srv):
    big = srv.anon_dir / "big"
    big.mkdir()
    names = {f"file-{i:05d}-{'n' * (i % 50)}.dat" for i in range(3000)}
    for name in names:
        (big / name).write_bytes(b"")
    with srv.raw(timeout=10) as sock:
        send_frame(sock, {"cmd": "ls", "path": "big"})
        sizes, entries, last = read_listing(sock)
        send_frame(sock, {"cmd": "ping"})
        assert recv_frame(sock) == {"ok": True}  # in step after the stream
    assert len(sizes) > 1
    assert len(sizes) >= 3000 // LIST_BATCH_ENTRIES
    assert all(size <= MAX_HEADER_SIZE for size in sizes)
    assert {e["name"] for e in entries} == names and len(entries) == 3000
    assert last["path"] == "/big"
    with srv.client() as c:
        assert len(c.ls("big")) == 3000


def test_listing_of_long_names_splits_by_bytes_not_only_by_count(srv):
    d = srv.anon_dir / "long"
    d.mkdir()
    for i in range(400):
        (d / (f"{i:03d}" + "é" * 126)).write_bytes(b"")  # 255 bytes each
    with srv.raw(timeout=10) as sock:
        send_frame(sock, {"cmd": "ls", "path": "long"})
        sizes, entries, _ = read_listing(sock)
    assert len(entries) == 400
    assert len(sizes) > 1 and max(sizes) <= MAX_HEADER_SIZE


def test_listing_of_a_full_batch_in_a_deep_directory_stays_under_the_frame_limit(srv):
    # 12 directory levels of 250-character names: a path of about 3000 bytes.
    levels = ["d" * 249 + str(i % 10) for i in range(12)]
    remote = "/".join(levels)
    deep = srv.anon_dir.joinpath(*levels)
    deep.mkdir(parents=True)
    # Entries sized so that one batch nearly fills the entry budget.
    mtime_ns = 1_700_000_000_000_000_000
    sample = {"name": "x" * 255, "type": "file", "size": 0, "mtime": mtime_ns / 1e9}
    per_entry = encoded_size(sample) + 1
    count = (MAX_HEADER_SIZE - 1024) // per_entry
    for i in range(count):
        path = deep / (f"{i:04d}" + "x" * 251)
        path.write_bytes(b"")
        os.utime(path, ns=(mtime_ns, mtime_ns))
    with srv.raw(timeout=10) as sock:
        send_frame(sock, {"cmd": "ls", "path": remote})
        sizes, entries, last = read_listing(sock)
    assert len(entries) == count
    assert max(sizes) <= MAX_HEADER_SIZE


def test_errors_are_library_exceptions_with_stable_codes(srv):
    with srv.client() as c:
        with pytest.raises(SockftpError) as info:
            c.stat("missing")
    assert code_of(info) == "not_found"
    assert isinstance(info.value, sockftp.NotFound)
