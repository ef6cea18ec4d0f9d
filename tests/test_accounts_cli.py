"""``sockftp user ...``: the account administration commands, on real files.

They act on the account database in ``--root`` directly, with no server.
Commands run in-process through click's CliRunner (its stdin is never a
terminal, so passwords come with ``--password-stdin``); the last tests start
a real server to show that an account added this way can log in at once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from sockftp.accounts import SqliteUserStore, verify_password
from sockftp.cli import main, parse_size
from sockftp.protocol.errors import AuthFailed
from sockftp.server.config import MAX_SIZE, users_db

MiB = 1024 * 1024
PASSWORD = "correct horse battery staple"


def admin(root: Path, *args: str, password: str | None = None, env: dict | None = None):
    """Run ``sockftp user ARGS --root ROOT``; *password* is piped to stdin
    (with ``--password-stdin`` added) as one line."""
    extra = ["--password-stdin"] if password is not None else []
    stdin = password + "\n" if password is not None else ""
    return CliRunner().invoke(main, ["user", *args, *extra, "--root", str(root)], input=stdin, env=env)


def accounts(root: Path) -> dict:
    store = SqliteUserStore(users_db(str(root)))
    try:
        return {account.name: account for account in store.list()}
    finally:
        store.close()


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


# -- SIZE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        ("100", 100),
        ("0", 0),
        ("100B", 100),
        ("100b", 100),
        ("10k", 10 * 1024),
        ("10K", 10 * 1024),
        ("10KB", 10 * 1024),
        ("10KiB", 10 * 1024),
        ("10kib", 10 * 1024),
        ("500M", 500 * MiB),
        ("500m", 500 * MiB),
        ("2G", 2 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        ("1.5g", 3 * 1024**3 // 2),
        ("0.5K", 512),
        ("1.1K", 1126),  # a fraction of a unit rounds down to whole bytes
        ("3T", 3 * 1024**4),
        ("1P", 1024**5),
        ("2 G", 2 * 1024**3),
        (" 7M ", 7 * MiB),
        ("100.0", 100),
    ],
)
def test_parse_size_reads_binary_units_in_any_case(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", "M", "abc", "12X", "-5M", "5MM", "1e3", "100ib", "1.5", "5 GB extra", "0x10", "1,5G", "∞", "9" * 30],
)
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_refuses_sizes_an_account_cannot_hold():
    assert parse_size(str(MAX_SIZE)) == MAX_SIZE
    with pytest.raises(ValueError, match="too large"):
        parse_size("8192P")


def test_a_bad_quota_is_a_usage_error_that_names_the_option(root):
    result = admin(root, "add", "alice", "--quota", "12X", password=PASSWORD)
    assert result.exit_code == 2
    assert "Invalid value for '--quota'" in result.output
    assert "not a size: '12X'" in result.output
    assert not root.exists()  # refused before anything was created


# -- add -----------------------------------------------------------------------------------------


def test_add_stores_a_hash_never_the_password_and_creates_the_home(root):
    result = admin(root, "add", "alice", "--quota", "500M", "--max-files", "1000", password=PASSWORD)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("added user alice: quota 500.0 MiB, max files 1000, read-write\n")
    assert PASSWORD not in result.output

    account = accounts(root)["alice"]
    assert account.quota_bytes == 500 * MiB
    assert account.max_files == 1000
    assert account.read_only is False
    assert account.password_hash.startswith("$argon2id$")
    assert verify_password(account.password_hash, PASSWORD)
    assert not verify_password(account.password_hash, "wrong")
    assert (root / "users" / "alice").is_dir()

    # Not in the database, its journal, or anywhere else the command wrote.
    state = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "users.db" for p in state)
    for path in state:
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_add_without_limits_is_unlimited_and_read_only_is_kept(root):
    assert admin(root, "add", "bob", "--read-only", password=PASSWORD).exit_code == 0
    account = accounts(root)["bob"]
    assert (account.quota_bytes, account.max_files, account.read_only) == (None, None, True)


def test_password_stdin_strips_only_the_line_ending(root):
    assert admin(root, "add", "alice", password="  spaces inside and around  ").exit_code == 0
    assert admin(root, "add", "bob", password="crlf\r").exit_code == 0  # a Windows line ending
    users = accounts(root)
    assert verify_password(users["alice"].password_hash, "  spaces inside and around  ")
    assert not verify_password(users["alice"].password_hash, "spaces inside and around")
    assert verify_password(users["bob"].password_hash, "crlf")


def test_add_refuses_an_existing_user_and_keeps_the_first(root):
    assert admin(root, "add", "alice", password=PASSWORD).exit_code == 0
    result = admin(root, "add", "alice", "--read-only", password="another one")
    assert result.exit_code == 1
    assert result.output == f"sockftp: user alice already exists (in {root})\n"
    account = accounts(root)["alice"]
    assert verify_password(account.password_hash, PASSWORD)
    assert account.read_only is False


@pytest.mark.parametrize("name", ["", "_x", ".hidden", "a/b", "../escape", "a b", "é", "x" * 65, "anonymous"])
def test_add_refuses_names_that_cannot_name_an_account(root, name):
    result = admin(root, "add", name, password=PASSWORD)
    assert result.exit_code == 2, result.output
    assert "Invalid value for 'NAME'" in result.output
    assert not (root / "users").exists() or not any((root / "users").iterdir())


def test_add_refuses_an_empty_password(root):
    result = admin(root, "add", "alice", password="")
    assert result.exit_code == 2
    assert "refusing an empty password" in result.output
    assert "alice" not in accounts(root)


def test_add_without_a_terminal_or_password_stdin_says_what_to_do(root):
    result = admin(root, "add", "alice")  # CliRunner's stdin is not a terminal
    assert result.exit_code == 2
    assert "no terminal to ask for the password on: use --password-stdin" in result.output
    assert "alice" not in accounts(root)


def test_there_is_no_way_to_give_a_password_on_the_command_line(root):
    result = CliRunner().invoke(main, ["user", "add", "alice", "--password", PASSWORD, "--root", str(root)])
    assert result.exit_code == 2
    assert "No such option '--password'" in result.output
    for command in (["user", "add"], ["user", "passwd"], ["put"], ["ls"], ["shell"]):
        help_text = CliRunner().invoke(main, [*command, "--help"]).output
        assert "--password " not in help_text and "--password=" not in help_text


def test_root_defaults_to_sockftp_root_like_serve(tmp_path):
    root = tmp_path / "from-env"
    result = CliRunner().invoke(
        main, ["user", "add", "alice", "--password-stdin"], input=PASSWORD + "\n", env={"SOCKFTP_ROOT": str(root)}
    )
    assert result.exit_code == 0, result.output
    assert "alice" in accounts(root)
    assert (root / "users" / "alice").is_dir()


def test_add_keeps_the_files_of_an_earlier_home(root):
    home = root / "users" / "alice"
    home.mkdir(parents=True)
    (home / "kept.txt").write_text("still here")
    result = admin(root, "add", "alice", password=PASSWORD)
    assert result.exit_code == 0
    assert "already there; its files are kept" in result.output
    assert (home / "kept.txt").read_text() == "still here"


# -- list ----------------------------------------------------------------------------------------


def test_list_shows_limits_flags_and_what_each_home_holds(root):
    admin(root, "add", "alice", "--quota", "2G", password=PASSWORD)
    admin(root, "add", "bob", "--max-files", "10", "--read-only", password=PASSWORD)
    home = root / "users" / "alice"
    (home / "docs").mkdir()
    (home / "a.bin").write_bytes(b"x" * (3 * MiB))
    (home / "docs" / "b.txt").write_bytes(b"y" * 1024)

    result = admin(root, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "QUOTA", "USED", "FILES", "MAX", "FILES", "FLAGS"]
    assert lines[1].split() == ["alice", "2.0", "GiB", "3.0", "MiB", "2", "unlimited", "-"]
    assert lines[2].split() == ["bob", "unlimited", "0", "B", "0", "10", "read-only"]
    assert len(lines) == 3

    records = [json.loads(line) for line in admin(root, "list", "--json").output.splitlines()]
    assert records == [
        {
            "name": "alice",
            "quota_bytes": 2 * 1024**3,
            "max_files": None,
            "read_only": False,
            "disabled": False,
            "used_bytes": 3 * MiB + 1024,
            "used_files": 2,
            "usage": "measured",
        },
        {
            "name": "bob",
            "quota_bytes": None,
            "max_files": 10,
            "read_only": True,
            "disabled": False,
            "used_bytes": 0,
            "used_files": 0,
            "usage": "measured",
        },
    ]


def test_list_shows_the_stored_usage_without_reading_the_home(root):
    # The server keeps usage in the account store; listing a thousand
    # homes must not walk a thousand trees. --measure still does.
    admin(root, "add", "alice", password=PASSWORD)
    (root / "users" / "alice" / "a.bin").write_bytes(b"x" * 1024)
    with SqliteUserStore(users_db(str(root))) as store:
        assert store.set_usage("alice", 5 * MiB, 7)

    (record,) = [json.loads(line) for line in admin(root, "list", "--json").output.splitlines()]
    assert (record["used_bytes"], record["used_files"], record["usage"]) == (5 * MiB, 7, "stored")
    assert admin(root, "list").output.splitlines()[1].split()[1:5] == ["unlimited", "5.0", "MiB", "7"]

    (record,) = [json.loads(line) for line in admin(root, "list", "--json", "--measure").output.splitlines()]
    assert (record["used_bytes"], record["used_files"], record["usage"]) == (1024, 1, "measured")


def test_list_of_a_root_without_accounts_creates_nothing(root):
    result = admin(root, "list")
    assert result.exit_code == 0
    assert "no users" in result.output
    assert not root.exists()


# -- passwd --------------------------------------------------------------------------------------


def test_passwd_replaces_the_hash(root):
    admin(root, "add", "alice", password=PASSWORD)
    before = accounts(root)["alice"]
    result = admin(root, "passwd", "alice", password="a new one")
    assert result.exit_code == 0
    assert result.output == "changed the password of alice\n"
    after = accounts(root)["alice"]
    assert verify_password(after.password_hash, "a new one")
    assert not verify_password(after.password_hash, PASSWORD)
    assert (after.quota_bytes, after.max_files, after.read_only) == (
        before.quota_bytes,
        before.max_files,
        before.read_only,
    )


def test_passwd_of_an_unknown_user_fails_before_asking(root):
    admin(root, "add", "alice", password=PASSWORD)
    result = admin(root, "passwd", "zed")  # no password on stdin: it is never asked for
    assert result.exit_code == 1
    assert result.output == f"sockftp: no such user: zed (in {root})\n"


def test_passwd_refuses_an_empty_password_and_keeps_the_old_one(root):
    admin(root, "add", "alice", password=PASSWORD)
    assert admin(root, "passwd", "alice", password="").exit_code == 2
    assert verify_password(accounts(root)["alice"].password_hash, PASSWORD)


# -- set -----------------------------------------------------------------------------------------


def test_set_changes_only_what_it_is_given(root):
    admin(root, "add", "alice", "--quota", "1G", "--max-files", "5", password=PASSWORD)

    result = admin(root, "set", "alice", "--quota", "1.5g")
    assert result.exit_code == 0, result.output
    assert result.output == "user alice: quota 1.5 GiB, max files 5, read-write\n"

    assert admin(root, "set", "alice", "--read-only").exit_code == 0
    account = accounts(root)["alice"]
    assert (account.quota_bytes, account.max_files, account.read_only) == (3 * 1024**3 // 2, 5, True)

    assert admin(root, "set", "alice", "--quota", "none", "--max-files", "NONE", "--read-write").exit_code == 0
    account = accounts(root)["alice"]
    assert (account.quota_bytes, account.max_files, account.read_only) == (None, None, False)
    assert verify_password(account.password_hash, PASSWORD)


def test_set_refuses_nothing_to_do_bad_values_and_unknown_users(root):
    admin(root, "add", "alice", password=PASSWORD)
    nothing = admin(root, "set", "alice")
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    assert admin(root, "set", "alice", "--max-files", "-1").exit_code == 2
    assert admin(root, "set", "alice", "--max-files", "many").exit_code == 2
    assert admin(root, "set", "alice", "--quota", "lots").exit_code == 2
    unknown = admin(root, "set", "zed", "--quota", "1G")
    assert unknown.exit_code == 1
    assert unknown.output == f"sockftp: no such user: zed (in {root})\n"


# -- del -----------------------------------------------------------------------------------------


def test_del_keeps_the_files_and_says_where(root):
    admin(root, "add", "alice", password=PASSWORD)
    (root / "users" / "alice" / "keep.txt").write_text("mine")
    result = admin(root, "del", "alice")
    assert result.exit_code == 0
    home = root / "users" / "alice"
    assert result.output == f"deleted user alice; their files stay in {home} (--delete-files removes them)\n"
    assert "alice" not in accounts(root)
    assert (home / "keep.txt").read_text() == "mine"


def test_del_with_delete_files_removes_the_home_and_nothing_else(root):
    admin(root, "add", "alice", password=PASSWORD)
    admin(root, "add", "bob", password=PASSWORD)
    (root / "users" / "alice" / "sub").mkdir()
    (root / "users" / "alice" / "sub" / "x.txt").write_text("x")
    (root / "users" / "bob" / "y.txt").write_text("y")
    result = admin(root, "del", "alice", "--delete-files")
    assert result.exit_code == 0
    assert result.output == f"deleted user alice and their files ({root / 'users' / 'alice'})\n"
    assert not (root / "users" / "alice").exists()
    assert (root / "users" / "bob" / "y.txt").read_text() == "y"
    assert list(accounts(root)) == ["bob"]


def test_del_of_an_unknown_user_fails(root):
    result = admin(root, "del", "zed")
    assert result.exit_code == 1
    assert result.output == f"sockftp: no such user: zed (in {root})\n"
    assert not root.exists()  # nothing was created to say so


def test_round_trip_add_list_passwd_set_del(root):
    assert admin(root, "add", "carol", "--quota", "10k", password=PASSWORD).exit_code == 0
    assert "carol" in admin(root, "list").output
    assert admin(root, "passwd", "carol", password="second").exit_code == 0
    assert admin(root, "set", "carol", "--max-files", "3").exit_code == 0
    account = accounts(root)["carol"]
    assert (account.quota_bytes, account.max_files) == (10 * 1024, 3)
    assert verify_password(account.password_hash, "second")
    assert admin(root, "del", "carol").exit_code == 0
    assert admin(root, "list").output.startswith("no users")
    assert admin(root, "add", "carol", password=PASSWORD).exit_code == 0  # the name is free again


def test_a_broken_database_is_one_line_and_status_4(root):
    db = Path(users_db(str(root)))
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a sqlite database" * 100)
    result = admin(root, "list")
    assert result.exit_code == 4
    assert result.output.startswith(f"sockftp: account database in {root}: ")
    assert len(result.output.splitlines()) == 1


# -- with a running server -------------------------------------------------------------------------


def test_a_user_added_while_the_server_runs_can_log_in_at_once(server):
    srv = server(anonymous=False, login_failure_delay=0.05)
    assert admin(srv.root, "add", "dave", password=PASSWORD).exit_code == 0
    client = srv.client(user="dave", password=PASSWORD)
    assert client.pwd() == "/"

    assert admin(srv.root, "passwd", "dave", password="changed").exit_code == 0
    with pytest.raises(AuthFailed):
        srv.client(user="dave", password=PASSWORD)
    assert srv.client(user="dave", password="changed").pwd() == "/"


def test_the_database_is_private_to_the_server_user(root):
    admin(root, "add", "alice", password=PASSWORD)
    assert Path(users_db(str(root))).stat().st_mode & 0o077 == 0
    # and it is a real SQLite file that other tools can read
    with sqlite3.connect(users_db(str(root))) as db:
        assert db.execute("SELECT name FROM users").fetchall() == [("alice",)]


# --- user rescan ------------------------------------------------------------------------


def test_user_rescan_measures_a_home_and_stores_it(tmp_path):
    root = tmp_path / "root"
    assert admin(root, "add", "alice", "--quota", "1G", password=PASSWORD).exit_code == 0
    home = root / "users" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "a.bin").write_bytes(b"a" * 5000)  # behind any server's back
    result = admin(root, "rescan", "alice")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("alice: 4.9 KiB in 1 file")
    with SqliteUserStore(users_db(str(root))) as store:
        stored = store.usage("alice")
    assert (stored.used_bytes, stored.used_files) == (5000, 1)
    again = admin(root, "rescan", "--all")
    assert again.exit_code == 0 and "alice: 4.9 KiB in 1 file (unchanged)" in again.output


def test_user_rescan_refusals(tmp_path):
    root = tmp_path / "root"
    assert admin(root, "add", "alice", password=PASSWORD).exit_code == 0
    assert admin(root, "rescan").exit_code == 2  # neither a name nor --all
    assert admin(root, "rescan", "alice", "--all").exit_code == 2
    unknown = admin(root, "rescan", "zed")
    assert unknown.exit_code == 1 and "no such user: zed" in unknown.output
