"""The account stores' contract, run against both: SQLite (the embedded
default) and PostgreSQL (a throwaway cluster, tests/pg_support.py). Then
the SQLite store's connections: a few, shared by every thread, each held
for one query, so idle sessions hold none."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import add_user

from sockftp.accounts import Account, SqliteUserStore, StoredUsage, StoreError
from sockftp.accounts.sqlite import POOL_SIZE
from sockftp.accounts.stores import open_store
from sockftp.client import Client
from sockftp.protocol.errors import Exists, NotFound
from sockftp.server.config import users_db


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    """A factory of stores over one database (each call: one more store,
    as another node would open), closed at teardown."""
    if request.param == "sqlite":
        db = str(tmp_path / "users.db")
    else:
        db = request.getfixturevalue("pg_url")
    opened = []

    def make():
        store = open_store(db, str(tmp_path))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


def test_accounts_are_added_found_listed_and_refused_twice(store):
    store.add(Account("bob", "hash-b", quota_bytes=10, max_files=3))
    store.add(Account("alice", "hash-a", read_only=True))
    assert store.get("alice") == Account("alice", "hash-a", None, None, True, False)
    assert store.get("bob") == Account("bob", "hash-b", 10, 3, False, False)
    assert store.get("carol") is None
    assert [a.name for a in store.list()] == ["alice", "bob"]
    assert store.count() == 2
    with pytest.raises(Exists):
        store.add(Account("alice", "other"))


def test_a_name_no_database_can_hold_is_simply_nobody(store):
    assert store.get("al\x00ice") is None


def test_update_changes_fields_and_revokes_tokens_unless_kept(store):
    store.add(Account("alice", "hash"))
    store.add_token("alice", "t1", 100.0, 10_000.0, keep=5)
    changed = store.update("alice", quota_bytes=5, read_only=True)
    assert (changed.quota_bytes, changed.read_only) == (5, True)
    assert len(store.tokens("alice", 200.0)) == 1  # limits do not touch tokens
    store.update("alice", password_hash="rehashed", keep_tokens=True)
    assert len(store.tokens("alice", 200.0)) == 1
    store.update("alice", password_hash="new")
    assert store.tokens("alice", 200.0) == []
    store.add_token("alice", "t2", 100.0, 10_000.0, keep=5)
    store.update("alice", disabled=True)
    assert store.tokens("alice", 200.0) == []
    with pytest.raises(NotFound):
        store.update("nobody", quota_bytes=1)
    with pytest.raises(TypeError):
        store.update("alice", name="mallory")


def test_delete_takes_the_tokens_with_the_account(store):
    store.add(Account("alice", "hash"))
    store.add_token("alice", "t1", 100.0, 10_000.0, keep=5)
    store.delete("alice")
    assert store.get("alice") is None
    assert store.token_account("t1", 200.0) is None
    with pytest.raises(NotFound):
        store.delete("alice")


def test_usage_is_measured_added_to_and_forgotten(store):
    store.add(Account("alice", "hash"))
    assert store.usage("alice") == StoredUsage(None, None, 0)
    store.add_usage("alice", 5, 1, 1)  # never measured: stays so, the change is counted
    assert store.usage("alice") == StoredUsage(None, None, 1)
    assert store.set_usage("alice", 100, 2)
    assert store.usage("alice") == StoredUsage(100, 2, 0)
    store.add_usage("alice", 50, 1, 1)
    store.add_usage("alice", -20, 0, -1)
    store.add_usage("alice", 0, 0, -1)  # never below zero
    assert store.usage("alice") == StoredUsage(130, 3, 0)
    assert store.set_usage("alice", None, None)
    assert not store.usage("alice").known
    assert store.usage("nobody") is None
    assert not store.set_usage("nobody", 1, 1)
    store.add_usage("nobody", 1, 1, 1)  # nothing happens


def test_tokens_are_found_touched_capped_expired_and_revoked(store):
    store.add(Account("alice", "hash"))
    store.add(Account("bob", "hash"))
    store.add_token("bob", "old", 1.0, 50.0, keep=5)  # expires at 50
    for i in range(4):
        store.add_token("alice", f"a{i}", 100.0 + i, 10_000.0, keep=3)
    assert [t.token_hash for t in store.tokens("alice", 200.0)] == ["a1", "a2", "a3"]
    assert store.token_account("old", 200.0) is None  # expired, and dropped by the adds
    account, record = store.token_account("a3", 200.0)
    assert (account.name, record.created, record.expires, record.last_used) == ("alice", 103.0, 10_000.0, None)
    store.touch_token("a3", 250.0)
    assert store.token_account("a3", 260.0)[1].last_used == 250.0
    assert store.token_account("a3", 10_000.0) is None  # at its expiry: dead
    assert store.revoke_tokens("bob", "a3") == 0  # not bob's
    assert store.revoke_tokens("alice", "a3") == 1
    assert store.revoke_tokens("alice") == 2
    assert store.tokens("alice", 200.0) == []


def test_two_stores_on_one_database_see_each_others_changes(make_store):
    first, second = make_store(), make_store()
    first.add(Account("alice", "hash"))
    first.add_token("alice", "t", 100.0, 10_000.0, keep=5)
    assert second.token_account("t", 200.0)[0].name == "alice"
    second.revoke_tokens("alice")
    assert first.token_account("t", 200.0) is None
    second.update("alice", quota_bytes=7)
    assert first.get("alice").quota_bytes == 7


def test_the_pool_serves_many_threads(store):
    store.add(Account("alice", "hash"))
    errors = []

    def reader():
        try:
            for _ in range(50):
                assert store.get("alice").name == "alice"
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(POOL_SIZE + 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_refused_change_leaves_its_connection_usable(store):
    with pytest.raises(NotFound):
        store.delete("nobody")  # a transaction that fails is rolled back, and its connection goes back
    store.add(Account("alice", "hash"))
    assert store.get("alice") is not None
    assert store.count() == 1


def test_an_unreachable_postgresql_is_a_store_error_that_hides_the_password(tmp_path):
    pytest.importorskip("psycopg_pool")
    from pg_support import free_port

    url = f"postgresql://sockftp:s3cret@127.0.0.1:{free_port()}/nothing"
    from sockftp.accounts.postgres import PostgresUserStore

    with pytest.raises(StoreError) as caught:
        PostgresUserStore(url, timeout=1.0)
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


# -- the SQLite store's own connections ---------------------------------------------------


def database_fds(path) -> int:
    """Descriptors of this process open on the database file itself."""
    path = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                count += 1
        except OSError:
            pass
    return count


def test_idle_logged_in_sessions_hold_no_database_connection(server):
    srv = server(anonymous=False)
    add_user(srv.root, "alice", "alice-pw")
    first = Client(srv.host, srv.port, user="alice", password="alice-pw", timeout=10)
    # More sessions than the pool has connections; by token, to spare argon2.
    sessions = [first] + [
        Client(srv.host, srv.port, user="alice", token=first.token, timeout=10) for _ in range(POOL_SIZE + 3)
    ]
    for client in sessions:
        assert client.quota()["user"] == "alice"
    assert srv.session_count == len(sessions)
    # One thread per session, each of which looked its account up; at most
    # the pool's few connections are open, for all of them.
    assert 1 <= database_fds(users_db(str(srv.root))) <= POOL_SIZE


def test_the_sqlite_pool_serves_many_threads_with_a_few_connections(tmp_path):
    path = tmp_path / "users.db"
    store = SqliteUserStore(str(path))
    store.add(Account("alice", "hash"))
    errors = []
    most = 0

    def reader():
        nonlocal most
        try:
            for _ in range(50):
                assert store.get("alice").name == "alice"
                most = max(most, database_fds(path))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(POOL_SIZE + 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert 1 <= most <= POOL_SIZE
    store.close()
    assert database_fds(path) == 0
