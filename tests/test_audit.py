"""The audit log: one line per login, failed login, logout, token revocation,
transfer, deletion and rename, in its own file or in the main log, that no
client can forge."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time

import pytest
from conftest import encode_frame, recv_frame

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.protocol import checksum
from sockftp.protocol.errors import AuthFailed, Banned, PathRefused
from sockftp.server import audit
from sockftp.server.config import users_db

PASSWORD = "correct horse battery staple"

#: ``2026-11-27 10:00:00,123 event=...``: the time, then key=value pairs.
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (event=.*)$")


def audit_lines(path) -> list[str]:
    """The audit file's lines, without their time stamps."""
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "", "the last line is complete"
    records = []
    for line in lines[:-1]:
        match = LINE.match(line)
        assert match, f"not an audit line: {line!r}"
        records.append(match.group(1))
    return records


def fields(line: str) -> dict[str, str]:
    """``event=put path='/a b'`` -> {"event": "put", "path": "'/a b'"} (values as written)."""
    return dict(re.findall(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)", line))


@pytest.fixture
def accounts_server(server):
    """A server without anonymous access, where alice may log in."""
    srv = server(anonymous=False, login_failure_delay=0.05)
    store = SqliteUserStore(users_db(str(srv.root)))
    store.add(Account("alice", hash_password(PASSWORD)))
    store.close()
    return srv


def test_each_event_writes_one_line_with_user_ip_path_bytes_and_result(accounts_server, audit_file, files):
    srv = accounts_server
    local = files("a.txt", b"hello audit")
    with pytest.raises(AuthFailed):
        srv.client(user="bob", password="wrong")
    with srv.client(user="alice", password=PASSWORD) as client:
        client.put(str(local), "a.txt")
        client.get("a.txt", str(files.dir / "copy.txt"))
        client.mkdir("docs")
        client.mv("a.txt", "docs/b.txt")
        client.cd("docs")
        client.rm("b.txt")
        client.cd("/")
        client.rmdir("docs")
        client.ls("/")  # not audited
    srv.wait_idle()

    raw = audit_lines(audit_file)
    lines = [fields(line) for line in raw]
    assert [line["event"] for line in lines] == [
        "login-failed",
        "login",
        "put",
        "get",
        "mkdir",
        "mv",
        "rm",
        "rmdir",
        "revoke",  # the client's own token, at the end of the with block
        "logout",
    ]
    token_id = lines[1]["token_id"]
    assert re.fullmatch(r"[0-9a-f]{12}", token_id), "the client asked for a re-login token"
    assert raw[:4] == [
        "event=login-failed user=bob ip=127.0.0.1 method=password result=auth_failed banned=no",
        f"event=login user=alice ip=127.0.0.1 method=password token_id={token_id} result=ok",
        "event=put user=alice ip=127.0.0.1 path='/a.txt' bytes=11 result=ok",
        "event=get user=alice ip=127.0.0.1 path='/a.txt' bytes=11 result=ok",
    ]
    mkdir, mv, rm, rmdir, revoke, logout = lines[4:]
    assert mkdir["path"] == "'/docs'" and mkdir["result"] == "ok"
    assert (mv["path"], mv["target"], mv["result"]) == ("'/a.txt'", "'/docs/b.txt'", "ok")
    assert rm["path"] == "'/docs/b.txt'", "a relative path is logged from the session's directory"
    assert rmdir["path"] == "'/docs'"
    assert (revoke["user"], revoke["count"], revoke["result"]) == ("alice", "1", "ok")
    assert (logout["user"], logout["ip"]) == ("alice", "127.0.0.1")
    assert int(logout["in"]) > 11 and int(logout["out"]) > 11
    assert float(logout["duration"]) >= 0


def test_a_refused_command_is_logged_with_its_error_code(accounts_server, audit_file):
    with accounts_server.client(user="alice", password=PASSWORD) as client:
        with pytest.raises(Exception):  # noqa: B017 - any refusal
            client.rm("missing.txt")
    accounts_server.wait_idle()
    (rm,) = [fields(line) for line in audit_lines(audit_file) if line.startswith("event=rm ")]
    assert rm["path"] == "'/missing.txt'" and rm["result"] == "not_found"


def test_a_path_with_a_newline_cannot_forge_a_line(accounts_server, audit_file, files):
    forged = "x\n2026-01-01 00:00:00,000 event=rm user=root ip=10.0.0.1 path='/etc' result=ok"
    separator = "y\u2028event=rm user=root"  # a valid name, but a line break to some readers
    with accounts_server.client(user="alice", password=PASSWORD) as client:
        with pytest.raises(PathRefused):
            client.rm(forged)
        client.put(str(files("y.txt", b"y")), separator)
    with pytest.raises(AuthFailed):
        accounts_server.client(user="bob\nevent=login user=root", password="x")
    accounts_server.wait_idle()

    text = audit_file.read_text(encoding="utf-8")
    # login, rm, put, revoke (the client's token), logout, login-failed
    assert len(text.splitlines()) == len(audit_lines(audit_file)) == 6
    assert "user=root" not in [fields(line).get("user") for line in audit_lines(audit_file)]
    rm, put = [fields(line) for line in audit_lines(audit_file) if line.startswith(("event=rm ", "event=put "))]
    assert rm["path"] == repr(forged) and rm["result"] == "path_refused"
    assert put["path"] == repr("/" + separator) and "\\u2028" in put["path"]


def test_no_password_reaches_any_log(accounts_server, audit_file, caplog):
    caplog.set_level(logging.DEBUG)
    with accounts_server.client(user="alice", password=PASSWORD) as client:
        client.ping()
    with pytest.raises(AuthFailed):
        accounts_server.client(user="alice", password="not-the-" + PASSWORD)
    accounts_server.wait_idle()
    assert PASSWORD not in audit_file.read_text(encoding="utf-8")
    assert PASSWORD not in caplog.text


def test_a_banned_address_is_logged(server, audit_file):
    srv = server(anonymous=False, login_failure_delay=0.01, ban_failures=2)
    first, opened_before_the_ban = srv.client(), srv.client()
    with pytest.raises(AuthFailed):
        first.auth("mallory", "guess")
    with pytest.raises(Banned):  # the failure that got the address banned
        first.auth("mallory", "guess")
    with pytest.raises(Banned):
        opened_before_the_ban.auth("mallory", "guess")
    events = [fields(line) for line in audit_lines(audit_file)]
    assert [(e["event"], e["user"], e["result"], e["banned"]) for e in events] == [
        ("login-failed", "mallory", "auth_failed", "no"),
        ("login-failed", "mallory", "auth_failed", "yes"),
        ("login-failed", "mallory", "banned", "yes"),
    ]


def test_anonymous_sessions_are_audited_without_a_login(srv, audit_file, files):
    with srv.client() as client:
        client.put(str(files("a.txt", b"abc")), "a.txt")
    srv.wait_idle()
    (put,) = [fields(line) for line in audit_lines(audit_file)]  # no login, no logout
    assert (put["event"], put["user"], put["path"], put["bytes"]) == ("put", "anonymous", "'/a.txt'", "3")


def pipelined_puts(count: int) -> bytes:
    """*count* small puts in one buffer, as a pipelining client sends them."""
    frames = []
    for n in range(count):
        data = b"%d" % n
        header = {"cmd": "put", "path": f"f{n}", "size": len(data), "checksum": checksum.of_bytes(data)}
        frames.append(encode_frame(header) + data)
    return b"".join(frames)


def test_a_pipelined_batch_is_audited_before_its_replies_arrive(srv, audit_file):
    # The lines of a batch are held with its replies and written before
    # them: a client holding a reply finds its line in the file. The batch
    # ends with the start of a next header, so the server waits for the
    # rest of it with every reply held until then: they go out first.
    with srv.raw() as sock:
        sock.sendall(pipelined_puts(40) + b"\x00\x00")
        for _ in range(40):
            assert recv_frame(sock)["ok"] is True
        lines = [fields(line) for line in audit_lines(audit_file)]
        assert [(f["event"], f["path"], f["result"]) for f in lines] == [("put", f"'/f{n}'", "ok") for n in range(40)]


def test_no_reply_leaves_before_its_audit_line_is_written(srv, tmp_path):
    # The audit log is a pipe that is full: writing a line blocks until the
    # test reads. A put's reply must not reach the client before its line
    # is written, alone or last of a batch (its reply then leaves at once).
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
        audit.configure(str(fifo))
        with srv.raw() as sock:
            for batch in (1, 3):
                for size in (512, 1):  # fill the pipe, to the last byte
                    while True:
                        try:
                            os.write(filler, b"." * size)
                        except BlockingIOError:
                            break
                sock.sendall(pipelined_puts(batch))
                sock.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    sock.recv(1)  # the line is not written: no reply yet
                sock.settimeout(5)
                drained = b""
                while drained.count(b"event=put") < batch:
                    try:
                        drained += os.read(reader, 65536)
                    except BlockingIOError:
                        time.sleep(0.01)
                for _ in range(batch):
                    assert recv_frame(sock)["ok"] is True
    finally:
        audit.configure(None)
        os.close(filler)
        os.close(reader)


def test_without_a_file_audit_lines_go_to_the_main_log(srv, files, caplog):
    audit.configure(None)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)  # as serve --log-level warning: audit lines are written all the same
    try:
        with srv.client() as client:
            client.put(str(files("a.txt", b"abc")), "a.txt")
        srv.wait_idle()
    finally:
        root.setLevel(level)
    messages = [r.getMessage() for r in caplog.records if r.name == "sockftp.audit"]
    assert messages == ["event=put user=anonymous ip=127.0.0.1 path='/a.txt' bytes=3 result=ok"]


def test_configure_again_replaces_the_file(tmp_path):
    first, second = tmp_path / "one.log", tmp_path / "two.log"
    try:
        audit.configure(str(first))
        audit.record("test", n=1)
        audit.configure(str(second))
        audit.record("test", n=2)
    finally:
        audit.configure(None)
    assert audit_lines(first) == ["event=test n=1"]
    assert audit_lines(second) == ["event=test n=2"]
