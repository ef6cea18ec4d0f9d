"""Many small files over one session, pipelined: put_many and get_many."""

from __future__ import annotations

import os
import socket
import time

import pytest
from conftest import add_user, encode_frame, login, recv_frame

import sockftp
import sockftp.client


def test_put_many_and_get_many_round_trip_a_thousand_small_files(srv, tmp_path):
    local = tmp_path / "up"
    local.mkdir()
    originals = {f"f{i:04}.bin": os.urandom(4096) for i in range(1000)}
    for name, data in originals.items():
        (local / name).write_bytes(data)
    back = tmp_path / "down"
    back.mkdir()
    with srv.client() as client:
        stored = client.put_many((local / name, name) for name in originals)
        got = client.get_many((name, back / name) for name in originals)
        assert client.pwd() == "/"  # still in step
    assert len(stored) == len(got) == 1000
    for name, data in originals.items():
        assert (srv.anon_dir / name).read_bytes() == data
        assert (back / name).read_bytes() == data
    assert not list(back.glob(".*sockftp-part"))


def test_pipelined_replies_come_in_order_and_none_waits_for_a_request_still_arriving(srv):
    # The server holds a reply back while the client's next request is
    # already buffered, to send a batch in one write. It must never hold it
    # while it waits for the client: here the last request arrives only
    # after its predecessors' replies have been read.
    (srv.anon_dir / "small").write_bytes(b"tiny file")
    sock = srv.raw()
    sock.settimeout(5)
    last = encode_frame({"cmd": "pwd"})
    sock.sendall(encode_frame({"cmd": "ping"}) + encode_frame({"cmd": "get", "path": "small"}) + last[:3])
    assert recv_frame(sock)["ok"]
    reply = recv_frame(sock)
    assert reply["ok"] and reply["filesize"] == 9
    assert sock.recv(9, socket.MSG_WAITALL) == b"tiny file"
    sock.sendall(last[3:])
    assert recv_frame(sock)["path"] == "/"


def test_a_reply_held_for_a_batch_does_not_wait_out_a_slow_request_behind_it(server):
    # A failed auth waits the failure delay; the ping before it in the same
    # batch must be answered at once, not after the delay.
    srv = server(anonymous=True, login_failure_delay=3.0)
    sock = srv.raw()
    sock.settimeout(10)
    started = time.monotonic()
    sock.sendall(encode_frame({"cmd": "ping"}) + encode_frame({"cmd": "auth", "user": "nobody", "password": "x"}))
    assert recv_frame(sock)["ok"]
    assert time.monotonic() - started < 1.5
    assert recv_frame(sock)["error"] == "auth_failed"


def test_get_many_goes_on_in_step_when_a_file_cannot_be_put_in_place(srv, tmp_path):
    for name in "abc":
        (srv.anon_dir / name).write_bytes(name.encode() * 3)
    (tmp_path / "b").mkdir()  # a directory where b should land
    with srv.client() as client:
        with pytest.raises(sockftp.SockftpError) as caught:
            client.get_many([(name, tmp_path / name) for name in "abc"])
        assert caught.value.code == "local_error"
        assert client.pwd() == "/"  # still in step
    assert (tmp_path / "a").read_bytes() == b"aaa" and (tmp_path / "c").read_bytes() == b"ccc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no partial left


def test_put_many_goes_on_past_a_refused_file_and_reports_it(server, tmp_path):
    srv = server(anonymous=False, login_failure_delay=0.01)
    add_user(srv.root, "alice", quota_bytes=10_000)
    files = []
    for i in range(5):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(9000 if i == 2 else 1000))  # the third does not fit after two
        files.append((path, f"f{i}"))
    client = login(srv, "alice")
    with pytest.raises(sockftp.QuotaExceeded):
        client.put_many(files, window=2)
    stored = sorted(p.name for p in (srv.root / "users" / "alice").iterdir())
    assert stored == ["f0", "f1", "f3", "f4"]
    assert client.pwd() == "/"


def test_get_many_reports_a_missing_file_and_gets_the_others(srv, tmp_path):
    (srv.anon_dir / "a").write_bytes(b"alpha")
    (srv.anon_dir / "c").write_bytes(b"gamma")
    with srv.client() as client:
        with pytest.raises(sockftp.NotFound):
            client.get_many([("a", tmp_path / "a"), ("b", tmp_path / "b"), ("c", tmp_path / "c")])
        assert client.pwd() == "/"
    assert (tmp_path / "a").read_bytes() == b"alpha" and (tmp_path / "c").read_bytes() == b"gamma"
    assert not (tmp_path / "b").exists()


def test_put_many_sends_large_files_through_a_resumable_put(srv, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(os.urandom(sockftp.client.RESUME_THRESHOLD + 5))
    small = tmp_path / "small"
    small.write_bytes(b"s")
    with srv.client() as client:
        results = client.put_many([(small, "small"), (big, "big"), (small, "small2")])
    assert [r.path for r in results] == ["/small", "/big", "/small2"]
    assert (srv.anon_dir / "big").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("anonymous", [True, False], ids=["served-by-a-worker", "served-by-the-parking-lot"])
def test_every_session_socket_sends_small_replies_at_once(server, anonymous):
    # Nagle's algorithm would hold a small reply back until the peer's
    # delayed ACK (~40 ms). The server turns it off on every session socket.
    srv = server(anonymous=anonymous)
    for _ in range(2):
        sock = srv.raw()
        sock.sendall(encode_frame({"cmd": "hello"}))
        assert recv_frame(sock)["ok"]
    records = list(srv.server.sessions._sessions)
    assert len(records) == 2
    for record in records:
        assert record.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_put_many_goes_on_in_step_past_a_local_file_that_vanished(srv, tmp_path):
    # A file listed, then removed before its turn (a sync walks first and
    # sends after): that file fails, the batch goes on, and the replies still
    # owed for the files before it are read, not left for the next request.
    for name in "ac":
        (tmp_path / name).write_bytes(name.encode() * 3)
    with srv.client() as client:
        done = []
        with pytest.raises(sockftp.SockftpError) as caught:
            client.put_many(
                [(tmp_path / name, name) for name in "abc"],
                on_done=lambda local, remote, result, error: done.append((remote, error is None)),
            )
        assert caught.value.code == "local_error" and "b" in caught.value.message
        assert client.pwd() == "/"  # still in step
    assert sorted(p.name for p in srv.anon_dir.iterdir()) == ["a", "c"]
    assert done == [("a", True), ("b", False), ("c", True)]


def test_get_many_tells_each_file_as_it_is_done(srv, tmp_path):
    (srv.anon_dir / "a").write_bytes(b"alpha")
    done = []
    with srv.client() as client, pytest.raises(sockftp.NotFound):
        client.get_many(
            [("a", tmp_path / "a"), ("b", tmp_path / "b")],
            on_done=lambda remote, local, result, error: done.append((remote, result and result.size, error)),
        )
    assert done[0] == ("a", 5, None)
    assert done[1][0] == "b" and done[1][1] is None and done[1][2].code == "not_found"
