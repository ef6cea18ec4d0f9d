"""``sockftp user ...`` and ``sockftp token ...`` on a PostgreSQL account
database (issue 17): chosen by ``--db``, by ``$SOCKFTP_DB``, or by ``db`` in
the server's config file (``--config``), each against a real, throwaway
cluster (tests/pg_support.py). Commands run in-process through click's
CliRunner; the token commands talk to a real server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sockftp.accounts import verify_password
from sockftp.accounts.stores import open_store
from sockftp.cli import main
from sockftp.client import Client
from sockftp.protocol.errors import AuthFailed

PASSWORD = "correct horse battery staple"


def sockftp(*args: str, password: str | None = None, env: dict | None = None):
    extra = ["--password-stdin"] if password is not None else []
    stdin = password + "\n" if password is not None else ""
    env = {"SOCKFTP_DB": None, "SOCKFTP_ROOT": None, **(env or {})}  # only what the test gives
    result = CliRunner().invoke(main, [*args, *extra], input=stdin, env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def pg_store(pg_url, tmp_path):
    store = open_store(pg_url, str(tmp_path))
    yield store
    store.close()


def test_every_user_command_works_on_postgresql_given_by_db(pg_url, pg_store, tmp_path):
    where = ["--root", str(tmp_path / "root"), "--db", pg_url]
    sockftp("user", "add", "alice", "--quota", "10M", *where, password=PASSWORD)
    assert pg_store.get("alice").quota_bytes == 10 * 1024 * 1024
    (listed,) = [json.loads(line) for line in sockftp("user", "list", "--json", *where).splitlines()]
    assert (listed["name"], listed["quota_bytes"]) == ("alice", 10 * 1024 * 1024)
    sockftp("user", "set", "alice", "--read-only", "--max-files", "5", *where)
    assert (pg_store.get("alice").read_only, pg_store.get("alice").max_files) == (True, 5)
    sockftp("user", "passwd", "alice", *where, password="another one entirely")
    assert verify_password(pg_store.get("alice").password_hash, "another one entirely")
    (tmp_path / "root" / "users" / "alice").mkdir(parents=True, exist_ok=True)
    (tmp_path / "root" / "users" / "alice" / "f").write_bytes(b"x" * 1234)
    sockftp("user", "rescan", "alice", *where)
    assert (pg_store.usage("alice").used_bytes, pg_store.usage("alice").used_files) == (1234, 1)
    assert "no live tokens" in sockftp("user", "tokens", "alice", *where)
    assert "revoked 0 tokens" in sockftp("user", "revoke-tokens", "alice", *where)
    sockftp("user", "del", "alice", *where)
    assert pg_store.get("alice") is None
    assert not (tmp_path / "root" / ".sockftp" / "users.db").exists()  # no SQLite store on the side


def test_user_commands_take_the_database_from_sockftp_db_or_the_config_file(pg_url, pg_store, tmp_path):
    root = str(tmp_path / "root")
    sockftp("user", "add", "bob", "--root", root, password=PASSWORD, env={"SOCKFTP_DB": pg_url})
    assert pg_store.get("bob") is not None
    config = tmp_path / "node.toml"
    config.write_text(f'db = "{pg_url}"\nroot = "{root}"\n')
    sockftp("user", "set", "bob", "--quota", "1M", "--config", str(config))
    assert pg_store.get("bob").quota_bytes == 1024 * 1024
    assert "bob" in sockftp("user", "list", "--config", str(config))
    # As for serve: --db wins over the file, the file over $SOCKFTP_DB.
    elsewhere = str(tmp_path / "other.db")
    sockftp("user", "add", "carol", "--config", str(config), "--db", elsewhere, password=PASSWORD)
    assert pg_store.get("carol") is None
    sockftp("user", "add", "dave", "--config", str(config), password=PASSWORD, env={"SOCKFTP_DB": elsewhere})
    assert pg_store.get("dave") is not None


def test_token_commands_on_a_postgresql_store(server, pg_url, pg_store):
    srv = server(anonymous=False, db=pg_url)
    where = ["--root", str(srv.root), "--db", pg_url]
    sockftp("user", "add", "alice", *where, password=PASSWORD)
    port = ["--port", str(srv.port), "--user", "alice"]
    token = sockftp("token", "new", *port, env={"SOCKFTP_PASSWORD": PASSWORD}).splitlines()[0]
    assert len(pg_store.tokens("alice", 0)) == 1
    from sockftp.accounts import token_id

    assert token_id(pg_store.tokens("alice", 0)[0].token_hash) in sockftp("user", "tokens", "alice", *where)
    assert "revoked the token" in sockftp("token", "revoke", *port, env={"SOCKFTP_TOKEN": token})
    assert pg_store.tokens("alice", 0) == []
    token = sockftp("token", "new", *port, env={"SOCKFTP_PASSWORD": PASSWORD}).splitlines()[0]
    assert "revoked 1 token" in sockftp("user", "revoke-tokens", "alice", *where)
    with pytest.raises(AuthFailed):
        Client(srv.host, srv.port, user="alice", token=token, timeout=10)
