"""``tree`` with ``packed`` (feature ``tree-packed``): the same listing as
JSON entries, in one binary body of columns per frame; and what a client
does with a body that does not add up."""

from __future__ import annotations

import math
import os
import socket
import struct
import threading

import pytest
from conftest import encode_frame, recv_exact, recv_frame, send_frame

from sockftp.client import Client
from sockftp.protocol import checksum
from sockftp.protocol.errors import BadFrame, PathRefused, SockftpError
from sockftp.protocol.tree_pack import BODY_TARGET, MAX_BODY, MAX_ENTRIES, TreeBatch, unpack

XATTR = "user.sockftp.checksum"


def json_listing(sock, path: str) -> list[tuple]:
    send_frame(sock, {"cmd": "tree", "path": path, "checksums": True})
    entries, more = [], True
    while more:
        frame = recv_frame(sock)
        assert frame["ok"] is True, frame
        more = frame["more"]
        entries += [(e["path"], e["type"], e["size"], e["mtime"], e.get("checksum")) for e in frame["entries"]]
    return entries


def packed_frames(sock, path: str, checksums: bool = True) -> list[tuple[dict, bytes]]:
    send_frame(sock, {"cmd": "tree", "path": path, "checksums": checksums, "packed": True})
    frames = []
    while not frames or frames[-1][0]["more"]:
        frame = recv_frame(sock)
        assert frame["ok"] is True, frame
        frames.append((frame, recv_exact(sock, frame["body"])))
    return frames


def test_a_packed_listing_is_the_json_one_in_columns(srv, files):
    top = srv.anon_dir / "top"
    with srv.client() as client:
        assert "tree-packed" in client.server_info["features"]
        for path, data in {"café/ü ✓.txt": b"unicode", "with space/a b": b"s", "z": b"", "d/e/f/g": b"deep"}.items():
            client.mkdir("top/" + path.rsplit("/", 1)[0] if "/" in path else "top", parents=True)
            client.put(files(path.replace("/", "_"), data), "top/" + path)
        client.mkdir("top/empty", parents=True)
        client.put(files("stripped", b"no sum"), "top/stripped")
        os.removexattr(top / "stripped", XATTR)
        os.symlink("/etc", top / "link")
        os.mkfifo(top / "fifo")
        # Enough long names for several frames, filled by bytes.
        (top / "many").mkdir()
        for i in range(BODY_TARGET // 240 + 200):
            (top / "many" / (f"{i:05d}" + "n" * 200)).write_bytes(b"")
        sock = client.wire.sock
        expected = json_listing(sock, "top")
        frames = packed_frames(sock, "top")
        client.ping()  # the connection is still in step
    assert len(frames) >= 2
    assert [f["more"] for f, _ in frames] == [True] * (len(frames) - 1) + [False]
    assert frames[-1][0]["path"] == "/top" and all("path" not in f for f, _ in frames[:-1])
    got = []
    for frame, body in frames:
        assert len(body) <= MAX_BODY and 0 < frame["count"] <= MAX_ENTRIES
        paths, kinds, sizes, mtimes, sums = unpack(body, frame["count"], True)
        got += list(zip(paths, kinds, sizes, mtimes, sums, strict=True))
    assert got == expected
    by_path = {entry[0]: entry for entry in got}
    assert by_path["café/ü ✓.txt"][4] == checksum.of_bytes(b"unicode")
    assert by_path["stripped"][4] is None and by_path["fifo"][1] == "other" and by_path["link"][1] == "link"


def test_a_packed_listing_of_an_empty_directory_and_without_checksums(srv):
    (srv.anon_dir / "empty").mkdir()
    (srv.anon_dir / "one").mkdir()
    (srv.anon_dir / "one" / "f").write_bytes(b"abc")
    with srv.client() as client:
        [(frame, body)] = packed_frames(client.wire.sock, "empty")
        assert (frame["count"], frame["body"], body, frame["more"]) == (0, 0, b"", False)
        [(frame, body)] = packed_frames(client.wire.sock, "one", checksums=False)
        assert len(body) == 17 + 1  # one entry's fixed fields and its name, no checksum columns
        assert unpack(body, 1, False)[:3] == (["f"], ["file"], (3,))
        assert list(client.tree("one")) == [
            ("f", "file", 3, (srv.anon_dir / "one" / "f").stat().st_mtime_ns / 1e9, None)
        ]


def _body(*entries, checksums=False) -> bytes:
    batch = TreeBatch(checksums)
    for path, kind, *rest in entries:
        batch.add(path, len(path.encode()), kind, *rest)
    return batch.body()


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/x", "a//b", "a/", "", ".", "a/./b", "a\\..\\x"])
def test_unpack_refuses_a_path_that_could_lead_outside(path):
    body = _body(("ok", "dir", 0, 1.0), (path, "file", 1, 1.0))
    with pytest.raises(PathRefused):
        unpack(body, 2, False)


def test_unpack_refuses_a_body_that_does_not_add_up():
    body = _body(("a", "file", 1, 1.0), ("b", "file", 2, 2.0))
    for count in (0, -1, 1, 3, 1000, "2", True):
        with pytest.raises(BadFrame):
            unpack(body, count, False)
    with pytest.raises(BadFrame):
        unpack(body[:-10], 2, False)
    with pytest.raises(BadFrame):
        unpack(body, 2, True)  # no checksum columns in it
    with pytest.raises(BadFrame):
        unpack(body[:-1] + b"\xff", 2, False)  # not UTF-8
    assert unpack(body, 2, False) == (["a", "b"], ["file", "file"], (1, 2), [1.0, 2.0], None)


def test_unpack_reads_odd_fields_as_harmless_values():
    digest = checksum.of_bytes(b"x")
    body = bytearray(_body(("a", "file", 1, 1.0, digest), ("b", "file", 2, 2.0), checksums=True))
    body[1:2] = b"?"  # an unknown type
    body[2 + 16 + 8 : 2 + 16 + 16] = struct.pack("<d", math.nan)  # b's time, after the types, sizes and a's
    paths, kinds, sizes, mtimes, sums = unpack(bytes(body), 2, True)
    assert kinds == ["file", "other"] and mtimes == [1.0, 0.0] and sums == [digest, None]


def test_a_body_over_the_bound_closes_the_connection_unread(tmp_path):
    # A hostile or broken server announcing a huge body: reading it would
    # hold it all in memory, and skipping it is guesswork, so the client
    # says so and closes.
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            while True:
                request = recv_frame(conn)
                if request.get("cmd") == "hello":
                    reply = {"ok": True, "version": 1, "features": ["tree", "tree-packed"], "commands": []}
                else:
                    reply = {"ok": True, "count": 1, "body": MAX_BODY + 1, "more": False}
                conn.sendall(encode_frame(reply))
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            listener.close()

    threading.Thread(target=serve, daemon=True).start()
    with Client("127.0.0.1", listener.getsockname()[1], retries=0, timeout=5) as client:
        with pytest.raises(SockftpError) as caught:
            list(client.tree("x"))
        assert caught.value.code == "bad_reply"
        assert client._wire is None
