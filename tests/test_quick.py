"""Quick requests, served on the parking lot's thread: a plaintext session
starts parked, and its hello, pings and login by re-login token take no
worker thread; anything else, or anything that would wait, goes to a worker
and is answered as before, in order.

Real servers on 127.0.0.1, raw sockets speaking the wire format.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time

import pytest
from conftest import add_user, encode_frame, recv_frame, wait_until

from sockftp.accounts.sqlite import POOL_SIZE
from sockftp.client import Client
from sockftp.server import handler as handler_module  # the module whose handle() reads PARK_AFTER
from sockftp.server.handler import QUICK_BATCH

PASSWORD = "alice's long passphrase"
HELLO = {"cmd": "hello", "versions": [1]}


@pytest.fixture
def srv(server):
    running = server(anonymous=False, login_failure_delay=0.05, ban_failures=100)
    add_user(running.root, "alice", PASSWORD)
    return running


def a_token(running) -> str:
    with Client(running.host, running.port, user="alice", password=PASSWORD, keep_token=True, timeout=10) as client:
        return client.token


def no_workers(running) -> None:
    """Wait until every worker thread has ended (sessions park after
    PARK_AFTER; idle workers end after WORKER_LINGER)."""
    wait_until(lambda: running.server.workers.threads == 0, timeout=10, what="no worker threads")


def test_reconnects_by_token_take_no_worker_thread(srv):
    token = a_token(srv)
    # alice has a session open, and her token has just been used: a token
    # login then needs neither a walk of her home nor a database write.
    holder = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    no_workers(srv)
    socks = []
    for _ in range(20):
        sock = socket.create_connection((srv.host, srv.port), timeout=10)
        sock.sendall(encode_frame(HELLO) + encode_frame({"cmd": "auth", "user": "alice", "token": token}))
        assert recv_frame(sock)["server"].startswith("sockftp/")
        assert recv_frame(sock)["user"] == "alice"
        socks.append(sock)
    assert srv.server.workers.threads == 0, "a hello and a token login woke a worker"
    assert srv.session_count == 21
    # The sessions are logged in for real: the next request is served (by a worker).
    socks[0].sendall(encode_frame({"cmd": "pwd"}))
    assert recv_frame(socks[0])["path"] == "/"
    for sock in socks:
        sock.close()
    holder.close()
    srv.wait_idle()


def test_logins_that_would_wait_go_to_a_worker_and_succeed(srv, audit_file):
    # No session of alice's is open: her first token login measures her
    # home. A password login hashes. A wrong token waits out the failure
    # delay. Each is handed to a worker, and answered as ever.
    token = a_token(srv)
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    frames = [
        HELLO,
        {"cmd": "auth", "user": "alice", "token": "sockftp_" + "A" * 43},
        {"cmd": "auth", "user": "alice", "token": token},
        {"cmd": "auth", "user": "alice", "password": PASSWORD},
        {"cmd": "ping"},
    ]
    sock.sendall(b"".join(encode_frame(f) for f in frames))
    assert recv_frame(sock)["ok"] is True
    assert recv_frame(sock)["error"] == "auth_failed"
    assert recv_frame(sock)["user"] == "alice"
    assert recv_frame(sock)["user"] == "alice"
    assert recv_frame(sock) == {"ok": True}
    text = audit_file.read_text()
    assert text.count("event=login-failed") == 1
    assert text.count("event=login ") == 3  # a_token's, and this session's two


def test_more_quick_requests_than_one_wake_serves_are_answered_in_order(srv):
    token = a_token(srv)
    holder = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    pings = QUICK_BATCH + 8
    frames = [HELLO, {"cmd": "auth", "user": "alice", "token": token}]
    frames += [{"cmd": "ping"}] * pings + [{"cmd": "pwd"}] + [{"cmd": "ping"}] * 3 + [{"cmd": "quota"}]
    sock.sendall(b"".join(encode_frame(f) for f in frames))
    replies = [recv_frame(sock) for _ in frames]
    assert "server" in replies[0]
    assert replies[1]["user"] == "alice"
    assert replies[2 : 2 + pings] == [{"ok": True}] * pings
    assert replies[2 + pings]["path"] == "/"
    assert replies[3 + pings : 6 + pings] == [{"ok": True}] * 3
    assert replies[-1]["user"] == "alice"
    holder.close()


def test_a_header_that_arrives_in_pieces_is_still_served(srv):
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    frame = encode_frame(HELLO)
    for piece in (frame[:2], frame[2:7], frame[7:]):
        sock.sendall(piece)
        time.sleep(0.1)
    assert recv_frame(sock)["ok"] is True
    sock.sendall(encode_frame({"cmd": "ping"}))
    assert recv_frame(sock) == {"ok": True}


def test_a_client_that_never_reads_its_replies_holds_up_no_one_else(srv, monkeypatch):
    # One client pipelines hellos (quick, with large replies) and reads none
    # of the replies, until its connection is full. It sends them in bursts
    # that each fit one read of the server's, pausing long enough for its
    # session to park, so each burst is a batch the parking lot's thread may
    # serve. Its replies must never be sent from that thread with a wait:
    # other clients still connect, log in and get answers at once.
    monkeypatch.setattr(handler_module, "PARK_AFTER", 0.05)
    token = a_token(srv)
    holder = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    hog.settimeout(3)
    hog.connect((srv.host, srv.port))
    burst = encode_frame(HELLO) * 1700  # 63 KB, under one 64 KiB read; about 1 MB of replies

    def stuff():
        try:
            for _ in range(30):
                hog.sendall(burst)
                time.sleep(0.15)
        except OSError:  # timed out: the server reads no more
            pass

    stuffer = threading.Thread(target=stuff, daemon=True)
    stuffer.start()
    stuffer.join(30)
    for _ in range(5):
        started = time.monotonic()
        sock = socket.create_connection((srv.host, srv.port), timeout=5)
        sock.sendall(encode_frame(HELLO) + encode_frame({"cmd": "auth", "user": "alice", "token": token}))
        assert recv_frame(sock)["ok"] is True
        assert recv_frame(sock)["user"] == "alice"
        assert time.monotonic() - started < 2
        sock.close()
    hog.close()
    holder.close()
    srv.wait_idle(timeout=15)


@pytest.mark.parametrize("anonymous", [False, True])
def test_a_command_name_that_is_no_string_is_refused_and_the_session_still_ends(server, monkeypatch, anonymous):
    # A session wakes on the parking lot's thread, whose quick path looks
    # the name up first: a list or an object there must be refused as ever,
    # and must not strand the session when its client leaves.
    monkeypatch.setattr(handler_module, "PARK_AFTER", 0.02)
    running = server(anonymous=anonymous)
    sock = socket.create_connection((running.host, running.port), timeout=10)
    sock.sendall(encode_frame(HELLO))
    assert recv_frame(sock)["ok"] is True
    wait_until(lambda: len(running.server.parking) == 1, what="parked")
    for bad in (["x"], {"a": 1}):
        sock.sendall(encode_frame({"cmd": bad}))
        assert recv_frame(sock)["error"] == "bad_request"
    sock.close()
    running.wait_idle()


def test_a_busy_account_database_holds_up_no_parked_session(srv):
    # Every pooled database connection is in use (by workers writing, say,
    # behind a busy database). A token login then waits for one on a
    # worker; the parking lot's thread must not wait with it.
    token = a_token(srv)
    holder = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    other = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    wait_until(lambda: len(srv.server.parking) == 2, what="both parked")
    pool = srv.server.users._pool
    taken = [pool.get(timeout=5) for _ in range(POOL_SIZE)]
    release = threading.Timer(3.0, lambda: [pool.put(db) for db in taken])
    release.start()
    try:
        sock = socket.create_connection((srv.host, srv.port), timeout=10)
        sock.sendall(encode_frame(HELLO) + encode_frame({"cmd": "auth", "user": "alice", "token": token}))
        time.sleep(0.3)  # the login has reached the database
        started = time.monotonic()
        other.ping()
        assert time.monotonic() - started < 1, "a parked session waited for the account database"
        assert recv_frame(sock)["ok"] is True
        assert recv_frame(sock)["user"] == "alice"  # served once a connection was free
    finally:
        release.join()
    sock.close()
    other.close()
    holder.close()


def test_replies_a_client_never_takes_end_its_session_without_an_error(server, caplog):
    # A client pipelines hellos and reads nothing until the server can
    # send no more: its session ends at the idle timeout, as a logged
    # fact, not as a failure with a traceback.
    running = server(anonymous=False, idle_timeout=1.0)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.settimeout(3)
    hog.connect((running.host, running.port))
    try:
        for _ in range(400):
            hog.sendall(encode_frame(HELLO) * 32)
            time.sleep(0.02)
    except OSError:
        pass
    running.wait_idle(timeout=15)
    hog.close()
    errors = [r for r in caplog.records if r.name.startswith("sockftp") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_client_that_pings_from_the_parking_lot_is_still_closed_at_its_login_deadline(server, monkeypatch):
    monkeypatch.setattr(handler_module, "PARK_AFTER", 0.02)
    running = server(anonymous=False, header_timeout=0.6, idle_timeout=5)
    sock = running.raw()
    started = time.monotonic()
    reply = {"ok": True}
    while reply["ok"] and time.monotonic() - started < 3:
        time.sleep(0.1)  # parked between pings: each is served on the parking lot
        sock.sendall(encode_frame({"cmd": "ping"}))
        reply = recv_frame(sock)
    assert reply["error"] == "timeout"
    assert time.monotonic() - started < 1.5


def test_while_many_workers_are_busy_the_parking_lot_hands_everything_over(srv, caplog):
    # The parking lot's one thread would wait for the GIL behind every busy
    # worker at each step, and every parked session with it: in the soak,
    # reconnects took 2.2 s instead of 0.13 s. Past QUICK_WHILE_BUSY busy
    # workers, a login by token is served by a worker like any request.
    token = a_token(srv)
    holder = Client(srv.host, srv.port, user="alice", token=token, timeout=10)
    uploads = []
    for n in range(handler_module.QUICK_WHILE_BUSY + 1):
        sock = socket.create_connection((srv.host, srv.port), timeout=10)
        sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "token": token}))
        assert recv_frame(sock)["user"] == "alice"
        # An upload whose bytes stop coming: its worker waits in receive.
        sock.sendall(encode_frame({"cmd": "put", "path": f"slow{n}", "size": 1 << 20}) + b"x" * 1000)
        uploads.append(sock)
    wait_until(lambda: srv.server.workers.busy > handler_module.QUICK_WHILE_BUSY, what="busy workers")
    # Every upload is on its worker (a worker still ending an earlier
    # session also counts as busy): only the holder is parked.
    wait_until(lambda: len(srv.server.parking) == 1, what="only the holder parked")
    caplog.set_level(logging.INFO, logger="sockftp.audit")
    caplog.clear()
    sock = socket.create_connection((srv.host, srv.port), timeout=10)
    sock.sendall(encode_frame(HELLO) + encode_frame({"cmd": "auth", "user": "alice", "token": token}))
    assert recv_frame(sock)["ok"] is True
    assert recv_frame(sock)["user"] == "alice"
    # Which thread served the login, read from its audit line. Counting
    # worker threads instead was flaky: a worker still finishing an earlier
    # session is counted busy, and another may start meanwhile (CI, stop 11).
    logins = [r for r in caplog.records if r.name == "sockftp.audit" and "event=login " in r.getMessage()]
    assert len(logins) == 1, [r.getMessage() for r in logins]
    worker = f"{srv.server.workers.name}-"
    assert logins[0].threadName.startswith(worker), f"the login was served on {logins[0].threadName}"
    for each in [sock, *uploads]:
        each.close()
    holder.close()
    srv.wait_idle(timeout=15)


# -- any bytes, through the parking lot ------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2**64),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
#: Requests of the quick commands and their neighbours, with fields of any
#: type; "VALID" becomes a live token when sent.
REQUESTS = st.one_of(
    st.fixed_dictionaries(
        {"cmd": st.sampled_from(["hello", "ping", "auth", "pwd", "quit", "nope"])},
        optional={
            "versions": ANY_VALUE,
            "user": st.one_of(st.just("alice"), ANY_VALUE),
            "token": st.one_of(st.just("VALID"), ANY_VALUE),
            "password": ANY_VALUE,
            "new_token": ANY_VALUE,
        },
    ),
    st.fixed_dictionaries({"cmd": ANY_VALUE}),
)
CHUNKS = st.lists(st.one_of(REQUESTS, st.binary(max_size=10)), min_size=1, max_size=6)


def _frames(data: bytes) -> list[dict]:
    """Every reply frame in *data*; each must be a JSON object with a boolean ok."""
    frames, position = [], 0
    while position < len(data):
        (length,) = struct.unpack("<I", data[position : position + 4])
        frames.append(json.loads(data[position + 4 : position + 4 + length]))
        assert isinstance(frames[-1]["ok"], bool)
        position += 4 + length
    return frames


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=CHUNKS)
def test_any_bytes_sent_to_parked_sessions_get_frames_and_the_session_ends(srv, monkeypatch, caplog, chunks):
    # Each chunk reaches a parked session, so it is read and served (or
    # handed over) on the parking lot's thread. Whatever the bytes, the
    # replies are frames, none is an internal error, the session ends when
    # the client does, and the server logs no error.
    monkeypatch.setattr(handler_module, "PARK_AFTER", 0.01)
    if not hasattr(srv, "token"):
        srv.token = a_token(srv)
        srv.holder = Client(srv.host, srv.port, user="alice", token=srv.token, timeout=10)  # alice has a session
        srv.sources = iter(f"127.0.{n // 250}.{n % 250 + 2}" for n in range(10**6))
    sock = srv.raw(timeout=10, source=next(srv.sources))  # its own address: bans stay with it
    for chunk in chunks:
        if isinstance(chunk, dict):
            chunk = encode_frame({k: srv.token if v == "VALID" else v for k, v in chunk.items()})
        try:
            sock.sendall(chunk)
        except OSError:
            break  # the server closed after a fatal error
        time.sleep(0.03)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    received = bytearray()
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    sock.close()
    assert all(reply.get("error") != "internal" for reply in _frames(bytes(received)))
    srv.wait_idle(sessions=1)
    errors = [r for r in caplog.records if r.name.startswith("sockftp") and r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
