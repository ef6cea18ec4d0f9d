"""``sockftp shell``: piped into a real process, and driven in-process through
:class:`~sockftp.cli.shell.Shell` (commands and Tab completion) on a real anonymous_server."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from conftest import wait_until

from sockftp.cli.shell import Shell
from sockftp.client import Client


class Session:
    """A Shell on a real connection, with its output captured."""

    def __init__(self, port: int):
        self.client = Client("127.0.0.1", port, retries=3)
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.shell = Shell(self.client, stdin=io.StringIO(), stdout=self.out, stderr=self.err, interactive=True)

    def __call__(self, line: str) -> str:
        """Run one command line; what it printed on stdout."""
        self.out.seek(0)
        self.out.truncate()
        self.shell.onecmd(line)
        self.shell.postcmd(False, line)
        return self.out.getvalue()

    def complete(self, line: str) -> list[str]:
        """What Tab offers at the end of *line*, as readline would ask."""
        begidx = len(line) - len(line.split(" ")[-1])
        command = line.split()[0]
        return getattr(self.shell, f"complete_{command}")(line[begidx:], line, begidx, len(line))


@pytest.fixture
def session(anonymous_server, local):
    s = Session(anonymous_server.port)
    yield s
    s.client.close()


def run_shell(port: int, script: str):
    return subprocess.run(
        [sys.executable, "-m", "sockftp", "shell", "--port", str(port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- piped -------------------------------------------------------------------------------


def test_piped_commands_run_in_order_and_exit_0(anonymous_server, remote_root):
    result = run_shell(anonymous_server.port, "mkdir a\nls\n")

    assert result.returncode == 0, result.stderr
    assert (remote_root / "a").is_dir()
    assert result.stdout.splitlines()[0].endswith(" a/")
    assert "sockftp:" not in result.stdout  # no prompt when not interactive
    assert result.stderr == ""


def test_piped_error_prints_one_line_continues_and_exits_1(anonymous_server, remote_root):
    result = run_shell(anonymous_server.port, "rm nothing\nmkdir after\n")

    assert result.returncode == 1
    assert result.stderr == "error: no such file or directory: /nothing\n"
    assert (remote_root / "after").is_dir()


def test_piped_transfer_with_quoted_names_is_byte_identical(anonymous_server, remote_root, local):
    data = os.urandom(1024 * 1024 + 5)
    (local / "my file.bin").write_bytes(data)

    script = "mkdir 'in box'\ncd \"in box\"\nput 'my file.bin'\nget \"my file.bin\" copy.bin\n"
    result = subprocess.run(
        [sys.executable, "-m", "sockftp", "shell", "--port", str(anonymous_server.port)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=local,
    )

    assert result.returncode == 0, result.stderr
    assert (remote_root / "in box" / "my file.bin").read_bytes() == data
    assert (local / "copy.bin").read_bytes() == data


# -- in-process ----------------------------------------------------------------------------


def test_cd_changes_the_prompt_and_where_relative_paths_go(session, remote_root, local):
    (local / "f.txt").write_text("f")
    session("mkdir docs")

    session("cd docs")
    session("put f.txt")

    assert session.shell.prompt == "sockftp:/docs> "
    assert session("pwd") == "/docs\n"
    assert (remote_root / "docs" / "f.txt").read_text() == "f"
    assert "f.txt" in session("ls")


def test_lcd_changes_where_get_writes(session, remote_root, local):
    (remote_root / "g.txt").write_text("g")
    (local / "down").mkdir()

    session("lcd down")
    session("get g.txt")

    assert (local / "down" / "g.txt").read_text() == "g"
    assert session("lpwd") == f"{local / 'down'}\n"
    assert "g.txt" in session("lls")


def test_recursive_transfers_in_the_shell(session, remote_root, local):
    (local / "tree" / "ü dir").mkdir(parents=True)
    (local / "tree" / "ü dir" / "x y.txt").write_text("xy")

    session("put -r tree")
    session("get -r tree back")

    assert (remote_root / "tree" / "ü dir" / "x y.txt").read_text() == "xy"
    assert (local / "back" / "ü dir" / "x y.txt").read_text() == "xy"
    assert session.err.getvalue() == ""


def test_mkdir_mv_stat_rm_rmdir_in_the_shell(session, remote_root):
    session("mkdir -p a/b")
    (remote_root / "a" / "f.txt").write_text("hello")

    session("mv a/f.txt a/b")
    assert (remote_root / "a" / "b" / "f.txt").read_text() == "hello"
    stat = session("stat -c a/b/f.txt")
    assert "size:     5 (5 B)" in stat and "checksum: xxh3-128:" in stat
    session("rm a/b/f.txt")
    session("rmdir a/b")

    assert not (remote_root / "a" / "b").exists()
    assert session.err.getvalue() == ""


def test_an_error_prints_one_line_and_the_shell_goes_on(session, remote_root):
    session("rmdir nope")
    session("frobnicate")
    session("put")  # missing argument
    session("ls 'unclosed")
    session("mkdir ok")

    errors = session.err.getvalue().splitlines()
    assert len(errors) == 4 and all(line.startswith("error: ") for line in errors)
    assert "usage: put [-r] LOCAL [REMOTE]" in errors[2]
    assert (remote_root / "ok").is_dir()


def test_quit_exit_and_end_of_input_end_the_session(session):
    assert session.shell.onecmd("quit") is True
    assert session.shell.onecmd("exit") is True
    assert session.shell.onecmd("EOF") is True
    assert session.shell.onecmd("pwd") is False


def test_a_lost_connection_reconnects_on_the_next_command_in_the_same_directory(anonymous_server, session, remote_root):
    session("mkdir d")
    session("cd d")

    anonymous_server.sessions.interrupt(idle_only=False)  # the server cuts every connection
    wait_until(lambda: not anonymous_server.sessions)
    # The cut is seen before the next request goes out: it goes out on a
    # new connection, in the same directory, without an error.
    session("ls")
    assert session.err.getvalue() == ""

    assert session("pwd") == "/d\n"
    session("mkdir again")
    assert (remote_root / "d" / "again").is_dir()


def test_removing_the_working_directory_moves_to_its_parent_and_reconnects_there(anonymous_server, session):
    session("mkdir -p a/b")
    session("cd a/b")

    session("rmdir /a/b")
    assert session.shell.prompt == "sockftp:/a> "

    anonymous_server.sessions.interrupt(idle_only=False)
    session("ls")  # fails: the connection is gone
    assert session("pwd") == "/a\n"


def test_help_lists_the_commands(session):
    text = session("help")
    for name in ("cd", "get", "lcd", "lls", "mv", "put", "rmdir", "stat"):
        assert name in text
    assert "put [-r] LOCAL [REMOTE]" in session("help put")


# -- completion ----------------------------------------------------------------------------


@pytest.fixture
def tree(remote_root, local):
    (remote_root / "alps" / "deep").mkdir(parents=True)
    (remote_root / "alps" / "peak.txt").write_text("")
    (remote_root / "alpha.txt").write_text("")
    (remote_root / "beta.txt").write_text("")
    (remote_root / "my notes.txt").write_text("")
    (local / "local.txt").write_text("")
    (local / "lib").mkdir()


def test_complete_remote_names_with_a_slash_after_directories(session, tree):
    assert session.complete("get al") == ["alpha.txt", "alps/"]
    assert session.complete("rm alps/") == ["alps/deep/", "alps/peak.txt"]
    assert session.complete("stat /alps/p") == ["/alps/peak.txt"]
    assert session.complete("ls zz") == []


def test_complete_cd_offers_directories_only(session, tree):
    assert session.complete("cd ") == ["alps/"]
    assert session.complete("cd alps/") == ["alps/deep/"]


def test_complete_follows_the_remote_working_directory(session, tree):
    session("cd alps")
    assert session.complete("get pe") == ["peak.txt"]


def test_complete_put_offers_local_names_then_remote_ones(session, tree):
    assert session.complete("put l") == ["lib/", "local.txt"]
    assert session.complete("put local.txt al") == ["alpha.txt", "alps/"]
    assert session.complete("get -r al") == ["alpha.txt", "alps/"]
    assert session.complete("get alpha.txt l") == ["lib/", "local.txt"]
    assert session.complete("lcd ") == ["lib/"]


def test_complete_escapes_spaces_and_continues_after_them(session, tree):
    assert session.complete("get my") == ["my\\ notes.txt"]
    # readline splits at the escaped space; only the part after it is replaced
    assert session.complete("get my\\ n") == ["notes.txt"]
