"""Passwords argon2 accepted lately (``password_cache_time``): the same login
again skips the argon2 check, and nothing else changes.

An FTP client that opens parallel connections (lftp ``mirror --parallel=4``)
sends its password on each; before this, every one cost an argon2 check
(0.1 s of CPU), and lftp's parallel upload of 1000 small files ran slower
than its serial one (issue 21, item 5).

Whether a login ran argon2 is seen from outside, without timing anything:
while every argon2 slot is taken (as by a burst of other logins), a login
that needs argon2 waits, and one that does not returns at once. Real
servers on 127.0.0.1, accounts in their real SQLite store.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from conftest import add_user, encode_frame, recv_frame, returns_at_once
from ftp_support import ftp_server_fixture  # noqa: F401 - a fixture

from sockftp.accounts import SqliteUserStore, hash_password, passwords
from sockftp.server.auth import RecentPasswords
from sockftp.server.config import users_db

PASSWORD = "alice's long passphrase"


@contextmanager
def argon2_busy():
    """Every argon2 slot taken, as by as many password checks under way."""
    taken = 0
    try:
        for _ in range(passwords.CONCURRENT_VERIFICATIONS):
            assert passwords._slots.acquire(timeout=10), "an argon2 slot stayed busy"
            taken += 1
        yield
    finally:
        for _ in range(taken):
            passwords._slots.release()


@pytest.fixture
def srv(server):
    """A server without anonymous access, where alice may log in."""
    running = server(anonymous=False, login_failure_delay=0.05, ban_failures=100)
    add_user(running.root, "alice", PASSWORD)
    return running


def auth(running, user: str = "alice", password: str = PASSWORD, sock=None) -> dict:
    """The reply to one ``auth``, on a new raw connection unless *sock* is given."""
    sock = sock or running.raw(timeout=10)
    sock.sendall(encode_frame({"cmd": "auth", "user": user, "password": password}))
    return recv_frame(sock)


def auth_in_background(running, password: str = PASSWORD, user: str = "alice"):
    """Start one ``auth`` in a thread; returns (thread, replies), the reply lands in replies."""
    replies: list[dict] = []
    thread = threading.Thread(target=lambda: replies.append(auth(running, user, password)), daemon=True)
    thread.start()
    return thread, replies


def change(running, **fields) -> None:
    store = SqliteUserStore(users_db(str(running.root)))
    try:
        store.update("alice", **fields)
    finally:
        store.close()


# -- the native door -------------------------------------------------------------------------------------------


def test_a_password_verified_lately_logs_in_again_without_argon2(srv):
    assert auth(srv)["ok"]  # argon2, once
    with argon2_busy():
        replies = []
        assert returns_at_once(lambda: replies.append(auth(srv))), "the same login again waited for argon2"
    assert replies[0]["ok"] and replies[0]["user"] == "alice"


def test_a_wrong_password_after_a_right_one_still_takes_the_full_check_and_fails(srv):
    assert auth(srv)["ok"]
    with argon2_busy():
        thread, replies = auth_in_background(srv, password=PASSWORD + "!")
        thread.join(1.0)
        assert thread.is_alive(), "a wrong password must wait for argon2 like any other"
    thread.join(10)
    assert replies[0]["ok"] is False and replies[0]["error"] == "auth_failed"


def test_another_user_with_the_same_password_takes_the_full_check(srv):
    add_user(srv.root, "bob", PASSWORD)
    assert auth(srv)["ok"]
    with argon2_busy():
        thread, replies = auth_in_background(srv, user="bob")
        thread.join(1.0)
        assert thread.is_alive(), "alice's verified password must not count for bob"
    thread.join(10)
    assert replies[0]["ok"] and replies[0]["user"] == "bob"


def test_a_new_password_ends_the_old_ones_remembered_login(srv):
    assert auth(srv)["ok"]
    change(srv, password_hash=hash_password("a new passphrase"))
    refused = auth(srv)
    assert refused["ok"] is False and refused["error"] == "auth_failed"
    assert auth(srv, password="a new passphrase")["ok"]


def test_a_disabled_account_is_refused_however_lately_its_password_was_checked(srv):
    assert auth(srv)["ok"]
    change(srv, disabled=True)
    # Refused after the full check, as a wrong password is: the answer and its time say nothing more.
    refused = auth(srv)
    assert refused["ok"] is False and refused["error"] == "auth_failed"


def test_a_banned_address_is_refused_however_lately_its_password_was_checked(server):
    srv = server(anonymous=False, login_failure_delay=0, ban_failures=2, ban_time=60)
    add_user(srv.root, "alice", PASSWORD)
    assert auth(srv)["ok"]
    admitted = srv.raw(timeout=10)  # connected before the ban, so only the login can refuse it
    for _ in range(2):
        assert auth(srv, password="wrong")["error"] in ("auth_failed", "banned")
    assert auth(srv, sock=admitted)["error"] == "banned"


def test_with_the_cache_off_every_login_takes_argon2(server):
    srv = server(anonymous=False, password_cache_time=0)
    add_user(srv.root, "alice", PASSWORD)
    assert auth(srv)["ok"]
    with argon2_busy():
        thread, replies = auth_in_background(srv)
        thread.join(1.0)
        assert thread.is_alive(), "password_cache_time = 0 must check every login with argon2"
    thread.join(10)
    assert replies[0]["ok"]


def test_a_remembered_password_expires(server):
    srv = server(anonymous=False, password_cache_time=0.3)
    add_user(srv.root, "alice", PASSWORD)
    assert auth(srv)["ok"]
    threading.Event().wait(0.5)
    with argon2_busy():
        thread, replies = auth_in_background(srv)
        thread.join(1.0)
        assert thread.is_alive(), "an expired entry must not spare the argon2 check"
    thread.join(10)
    assert replies[0]["ok"]


def test_the_memory_is_bounded_and_forgets_the_oldest_first():
    now = [0.0]
    recent = RecentPasswords(60, clock=lambda: now[0])
    recent.MAX_ENTRIES = 3
    for n in range(5):
        recent.remember(f"user{n}", "$argon2id$x", "pw")
    assert len(recent) == 3
    assert not recent.holds("user0", "$argon2id$x", "pw") and not recent.holds("user1", "$argon2id$x", "pw")
    assert all(recent.holds(f"user{n}", "$argon2id$x", "pw") for n in (2, 3, 4))
    now[0] = 61.0
    assert not recent.holds("user4", "$argon2id$x", "pw"), "an entry lives its lifetime, no longer"
    recent.remember("user5", "$argon2id$x", "pw")
    assert len(recent) == 1, "expired entries are dropped as new ones come"


def test_a_password_that_is_no_valid_utf8_is_refused_not_a_crash(srv):
    assert auth(srv)["ok"]
    reply = auth(srv, password="\ud800")  # a lone surrogate, which JSON can carry
    assert reply["ok"] is False and reply["error"] == "auth_failed", reply


# -- the FTP door ---------------------------------------------------------------------------------------------


def test_parallel_ftp_connections_of_one_client_cost_one_argon2_check(ftp_server):
    srv = ftp_server(login_failure_delay=0.05)
    srv.add_user("alice", PASSWORD)
    first = srv.login("alice", PASSWORD)  # argon2, once
    with argon2_busy():
        # What lftp mirror --parallel=4 does next: three more connections, each with PASS.
        others = [srv.connect() for _ in range(3)]
        replies: list[str] = []

        def log_in_all():
            replies.extend(client.login("alice", PASSWORD) for client in others)

        assert returns_at_once(log_in_all), "the parallel connections waited for argon2"
    assert [reply[:3] for reply in replies] == ["230"] * 3
    for client in [first, *others]:
        client.voidcmd("NOOP")


def test_an_ftp_login_with_a_wrong_password_after_a_right_one_is_refused(ftp_server):
    import ftplib

    srv = ftp_server(login_failure_delay=0.05)
    srv.add_user("alice", PASSWORD)
    srv.login("alice", PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^530"):
        srv.login("alice", PASSWORD[:-1])


def test_an_ftp_password_that_is_no_valid_utf8_gets_530_not_an_internal_error(ftp_server):
    srv = ftp_server(login_failure_delay=0.05)
    srv.add_user("alice", PASSWORD)
    sock = srv.raw(timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220")
    sock.sendall(b"USER alice\r\nPASS \xc3\x28\x80\r\n")  # not UTF-8: decoded to lone surrogates
    assert reader.readline().startswith(b"331")
    assert reader.readline().startswith(b"530")
