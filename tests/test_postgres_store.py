"""The PostgreSQL account store from the outside: ``--db``, ``SOCKFTP_DB``
and ``db`` in the config file, on ``sockftp serve`` and on ``sockftp
user``; two server processes on one database share accounts and tokens.

Everything is real: a throwaway PostgreSQL cluster (tests/pg_support.py),
``sockftp serve`` subprocesses on 127.0.0.1, files in tmp dirs.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sockftp.accounts import SqliteUserStore
from sockftp.accounts.stores import open_store
from sockftp.cli import main
from sockftp.client import Client
from sockftp.protocol.errors import AuthFailed
from sockftp.server.config import ConfigError, load_config, users_db

PASSWORD = "correct horse battery staple"


def admin(root, *args, env=None, password=None):
    extra = ["--password-stdin"] if password is not None else []
    stdin = password + "\n" if password is not None else ""
    return CliRunner().invoke(main, ["user", *args, *extra, "--root", str(root)], input=stdin, env=env)


def test_user_commands_take_db_or_sockftp_db(tmp_path, pg_url):
    root = tmp_path / "root"
    result = admin(root, "add", "alice", "--quota", "10M", "--db", pg_url, password=PASSWORD)
    assert result.exit_code == 0, result.output
    result = admin(root, "set", "bob", "--read-only", env={"SOCKFTP_DB": pg_url})
    assert result.exit_code == 1 and "no such user" in result.output
    result = admin(root, "add", "bob", env={"SOCKFTP_DB": pg_url}, password=PASSWORD)
    assert result.exit_code == 0, result.output
    result = admin(root, "list", "--json", env={"SOCKFTP_DB": pg_url})
    assert result.exit_code == 0, result.output
    assert '"alice"' in result.output and '"bob"' in result.output
    # In the database, not in the data directory's SQLite file.
    assert not (root / ".sockftp" / "users.db").exists()
    with open_store(pg_url, str(root)) as store:
        assert store.get("alice").quota_bytes == 10 * 1024 * 1024


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path):
    from pg_support import free_port

    url = f"postgresql://sockftp:s3cret@127.0.0.1:{free_port()}/x?connect_timeout=1"
    result = admin(tmp_path, "list", "--db", url)
    assert result.exit_code == 4
    assert "s3cret" not in result.output
    assert "account database postgresql://sockftp:***@127.0.0.1" in result.output


def test_db_in_the_config_file_and_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCKFTP_DB", raising=False)
    config = tmp_path / "sockftp.toml"
    config.write_text('db = "postgresql://node@db.example/sockftp"\n')
    assert load_config(str(config)).db == "postgresql://node@db.example/sockftp"
    config.write_text('db = "state/users.db"\n')  # a SQLite file, from the file's directory
    assert load_config(str(config)).db == str(tmp_path / "state" / "users.db")
    config.write_text("db = 5\n")
    with pytest.raises(ConfigError, match="db: expected a postgresql:// URL or a SQLite file"):
        load_config(str(config))
    monkeypatch.setenv("SOCKFTP_DB", "postgresql://from-env/x")
    assert load_config(None).db == "postgresql://from-env/x"
    assert load_config(None, {"db": "postgresql://flag/x"}).db == "postgresql://flag/x"


def test_two_nodes_on_one_database_share_accounts_and_tokens(tmp_path, pg_url, spawn_server):
    root = tmp_path / "root"
    assert admin(root, "add", "alice", "--db", pg_url, password=PASSWORD).exit_code == 0
    node_a = spawn_server(root, "--db", pg_url, "--no-anonymous")
    node_b = spawn_server(root, "--db", pg_url, "--no-anonymous")
    on_a = Client("127.0.0.1", node_a.port, user="alice", password=PASSWORD, timeout=10)
    token = on_a.token
    assert token
    on_a.close()  # without quit, which would revoke the token it was given
    # Issued by A, good on B.
    with Client("127.0.0.1", node_b.port, user="alice", token=token, timeout=10) as on_b:
        assert on_b.quota()["user"] == "alice"
    # Revoked from the command line: refused on both.
    assert admin(root, "revoke-tokens", "alice", "--db", pg_url).exit_code == 0
    for node in (node_a, node_b):
        with pytest.raises(AuthFailed):
            Client("127.0.0.1", node.port, user="alice", token=token, timeout=10)
    assert f"accounts in {pg_url}" in node_a.stdout_seen.decode()
    # The nodes never wrote accounts into the data directory's own file.
    assert not (root / ".sockftp" / "users.db").exists()


def test_sqlite_stays_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("SOCKFTP_DB", raising=False)
    root = tmp_path / "root"
    assert admin(root, "add", "alice", password=PASSWORD).exit_code == 0
    with SqliteUserStore(users_db(str(root))) as store:
        assert store.get("alice") is not None
