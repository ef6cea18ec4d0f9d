"""``sockftp sync up`` and ``sockftp sync down``: output, exit statuses, Ctrl-C."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import wait_until
from test_sync import build, tree_of

from sockftp.cli import main
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig

MiB = 1024 * 1024


def cli(anonymous_server, *args):
    """Run a command in-process; stdout and stderr apart."""
    return CliRunner().invoke(main, [*args, "--port", str(anonymous_server.port)], catch_exceptions=False)


def test_sync_up_prints_one_summary_line_and_a_rerun_sends_nothing(anonymous_server, remote_root, tmp_path):
    build(tmp_path / "photos", {"a.jpg": os.urandom(5000), "2024/b.jpg": os.urandom(3 * MiB)}, dirs=["empty"])
    first = cli(anonymous_server, "sync", "up", str(tmp_path / "photos"), "/backup/photos")
    assert first.exit_code == 0, first.output
    assert re.fullmatch(
        r"sync up: 2 files checked, 2 sent \(3\.0 MiB\), 0 deleted, 0 failed in \d+\.\d\d s\n", first.stdout
    )
    assert first.stderr == ""
    again = cli(anonymous_server, "sync", "up", str(tmp_path / "photos"), "/backup/photos")
    assert re.fullmatch(r"sync up: 2 files checked, 0 sent, 0 deleted, 0 failed in \d+\.\d\d s\n", again.stdout)
    down = cli(anonymous_server, "sync", "down", "/backup/photos", str(tmp_path / "copy"), "-q")
    assert down.exit_code == 0 and down.stdout == ""
    assert tree_of(tmp_path / "copy") == tree_of(tmp_path / "photos") == tree_of(remote_root / "backup" / "photos")


def test_a_dry_run_prints_each_change_and_changes_nothing(anonymous_server, remote_root, tmp_path):
    build(tmp_path / "src", {"new.txt": b"n", "dir/in.txt": b"i", "bad\x1bname": b"b"}, dirs=[])
    build(remote_root / "dst", {"old.txt": b"o"}, dirs=[])
    result = cli(anonymous_server, "sync", "up", str(tmp_path / "src"), "dst", "--dry-run", "--delete")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "+ bad?name",  # never a control character to the terminal
        "d dir/",
        "+ dir/in.txt",
        "+ new.txt",
        "- old.txt",
        "sync up (dry run): 3 files checked, 3 to send (3 B), 1 to delete",
    ]
    assert tree_of(remote_root / "dst") == {"old.txt": ("file", b"o")}


def test_exclude_and_delete_from_the_command_line(anonymous_server, remote_root, tmp_path):
    build(tmp_path / "src", {"keep.txt": b"k", "skip.tmp": b"s", "cache/x": b"c"}, dirs=[])
    build(remote_root / "dst", {"gone.txt": b"g", "kept.tmp": b"t"}, dirs=[])
    result = cli(
        anonymous_server,
        "sync",
        "up",
        str(tmp_path / "src"),
        "dst",
        "--delete",
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache/",
    )
    assert result.exit_code == 0, result.output
    assert "1 deleted" in result.stdout
    assert tree_of(remote_root / "dst") == {"keep.txt": ("file", b"k"), "kept.tmp": ("file", b"t")}


def test_failed_files_get_a_line_each_and_the_status_of_the_first(anonymous_server, remote_root, tmp_path):
    build(tmp_path / "src", {"ok": b"ok", ".sockftp-a": b"a", "d/.sockftp-b": b"b"}, dirs=[])
    result = cli(anonymous_server, "sync", "up", str(tmp_path / "src"), "dst")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("sockftp: ") for line in lines)
    assert lines[0].startswith("sockftp: .sockftp-a: ") and "reserved" in lines[0]
    assert "1 sent" in result.stdout and "2 failed" in result.stdout
    assert (remote_root / "dst" / "ok").read_bytes() == b"ok"


def test_exit_statuses_are_those_of_put_and_get(anonymous_server, tmp_path):
    missing_local = cli(anonymous_server, "sync", "up", str(tmp_path / "nothing"), "dst")
    assert missing_local.exit_code == 4
    assert missing_local.stderr.count("\n") == 1 and "No such file or directory" in missing_local.stderr
    missing_remote = cli(anonymous_server, "sync", "down", "/nothing", str(tmp_path / "here"))
    assert missing_remote.exit_code == 1 and missing_remote.stderr == "sockftp: no such directory: /nothing\n"
    assert not (tmp_path / "here").exists()
    with_a_file = cli(anonymous_server, "sync", "down", "/", str(tmp_path / "file"))
    assert with_a_file.exit_code == 0  # (an empty remote root into a new directory)
    (tmp_path / "plain").write_bytes(b"")
    onto_a_file = cli(anonymous_server, "sync", "down", "/", str(tmp_path / "plain"))
    assert onto_a_file.exit_code in (2, 4)  # click refuses a file for a directory argument, or we do


def test_no_server_exits_3(tmp_path):
    build(tmp_path / "src", {"a": b"a"}, dirs=[])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(main, ["sync", "up", str(tmp_path / "src"), "dst", "--port", str(port)])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("sockftp: ")


@pytest.fixture
def paced_server(tmp_path):
    """An anonymous server whose sessions move at most 64 MiB/s: a sync of
    the tree below then lasts about a second however fast the machine, so
    a Ctrl-C within its first 0.4 s always finds it under way."""
    server = SockftpServer(ServerConfig(root=str(tmp_path / "paced"), port=0, anonymous=True, session_rate=64 * MiB))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.stop(0)


def test_ctrl_c_at_random_points_then_a_rerun_gives_the_same_tree(paced_server, tmp_path):
    anonymous_server, remote_root = paced_server, tmp_path / "paced" / "anonymous"
    files = {f"many/{i:04}.bin": os.urandom(random.randint(0, 20000)) for i in range(600)}
    files["big/one.bin"] = os.urandom(40 * MiB)
    files["big/two.bin"] = os.urandom(6 * MiB)
    source = build(tmp_path / "src", files, dirs=["empty/inside"])
    port = ["--port", str(anonymous_server.port)]
    up = [sys.executable, "-m", "sockftp", "sync", "up", str(source), "/copy", *port]
    down = [sys.executable, "-m", "sockftp", "sync", "down", "/copy", str(tmp_path / "back"), *port]
    rng = random.Random(21)
    for command, target in ((up, remote_root / "copy"), (down, tmp_path / "back")):
        statuses = []
        for _ in range(4):
            statuses.append(interrupt(anonymous_server, command, rng.uniform(0.0, 0.4)))
        assert 130 in statuses
        finish = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert finish.returncode == 0, finish.stderr
        assert tree_of(target) == tree_of(source)
        again = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert re.search(r" 0 (sent|received),", again.stdout), again.stdout
    # Nothing half-written is visible, and the partials were taken up.
    assert not list((remote_root / "copy").rglob(".sockftp-part-*"))
    assert not list((tmp_path / "back").rglob("*.sockftp-part"))


def interrupt(server, command: list[str], delay: float) -> int:
    """Run *command*, send it SIGINT *delay* s after it has connected; its exit status."""
    wait_until(lambda: len(server.sessions) == 0, timeout=10, what="the last run's sessions to end")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Not before it runs: Ctrl-C while Python imports is Python's business.
    wait_until(lambda: len(server.sessions) > 0 or proc.poll() is not None, timeout=20, what="a connection")
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    if proc.returncode == 130:
        assert err.count("\n") == 1 and err.startswith("interrupted: sync "), err
        assert err.rstrip().endswith("run the same command to resume")
    elif proc.returncode == -signal.SIGINT:
        # Too late: the sync was done, and Python was on its way out.
        assert err == "" and re.match(r"sync \w+: ", out), (out, err)
    else:
        assert proc.returncode == 0, err
    return proc.returncode


def test_starting_the_command_line_hashes_no_password():
    # Every client command starts a Python process (a sync is compared
    # with rsync, which starts in milliseconds). Importing the command line
    # used to hash a dummy password with argon2: 0.1 s of CPU at best, 0.8 s
    # measured on this project's 2-core VM, for nothing a client does.
    probe = (
        "import argon2\n"
        "def refuse(*args, **kwargs): raise SystemExit('argon2 hashed a password at import')\n"
        "argon2.PasswordHasher.hash = refuse\n"
        "import sockftp.cli, sockftp.accounts.passwords as p\n"
        "assert p.verify_password(None, 'anything') is False\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_dummy_hash_costs_what_a_real_one_costs():
    # An unknown user is checked against the dummy hash: it must carry
    # today's parameters, or a wrong user name would answer faster than a
    # wrong password.
    from sockftp.accounts import passwords

    assert not passwords.needs_rehash(passwords._DUMMY_HASH)
    assert passwords.verify_password(None, "sockftp: no such user") is False


def test_one_progress_bar_covers_the_whole_sync(anonymous_server, tmp_path):
    build(tmp_path / "src", {"a": os.urandom(3 * MiB), "b/c": os.urandom(2 * MiB), "d": b"small"}, dirs=[])
    result = cli(anonymous_server, "sync", "up", str(tmp_path / "src"), "dst", "--progress")
    assert result.exit_code == 0, result.output
    assert "sync up src" in result.stderr
    assert "5.0/5.0 MiB" in result.stderr  # the total of all files, not one file's
    assert result.stdout.startswith("sync up: 3 files checked, 3 sent (5.0 MiB)")
