"""The commands sync lists and times trees with: ``tree`` (a whole tree in
one request, with the checksums the server keeps, which it never computes
for it) and ``utime``; and the checksum kept with every committed file,
small ones included."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import (
    add_user,
    assert_closed,
    encode_frame,
    login,
    partials_in,
    recv_frame,
    recv_frame_raw,
    send_frame,
    wait_until,
)

import sockftp
from sockftp.client.tree import _tree_entry
from sockftp.protocol import checksum
from sockftp.protocol.entries import TreeEntry
from sockftp.protocol.limits import LIST_BATCH_ENTRIES, MAX_HEADER_SIZE, MAX_PATH_DEPTH
from sockftp.storage import blocks as sidecars
from sockftp.storage.local_files import decode_kept_checksum

MiB = 1024 * 1024
XATTR = "user.sockftp.checksum"
WHEN = 1_234_567_890.25


def _expected_preorder(top) -> list[tuple[str, str]]:
    """(relative path, type) of everything below *top* on disk, depth first,
    siblings sorted by name, the server's own names left out."""
    found = []

    def visit(directory, prefix):
        for name in sorted(os.listdir(directory)):
            if name.startswith(".sockftp"):
                continue
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            kind = (
                "file"
                if stat.S_ISREG(mode)
                else "dir"
                if stat.S_ISDIR(mode)
                else "link"
                if stat.S_ISLNK(mode)
                else "other"
            )
            found.append((prefix + name, kind))
            if kind == "dir":
                visit(path, prefix + name + "/")

    visit(top, "")
    return found


def _tree_frames(sock, request: dict) -> list[dict]:
    """The frames of one ``tree`` reply, each with ``_bytes``: its JSON's length on the wire."""
    send_frame(sock, request)
    frames = []
    while not frames or frames[-1].get("more"):
        raw = recv_frame_raw(sock)
        frames.append({**json.loads(raw), "_bytes": len(raw)})
    return frames


def test_tree_lists_a_real_tree_depth_first_with_the_kept_checksums(srv, files, no_server_errors):
    contents = {
        "top/café/ünïcode ✓.txt": b"unicode",
        "top/with space/a b.txt": b"spaces",
        "top/z.txt": b"",
        "top/a.txt": b"first",
        "top/" + "/".join(f"d{i}" for i in range(30)) + "/deep.txt": b"deep",
        "top/big.bin": os.urandom(5 * MiB),  # gets a block list beside it, which is never listed
    }
    with srv.client() as client:
        for path, data in contents.items():
            client.mkdir(path.rsplit("/", 1)[0], parents=True)
            client.put(files(path.replace("/", "_"), data), path)
        client.mkdir("top/empty/also empty", parents=True)
        top = srv.anon_dir / "top"
        os.symlink("/etc", top / "link")
        os.mkfifo(top / "fifo")
        # An upload cut short leaves a hidden partial in the tree.
        sock = srv.raw()
        send_frame(sock, {"cmd": "put", "path": "top/cut.bin", "size": 10}, b"12345")
        sock.close()
        wait_until(lambda: partials_in(top), what="the cut upload's partial")
        assert list(top.glob(".sockftp-blocks-*"))

        entries = list(client.tree("top", checksums=True))

    assert [(e.path, e.type) for e in entries] == _expected_preorder(top)
    assert not any(part.startswith(".sockftp") for e in entries for part in e.path.split("/"))
    by_path = {e.path: e for e in entries}
    for path, data in contents.items():
        entry = by_path[path.removeprefix("top/")]
        assert (entry.type, entry.size, entry.checksum) == ("file", len(data), checksum.of_bytes(data))
    assert by_path["empty/also empty"].type == "dir" and by_path["link"].type == "link"
    assert by_path["fifo"].type == "other" and by_path["fifo"].checksum is None
    assert all(e.checksum is None for e in entries if e.type != "file")


def test_tree_gives_only_checksums_that_are_kept_and_never_reads_a_file(srv, files):
    with srv.client() as client:
        for name in ("kept.txt", "stripped.txt", "changed.txt", "big-stripped.bin"):
            size = 2 * MiB if name.endswith(".bin") else 100
            client.put(files(name, name.encode() * (size // len(name))), name)
        home = srv.anon_dir
        os.removexattr(home / "stripped.txt", XATTR)
        os.removexattr(home / "big-stripped.bin", XATTR)
        with open(home / "changed.txt", "ab") as changed:  # behind the server's back: the key no longer fits
            changed.write(b"more")
        (home / "outside.txt").write_bytes(b"put there without sockftp")

        entries = {e.path: e for e in client.tree("", checksums=True)}
        assert entries["kept.txt"].checksum == checksum.of_bytes(b"kept.txt" * 12)
        for name in ("stripped.txt", "changed.txt", "big-stripped.bin", "outside.txt"):
            assert entries[name].checksum is None, name
        # Had the server hashed a file to answer, it would have kept the result.
        for name in ("stripped.txt", "big-stripped.bin", "outside.txt"):
            with pytest.raises(OSError):
                os.getxattr(home / name, XATTR)

        assert all(e.checksum is None for e in client.tree("", checksums=False))
        sock = client.wire.sock
        (frame,) = _tree_frames(sock, {"cmd": "tree", "path": ""})
        assert all("checksum" not in entry for entry in frame["entries"])


def test_every_committed_file_keeps_its_checksum_small_ones_too(srv, files):
    with srv.client() as client:
        client.put(files("one.txt", b"x"), "one.txt")  # a single write, all in hand
        client.put(files("empty.txt", b""), "empty.txt")
        client.put_many([(files(f"m{i}.txt", b"m" * i), f"m{i}.txt") for i in range(5)])
        sock = client.wire.sock
        send_frame(sock, {"cmd": "put", "path": "trailer.txt", "size": 3, "checksum": "trailer"}, b"abc")
        send_frame(sock, {"checksum": checksum.of_bytes(b"abc")})
        assert recv_frame(sock)["ok"] is True
        send_frame(sock, {"cmd": "put", "filename": "seed.txt", "filesize": 4}, b"seed")  # unverified
        assert recv_frame(sock)["ok"] is True
    expected = {"one.txt": b"x", "empty.txt": b"", "trailer.txt": b"abc", "seed.txt": b"seed"}
    expected |= {f"m{i}.txt": b"m" * i for i in range(5)}
    for name, data in expected.items():
        st = (srv.anon_dir / name).stat()
        kept = decode_kept_checksum(os.getxattr(srv.anon_dir / name, XATTR))
        assert kept == (st.st_size, st.st_mtime_ns, checksum.of_bytes(data)), name


def test_tree_of_a_file_a_missing_path_and_a_link(srv, files):
    with srv.client() as client:
        client.mkdir("d")
        client.put(files("f.txt", b"abc"), "d/f.txt")
        assert list(client.tree("d/f.txt", checksums=True)) == [
            TreeEntry("f.txt", "file", 3, client.stat("d/f.txt").mtime, checksum.of_bytes(b"abc"))
        ]
        os.symlink("/etc", srv.anon_dir / "d" / "link")
        (entry,) = client.tree("d/link")
        assert (entry.path, entry.type) == ("link", "link")
        with pytest.raises(sockftp.NotFound):
            list(client.tree("missing"))
        with pytest.raises(sockftp.PathRefused):
            list(client.tree("d/link/x"))
        assert [e.path for e in client.tree("d")] == ["f.txt", "link"]


def test_tree_streams_large_trees_in_frames_under_the_limits(srv):
    many = srv.anon_dir / "many"
    (many / "sub").mkdir(parents=True)
    for i in range(LIST_BATCH_ENTRIES + 150):
        (many / f"f{i:04d}").write_bytes(b"")
    for i in range(300):  # long names: frames fill up by bytes before entries
        (many / "sub" / (f"{i:03d}" + "é" * 120)).write_bytes(b"")
    with srv.client() as client:
        frames = _tree_frames(client.wire.sock, {"cmd": "tree", "path": "many"})
        listing = client.tree("many")
        assert next(listing).path == "f0000"
        listing.close()  # left early: the rest of the stream is read, and the next reply is the ping's
        client.ping()
    assert len(frames) >= 3
    assert [f["more"] for f in frames] == [True] * (len(frames) - 1) + [False]
    assert frames[-1]["path"] == "/many" and all("path" not in f for f in frames[:-1])
    for frame in frames:
        assert len(frame["entries"]) <= LIST_BATCH_ENTRIES
        assert frame["_bytes"] <= MAX_HEADER_SIZE
    paths = [e["path"] for f in frames for e in f["entries"]]
    assert paths == [p for p, _ in _expected_preorder(many)]


def test_tree_leaves_out_what_is_deeper_than_a_client_can_name(srv):
    deep = srv.anon_dir / "deep"
    path = deep
    for _ in range(MAX_PATH_DEPTH + 4):
        path = path / "d"
    path.mkdir(parents=True)
    (path / "f.txt").write_bytes(b"too deep")
    with srv.client() as client:
        entries = list(client.tree("deep"))
    assert len(entries) == MAX_PATH_DEPTH - 1  # /deep is one name already
    assert max(e.path.count("/") + 2 for e in entries) == MAX_PATH_DEPTH
    assert all(e.type == "dir" for e in entries)


def test_tree_of_a_server_without_the_command_falls_back_to_walking(srv, files):
    with srv.client() as client:
        client.mkdir("w/a/b", parents=True)
        client.put(files("x", b"x"), "w/a/x")
        walked = list(client._tree_by_walk("w"))
        listed = list(client.tree("w"))
    assert [(e.path, e.type, e.size) for e in walked] == [(e.path, e.type, e.size) for e in listed]


# -- utime -------------------------------------------------------------------------


def test_utime_sets_a_files_and_a_directorys_time_and_keeps_the_checksum(srv, files):
    with srv.client() as client:
        client.mkdir("dir")
        client.put(files("big.bin", os.urandom(5 * MiB)), "dir/big.bin")
        assert client.utime("dir/big.bin", WHEN) == "/dir/big.bin"
        assert client.utime("dir", WHEN + 1) == "/dir"
        assert client.utime("/", WHEN + 2) == "/"
        assert client.stat("dir/big.bin").mtime == pytest.approx(WHEN)
        assert client.stat("dir").mtime == pytest.approx(WHEN + 1)
        (entry,) = [e for e in client.tree("", checksums=True) if e.path == "dir/big.bin"]
        assert entry.checksum == checksum.of_bytes((files.dir / "big.bin").read_bytes())
        # The block list kept beside the file is keyed by its new time too.
        dir_fd = os.open(srv.anon_dir / "dir", os.O_RDONLY | os.O_DIRECTORY)
        try:
            kept = sidecars.read(dir_fd, "big.bin", os.stat(srv.anon_dir / "dir" / "big.bin"))
        finally:
            os.close(dir_fd)
        assert kept is not None and kept[0] == entry.checksum
        assert client.blocks("dir/big.bin").checksum == entry.checksum
        for bad in ({"mtime": "soon"}, {"mtime": -1}, {}, {"mtime": None}):
            with pytest.raises(sockftp.BadRequest):
                client.request({"cmd": "utime", "path": "dir", **bad})
        with pytest.raises(sockftp.NotFound):
            client.utime("missing", WHEN)
        os.symlink("/etc", srv.anon_dir / "link")
        with pytest.raises(sockftp.PathRefused):
            client.utime("link", WHEN)


def test_utime_needs_write_access(server):
    srv = server(anonymous=False, login_failure_delay=0.01)
    add_user(srv.root, "reader", "pw", read_only=True)
    home = srv.root / "users" / "reader"
    home.mkdir(parents=True)
    (home / "doc.txt").write_bytes(b"doc")
    before = (home / "doc.txt").stat().st_mtime_ns
    reader = login(srv, "reader", "pw")
    with pytest.raises(sockftp.PermissionDenied):
        reader.utime("doc.txt", WHEN)
    assert (home / "doc.txt").stat().st_mtime_ns == before


def test_hello_announces_tree_and_delta(srv):
    with srv.client() as client:
        assert {"tree", "delta", "mtime"} <= set(client.server_info["features"])
        assert {"tree", "blocks", "utime"} <= set(client.server_info["commands"])


def test_tree_before_login_is_refused(server):
    srv = server(anonymous=False)
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "tree", "path": "/", "checksums": True}))
    assert recv_frame(sock)["error"] == "auth_required"
    sock.sendall(encode_frame({"cmd": "quit"}))
    assert recv_frame(sock)["ok"] is True
    assert_closed(sock)


@pytest.mark.parametrize("path", ["", "/etc/passwd", "a/../../x", "..", ".", "a//b", "a/./b", "a\\b", "a\x00b", "a/"])
def test_the_client_refuses_a_tree_entry_that_could_lead_outside(path):
    with pytest.raises(sockftp.PathRefused):
        _tree_entry({"path": path, "type": "file", "size": 1, "mtime": 0})
    assert _tree_entry({"path": "a/...b/c", "type": "file", "size": 1, "mtime": 0}).path == "a/...b/c"
