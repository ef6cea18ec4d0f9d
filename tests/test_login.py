"""Logging in from the client side: the library, the command line and the shell.

Real servers without anonymous access (``anonymous=False``) on 127.0.0.1,
accounts in their real SQLite store, real files. Command-line runs that
depend on stdin, the environment or the exit status are subprocesses, with
stdin from /dev/null so that nothing can ever prompt.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from sockftp.accounts import Account, SqliteUserStore, hash_password, verify_password
from sockftp.cli import ServerAddress, main
from sockftp.cli.shell import Shell
from sockftp.client import Client
from sockftp.protocol.errors import AuthFailed, AuthRequired, Banned, PermissionDenied, SockftpError
from sockftp.server.config import users_db

MiB = 1024 * 1024
ALICE_PASSWORD = "alice's long passphrase"
BOB_PASSWORD = "bob reads only"


def add_user(root, name: str, password: str, **limits) -> None:
    store = SqliteUserStore(users_db(str(root)))
    try:
        store.add(Account(name, hash_password(password), **limits))
    finally:
        store.close()


@pytest.fixture
def accounts_server(server):
    """A server without anonymous access, with alice (read-write) and bob (read-only)."""
    srv = server(anonymous=False, login_failure_delay=0.05)
    add_user(srv.root, "alice", ALICE_PASSWORD)
    add_user(srv.root, "bob", BOB_PASSWORD, read_only=True)
    return srv


def home(srv, name: str):
    return srv.root / "users" / name


def sockftp(srv, *args, user=None, password=None, stdin_text=None, env=None):
    """``python -m sockftp ARGS --port PORT`` as a process: stdin from
    /dev/null (or *stdin_text*), SOCKFTP_* variables only as given."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKFTP_")}
    if user is not None:
        full_env["SOCKFTP_USER"] = user
    if password is not None:
        full_env["SOCKFTP_PASSWORD"] = password
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sockftp", *args, "--port", str(srv.port)],
        input=stdin_text,
        stdin=None if stdin_text is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        cwd=srv.root.parent,
    )


# -- the library -------------------------------------------------------------------------------


def test_client_logs_in_and_works_in_its_home(accounts_server, files):
    local = files("a.txt", b"alpha")
    client = accounts_server.client(user="alice", password=ALICE_PASSWORD)
    client.put(local, "a.txt")
    assert (home(accounts_server, "alice") / "a.txt").read_bytes() == b"alpha"
    assert [e.name for e in client.ls("/")] == ["a.txt"]


def test_client_without_a_login_is_refused_by_a_server_without_anonymous_access(accounts_server):
    client = accounts_server.client()
    client.ping()  # allowed before logging in
    with pytest.raises(AuthRequired):
        client.ls("/")


def test_client_with_a_user_but_no_password_never_prompts(accounts_server):
    with pytest.raises(ValueError, match="needs password= too: the library never prompts"):
        Client("127.0.0.1", accounts_server.port, user="alice")
    with pytest.raises(ValueError, match="needs user= too"):
        Client("127.0.0.1", accounts_server.port, password="x", connect=False)


def test_client_with_a_wrong_password_fails_with_auth_failed(accounts_server):
    with pytest.raises(AuthFailed) as info:
        accounts_server.client(user="alice", password="not it")
    assert info.value.code == "auth_failed"
    assert info.value.message == "wrong user name or password"
    with pytest.raises(AuthFailed):
        accounts_server.client(user="nobody", password="not it")


def test_client_auth_switches_user_on_the_live_connection(accounts_server, files):
    local = files("b.txt", b"bravo")
    client = accounts_server.client(user="alice", password=ALICE_PASSWORD)
    client.mkdir("docs")
    client.cd("docs")

    reply = client.auth("bob", BOB_PASSWORD)
    assert (reply["user"], reply["read_only"]) == ("bob", True)
    assert client.pwd() == "/"  # a new user starts at the top of their home
    with pytest.raises(PermissionDenied):
        client.put(local, "b.txt")

    # A refused switch leaves the current login in force.
    with pytest.raises(AuthFailed):
        client.auth("alice", "wrong")
    assert client.quota()["user"] == "bob"

    # The new user is the one a reconnect logs in as.
    client.close()
    assert client.quota()["user"] == "bob"


def test_client_reconnect_logs_in_again(accounts_server, files):
    data = os.urandom(2 * MiB + 5)  # above the resume threshold: a streamed, resumable upload
    local = files("big.bin", data)
    client = accounts_server.client(user="alice", password=ALICE_PASSWORD, retries=3)
    client.mkdir("inbox")
    client.cd("inbox")

    accounts_server.server.sessions.interrupt(idle_only=False)  # the server cuts every connection
    result = client.put(local, "big.bin")  # finds the connection dead, reconnects, logs in, resumes

    assert result.size == len(data)
    assert (home(accounts_server, "alice") / "inbox" / "big.bin").read_bytes() == data
    assert client.pwd() == "/inbox"
    assert client.quota()["user"] == "alice"


def test_client_quota_reports_usage_and_limits(server, files):
    srv = server(anonymous=False)
    add_user(srv.root, "carol", "carol's", quota_bytes=10 * MiB, max_files=5)
    client = srv.client(user="carol", password="carol's")
    client.put(files("c.bin", b"c" * 1000), "c.bin")
    reply = client.quota()
    assert reply["user"] == "carol"
    assert (reply["used_bytes"], reply["used_files"]) == (1000, 1)
    assert (reply["quota_bytes"], reply["max_files"]) == (10 * MiB, 5)


def test_passwords_never_reach_the_server_log(accounts_server, caplog):
    caplog.set_level(logging.DEBUG)
    accounts_server.client(user="alice", password=ALICE_PASSWORD).ls("/")
    with pytest.raises(AuthFailed):
        accounts_server.client(user="alice", password="a wrong secret")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "login user=alice" in text  # the audit lines are there...
    assert ALICE_PASSWORD not in text and "a wrong secret" not in text  # ...without the passwords


# -- the command line --------------------------------------------------------------------------


def test_cli_put_and_get_with_user_and_password_from_the_environment(accounts_server, tmp_path):
    data = os.urandom(3 * MiB + 11)
    (tmp_path / "up.bin").write_bytes(data)

    put = sockftp(accounts_server, "put", str(tmp_path / "up.bin"), "--user", "alice", password=ALICE_PASSWORD)
    assert put.returncode == 0, put.stderr
    assert (home(accounts_server, "alice") / "up.bin").read_bytes() == data
    assert put.stdout.startswith(f"put {tmp_path / 'up.bin'} -> /up.bin  3.0 MiB in ")

    # SOCKFTP_USER works as --user does.
    get = sockftp(accounts_server, "get", "up.bin", str(tmp_path / "down.bin"), user="alice", password=ALICE_PASSWORD)
    assert get.returncode == 0, get.stderr
    assert (tmp_path / "down.bin").read_bytes() == data
    for result in (put, get):
        assert ALICE_PASSWORD not in result.stdout + result.stderr


def test_cli_wrong_password_is_one_line_and_status_1(accounts_server):
    result = sockftp(accounts_server, "ls", "--user", "alice", password="not the password")
    assert result.returncode == 1
    assert result.stderr == "sockftp: wrong user name or password\n"
    assert result.stdout == ""


def test_cli_without_a_password_or_a_terminal_says_how_to_give_one(accounts_server):
    result = sockftp(accounts_server, "ls", "--user", "alice")
    assert result.returncode == 2
    assert result.stderr == "sockftp: no password for alice: set SOCKFTP_PASSWORD or run interactively\n"
    accounts_server.wait_idle()
    assert accounts_server.session_count == 0


def test_cli_without_a_user_on_a_server_that_needs_one_says_how_to_log_in(accounts_server):
    result = sockftp(accounts_server, "ls")
    assert result.returncode == 1
    assert result.stderr == "sockftp: this server needs a login: use --user NAME or set SOCKFTP_USER\n"


def test_cli_read_only_user_cannot_put_but_can_get(accounts_server, tmp_path):
    (home(accounts_server, "bob") / "shared.txt").parent.mkdir(parents=True)
    (home(accounts_server, "bob") / "shared.txt").write_text("read me")
    (tmp_path / "new.txt").write_text("write me")

    put = sockftp(accounts_server, "put", str(tmp_path / "new.txt"), user="bob", password=BOB_PASSWORD)
    assert put.returncode == 1
    assert put.stderr == "sockftp: bob has read-only access\n"
    assert not (home(accounts_server, "bob") / "new.txt").exists()

    get = sockftp(accounts_server, "get", "shared.txt", str(tmp_path / "copy.txt"), user="bob", password=BOB_PASSWORD)
    assert get.returncode == 0, get.stderr
    assert (tmp_path / "copy.txt").read_text() == "read me"


def test_cli_ban_is_a_server_error(server):
    srv = server(anonymous=False, login_failure_delay=0.05, ban_failures=2)
    add_user(srv.root, "alice", ALICE_PASSWORD)
    first = sockftp(srv, "ls", "--user", "alice", password="wrong 1")
    assert (first.returncode, first.stderr) == (1, "sockftp: wrong user name or password\n")
    second = sockftp(srv, "ls", "--user", "alice", password="wrong 2")
    assert second.returncode == 1
    assert second.stderr.startswith("sockftp: too many failed logins from 127.0.0.1")
    # Banned at connect now, even with the right password.
    third = sockftp(srv, "ls", "--user", "alice", password=ALICE_PASSWORD)
    assert third.returncode == 1
    assert third.stderr.startswith("sockftp: too many failed logins from 127.0.0.1")
    with pytest.raises(Banned):
        srv.client(user="alice", password=ALICE_PASSWORD)


def test_cli_quota_prints_usage_and_limits(server, tmp_path):
    srv = server(anonymous=False)
    add_user(srv.root, "carol", "carol's", quota_bytes=4 * MiB)
    (tmp_path / "one.bin").write_bytes(b"1" * MiB)
    assert sockftp(srv, "put", str(tmp_path / "one.bin"), user="carol", password="carol's").returncode == 0

    result = sockftp(srv, "quota", user="carol", password="carol's")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "user:      carol",
        "used:      1.0 MiB in 1 file",
        "quota:     4.0 MiB (25% used, 3.0 MiB free)",
        "max files: unlimited",
    ]


def test_cli_quota_json_is_the_reply(server):
    srv = server(anonymous=False)
    add_user(srv.root, "carol", "carol's", max_files=7)
    result = sockftp(srv, "quota", "--json", user="carol", password="carol's")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["user"] == "carol"
    assert (reply["used_bytes"], reply["used_files"], reply["quota_bytes"], reply["max_files"]) == (0, 0, None, 7)


@pytest.mark.parametrize(
    "command", ["put", "get", "ls", "stat", "mkdir", "rmdir", "rm", "mv", "ping", "quota", "shell"]
)
def test_every_client_command_takes_user_and_tls_options(command):
    help_text = CliRunner().invoke(main, [command, "--help"]).output
    for option in ("--user", "SOCKFTP_USER", "--tls", "SOCKFTP_TLS", "--tls-ca", "SOCKFTP_TLS_CA", "--insecure"):
        assert option in help_text, f"{command} --help lacks {option}"


def test_tls_ca_and_insecure_imply_tls_and_exclude_each_other(tmp_path):
    assert ServerAddress("h", 1, 1.0).tls is False
    assert ServerAddress("h", 1, 1.0, tls=True).tls is True
    assert ServerAddress("h", 1, 1.0, tls_ca="ca.pem").tls is True
    assert ServerAddress("h", 1, 1.0, insecure=True).tls is True

    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    result = CliRunner().invoke(main, ["ls", "--tls-ca", str(ca), "--insecure"])
    assert result.exit_code == 2
    assert "--insecure and --tls-ca contradict each other" in result.output
    missing = CliRunner().invoke(main, ["ls", "--tls-ca", str(tmp_path / "missing.pem")])
    assert missing.exit_code == 2


# -- the shell ---------------------------------------------------------------------------------


def test_piped_shell_logs_in_from_the_environment(accounts_server, tmp_path):
    (tmp_path / "s.txt").write_text("via the shell")
    script = f"put {tmp_path / 's.txt'}\nls\nquota\n"
    result = sockftp(accounts_server, "shell", user="alice", password=ALICE_PASSWORD, stdin_text=script)
    assert result.returncode == 0, result.stderr
    assert (home(accounts_server, "alice") / "s.txt").read_text() == "via the shell"
    assert "s.txt" in result.stdout
    assert "user:      alice" in result.stdout


def test_shell_reconnects_as_the_same_user(accounts_server):
    client = Client("127.0.0.1", accounts_server.port, user="alice", password=ALICE_PASSWORD, retries=3)
    out, err = io.StringIO(), io.StringIO()
    shell = Shell(client, stdin=io.StringIO(), stdout=out, stderr=err, interactive=True)
    try:
        shell.onecmd("mkdir work")
        shell.onecmd("cd work")
        accounts_server.server.sessions.interrupt(idle_only=False)
        accounts_server.wait_idle()
        out.truncate(0)
        out.seek(0)
        # The cut is seen before the request goes out: it goes on a new
        # connection, logged in again, back in /work, without an error.
        shell.onecmd("quota")
        shell.onecmd("pwd")
        assert err.getvalue() == ""
        assert out.getvalue().splitlines()[0] == "user:      alice"
        assert out.getvalue().splitlines()[-1] == "/work"
    finally:
        client.close()


def test_shell_quota_takes_no_arguments(accounts_server):
    client = Client("127.0.0.1", accounts_server.port, user="alice", password=ALICE_PASSWORD)
    err = io.StringIO()
    shell = Shell(client, stdin=io.StringIO(), stdout=io.StringIO(), stderr=err, interactive=True)
    try:
        shell.onecmd("quota extra")
        assert err.getvalue() == "error: usage: quota\n"
    finally:
        client.close()


def test_a_library_error_carries_no_password(accounts_server):
    try:
        accounts_server.client(user="alice", password="secret guess")
    except SockftpError as exc:
        assert "secret guess" not in str(exc) + repr(exc.details)
    else:
        pytest.fail("the login should have failed")


# -- over TLS ----------------------------------------------------------------------------------


@pytest.fixture
def tls_server(server, tmp_path):
    """A server speaking only TLS, with a certificate for 127.0.0.1 from a
    throwaway CA (its certificate in ``.ca_file``), and alice's account."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.private_key_pem.write_to_path(paths["key"])
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(paths["cert"], append=index > 0)
    srv = server(anonymous=False, tls_cert=str(paths["cert"]), tls_key=str(paths["key"]))
    add_user(srv.root, "alice", ALICE_PASSWORD)
    srv.ca_file = paths["ca"]
    return srv


def test_cli_logs_in_over_tls_trusting_a_private_ca(tls_server, tmp_path):
    (tmp_path / "t.txt").write_text("over tls")
    ca = str(tls_server.ca_file)
    put = sockftp(tls_server, "put", str(tmp_path / "t.txt"), "--tls-ca", ca, user="alice", password=ALICE_PASSWORD)
    assert put.returncode == 0, put.stderr
    assert (home(tls_server, "alice") / "t.txt").read_text() == "over tls"

    # The CA from the environment, and TLS implied by it.
    ls = sockftp(tls_server, "ls", user="alice", password=ALICE_PASSWORD, env={"SOCKFTP_TLS_CA": ca})
    assert ls.returncode == 0, ls.stderr
    assert "t.txt" in ls.stdout


def test_cli_tls_verifies_by_default_and_insecure_must_be_asked_for(tls_server):
    untrusted = sockftp(tls_server, "ls", "--tls", user="alice", password=ALICE_PASSWORD)
    assert untrusted.returncode == 3  # a connection problem, not a local file problem
    assert untrusted.stderr.startswith("sockftp: ") and "not trusted" in untrusted.stderr
    assert len(untrusted.stderr.splitlines()) == 1

    insecure = sockftp(tls_server, "ls", "--insecure", user="alice", password=ALICE_PASSWORD)
    assert insecure.returncode == 0, insecure.stderr

    plaintext = sockftp(tls_server, "ls", user="alice", password=ALICE_PASSWORD)
    assert plaintext.returncode == 1
    assert plaintext.stderr.startswith("sockftp: ")


# -- on a terminal -----------------------------------------------------------------------------


def run_in_terminal(args: list[str], dialogue: list[tuple[str, str]], env: dict | None = None, timeout: float = 30):
    """Run ``python -m sockftp ARGS`` on a new pseudo-terminal (its
    controlling terminal, so getpass uses it); for each (prompt, answer) in
    *dialogue*, wait for the prompt and type the answer. Returns (status,
    everything the terminal showed)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SOCKFTP_")}
    full_env.update(env or {})
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, whatever happens
        try:
            os.execve(sys.executable, [sys.executable, "-m", "sockftp", *args], full_env)
        finally:
            os._exit(127)
    shown = b""
    deadline = time.monotonic() + timeout

    def read_until(predicate) -> None:
        nonlocal shown
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise AssertionError(f"timed out; the terminal showed {shown!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                return
            shown += chunk

    try:
        for prompt, answer in dialogue:
            seen = len(shown)
            read_until(lambda prompt=prompt, seen=seen: prompt.encode() in shown[seen:])
            time.sleep(0.05)  # let getpass turn echo off before typing
            os.write(fd, answer.encode() + b"\n")
        read_until(lambda: False)  # to the end
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_cli_asks_for_the_password_on_a_terminal_without_echo(accounts_server):
    (home(accounts_server, "alice") / "x.txt").parent.mkdir(parents=True)
    (home(accounts_server, "alice") / "x.txt").write_text("x")
    prompt = f"Password for alice at 127.0.0.1:{accounts_server.port}: "
    status, shown = run_in_terminal(
        ["ls", "--user", "alice", "--port", str(accounts_server.port)], [(prompt, ALICE_PASSWORD)]
    )
    assert status == 0, shown
    assert "x.txt" in shown
    assert ALICE_PASSWORD not in shown


def test_user_add_on_a_terminal_asks_twice_until_both_match(tmp_path):
    root = tmp_path / "root"
    status, shown = run_in_terminal(
        ["user", "add", "alice", "--root", str(root)],
        [
            ("New password: ", "first try"),
            ("Repeat the password: ", "typo"),
            ("New password: ", "second try"),
            ("Repeat the password: ", "second try"),
        ],
    )
    assert status == 0, shown
    assert "do not match" in shown
    assert "added user alice" in shown
    assert "first try" not in shown and "second try" not in shown
    store = SqliteUserStore(users_db(str(root)))
    try:
        assert verify_password(store.get("alice").password_hash, "second try")
    finally:
        store.close()
