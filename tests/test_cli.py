"""The client commands of ``sockftp``, against a real server on a real socket.

Commands run in-process through click's CliRunner where only their output
matters, and as subprocesses where the process itself is under test: exit
statuses, what reaches stderr, and silence when not on a terminal.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from sockftp.cli import main
from sockftp.cli.progress import human_size
from sockftp.client import partial_path

MiB = 1024 * 1024


def cli(anonymous_server, *args):
    """Run a command in-process; its output, whatever the exit status."""
    return CliRunner().invoke(main, [*args, "--port", str(anonymous_server.port)], catch_exceptions=False)


def run(*args, env=None):
    """Run ``python -m sockftp ARGS`` as its own process, stdout and stderr piped."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "sockftp", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- transfers ---------------------------------------------------------------------------


def test_put_then_get_round_trip_is_byte_identical(anonymous_server, remote_root, local):
    # Above the client's resume threshold, so the streamed path is taken.
    data = os.urandom(3 * MiB + 17)
    (local / "report.bin").write_bytes(data)

    put = cli(anonymous_server, "put", "report.bin")
    assert put.exit_code == 0, put.output
    assert (remote_root / "report.bin").read_bytes() == data
    assert put.stdout.startswith("put report.bin -> /report.bin  3.0 MiB in ")
    assert put.stdout.rstrip().endswith("verified xxh3-128")

    got = cli(anonymous_server, "get", "/report.bin", "copy.bin")
    assert got.exit_code == 0, got.output
    assert (local / "copy.bin").read_bytes() == data
    assert got.stdout.startswith("get /report.bin -> copy.bin  3.0 MiB in ")


def test_put_into_existing_remote_directory_keeps_the_file_name(anonymous_server, remote_root, local):
    (local / "a.txt").write_text("alpha")
    (remote_root / "inbox").mkdir()

    assert cli(anonymous_server, "put", "a.txt", "inbox").exit_code == 0
    assert cli(anonymous_server, "put", "a.txt", "/new/").exit_code == 1  # no such directory: nothing guessed
    assert cli(anonymous_server, "put", "a.txt", "renamed.txt").exit_code == 0

    assert (remote_root / "inbox" / "a.txt").read_text() == "alpha"
    assert (remote_root / "renamed.txt").read_text() == "alpha"
    assert not (remote_root / "new").exists()


def test_put_to_a_name_ending_in_slash_goes_inside_that_directory(anonymous_server, remote_root, local):
    (local / "a.txt").write_text("alpha")
    (remote_root / "box").mkdir()

    result = cli(anonymous_server, "put", "a.txt", "box/")

    assert result.exit_code == 0, result.output
    assert (remote_root / "box" / "a.txt").read_text() == "alpha"


def test_get_into_existing_local_directory_keeps_the_file_name(anonymous_server, remote_root, local):
    (remote_root / "b.txt").write_text("beta")
    (local / "downloads").mkdir()

    result = cli(anonymous_server, "get", "b.txt", "downloads")

    assert result.exit_code == 0, result.output
    assert (local / "downloads" / "b.txt").read_text() == "beta"


def test_get_without_local_name_writes_to_the_current_directory(anonymous_server, remote_root, local):
    (remote_root / "docs").mkdir()
    (remote_root / "docs" / "c.txt").write_text("gamma")

    assert cli(anonymous_server, "get", "docs/c.txt").exit_code == 0
    assert (local / "c.txt").read_text() == "gamma"


def test_recursive_round_trip_keeps_the_tree_with_unicode_and_spaces(anonymous_server, remote_root, local):
    tree = local / "project"
    (tree / "sub dir" / "déjà vu").mkdir(parents=True)
    (tree / "empty").mkdir()
    files = {
        "top.txt": b"top",
        "sub dir/with space.txt": b"space",
        "sub dir/déjà vu/naïve ünïcode.bin": os.urandom(2 * MiB),
    }
    for name, data in files.items():
        (tree / name).write_bytes(data)

    put = cli(anonymous_server, "put", "-r", "project", "/backup")
    assert put.exit_code == 0, put.output
    assert "3 files" in put.stdout
    got = cli(anonymous_server, "get", "-r", "/backup", "restored")
    assert got.exit_code == 0, got.output

    for name, data in files.items():
        assert (remote_root / "backup" / name).read_bytes() == data
        assert (local / "restored" / name).read_bytes() == data
    assert (remote_root / "backup" / "empty").is_dir()


def test_recursive_put_defaults_to_the_directory_name_and_adds_to_it(anonymous_server, remote_root, local):
    (local / "photos").mkdir()
    (local / "photos" / "1.jpg").write_bytes(b"one")
    assert cli(anonymous_server, "put", "-r", "photos").exit_code == 0
    (local / "photos" / "2.jpg").write_bytes(b"two")

    # Run again (as after an interruption): same target, not photos/photos.
    assert cli(anonymous_server, "put", "-r", "photos").exit_code == 0

    assert sorted(p.name for p in (remote_root / "photos").iterdir()) == ["1.jpg", "2.jpg"]


def test_interrupted_download_resumes_and_says_so(anonymous_server, remote_root, local):
    data = os.urandom(2 * MiB)
    (remote_root / "big.bin").write_bytes(data)
    # What an interrupted get leaves behind: the first half, beside the target.
    with open(partial_path(str(local / "big.bin")), "wb") as part:
        part.write(data[:MiB])

    result = cli(anonymous_server, "get", "big.bin")

    assert result.exit_code == 0, result.output
    assert (local / "big.bin").read_bytes() == data
    assert "(resumed at 1.0 MiB)" in result.stdout


def test_quiet_transfer_prints_nothing(anonymous_server, remote_root, local):
    (local / "q.txt").write_text("quiet")

    result = cli(anonymous_server, "put", "-q", "q.txt")

    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == ""
    assert (remote_root / "q.txt").read_text() == "quiet"


# -- listing and changing the tree ---------------------------------------------------------------


def test_ls_prints_one_sorted_line_per_entry_like_ls_l(anonymous_server, remote_root):
    (remote_root / "zeta").mkdir()
    (remote_root / "alpha.txt").write_bytes(b"x" * 2048)
    (remote_root / "Mid.txt").write_bytes(b"12345")
    stamp = time.mktime((2024, 5, 17, 13, 45, 30, 0, 0, -1))
    os.utime(remote_root / "alpha.txt", (stamp, stamp))

    result = cli(anonymous_server, "ls")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["Mid.txt", "alpha.txt", "zeta/"]
    assert re.fullmatch(r"- +5 B \d{4}-\d\d-\d\d \d\d:\d\d Mid\.txt", lines[0])
    assert lines[1] == "-    2.0 KiB 2024-05-17 13:45 alpha.txt"
    assert re.fullmatch(r"d +0 B \d{4}-\d\d-\d\d \d\d:\d\d zeta/", lines[2])


def test_ls_json_prints_one_object_per_line(anonymous_server, remote_root):
    (remote_root / "d").mkdir()
    (remote_root / "d" / "f.txt").write_bytes(b"abc")

    result = cli(anonymous_server, "ls", "--json", "/d")

    assert result.exit_code == 0, result.output
    [entry] = [json.loads(line) for line in result.stdout.splitlines()]
    assert entry["name"] == "f.txt" and entry["type"] == "file" and entry["size"] == 3
    assert entry["mtime"] == pytest.approx(os.stat(remote_root / "d" / "f.txt").st_mtime)


def test_stat_prints_fields_and_the_checksum_only_when_asked(anonymous_server, remote_root):
    (remote_root / "s.txt").write_bytes(b"hello")

    plain = cli(anonymous_server, "stat", "s.txt")
    summed = cli(anonymous_server, "stat", "--checksum", "s.txt")

    assert plain.exit_code == 0 and summed.exit_code == 0
    assert "path:     /s.txt" in plain.stdout
    assert "type:     file" in plain.stdout
    assert "size:     5 (5 B)" in plain.stdout
    assert "checksum" not in plain.stdout
    assert re.search(r"^checksum: xxh3-128:[0-9a-f]{32}$", summed.stdout, re.M)


def test_mkdir_mv_rm_rmdir_change_the_remote_tree(anonymous_server, remote_root):
    assert cli(anonymous_server, "mkdir", "-p", "a/b/c").exit_code == 0
    assert (remote_root / "a" / "b" / "c").is_dir()
    assert cli(anonymous_server, "mkdir", "a").exit_code == 1  # exists, and no -p
    (remote_root / "a" / "f.txt").write_text("f")

    assert cli(anonymous_server, "mv", "a/f.txt", "a/g.txt").exit_code == 0
    assert (remote_root / "a" / "g.txt").read_text() == "f"
    assert cli(anonymous_server, "rm", "a/g.txt").exit_code == 0
    assert not (remote_root / "a" / "g.txt").exists()
    assert cli(anonymous_server, "rmdir", "a/b").exit_code == 1  # not empty
    assert cli(anonymous_server, "rmdir", "a/b/c").exit_code == 0
    assert not (remote_root / "a" / "b" / "c").exists()


def test_mv_into_an_existing_directory_moves_inside_it(anonymous_server, remote_root):
    (remote_root / "f.txt").write_text("f")
    (remote_root / "dest").mkdir()

    result = cli(anonymous_server, "mv", "f.txt", "dest")

    assert result.exit_code == 0, result.output
    assert (remote_root / "dest" / "f.txt").read_text() == "f"


def test_ping_names_the_server(anonymous_server):
    result = cli(anonymous_server, "ping")

    assert result.exit_code == 0
    assert "sockftp/" in result.stdout


# -- failures, as a real process sees them -------------------------------------------------------


def test_get_of_missing_file_exits_1_with_one_line(anonymous_server, local):
    result = run("get", "/missing.txt", "--port", str(anonymous_server.port))

    assert result.returncode == 1
    assert result.stderr == "sockftp: no such file or directory: /missing.txt\n"
    assert not list(local.iterdir())  # no partial left behind


def test_connection_refused_exits_3_with_one_line():
    port = unused_port()

    result = run("ls", "--port", str(port))

    assert result.returncode == 3
    assert result.stderr.startswith(f"sockftp: cannot connect to 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1


def test_missing_local_file_exits_4_with_one_line(anonymous_server, local):
    result = run("put", "nothing-here.txt", "--port", str(anonymous_server.port))

    assert result.returncode == 4
    assert result.stderr == "sockftp: nothing-here.txt: No such file or directory\n"


def test_put_of_a_directory_without_r_exits_4(anonymous_server, local):
    (local / "folder").mkdir()

    result = run("put", "folder", "--port", str(anonymous_server.port))

    assert result.returncode == 4
    assert result.stderr.count("\n") == 1 and "use -r" in result.stderr


def test_bad_usage_exits_2():
    assert run("mv", "only-one-argument").returncode == 2
    assert run("ls", "--port", "notanumber").returncode == 2


def test_host_and_port_come_from_the_environment(anonymous_server):
    good = run("ping", env={"SOCKFTP_HOST": "127.0.0.1", "SOCKFTP_PORT": str(anonymous_server.port)})
    # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only.
    wrong_host = run("ping", env={"SOCKFTP_HOST": "127.0.0.2", "SOCKFTP_PORT": str(anonymous_server.port)})

    assert good.returncode == 0, good.stderr
    assert wrong_host.returncode == 3
    assert "127.0.0.2" in wrong_host.stderr


def test_transfers_show_no_progress_when_not_on_a_terminal(anonymous_server, local):
    (local / "big.bin").write_bytes(os.urandom(8 * MiB))

    put = run("put", "big.bin", "--port", str(anonymous_server.port))
    get = run("get", "big.bin", "copy.bin", "--port", str(anonymous_server.port))

    for result in (put, get):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert "\x1b" not in result.stdout and "\r" not in result.stdout
        assert len(result.stdout.splitlines()) == 1  # the summary, nothing else
    assert (local / "copy.bin").read_bytes() == (local / "big.bin").read_bytes()


def test_progress_flag_forces_bars_on(anonymous_server, local):
    (local / "big.bin").write_bytes(os.urandom(4 * MiB))

    result = run("put", "--progress", "big.bin", "--port", str(anonymous_server.port))

    assert result.returncode == 0
    assert "big.bin" in result.stderr and "MiB" in result.stderr
    assert result.stdout.startswith("put big.bin -> /big.bin")


def test_human_size_uses_binary_units():
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1024) == "1.0 KiB"
    assert human_size(10 * MiB) == "10.0 MiB"
    assert human_size(3 * 1024**4) == "3.0 TiB"
