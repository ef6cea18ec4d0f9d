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


# -- reservations (leases), the heart of a quota shared by several servers -----------------


def test_a_reservation_passes_only_if_it_fits_and_is_no_change_cut_off(store):
    store.add(Account("alice", "hash", quota_bytes=100, max_files=2))
    store.set_usage("alice", 30, 1)
    state = store.reserve("alice", "l1", "node-a", 60, 1, 0, 1000.0)
    assert (state.used_bytes, state.reserved_bytes, state.reserved_files) == (30, 60, 1)
    # The live lease marks the upload under way: another server's first
    # login must not take it for a change cut off and measure the home.
    assert store.usage("alice").known
    assert store.reserve("alice", "l2", "node-b", 11, 0, 0, 1000.0) is None  # 30 + 60 + 11 > 100
    assert store.reserve("alice", "l2", "node-b", 11, 0, 5, 1000.0) is not None  # replaces 5 bytes: 96
    assert store.reserve("alice", "l3", "node-b", 0, 1, 0, 1000.0) is None  # a third file
    assert store.reserve("nobody", "l4", "node-b", 0, 0, 0, 1000.0) is None
    assert store.quota_state("alice").reserved_bytes == 71


def test_finish_moves_the_lease_into_usage_once(store):
    store.add(Account("alice", "hash", quota_bytes=100))
    store.set_usage("alice", 0, 0)
    store.reserve("alice", "l1", "node-a", 80, 1, 0, 1000.0)
    assert store.finish("alice", "l1", 50, 1) is True  # wrote 50 of the 80 announced
    state = store.quota_state("alice")
    assert (state.used_bytes, state.used_files, state.reserved_bytes, state.reserved_files) == (50, 1, 0, 0)
    assert store.usage("alice").changes == 0
    assert store.finish("alice", "l1", 50, 1) is None  # written again (its reply was lost): counted once
    state = store.quota_state("alice")
    assert (state.used_bytes, state.used_files, state.reserved_bytes, state.reserved_files) == (50, 1, 0, 0)


def test_grow_reserves_more_only_while_it_fits_and_the_lease_lives(store):
    store.add(Account("alice", "hash", quota_bytes=100))
    store.set_usage("alice", 0, 0)
    store.reserve("alice", "l1", "node-a", 10, 0, 0, 1000.0)
    assert store.grow("alice", "l1", 80, 0)
    assert not store.grow("alice", "l1", 11, 0)
    assert store.quota_state("alice").reserved_bytes == 90
    store.finish("alice", "l1", 90, 0)
    assert not store.grow("alice", "l1", 1, 0)  # no lease any more
    assert store.quota_state("alice").reserved_bytes == 0


def test_expired_leases_are_given_back_and_renewed_ones_kept(make_store):
    node_a, node_b = make_store(), make_store()
    node_a.add(Account("alice", "hash", quota_bytes=100))
    node_a.set_usage("alice", 0, 0)
    node_a.reserve("alice", "dead", "node-a", 40, 1, 0, 100.0)
    node_a.reserve("alice", "live", "node-a", 30, 0, 0, 100.0)
    assert node_a.renew(["live"], 200.0) == {"live"}
    assert node_b.reap(150.0) == [("alice", 40, 1)]
    state = node_b.quota_state("alice")
    assert (state.reserved_bytes, state.reserved_files) == (30, 0)
    assert node_b.usage("alice").changes == 1  # the dead one's: measure again
    assert node_b.reap(150.0) == []
    assert node_a.renew(["dead", "live"], 300.0) == {"live"}  # a renewal tells a lease given back
    assert not node_a.grow("alice", "dead", 1, 0)


def test_the_late_end_of_a_lease_given_back_counts_once(make_store):
    """Its server was cut off, not dead: the upload's effect still lands in
    usage, once, and the change is no longer counted as cut off."""
    node_a, node_b = make_store(), make_store()
    node_a.add(Account("alice", "hash", quota_bytes=100))
    node_a.set_usage("alice", 0, 0)
    node_a.reserve("alice", "cut", "node-a", 40, 1, 0, 100.0)
    assert node_b.reap(150.0) == [("alice", 40, 1)]
    assert not node_b.usage("alice").known
    assert node_a.finish("alice", "cut", 25, 0) is False  # kept its 25 written bytes as a partial
    assert node_a.finish("alice", "cut", 25, 0) is None  # its reply was lost: written again, counted once
    state = node_b.quota_state("alice")
    assert (state.used_bytes, state.used_files, state.reserved_bytes, state.reserved_files) == (25, 0, 0, 0)
    assert node_b.usage("alice").known


def test_a_measure_counts_the_tombstones_so_their_late_ends_do_not(make_store):
    node_a, node_b = make_store(), make_store()
    node_a.add(Account("alice", "hash"))
    node_a.set_usage("alice", 0, 0)
    node_a.reserve("alice", "cut", "node-a", 40, 1, 0, 100.0)
    node_b.reap(150.0)
    seen = node_b.usage("alice")
    assert node_b.set_usage("alice", 25, 0, version=seen.version)  # the walk found the partial
    assert node_a.finish("alice", "cut", 25, 0) is None
    assert node_b.usage("alice") == StoredUsage(25, 0, 0)


def test_a_measure_is_refused_if_another_server_changed_the_usage_meanwhile(make_store):
    node_a, node_b = make_store(), make_store()
    node_a.add(Account("alice", "hash"))
    node_a.set_usage("alice", 0, 0)
    node_a.add_usage("alice", 0, 0, 1)  # node A begins a delete
    seen = node_b.usage("alice")
    assert not seen.known  # node B's first login measures
    node_a.add_usage("alice", -10, -1, -1)  # A's delete ends while B walks
    assert not node_b.set_usage("alice", 10, 1, version=seen.version)
    assert node_b.usage("alice") == StoredUsage(-10, -1, 0)  # untouched
    node_a.reserve("alice", "up", "node-a", 5, 1, 0, 100.0)  # an upload under way
    seen = node_b.usage("alice")
    assert not node_b.set_usage("alice", 7, 1, version=seen.version)  # its partial may be in the walk
    node_a.finish("alice", "up", 5, 1)
    seen = node_b.usage("alice")
    assert node_b.set_usage("alice", 7, 1, version=seen.version)
    assert node_b.usage("alice") == StoredUsage(7, 1, 0)


def test_a_usage_write_under_an_id_counts_once(make_store):
    node_a = make_store()
    node_a.add(Account("alice", "hash"))
    node_a.set_usage("alice", 100, 1)
    node_a.add_usage("alice", 10, 1, 1, op="w1")
    node_a.add_usage("alice", 10, 1, 1, op="w1")  # its reply was lost: written again
    assert node_a.usage("alice") == StoredUsage(110, 2, 1)
    node_a.add_usage("alice", -10, -1, -1, op="w2", done=["w1"])
    node_a.add_usage("alice", 5, 0, 0, op="w1")  # forgotten, as done said: a new write now
    assert node_a.usage("alice") == StoredUsage(105, 1, 0)


def test_a_dead_nodes_leases_are_given_back_before_they_expire(make_store):
    node_a, node_b = make_store(), make_store()
    node_a.add(Account("alice", "hash", quota_bytes=100))
    node_a.set_usage("alice", 0, 0)
    node_a.reserve("alice", "l1", "host:1:dead", 40, 1, 0, 1000.0)
    node_a.reserve("alice", "l2", "host:2:live", 30, 0, 0, 1000.0)
    assert node_b.lease_nodes() == {"host:1:dead", "host:2:live"}
    assert node_b.reap_nodes(["host:1:dead"], 150.0) == [("alice", 40, 1)]
    assert node_b.lease_nodes() == {"host:2:live"}
    assert node_b.quota_state("alice").reserved_bytes == 30
    assert not node_b.usage("alice").known  # its partial: measure again


def test_racing_reservations_never_pass_the_quota_together(make_store):
    stores = [make_store() for _ in range(4)]
    stores[0].add(Account("alice", "hash", quota_bytes=1000))
    stores[0].set_usage("alice", 0, 0)
    passed = []

    def racer(index):
        store = stores[index % len(stores)]
        for attempt in range(10):
            if store.reserve("alice", f"l{index}-{attempt}", f"n{index}", 70, 0, 0, 1000.0) is not None:
                passed.append(70)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(passed) == 980  # 14 of 80 fit, never a 15th
    assert stores[0].quota_state("alice").reserved_bytes == 980


def test_deleting_an_account_takes_its_leases(store):
    store.add(Account("alice", "hash"))
    store.set_usage("alice", 0, 0)
    store.reserve("alice", "l1", "node-a", 10, 0, 0, 100.0)
    store.delete("alice")
    assert store.reap(1e12) == []


# -- failed logins and bans, per address ---------------------------------------------------


def test_failures_from_every_server_add_up_to_one_ban(make_store):
    node_a, node_b = make_store(), make_store()
    assert node_a.login_failed("198.51.100.7", 100.0, 60.0, 3, 600.0) is None
    assert node_b.login_failed("198.51.100.7", 101.0, 60.0, 3, 600.0) is None
    assert node_b.login_failed("203.0.113.9", 101.0, 60.0, 3, 600.0) is None  # another address: its own count
    assert node_a.login_failed("198.51.100.7", 102.0, 60.0, 3, 600.0) == 702.0
    assert node_b.bans(103.0, 60.0) == {"198.51.100.7": 702.0}
    node_b.login_succeeded("198.51.100.7", 104.0)  # a success does not lift a ban
    assert node_a.bans(701.0, 60.0) == {"198.51.100.7": 702.0}
    assert node_a.bans(702.0, 60.0) == {}  # over


def test_failures_outside_the_window_start_a_new_count(store):
    assert store.login_failed("198.51.100.7", 100.0, 60.0, 2, 600.0) is None
    assert store.login_failed("198.51.100.7", 161.0, 60.0, 2, 600.0) is None  # the first is forgotten
    assert store.login_failed("198.51.100.7", 162.0, 60.0, 2, 600.0) == 762.0
    store.login_succeeded("203.0.113.9", 163.0)  # no failures: nothing to forget
    assert store.login_failed("203.0.113.9", 164.0, 60.0, 2, 600.0) is None
    store.login_succeeded("203.0.113.9", 165.0)
    assert store.login_failed("203.0.113.9", 166.0, 60.0, 2, 600.0) is None  # counted from zero again
