"""Clients written the way the seed writes them keep working.

The seed sends ``struct.pack('i', len(h))``, a JSON header
``{"cmd": "put", "filename": NAME, "filesize": N}`` and the N bytes at once,
with no hello and no login; ``get`` answers with a header carrying
``filesize`` and then exactly that many bytes.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from conftest import recv_exact, recv_frame
from ftp_support import ftp_server_fixture  # noqa: F401 - a fixture

from sockftp.protocol import checksum
from sockftp.storage.local_files import decode_kept_checksum


def seed_connect(srv) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect((srv.host, srv.port))
    return sock


def seed_put(sock: socket.socket, name: str, data: bytes) -> None:
    # Exactly the seed's client code: pack the header length with 'i', then
    # the header, then the file's bytes.
    head = {"cmd": "put", "filename": name, "filesize": len(data)}
    head_bytes = json.dumps(head).encode("utf-8")
    sock.send(struct.pack("i", len(head_bytes)))
    sock.send(head_bytes)
    sock.sendall(data)


def seed_get(sock: socket.socket, name: str) -> tuple[dict, bytes]:
    head_bytes = json.dumps({"cmd": "get", "filename": name}).encode("utf-8")
    sock.send(struct.pack("i", len(head_bytes)))
    sock.send(head_bytes)
    (length,) = struct.unpack("i", recv_exact(sock, 4))
    reply = json.loads(recv_exact(sock, length).decode("utf-8"))
    return reply, recv_exact(sock, reply["filesize"])


def test_seed_put_stores_the_file_under_the_anonymous_root(srv):
    data = os.urandom(50_000)
    with seed_connect(srv) as sock:
        seed_put(sock, "seed.bin", data)
        reply = recv_frame(sock)
    assert reply["ok"] is True
    assert reply["size"] == len(data)
    assert (srv.anon_dir / "seed.bin").read_bytes() == data


def test_seed_get_answers_filesize_then_exactly_that_many_bytes(srv):
    data = os.urandom(70_001)
    (srv.anon_dir / "served.bin").write_bytes(data)
    with seed_connect(srv) as sock:
        reply, body = seed_get(sock, "served.bin")
        assert reply["ok"] is True
        assert reply["filesize"] == len(data)
        assert body == data
        # Nothing extra followed the bytes: the next request is answered in step.
        reply2, body2 = seed_get(sock, "served.bin")
        assert reply2["filesize"] == len(data) and body2 == data


def test_seed_put_then_get_on_one_connection_round_trips(srv):
    data = b"hello from the seed\n" * 1000
    with seed_connect(srv) as sock:
        seed_put(sock, "round.txt", data)
        assert recv_frame(sock)["ok"] is True
        reply, body = seed_get(sock, "round.txt")
    assert body == data
    assert reply["checksum"] == checksum.of_bytes(data)


def test_seed_put_empty_file(srv):
    with seed_connect(srv) as sock:
        seed_put(sock, "empty", b"")
        assert recv_frame(sock)["ok"] is True
        reply, body = seed_get(sock, "empty")
    assert reply["filesize"] == 0 and body == b""
    assert (srv.anon_dir / "empty").read_bytes() == b""


def test_seed_put_is_readable_by_the_client_library(srv, tmp_path):
    data = os.urandom(10_000)
    with seed_connect(srv) as sock:
        seed_put(sock, "for-client.bin", data)
        assert recv_frame(sock)["ok"] is True
    with srv.client() as c:
        result = c.get("for-client.bin", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == data
    assert result.checksum == checksum.of_bytes(data)


def test_seed_put_replaces_an_existing_file(srv):
    (srv.anon_dir / "doc.txt").write_bytes(b"old content that is longer")
    with seed_connect(srv) as sock:
        seed_put(sock, "doc.txt", b"new")
        assert recv_frame(sock)["ok"] is True
    assert (srv.anon_dir / "doc.txt").read_bytes() == b"new"


def test_a_seed_put_is_hashed_as_it_arrives_and_its_checksum_kept(srv):
    # A seed-style put sends no checksum. The server hashes it anyway: the
    # reply says what was stored, and the checksum is kept with the file,
    # so the first get needs no read of the whole file to hash it.
    data = os.urandom(3 * 1024 * 1024 + 7)  # above SMALL_FILE, so it is kept in an xattr
    with seed_connect(srv) as sock:
        seed_put(sock, "big.bin", data)
        reply = recv_frame(sock)
    assert reply["ok"] is True
    assert reply["checksum"] == checksum.of_bytes(data)
    stored = decode_kept_checksum(os.getxattr(srv.anon_dir / "big.bin", "user.sockftp.checksum"))
    assert stored[2] == checksum.of_bytes(data)
    with seed_connect(srv) as sock:
        got, body = seed_get(sock, "big.bin")
    assert body == data and got["checksum"] == reply["checksum"]


def test_a_small_seed_put_returns_its_checksum_too(srv):
    with seed_connect(srv) as sock:
        seed_put(sock, "small.txt", b"hello")
        reply = recv_frame(sock)
    assert reply["checksum"] == checksum.of_bytes(b"hello")


def test_an_ftp_upload_is_hashed_as_it_arrives_and_hash_needs_no_read(ftp_server):
    import io

    srv = ftp_server()
    home = srv.add_user("alice")
    data = os.urandom(2 * 1024 * 1024 + 3)
    client = srv.login()
    client.storbinary("STOR f.bin", io.BytesIO(data))
    stored = decode_kept_checksum(os.getxattr(home / "f.bin", "user.sockftp.checksum"))
    assert stored[2] == checksum.of_bytes(data)
    assert client.sendcmd("HASH f.bin").split()[3] == checksum.of_bytes(data).split(":")[1]
