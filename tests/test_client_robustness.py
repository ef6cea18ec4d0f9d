"""The client library stays in step with the server whatever goes wrong on
its side: local failures, callbacks that raise, listings left early, and
connections the server has ended."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from conftest import disk_held, encode_frame, recv_frame, reserves_blocks, wait_until

import sockftp
import sockftp.client.connection
import sockftp.protocol.limits
from sockftp import Client
from sockftp.client import partial_path
from sockftp.protocol.errors import ConnectionLost, error_from_reply

MiB = 1024 * 1024


def test_get_into_a_missing_local_directory_leaves_the_connection_usable(srv, tmp_path):
    (srv.anon_dir / "f.bin").write_bytes(os.urandom(3 * MiB))
    with srv.client() as client:
        with pytest.raises(FileNotFoundError):
            client.get("f.bin", str(tmp_path / "no-such-dir" / "f.bin"))
        assert client.pwd() == "/"
        assert client.get("f.bin", tmp_path / "ok.bin").size == 3 * MiB


@pytest.mark.parametrize("size", [12 * MiB, 20 * MiB], ids=["12MiB", "20MiB"])
def test_a_progress_callback_that_raises_does_not_desynchronise_the_client(srv, tmp_path, size):
    data = os.urandom(size)
    (srv.anon_dir / "f.bin").write_bytes(data)
    source = tmp_path / "up.bin"
    source.write_bytes(data)

    def explode(done, total):
        raise KeyboardInterrupt

    with srv.client() as client:
        with pytest.raises(KeyboardInterrupt):
            client.get("f.bin", tmp_path / "down.bin", progress=explode)
        assert client.pwd() == "/"  # a fresh connection, not stale file bytes
        with pytest.raises(KeyboardInterrupt):
            client.put(source, "up.bin", progress=explode)
        assert client.pwd() == "/"
        assert client.get("f.bin", tmp_path / "down.bin").resumed_from > 0
        assert client.put(source, "up.bin").resumed_from >= 0
    assert (tmp_path / "down.bin").read_bytes() == data
    assert (srv.anon_dir / "up.bin").read_bytes() == data


# Found by bench/soak.py's put-cut: the callback's last call came after the
# checksum trailer went out and before the reply was read, so the put's reply
# answered the next request (ls returned [] and stat raised KeyError).
# A large file reports its total twice: once read, once stored.
@pytest.mark.parametrize(("size", "last"), [(5, 1), (3 * MiB, 2)], ids=["small", "large"])
def test_a_progress_callback_that_raises_at_the_end_of_a_put_leaves_the_client_in_step(srv, tmp_path, size, last):
    data = os.urandom(size)
    source = tmp_path / "up.bin"
    source.write_bytes(data)
    reports = []

    def cancel_at_the_end(done, total):
        reports.append(done)
        if reports.count(total) == last:
            raise KeyboardInterrupt

    with srv.client() as client:
        with pytest.raises(KeyboardInterrupt):
            client.put(source, "up.bin", progress=cancel_at_the_end)
        assert [entry.name for entry in client.ls()] == ["up.bin"]
        assert client.stat("up.bin").size == size
    assert (srv.anon_dir / "up.bin").read_bytes() == data


def test_leaving_a_listing_early_keeps_the_connection_in_step(srv):
    for i in range(1500):
        (srv.anon_dir / f"f{i:04}").write_bytes(b"")
    with srv.client() as client:
        for _entry in client.iter_ls("/"):
            break
        assert client.stat("f0001").name == "f0001"


def test_a_transfer_retries_after_the_server_timed_the_session_out(server, tmp_path):
    srv = server(idle_timeout=0.3)
    source = tmp_path / "a.txt"
    source.write_bytes(b"after a nap")
    with srv.client(retries=1) as client:
        # The server times the session out, says so, and lingers before
        # closing: the client's next request meets that stale "timeout".
        time.sleep(0.8)
        assert client.put(source, "a.txt").size == len(b"after a nap")
    assert (srv.anon_dir / "a.txt").read_bytes() == b"after a nap"


def test_a_file_that_shrinks_while_being_put_is_a_local_error(srv, tmp_path):
    source = tmp_path / "shrinking.bin"
    source.write_bytes(os.urandom(16 * MiB))

    def shrink(done, total):
        os.truncate(source, 1 * MiB)

    with srv.client() as client:
        with pytest.raises(sockftp.SockftpError) as caught:
            client.put(source, "shrinking.bin", progress=shrink)
        assert caught.value.code == "local_error"
        assert client.pwd() == "/"
    assert not (srv.anon_dir / "shrinking.bin").exists()


def test_a_refused_upload_too_large_to_drain_reports_the_servers_reason(srv, tmp_path):
    # Past MAX_DRAIN the server answers and closes instead of reading the
    # bytes; the client must still show why, not just "connection lost".
    (srv.anon_dir / "target").mkdir()
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        f.truncate(sockftp.protocol.limits.MAX_DRAIN + 8 * MiB)
    with srv.client(timeout=30) as client:
        with pytest.raises(sockftp.IsADirectory):
            client.put(source, "target", resume=False)


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": False, "error": ["not", "a", "string"]},
        {"ok": False, "error": "not_found", "code": 7, "path": 3, "message": None},
        {"ok": False},
    ],
)
def test_a_malformed_error_reply_still_becomes_a_sockftp_error(reply):
    assert isinstance(error_from_reply(reply), sockftp.SockftpError)


def _scripted_server(sessions):
    """A peer on 127.0.0.1 that plays *sessions*, one per connection: each
    is a function given the connected socket. Returns (port, thread)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        with listener:
            for play in sessions:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    return
                with conn:
                    play(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_a_batch_cut_by_a_fatal_reply_is_not_continued_on_a_new_connection(tmp_path):
    # The first server answers hello, then says shutting_down (fatal: the
    # client closes) with requests of the batch still unanswered. The client
    # must report the lost batch, not reconnect and read the next server's
    # replies as answers to those requests.
    def first(conn):
        assert recv_frame(conn)["cmd"] == "hello"
        conn.sendall(encode_frame({"ok": True, "server": "scripted", "version": 1}))
        recv_frame(conn)  # the first get: answered
        conn.sendall(encode_frame({"ok": True, "size": 5, "filesize": 5, "offset": 0}) + b"right")
        recv_frame(conn)  # the second: the server is going away
        conn.sendall(encode_frame({"ok": False, "error": "shutting_down", "message": "bye"}))
        time.sleep(0.5)

    def second(conn):
        # Would answer every get with the same 5 bytes, under any name.
        conn.settimeout(5)
        while True:
            try:
                header = recv_frame(conn)
            except (EOFError, OSError):
                return
            if header["cmd"] == "hello":
                conn.sendall(encode_frame({"ok": True, "server": "scripted", "version": 1}))
            else:
                conn.sendall(encode_frame({"ok": True, "size": 5, "filesize": 5, "offset": 0}) + b"wrong")

    port, thread = _scripted_server([first, second])
    client = Client("127.0.0.1", port, timeout=5)
    pairs = [(f"f{i}", tmp_path / f"f{i}") for i in range(8)]
    with pytest.raises(ConnectionLost):
        client.get_many(pairs, window=4)
    client.close()
    # f0 was answered; nothing else may have been written, least of all the
    # second server's bytes under the first server's names.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0"]
    assert (tmp_path / "f0").read_bytes() == b"right"


def test_a_download_cut_short_keeps_a_partial_holding_only_its_bytes(tmp_path):
    # The client reserves disk a window ahead of a large download's writes
    # (sockftp.disk.prealloc); the partial it keeps to resume must give that back.
    if not reserves_blocks(tmp_path):
        pytest.skip("this filesystem reserves no blocks with fallocate")
    total, sent = 40 * MiB, 6 * MiB
    cut = threading.Event()

    def cut_short(conn):
        assert recv_frame(conn)["cmd"] == "hello"
        conn.sendall(encode_frame({"ok": True, "server": "scripted", "version": 1}))
        assert recv_frame(conn)["cmd"] == "get"
        conn.sendall(encode_frame({"ok": True, "size": total, "filesize": total, "offset": 0}))
        conn.sendall(os.urandom(sent))
        cut.wait(10)

    port, thread = _scripted_server([cut_short])
    local = tmp_path / "big.bin"
    partial = partial_path(str(local))
    failures = []

    def download():
        try:
            Client("127.0.0.1", port, timeout=10).get("big.bin", local)
        except Exception as exc:  # noqa: BLE001 - checked below
            failures.append(exc)

    downloader = threading.Thread(target=download)
    downloader.start()
    wait_until(lambda: os.path.exists(partial) and os.path.getsize(partial) == sent, what="6 MiB received")
    assert disk_held(partial) >= sent + 8 * MiB  # reserved ahead while the download runs
    cut.set()
    downloader.join(10)
    thread.join(10)
    assert [type(exc) for exc in failures] == [ConnectionLost]
    assert os.path.getsize(partial) == sent  # kept, to resume from
    assert disk_held(partial) <= sent + 256 * 1024


TOKEN = "sockftp_" + "A" * 43
HELLO_OK = {"ok": True, "server": "scripted", "version": 1, "features": ["tokens"]}
AUTH_OK = {"ok": True, "user": "alice", "read_only": False}


def _answers_only_hello_and_login_together(seen: list):
    """A scripted session that reads two requests before it answers either
    (recorded in *seen*): a client that waits for the hello's reply before
    it logs in gets none, and its test fails on what *seen* holds."""

    def play(conn):
        conn.settimeout(3)
        try:
            seen.extend([recv_frame(conn), recv_frame(conn)])
        except OSError:
            return  # only the hello came
        conn.sendall(encode_frame(HELLO_OK) + encode_frame(AUTH_OK))
        recv_frame(conn)  # the quit
        conn.sendall(encode_frame({"ok": True}))

    return play


@pytest.fixture
def as_if_remote(monkeypatch):
    """The client takes its loopback peer for one on another machine (every
    test server is on loopback): the real sockets, the remote rules."""
    monkeypatch.setattr(sockftp.client.connection, "stays_on_this_machine", lambda address: False)


@pytest.mark.usefixtures("as_if_remote")
def test_a_reconnect_by_token_sends_hello_and_login_in_one_go():
    # The first connection logs in as ever. On the second (a reconnect),
    # the peer reads two requests before it answers either: a client that
    # waits for the hello's reply before it logs in never gets one.
    seen = []

    def first(conn):
        assert recv_frame(conn)["cmd"] == "hello"
        conn.sendall(encode_frame(HELLO_OK))
        assert recv_frame(conn)["token"] == TOKEN
        conn.sendall(encode_frame(AUTH_OK))
        conn.settimeout(5)
        try:
            recv_frame(conn)  # until the client closes
        except (EOFError, OSError):
            pass

    port, thread = _scripted_server([first, _answers_only_hello_and_login_together(seen)])
    client = Client("127.0.0.1", port, user="alice", token=TOKEN, timeout=5)
    client.connect()
    with client:
        assert client.server_info["server"] == "scripted"
    thread.join(5)
    assert [frame["cmd"] for frame in seen] == ["hello", "auth"]
    assert seen[1] == {"cmd": "auth", "user": "alice", "token": TOKEN}


def test_to_a_loopback_address_a_new_client_sends_its_token_with_the_first_hello():
    # Bytes to 127.0.0.1 never leave the machine: a new client sends the
    # login behind its very first hello, and it costs one round trip.
    seen = []
    port, thread = _scripted_server([_answers_only_hello_and_login_together(seen)])
    with Client("127.0.0.1", port, user="alice", token=TOKEN, timeout=5) as client:
        assert client.server_info["server"] == "scripted"
    thread.join(5)
    assert [frame["cmd"] for frame in seen] == ["hello", "auth"]
    assert seen[1] == {"cmd": "auth", "user": "alice", "token": TOKEN}


def test_a_refused_hello_leaves_no_connection_open():
    # A hello refused with an error the server does not close after
    # (unsupported_version): the client closes, rather than keep a
    # connection whose next request would meet auth_required.
    closed = []

    def refuses_the_hello(conn):
        conn.settimeout(3)
        recv_frame(conn)
        conn.sendall(encode_frame({"ok": False, "error": "unsupported_version", "message": "no version in common"}))
        try:
            closed.append(conn.recv(1) == b"")
        except OSError:
            closed.append(False)

    port, thread = _scripted_server([refuses_the_hello])
    client = Client("127.0.0.1", port, timeout=5, connect=False)
    with pytest.raises(sockftp.UnsupportedVersion):
        client.connect()
    thread.join(5)
    assert closed == [True]


@pytest.mark.parametrize(
    ("address", "local"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.7", False),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
        ("::ffff:192.0.2.7", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
    ],
)
def test_only_a_loopback_peer_is_sent_a_token_before_the_hello_is_answered(address, local):
    # Anywhere else a TLS-only server answers a plaintext hello with
    # tls_required, and a token sent behind it would have crossed the
    # network in clear (the end-to-end case is the next test).
    assert sockftp.client.connection.stays_on_this_machine(address) is local


@pytest.mark.usefixtures("as_if_remote")
def test_a_token_never_goes_in_clear_to_a_server_that_wants_tls():
    # A TLS-only server answers a plaintext hello with tls_required and
    # closes. The client, given a token but not told to use TLS, must not
    # have sent the token by then.
    received = bytearray()

    def tls_only(conn):
        assert recv_frame(conn)["cmd"] == "hello"
        conn.sendall(encode_frame({"ok": False, "error": "tls_required", "message": "use TLS"}))
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2)
        try:
            while data := conn.recv(65536):
                received.extend(data)
        except OSError:
            pass

    port, thread = _scripted_server([tls_only])
    with pytest.raises(sockftp.SockftpError) as refused:
        Client("127.0.0.1", port, user="alice", token=TOKEN, timeout=5)
    thread.join(5)
    assert refused.value.code == "tls_required"
    assert TOKEN.encode() not in bytes(received)
