"""Access control on the server: login required, homes as jails between
users, read-only accounts, and bans after failed logins."""

from __future__ import annotations

import sqlite3
import time

import pytest
from conftest import add_user, assert_closed, encode_frame, login, recv_frame

import sockftp
from sockftp.server.commands import COMMANDS
from sockftp.server.config import users_db

# Requests for every command, with plausible arguments.
REQUESTS = {
    "hello": {"cmd": "hello"},
    "auth": {"cmd": "auth", "user": "x", "password": "y"},
    "ping": {"cmd": "ping"},
    "quit": {"cmd": "quit"},
    "pwd": {"cmd": "pwd"},
    "cd": {"cmd": "cd", "path": "/"},
    "stat": {"cmd": "stat", "path": "/"},
    "ls": {"cmd": "ls", "path": "/"},
    "mkdir": {"cmd": "mkdir", "path": "d"},
    "rmdir": {"cmd": "rmdir", "path": "d"},
    "rm": {"cmd": "rm", "path": "f"},
    "mv": {"cmd": "mv", "source": "a", "target": "b"},
    "resume": {"cmd": "resume", "path": "f", "size": 10},
    "get": {"cmd": "get", "path": "f"},
    "put": {"cmd": "put", "path": "f", "size": 3},
    "quota": {"cmd": "quota"},
    "df": {"cmd": "df"},
    "revoke": {"cmd": "revoke", "all": True},
    "tree": {"cmd": "tree", "path": "/"},
    "blocks": {"cmd": "blocks", "path": "f"},
    "utime": {"cmd": "utime", "path": "/", "mtime": 0},
}
OPEN_BEFORE_LOGIN = {"hello", "auth", "ping", "quit"}


@pytest.fixture
def closed_server(server):
    srv = server(anonymous=False, login_failure_delay=0.01)
    add_user(srv.root, "alice", "alice-pw")
    add_user(srv.root, "bob", "bob-pw")
    add_user(srv.root, "reader", "reader-pw", read_only=True)
    return srv


def test_every_command_is_covered_here():
    assert set(REQUESTS) == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(set(REQUESTS) - OPEN_BEFORE_LOGIN - {"put"}))
def test_every_command_is_refused_before_login(closed_server, name):
    sock = closed_server.raw()
    sock.sendall(encode_frame(REQUESTS[name]))
    reply = recv_frame(sock)
    assert (reply["ok"], reply["error"]) == (False, "auth_required")
    sock.sendall(encode_frame({"cmd": "ping"}))  # and the stream is still in step
    assert recv_frame(sock)["ok"] is True


def test_a_put_before_login_is_refused_and_its_bytes_are_not_read(closed_server):
    sock = closed_server.raw()
    sock.sendall(encode_frame({"cmd": "put", "path": "f", "size": 3}) + b"abc")
    reply = recv_frame(sock)
    assert (reply["ok"], reply["error"]) == (False, "auth_required")
    assert_closed(sock)


def test_a_session_that_never_logs_in_is_closed_however_it_pings(server):
    srv = server(anonymous=False, header_timeout=0.6, idle_timeout=5)
    sock = srv.raw()
    started = time.monotonic()
    reply = None
    while time.monotonic() - started < 3:
        sock.sendall(encode_frame({"cmd": "ping"}))
        reply = recv_frame(sock)
        if not reply["ok"]:
            break
        time.sleep(0.1)
    assert reply["error"] == "timeout"
    assert time.monotonic() - started < 1.5


def test_passwords_are_stored_hashed_and_a_wrong_one_fails(closed_server):
    with sqlite3.connect(users_db(str(closed_server.root))) as db:
        stored = dict(db.execute("SELECT name, password_hash FROM users"))
    assert stored["alice"].startswith("$argon2id$") and "alice-pw" not in stored["alice"]
    client = closed_server.client()
    with pytest.raises(sockftp.AuthFailed):
        client.request({"cmd": "auth", "user": "alice", "password": "wrong"})
    assert client.request({"cmd": "auth", "user": "alice", "password": "alice-pw"})["user"] == "alice"


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(closed_server):
    client = closed_server.client()
    answers = {}
    times = {"alice": [], "nobody": []}
    for _ in range(2):  # the faster of two (a busy machine only adds time); a fifth failure bans
        for user in ("alice", "nobody"):
            started = time.monotonic()
            with pytest.raises(sockftp.AuthFailed) as caught:
                client.request({"cmd": "auth", "user": user, "password": "wrong"})
            answers[user] = caught.value.to_reply()
            times[user].append(time.monotonic() - started)
    assert answers["alice"] == answers["nobody"]
    assert abs(min(times["alice"]) - min(times["nobody"])) < 0.15  # both ran a full argon2 verification


def test_users_cannot_reach_each_others_files(closed_server, files):
    alice = login(closed_server, "alice", "alice-pw")
    alice.mkdir("private")
    alice.put(files("secret.txt", b"alice's secret"), "private/secret.txt")
    bob = login(closed_server, "bob", "bob-pw")
    bob.put(files("mine.txt", b"bob's"), "mine.txt")

    # Bob's / is his home; every way toward alice's files stays inside it
    # ("/users/alice/..." is a path inside bob's home, which holds no such thing).
    assert [e.name for e in bob.ls("/")] == ["mine.txt"]
    for path in ("../alice/private/secret.txt", "/../alice/private/secret.txt", "/users/alice/private/secret.txt"):
        for attempt in (
            lambda p=path: bob.get(p, files.dir / "stolen"),
            lambda p=path: bob.stat(p),
            lambda p=path: bob.ls(p),
            lambda p=path: bob.rm(p),
            lambda p=path: bob.mv(p, "taken"),
            lambda p=path: bob.mv("mine.txt", p),
            lambda p=path: bob.put(files("x", b"overwrite"), p),
            lambda p=path: bob.mkdir(p + "-dir", parents=True) if ".." in p else bob.stat(p + "-dir"),
            lambda p=path: bob.cd(p),
        ):
            with pytest.raises(sockftp.SockftpError) as caught:
                attempt()
            assert caught.value.code in ("path_refused", "not_found")
    assert (closed_server.root / "users" / "alice" / "private" / "secret.txt").read_bytes() == b"alice's secret"
    assert sorted(p.name for p in (closed_server.root / "users" / "alice").iterdir()) == ["private"]
    assert not (files.dir / "stolen").exists()


def test_a_read_only_user_can_read_but_change_nothing(closed_server, files):
    home = closed_server.root / "users" / "reader"
    home.mkdir(parents=True)
    (home / "doc.txt").write_bytes(b"read me")
    (home / "dir").mkdir()
    reader = login(closed_server, "reader", "reader-pw")
    assert reader.get("doc.txt", files.dir / "doc.txt").size == 7
    assert [e.name for e in reader.ls("/")] == ["dir", "doc.txt"]
    for attempt in (
        lambda: reader.put(files("new.txt", b"no"), "new.txt"),
        lambda: reader.put(files("big.bin", b"x" * (2 * 1024 * 1024)), "big.bin"),
        lambda: reader.mkdir("new"),
        lambda: reader.rmdir("dir"),
        lambda: reader.rm("doc.txt"),
        lambda: reader.mv("doc.txt", "moved.txt"),
        lambda: reader.utime("doc.txt", 1e9),
        lambda: reader.put_delta(files("doc2.txt", b"read mE"), "doc.txt", reader.blocks("doc.txt"), fallback=False),
    ):
        with pytest.raises(sockftp.PermissionDenied):
            attempt()
    assert sorted(p.name for p in home.iterdir()) == ["dir", "doc.txt"]
    assert reader.pwd() == "/"


def test_failed_logins_ban_the_address_but_not_another_one(server):
    srv = server(anonymous=False, login_failure_delay=0.01, ban_failures=3, ban_window=60, ban_time=1.5)
    add_user(srv.root, "alice", "alice-pw")
    sock = srv.raw(source="127.0.0.1")
    for attempt in range(3):
        sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": f"guess{attempt}"}))
        reply = recv_frame(sock)
    assert reply["error"] == "banned" and reply["retry_after"] > 0
    # New connections from the banned address are refused at once...
    refused = srv.raw(source="127.0.0.1")
    assert recv_frame(refused)["error"] == "banned"
    # ...while another address logs in as usual, with the right password.
    other = srv.raw(source="127.0.0.2")
    other.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": "alice-pw"}))
    assert recv_frame(other)["ok"] is True
    # After the cool-down the first address may try again.
    time.sleep(1.6)
    again = srv.raw(source="127.0.0.1")
    again.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": "alice-pw"}))
    assert recv_frame(again)["ok"] is True


def test_each_failed_login_is_delayed(server):
    srv = server(anonymous=False, login_failure_delay=0.4)
    add_user(srv.root, "alice", "alice-pw")
    client = srv.client()
    started = time.monotonic()
    with pytest.raises(sockftp.AuthFailed):
        client.request({"cmd": "auth", "user": "alice", "password": "wrong"})
    assert time.monotonic() - started >= 0.4


def test_parallel_guesses_from_one_address_are_stopped_by_the_ban(server):
    from sockftp.server.auth import BanList

    srv = server(anonymous=False, login_failure_delay=0.01, ban_failures=3, ban_time=60)
    add_user(srv.root, "alice", "alice-pw")
    socks = [srv.raw(timeout=30) for _ in range(16)]
    for attempt, sock in enumerate(socks):
        sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": f"guess{attempt}"}))
    errors = [recv_frame(sock)["error"] for sock in socks]
    # Each guess that got a password check is an auth_failed; the ban stops
    # the rest, however many sessions the address opened at once.
    assert errors.count("auth_failed") <= 3 + BanList.ATTEMPTS_PER_ADDRESS - 1
    assert errors.count("banned") >= 16 - (3 + BanList.ATTEMPTS_PER_ADDRESS - 1)


def test_the_client_never_sends_a_password_in_clear_when_given_a_ca():
    client = sockftp.Client(connect=False, tls_ca="ca.pem")
    assert client.tls


def test_a_made_up_command_name_cannot_forge_a_log_line(srv, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="sockftp")
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "x\n2026-11-27 00:00:00 INFO forged"}))
    assert recv_frame(sock)["error"] == "unknown_command"
    assert not any("\n" in record.getMessage() for record in caplog.records)


def test_the_account_database_and_its_journal_are_private(server):
    import os
    import stat

    srv = server(anonymous=False)
    add_user(srv.root, "alice", "alice-pw")
    login(srv, "alice", "alice-pw")
    for suffix in ("", "-wal", "-shm"):
        path = users_db(str(srv.root)) + suffix
        if os.path.exists(path):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
