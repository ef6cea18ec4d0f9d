"""The SQLite account store's connections: a few, shared by every thread,
each held for one query, so idle sessions hold none."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import add_user

from sockftp.accounts import Account, SqliteUserStore
from sockftp.accounts.sqlite import POOL_SIZE
from sockftp.client import Client
from sockftp.protocol.errors import NotFound
from sockftp.server.config import users_db


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


def test_the_pool_serves_many_threads_with_a_few_connections(tmp_path):
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


def test_a_refused_change_leaves_its_connection_usable(tmp_path):
    store = SqliteUserStore(str(tmp_path / "users.db"))
    with pytest.raises(NotFound):
        store.delete("nobody")  # a transaction that fails is rolled back, and its connection goes back
    store.add(Account("alice", "hash"))
    assert store.get("alice") is not None
    assert store.count() == 1
    store.close()
