"""Re-login tokens: issued at a password login, used instead of the password,
refused and counted like a wrong password, ended by expiry, revocation and
account changes; the client library and the command line using them.

Real servers on 127.0.0.1, accounts in their real SQLite store. Whether a
login ran argon2 is read from outside, in the audit log (``method=``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import add_user, assert_closed, encode_frame, recv_frame, wait_until

from sockftp.accounts import SqliteUserStore, hash_password, token_id
from sockftp.cli import main
from sockftp.client import Client
from sockftp.protocol.errors import AuthFailed, BadRequest, Banned
from sockftp.server.config import users_db

PASSWORD = "alice's long passphrase"
TOKEN = re.compile(r"^sockftp_[A-Za-z0-9_-]{43}$")
TOKEN_FAILED = "wrong user name or token (tokens expire, and are revoked when the password changes)"


def logins(audit_file) -> list[tuple[str, str, str]]:
    """(event, user, method) of every login and failed login so far."""
    text = audit_file.read_text(encoding="utf-8") if audit_file.exists() else ""
    return re.findall(r"event=(login|login-failed) user=(\S+) ip=\S+ method=(\w+)", text)


@pytest.fixture
def srv(server):
    """A server without anonymous access, where alice and bob may log in."""
    running = server(anonymous=False, login_failure_delay=0.05, ban_failures=100)
    add_user(running.root, "alice", PASSWORD)
    add_user(running.root, "bob", "bob's")
    return running


def store_of(running) -> SqliteUserStore:
    return SqliteUserStore(users_db(str(running.root)))


def raw_auth(running, **fields) -> dict:
    """The reply to one ``auth`` on a new raw connection."""
    sock = running.raw()
    sock.sendall(encode_frame({"cmd": "auth", **fields}))
    return recv_frame(sock)


def new_token(running, user: str = "alice", password: str = PASSWORD) -> str:
    reply = raw_auth(running, user=user, password=password, new_token=True)
    assert reply["ok"], reply
    return reply["token"]


def admin(running, *args: str, stdin: str = ""):
    return CliRunner().invoke(main, ["user", *args, "--root", str(running.root)], input=stdin)


# -- issuing and logging in ----------------------------------------------------------------------


def test_a_password_login_can_ask_for_a_token_and_the_token_logs_in_without_argon2(srv, audit_file):
    before = time.time()
    reply = raw_auth(srv, user="alice", password=PASSWORD, new_token=True)
    assert TOKEN.match(reply["token"]), reply
    assert before + 86400 - 5 <= reply["token_expires"] <= time.time() + 86400
    assert 86400 - 5 <= reply["token_expires_in"] <= 86400

    by_token = raw_auth(srv, user="alice", token=reply["token"])
    assert (by_token["ok"], by_token["user"], by_token["read_only"]) == (True, "alice", False)
    assert "token" not in by_token, "a token login never issues another token"
    assert by_token["token_expires"] == reply["token_expires"], "using a token does not extend it"
    assert logins(audit_file) == [("login", "alice", "password"), ("login", "alice", "token")]
    # Both lines name the same token, by its id and never by its value.
    text = audit_file.read_text()
    assert text.count(f"token_id={token_id(hashlib.sha256(reply['token'].encode()).hexdigest())}") == 2
    assert reply["token"] not in text


def test_without_new_token_a_password_login_issues_none(srv):
    reply = raw_auth(srv, user="alice", password=PASSWORD)
    assert reply == {"ok": True, "user": "alice", "read_only": False}
    with store_of(srv) as store:
        assert store.tokens("alice", time.time()) == []


def test_hello_announces_tokens_and_the_revoke_command(srv):
    info = srv.client().hello()
    assert "tokens" in info["features"]
    assert "revoke" in info["commands"]


def test_the_database_keeps_only_the_hash_of_a_token(srv):
    token = new_token(srv)
    assert raw_auth(srv, user="alice", token=token)["ok"]  # also writes last_used
    digest = hashlib.sha256(token.encode()).hexdigest()
    stored = b""
    for suffix in ("", "-wal"):
        path = users_db(str(srv.root)) + suffix
        if os.path.exists(path):
            stored += open(path, "rb").read()
    assert token.encode() not in stored
    assert token.removeprefix("sockftp_").encode() not in stored
    assert digest.encode() in stored
    with store_of(srv) as store:
        (record,) = store.tokens("alice", time.time())
    assert record.token_hash == digest
    assert record.last_used is not None and record.created <= record.last_used < record.expires


# -- refusals ------------------------------------------------------------------------------------


def test_a_token_login_does_not_wait_for_the_addresss_password_checks(srv):
    # Two password checks from 127.0.0.1 hold both of its slots (as two slow
    # argon2 checks would). A reconnect by token does no password work and
    # must not queue behind them: 300 token logins at once took 7x
    # pyftpdlib's time while they did (docs/BENCHMARKS.md).
    token = new_token(srv)
    bans = srv.server.authenticator.bans
    with bans.attempt("127.0.0.1"), bans.attempt("127.0.0.1"):
        started = time.monotonic()
        with Client(srv.host, srv.port, user="alice", token=token, timeout=10) as client:
            assert client.quota()["user"] == "alice"
        assert time.monotonic() - started < 5


def test_wrong_tokens_are_auth_failed_with_one_message(srv, audit_file):
    alices = new_token(srv)
    bobs = new_token(srv, "bob", "bob's")
    for user, token in [
        ("alice", "sockftp_" + "A" * 43),  # never issued
        ("alice", alices[:-1]),  # one character short
        ("alice", bobs),  # a live token, of another user
        ("nobody", alices),  # no such user
        ("alice", "\ud800"),  # a lone surrogate, valid JSON all the same
        ("alice", ""),
    ]:
        reply = raw_auth(srv, user=user, token=token)
        assert reply == {"ok": False, "error": "auth_failed", "message": TOKEN_FAILED}, (user, token)
    assert [m for event, _, m in logins(audit_file) if event == "login-failed"] == ["token"] * 6
    assert raw_auth(srv, user="alice", token=alices)["ok"], "the failures did not harm the real token"


def test_a_failed_token_login_counts_toward_the_ban_like_a_password(server):
    srv = server(anonymous=False, login_failure_delay=0.01, ban_failures=3)
    add_user(srv.root, "alice", PASSWORD)
    client = srv.client()
    with pytest.raises(AuthFailed):
        client.auth("alice", "wrong password")
    with pytest.raises(AuthFailed):
        client.auth("alice", token="sockftp_" + "x" * 43)
    with pytest.raises(Banned):  # the third failure, of either kind
        client.auth("alice", token="sockftp_" + "y" * 43)
    with pytest.raises(Banned):
        srv.client(user="alice", password=PASSWORD)


def test_a_failed_token_login_waits_the_failure_delay(server):
    srv = server(anonymous=False, login_failure_delay=0.5)
    add_user(srv.root, "alice", PASSWORD)
    started = time.monotonic()
    assert raw_auth(srv, user="alice", token="sockftp_" + "z" * 43)["error"] == "auth_failed"
    assert time.monotonic() - started >= 0.5


def test_an_expired_token_is_refused(server):
    srv = server(anonymous=False, login_failure_delay=0.01, token_lifetime=0.5)
    add_user(srv.root, "alice", PASSWORD)
    reply = raw_auth(srv, user="alice", password=PASSWORD, new_token=True)
    assert reply["token_expires_in"] == 0
    assert raw_auth(srv, user="alice", token=reply["token"])["ok"]
    time.sleep(0.6)
    assert raw_auth(srv, user="alice", token=reply["token"])["error"] == "auth_failed"


@pytest.mark.parametrize(
    "fields",
    [
        {"user": "alice"},
        {"user": "alice", "password": PASSWORD, "token": "sockftp_x"},
        {"user": "alice", "token": "sockftp_x", "new_token": True},
        {"user": "alice", "token": 5},
        {"user": "alice", "password": PASSWORD, "new_token": "yes"},
    ],
)
def test_malformed_auth_requests_are_bad_request(srv, fields):
    assert raw_auth(srv, **fields)["error"] == "bad_request"


# -- what ends a token ---------------------------------------------------------------------------


def test_changing_the_password_revokes_every_token(srv):
    tokens = [new_token(srv), new_token(srv)]
    bobs = new_token(srv, "bob", "bob's")
    result = admin(srv, "passwd", "alice", "--password-stdin", stdin="a new passphrase\n")
    assert result.exit_code == 0, result.output
    for token in tokens:
        assert raw_auth(srv, user="alice", token=token)["error"] == "auth_failed"
    assert raw_auth(srv, user="bob", token=bobs)["ok"], "another user's tokens stay"


def test_a_stronger_hash_of_the_same_password_keeps_the_tokens(srv):
    token = new_token(srv)
    with store_of(srv) as store:
        store.update("alice", password_hash=hash_password(PASSWORD), keep_tokens=True)
    assert raw_auth(srv, user="alice", token=token)["ok"]


def test_disabling_a_user_refuses_their_password_and_revokes_their_tokens(srv):
    token = new_token(srv)
    result = admin(srv, "set", "alice", "--disabled")
    assert result.exit_code == 0, result.output
    assert "disabled" in result.output
    assert raw_auth(srv, user="alice", token=token)["error"] == "auth_failed"
    assert raw_auth(srv, user="alice", password=PASSWORD)["error"] == "auth_failed"
    assert "disabled" in admin(srv, "list").output

    assert admin(srv, "set", "alice", "--enabled").exit_code == 0
    assert raw_auth(srv, user="alice", password=PASSWORD)["ok"]
    assert raw_auth(srv, user="alice", token=token)["error"] == "auth_failed", "enabling brings no token back"


def test_deleting_a_user_deletes_their_tokens(srv):
    token = new_token(srv)
    assert admin(srv, "del", "alice").exit_code == 0
    add_user(srv.root, "alice", PASSWORD)  # the same name again: a new account
    assert raw_auth(srv, user="alice", token=token)["error"] == "auth_failed"


def test_the_admin_lists_tokens_by_id_and_revokes_them(srv):
    tokens = [new_token(srv), new_token(srv)]
    listed = admin(srv, "tokens", "alice")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "EXPIRES", "LAST", "USED"]
    ids = [token_id(hashlib.sha256(t.encode()).hexdigest()) for t in tokens]
    assert [line.split()[0] for line in lines[1:]] == ids
    assert all(line.endswith("never") for line in lines[1:])
    assert not any(t in listed.output for t in tokens)

    result = admin(srv, "revoke-tokens", "alice")
    assert result.output == "revoked 2 tokens of alice\n"
    assert admin(srv, "tokens", "alice").output == "alice has no live tokens\n"
    assert raw_auth(srv, user="alice", token=tokens[0])["error"] == "auth_failed"
    assert admin(srv, "revoke-tokens", "nobody").exit_code == 1


def test_the_revoke_command_ends_one_token_or_all_and_keeps_the_session(srv):
    first, second, third = new_token(srv), new_token(srv), new_token(srv)
    bobs = new_token(srv, "bob", "bob's")
    client = srv.client(user="alice", token=first)
    assert client.revoke_token(second) == 1
    assert client.revoke_token(second) == 0, "already gone"
    assert client.revoke_token(bobs) == 0, "another user's token is not touched"
    assert raw_auth(srv, user="bob", token=bobs)["ok"]
    assert raw_auth(srv, user="alice", token=third)["ok"]
    assert client.revoke_all_tokens() == 2  # first (this session's own) and third
    assert client.quota()["user"] == "alice", "the session stays logged in"
    for token in (first, second, third):
        assert raw_auth(srv, user="alice", token=token)["error"] == "auth_failed"


def test_revoke_needs_a_login_and_exactly_one_of_token_and_all(srv):
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "revoke", "all": True}))
    assert recv_frame(sock)["error"] == "auth_required"
    client = srv.client(user="alice", password=PASSWORD)
    for fields in ({}, {"all": False}, {"token": "x", "all": True}, {"token": 1}):
        with pytest.raises(BadRequest):
            client.request({"cmd": "revoke", **fields})


def test_past_the_cap_the_oldest_token_of_that_user_is_dropped(server):
    srv = server(anonymous=False, login_failure_delay=0.01, max_tokens_per_user=3)
    add_user(srv.root, "alice", PASSWORD)
    add_user(srv.root, "bob", "bob's")
    bobs = new_token(srv, "bob", "bob's")
    tokens = [new_token(srv) for _ in range(5)]
    with store_of(srv) as store:
        live = {record.token_hash for record in store.tokens("alice", time.time())}
    assert live == {hashlib.sha256(t.encode()).hexdigest() for t in tokens[-3:]}
    assert raw_auth(srv, user="alice", token=tokens[0])["error"] == "auth_failed"
    assert raw_auth(srv, user="alice", token=tokens[-1])["ok"]
    assert raw_auth(srv, user="bob", token=bobs)["ok"], "the cap is per user"


def test_with_tokens_off_none_are_issued_or_accepted(server):
    first = server(anonymous=False, login_failure_delay=0.01)
    add_user(first.root, "alice", PASSWORD)
    token = new_token(first)  # a first server issues a token...
    off = server(root=first.root, anonymous=False, login_failure_delay=0.01, token_lifetime=0)
    assert "tokens" not in off.client().hello()["features"]
    assert raw_auth(off, user="alice", password=PASSWORD, new_token=True) == {
        "ok": True,
        "user": "alice",
        "read_only": False,
    }
    assert raw_auth(off, user="alice", token=token)["error"] == "auth_failed"  # ...that this one refuses
    client = off.client(user="alice", password=PASSWORD)
    assert client.token is None


# -- the client library --------------------------------------------------------------------------


def test_the_client_reconnects_with_its_token_and_never_runs_argon2_again(srv, audit_file, files):
    data = os.urandom(3 * 1024 * 1024)
    client = srv.client(user="alice", password=PASSWORD, retries=3)
    assert TOKEN.match(client.token)
    for _ in range(3):
        srv.server.sessions.interrupt(idle_only=False)  # the server cuts every connection
        client.put(files("big.bin", data), "big.bin")  # reconnects, logs in, resumes
    assert (srv.root / "users" / "alice" / "big.bin").read_bytes() == data
    wait_until(lambda: len(logins(audit_file)) == 4, what="four logins")
    assert logins(audit_file) == [("login", "alice", "password")] + [("login", "alice", "token")] * 3


def test_a_client_given_a_token_logs_in_with_it_and_does_not_revoke_it(srv, audit_file):
    token = new_token(srv)
    with Client("127.0.0.1", srv.port, user="alice", token=token, timeout=10) as client:
        assert client.quota()["user"] == "alice"
        assert client.token == token
        assert client.token_expires is not None
    assert raw_auth(srv, user="alice", token=token)["ok"], "the caller's token outlives the client"
    assert [m for _, _, m in logins(audit_file)] == ["password", "token", "token"]


def test_quit_revokes_the_token_the_client_asked_for_unless_it_keeps_it(srv):
    with Client("127.0.0.1", srv.port, user="alice", password=PASSWORD, timeout=10) as client:
        own = client.token
    assert raw_auth(srv, user="alice", token=own)["error"] == "auth_failed"

    with Client("127.0.0.1", srv.port, user="alice", password=PASSWORD, keep_token=True, timeout=10) as client:
        kept = client.token
    assert raw_auth(srv, user="alice", token=kept)["ok"]


def test_a_client_whose_token_was_revoked_falls_back_to_its_password(srv, audit_file):
    client = srv.client(user="alice", password=PASSWORD, retries=1)
    first = client.token
    assert admin(srv, "revoke-tokens", "alice").exit_code == 0
    srv.server.sessions.interrupt(idle_only=False)
    client.close()
    assert client.quota()["user"] == "alice"  # reconnects: the token fails, the password works
    assert client.token not in (None, first)
    assert logins(audit_file) == [
        ("login", "alice", "password"),
        ("login-failed", "alice", "token"),
        ("login", "alice", "password"),
    ]


def test_a_client_with_only_a_revoked_token_reports_auth_failed(srv):
    token = new_token(srv)
    client = srv.client(user="alice", token=token)
    client.revoke_token()
    assert client.token is None
    client.close()
    with pytest.raises(AuthFailed):
        client.quota()
    with pytest.raises(AuthFailed):
        Client("127.0.0.1", srv.port, user="alice", token=token, timeout=10)


def test_switching_user_revokes_the_old_own_token(srv):
    client = srv.client(user="alice", password=PASSWORD)
    alices = client.token
    client.auth("bob", "bob's")
    assert client.quota()["user"] == "bob"
    assert client.token not in (None, alices)
    assert raw_auth(srv, user="alice", token=alices)["error"] == "auth_failed"
    client.close()
    assert client.quota()["user"] == "bob", "the reconnect logs in as bob, by his token"


def test_a_refused_switch_keeps_the_token_of_the_login_in_force(srv):
    token = new_token(srv)
    client = srv.client(user="alice", token=token)
    with pytest.raises(AuthFailed):
        client.auth("bob", "not bob's")
    assert client.token == token
    client.close()
    assert client.quota()["user"] == "alice", "the reconnect still logs in as alice, by her token"


def test_a_switch_after_a_lost_connection_logs_in_the_new_user_only(srv, audit_file):
    client = srv.client(user="alice", password=PASSWORD)
    bobs = new_token(srv, "bob", "bob's")
    client.close()  # lost: the switch below makes the connection again
    client.auth("bob", token=bobs)
    assert client.token == bobs
    assert client.quota()["user"] == "bob"
    client.close()
    assert client.quota()["user"] == "bob", "the reconnect logs in as bob, by his token"
    assert logins(audit_file) == [
        ("login", "alice", "password"),
        ("login", "bob", "password"),  # new_token
        ("login", "bob", "token"),
        ("login", "bob", "token"),
    ], "alice is not logged in again, and bob's token is never tried under her name"


def test_a_switch_after_a_lost_connection_does_not_need_the_old_login(srv):
    client = srv.client(user="alice", token=new_token(srv))  # no password to fall back on
    client.close()
    client.auth("bob", "bob's")
    assert client.quota()["user"] == "bob"


def test_a_switch_on_a_connection_the_server_has_cut_connects_again(srv, audit_file):
    client = srv.client(user="alice", password=PASSWORD)  # revoking her own token will find the cut
    srv.server.sessions.interrupt(idle_only=False)
    client.auth("bob", "bob's")
    assert client.quota()["user"] == "bob"
    assert logins(audit_file) == [("login", "alice", "password"), ("login", "bob", "password")]


def test_a_switch_on_a_connection_cut_unnoticed_tries_once_more_on_a_new_one(srv, audit_file):
    client = srv.client(user="alice", token=new_token(srv))  # not its own: nothing to revoke first
    srv.server.sessions.interrupt(idle_only=False)
    client.auth("bob", "bob's")
    assert client.quota()["user"] == "bob"
    assert logins(audit_file)[-1] == ("login", "bob", "password")


def test_a_refused_switch_after_a_lost_connection_leaves_the_old_login_to_reconnect(srv, audit_file):
    client = srv.client(user="alice", password=PASSWORD)
    client.close()
    with pytest.raises(AuthFailed):
        client.auth("bob", "not bob's")
    assert client.quota()["user"] == "alice", "the next request logs alice in again"
    assert logins(audit_file) == [
        ("login", "alice", "password"),
        ("login-failed", "bob", "password"),
        ("login", "alice", "token"),
    ], "alice is logged in again after the refusal, by her token, not before it"


def test_the_client_needs_a_user_with_a_token():
    with pytest.raises(ValueError, match="needs user= too"):
        Client(token="sockftp_x", connect=False)


# -- the command line ---------------------------------------------------------------------------


def sockftp(srv, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKFTP_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sockftp", *args, "--port", str(srv.port)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_cli_token_new_then_commands_log_in_without_a_password(srv, audit_file):
    new = sockftp(srv, "token", "new", "--user", "alice", env={"SOCKFTP_PASSWORD": PASSWORD})
    assert new.returncode == 0, new.stderr
    token = new.stdout.strip()
    assert TOKEN.match(token) and new.stdout == token + "\n"
    assert new.stderr.startswith(f"token for alice at 127.0.0.1:{srv.port}, valid until ")

    # No password anywhere, stdin not a terminal: the token alone logs in.
    ls = sockftp(srv, "ls", "--user", "alice", env={"SOCKFTP_TOKEN": token})
    assert ls.returncode == 0, ls.stderr
    assert [m for _, _, m in logins(audit_file)] == ["password", "token"]

    revoke = sockftp(srv, "token", "revoke", "--user", "alice", env={"SOCKFTP_TOKEN": token})
    assert (revoke.returncode, revoke.stdout) == (0, "revoked the token\n"), revoke.stderr
    refused = sockftp(srv, "ls", "--user", "alice", env={"SOCKFTP_TOKEN": token})
    assert refused.returncode == 1
    hint = "get a new token with: sockftp token new (or unset SOCKFTP_TOKEN)"
    assert refused.stderr == f"sockftp: {TOKEN_FAILED}; {hint}\n"

    # With the password too, a refused token falls back to it.
    both = sockftp(srv, "ls", "--user", "alice", env={"SOCKFTP_TOKEN": token, "SOCKFTP_PASSWORD": PASSWORD})
    assert both.returncode == 0, both.stderr


def test_cli_token_revoke_all(srv):
    tokens = [new_token(srv), new_token(srv)]
    result = sockftp(srv, "token", "revoke", "--all", "--user", "alice", env={"SOCKFTP_PASSWORD": PASSWORD})
    assert (result.returncode, result.stdout) == (0, "revoked 3 tokens of alice\n"), result.stderr  # and its own
    assert raw_auth(srv, user="alice", token=tokens[1])["error"] == "auth_failed"
    usage = sockftp(srv, "token", "revoke", "--user", "alice", env={"SOCKFTP_PASSWORD": PASSWORD})
    assert usage.returncode == 2 and "set SOCKFTP_TOKEN, or give --all" in usage.stderr


def test_a_wrong_token_can_get_the_address_banned_and_then_a_good_one_is_refused(server):
    srv = server(anonymous=False, login_failure_delay=0.01, ban_failures=1)
    add_user(srv.root, "alice", PASSWORD)
    token = new_token(srv)
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "token": "sockftp_wrong"}))
    assert recv_frame(sock)["error"] == "banned"
    assert_closed(sock)
    with pytest.raises(Banned):
        srv.client(user="alice", token=token)


def test_a_crowd_reconnecting_with_one_token_writes_its_use_once(srv, monkeypatch):
    # The token's "last used" is written at most once a minute. Without a
    # note of the write under way, every login that read the old time
    # before the first write landed wrote it again, each waiting for the
    # database's lock in turn (the soak: 500 sessions, seconds per reconnect).
    token = new_token(srv)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with store_of(srv) as store:
        store.touch_token(digest, time.time() - 120)  # last used two minutes ago
    users = srv.server.users
    writes = []
    real = users.touch_token

    def slow_touch(token_hash, now):
        writes.append(token_hash)
        time.sleep(0.3)  # a write waiting for the database's lock
        real(token_hash, now)

    monkeypatch.setattr(users, "touch_token", slow_touch)
    replies = []
    threads = [
        threading.Thread(target=lambda: replies.append(raw_auth(srv, user="alice", token=token))) for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [reply["user"] for reply in replies] == ["alice"] * 10
    assert writes == [digest]
