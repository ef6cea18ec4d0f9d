"""Usage kept in the account store (issue 16): a login never walks the home.

The server used to measure a user's usage (a walk of their whole home) at
every login that found no other session of theirs open, so every
seed-style connection to an anonymous area holding many files walked it
again. Now the account store keeps each account's usage, changed with
every upload and delete, and the home is walked only when the usage is
not known and something needs it.

Walks are counted on a real :class:`LocalStorage` whose ``usage`` counts
its calls: a login that walked cannot pass by accident, however fast the
walk. Everything else is real: sockets on 127.0.0.1, files in tmp dirs,
SQLite.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import RunningServer, add_user, login, partials_in, recv_frame
from test_seed_compat import seed_connect, seed_get, seed_put

import sockftp
from sockftp.accounts import Account, SqliteUserStore, StoredUsage
from sockftp.accounts import schema as account_schema
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig, users_db
from sockftp.server.quota import QuotaRegistry
from sockftp.server.quota_storage import QuotaStorage
from sockftp.server.rescan import rescan_root
from sockftp.storage import LocalStorage

KiB = 1024
MiB = 1024 * KiB

#: Files in a "big" home: enough that a walk would not go unnoticed, few
#: enough to make in a fraction of a second.
MANY = 3000


class CountingStorage(LocalStorage):
    """A LocalStorage that records every walk of a subtree (``usage``)."""

    def __init__(self, root, fsync: bool = False):
        super().__init__(root, fsync=fsync)
        self.walks: list[tuple[str, ...]] = []

    def usage(self, path):
        self.walks.append(tuple(path))
        return super().usage(path)


def fill(directory: Path, count: int = MANY) -> None:
    """*count* empty files in *directory*/many (created if missing)."""
    many = directory / "many"
    many.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        os.close(os.open(many / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600))


def on_disk(home: Path) -> tuple[int, int]:
    """Bytes (partials included) and complete files under *home*."""
    total = files = 0
    for root, _dirs, names in os.walk(home):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += not name.startswith(".sockftp")
    return total, files


def stored(root: Path, name: str = "alice") -> StoredUsage:
    with SqliteUserStore(users_db(str(root))) as store:
        return store.usage(name)


@pytest.fixture
def counted(tmp_path_factory):
    """Factory: ``counted(root=None, **config)`` -> (RunningServer, its
    CountingStorage). No anonymous access unless asked for."""
    started: list[RunningServer] = []

    def start(root: Path | None = None, **overrides) -> tuple[RunningServer, CountingStorage]:
        root = root or tmp_path_factory.mktemp("root")
        settings = {"host": "127.0.0.1", "port": 0, "anonymous": False, "login_failure_delay": 0.01, **overrides}
        storage = CountingStorage(root)
        srv = SockftpServer(ServerConfig(root=str(root), **settings), storage=storage)
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        thread.start()
        running = RunningServer(srv, thread, Path(root))
        started.append(running)
        return running, storage

    yield start
    for running in started:
        running.close_connections()
        running.stop(0)


# --- logins do not walk ---------------------------------------------------------------------


def test_logins_of_a_user_with_a_quota_walk_the_home_once_ever(counted, files):
    srv, storage = counted()
    add_user(srv.root, "alice", quota_bytes=10 * MiB)
    home = srv.root / "users" / "alice"
    fill(home)
    client = login(srv, "alice")  # the first login ever: never measured, so measured
    assert storage.walks == [("users", "alice")]
    client.put(files("a", os.urandom(5000)), "a")
    client.close()
    for _ in range(5):  # each a first session: the store is read, the home is not walked
        srv.wait_idle()
        client = login(srv, "alice")
        assert client.quota()["used_files"] == MANY + 1
        client.close()
    assert storage.walks == [("users", "alice")]
    assert stored(srv.root) == StoredUsage(5000, MANY + 1, 0)


def test_seed_style_puts_and_gets_never_walk_the_anonymous_area(counted):
    srv, storage = counted(anonymous=True)
    fill(srv.anon_dir)
    for i in range(10):
        data = os.urandom(1000)
        with seed_connect(srv) as sock:
            seed_put(sock, f"s{i}.bin", data)
            assert recv_frame(sock)["ok"] is True
        with seed_connect(srv) as sock:
            assert seed_get(sock, f"s{i}.bin")[1] == data
    srv.wait_idle()
    assert storage.walks == []
    # Asked for, the area's usage is measured once, and kept from then on.
    with srv.client() as client:
        reply = client.quota()
        assert (reply["used_bytes"], reply["used_files"], reply["usage_known"]) == (10_000, MANY + 10, True)
        with seed_connect(srv) as sock:
            seed_put(sock, "late.bin", b"x" * 500)
            assert recv_frame(sock)["ok"] is True
        assert (client.quota()["used_bytes"], client.quota()["used_files"]) == on_disk(srv.anon_dir)
    assert storage.walks == [("anonymous",)]


def test_a_user_without_limits_is_never_measured_unless_they_ask(counted, files):
    srv, storage = counted()
    add_user(srv.root, "bob")
    fill(srv.root / "users" / "bob")
    for i in range(3):
        client = login(srv, "bob")
        client.put(files("b", os.urandom(3000)), f"b{i}")
        client.mv(f"b{i}", "b")
        client.get("b", files.dir / "back")
        client.close()
        srv.wait_idle()
    client = login(srv, "bob")
    client.rm("b")
    assert storage.walks == []
    assert stored(srv.root, "bob") == StoredUsage(None, None, 0)  # nothing written for it either
    reply = client.quota()  # asked for: measured now, and stored
    assert (reply["used_bytes"], reply["used_files"], reply["usage_known"]) == (0, MANY, True)
    assert storage.walks == [("users", "bob")]
    client.put(files("c", os.urandom(700)), "c")
    assert stored(srv.root, "bob") == StoredUsage(700, MANY + 1, 0)


def test_usage_survives_a_restart_without_a_walk(counted, files):
    srv, storage = counted()
    add_user(srv.root, "alice", quota_bytes=1 * MiB)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.put(files("a", os.urandom(300 * KiB)), "a")
    client.put(files("b", os.urandom(200 * KiB)), "b")
    client.rm("a")
    client.close()
    srv.stop()

    again, storage = counted(root=srv.root)
    client = login(again, "alice")
    reply = client.quota()
    assert (reply["used_bytes"], reply["used_files"]) == on_disk(home) == (200 * KiB, 1)
    with pytest.raises(sockftp.QuotaExceeded):
        client.put(files("c", os.urandom(900 * KiB)), "c")
    assert storage.walks == []


def test_a_quota_set_on_a_user_never_measured_applies_at_their_next_login(counted, files):
    # bob has no limits, so his usage was never measured; an admin gives
    # him a quota while a session of his is open. A new session of his
    # gets it, and his first upload measures the home before reserving.
    srv, storage = counted()
    add_user(srv.root, "bob")
    first = login(srv, "bob")
    first.put(files("a", os.urandom(600 * KiB)), "a")
    with SqliteUserStore(users_db(str(srv.root))) as store:
        store.update("bob", quota_bytes=1 * MiB)
    second = login(srv, "bob")
    with pytest.raises(sockftp.QuotaExceeded):
        second.put(files("b", os.urandom(600 * KiB)), "b")
    assert storage.walks == [("users", "bob")]
    reply = second.quota()
    assert (reply["used_bytes"], reply["quota_bytes"]) == (600 * KiB, 1 * MiB)
    assert stored(srv.root, "bob") == StoredUsage(600 * KiB, 1, 0)


def test_a_lowered_quota_applies_at_the_next_login(counted, files):
    srv, _ = counted()
    add_user(srv.root, "alice", quota_bytes=1 * MiB)
    client = login(srv, "alice")
    client.put(files("a", os.urandom(600 * KiB)), "a")
    with SqliteUserStore(users_db(str(srv.root))) as store:
        store.update("alice", quota_bytes=700 * KiB)
    other = login(srv, "alice")  # a second session: the limits are read again
    with pytest.raises(sockftp.QuotaExceeded):
        other.put(files("b", os.urandom(200 * KiB)), "b")
    assert other.quota()["quota_bytes"] == 700 * KiB


# --- the store stays equal to the disk ------------------------------------------------------


def test_every_kind_of_change_keeps_the_stored_usage_equal_to_a_rescan(counted, files):
    srv, _ = counted()
    add_user(srv.root, "alice", quota_bytes=10 * MiB)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.mkdir("d")
    client.put(files("a", os.urandom(3000)), "d/a")
    client.put(files("b", os.urandom(5000)), "b")
    client.put(files("b2", os.urandom(4000)), "b")  # an overwrite
    client.mv("b", "d/a")  # a rename over a file
    client.mv("d/a", "e")  # a plain rename
    # An upload cut short: its partial counts, and is kept for a resume.
    sock = srv.raw()
    sock.sendall(_frame({"cmd": "auth", "user": "alice", "password": "secret"}))
    assert recv_frame(sock)["ok"]
    sock.sendall(_frame({"cmd": "put", "path": "d/big", "size": 300_000, "checksum": "trailer"}) + bytes(100_000))
    _wait_for(lambda: client.quota()["used_bytes"] >= 104_000)
    sock.close()
    srv.wait_idle(sessions=1)
    assert _stored_pair(srv.root) == on_disk(home) == (104_000, 1)
    client.rm("e")
    client.rmdir("d")  # removes the partial
    assert _stored_pair(srv.root) == on_disk(home) == (0, 0)
    client.put(files("c", os.urandom(1234)), "c")
    client.close()
    srv.wait_idle()
    [rescan] = rescan_root(str(srv.root), "alice")
    assert rescan.describe() == "alice: 1.2 KiB in 1 file (unchanged)"
    assert stored(srv.root) == StoredUsage(1234, 1, 0)


def _frame(header: dict) -> bytes:
    from conftest import encode_frame

    return encode_frame(header)


def _stored_pair(root: Path) -> tuple[int | None, int | None]:
    usage = stored(root)
    assert usage.changes == 0
    return usage.used_bytes, usage.used_files


def _wait_for(predicate) -> None:
    from conftest import wait_until

    wait_until(predicate, what="the server to catch up")


def test_rescan_fixes_a_drifted_usage_and_a_running_server_takes_it_up(counted, files):
    srv, storage = counted()
    add_user(srv.root, "alice", quota_bytes=1 * MiB)
    add_user(srv.root, "bob")
    client = login(srv, "alice")
    client.put(files("a", os.urandom(100 * KiB)), "a")
    client.close()
    srv.wait_idle()
    with SqliteUserStore(users_db(str(srv.root))) as store:
        store.set_usage("alice", 990 * KiB, 7)  # drifted: a power cut, a bug
    client = login(srv, "alice")
    with pytest.raises(sockftp.QuotaExceeded):  # the server believes it
        client.put(files("b", os.urandom(100 * KiB)), "b")
    client.close()
    srv.wait_idle()
    assert [r.describe() for r in rescan_root(str(srv.root))] == [
        "alice: 100.0 KiB in 1 file (was 990.0 KiB in 7 files)",
        "bob: 0 bytes in 0 files (never measured before)",
    ]
    assert stored(srv.root) == StoredUsage(100 * KiB, 1, 0)
    client = login(srv, "alice")  # the next first session reads it
    assert client.quota()["used_bytes"] == 100 * KiB
    client.put(files("b", os.urandom(100 * KiB)), "b")
    assert storage.walks == [("users", "alice")]  # the first login's only: the rescan had a storage of its own


def test_rescan_of_an_unknown_user_or_a_root_without_accounts(tmp_path):
    with pytest.raises(sockftp.NotFound, match="no such user: zed"):
        list(rescan_root(str(tmp_path), "zed"))
    assert list(rescan_root(str(tmp_path))) == []
    assert list(tmp_path.iterdir()) == []  # created nothing
    add_user(tmp_path, "alice")
    with pytest.raises(sockftp.NotFound, match=r"no such user: zed \(in "):
        list(rescan_root(str(tmp_path), "zed"))


def test_the_janitors_removals_reach_the_stored_usage(counted):
    # An expired partial removed by the janitor gives its bytes back: to the
    # ledger and the store of a user logged in since the start, and to the
    # store alone for one who is not (their next login reads it, no walk).
    from test_janitor import age

    from sockftp.server.quota_storage import QuotaStorage as Wrapped

    srv, _ = counted(partial_ttl=3600)
    add_user(srv.root, "alice", quota_bytes=10 * MiB)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    ledger = srv.server.quotas.login("alice", ("users", "alice"), 10 * MiB)  # the ledger alice's sessions share
    for name, size in (("one.bin", 100_000), ("two.bin", 200_000)):
        upload = Wrapped(srv.server.storage, ledger).open_upload(("users", "alice", name), 500_000)
        upload.write(bytes(size))
        upload.keep()  # a cut upload: its partial stays, and counts
    srv.server.quotas.logout(ledger)
    assert _stored_pair(srv.root) == on_disk(home) == (300_000, 0)
    first, second = sorted(partials_in(home), key=lambda p: p.stat().st_size)
    age(first, 1)
    assert srv.server.janitor.sweep() == (1, 100_000)
    assert client.quota()["used_bytes"] == 200_000
    assert _stored_pair(srv.root) == on_disk(home) == (200_000, 0)
    client.close()
    srv.stop()

    again, storage = counted(root=srv.root, partial_ttl=3600)
    age(second, 1)
    assert again.server.janitor.sweep() == (1, 200_000)  # alice has not logged in since the start
    assert _stored_pair(again.root) == on_disk(home) == (0, 0)
    assert login(again, "alice").quota()["used_bytes"] == 0
    assert storage.walks == []


# --- crashes and failures -------------------------------------------------------------------


def test_a_change_cut_off_by_a_dead_server_is_measured_again(tmp_path):
    # The store's state after a server is killed mid-upload: the upload was
    # counted as under way, and never ended. The next server (a registry
    # of its own over the same files and database) must not trust the
    # stored figure, which misses the partial's bytes.
    store = SqliteUserStore(str(tmp_path / "users.db"))
    store.add(Account("alice", "hash", quota_bytes=1 * MiB))
    disk = CountingStorage(tmp_path / "root")
    home = ("users", "alice")
    disk.mkdir(home, parents=True)
    dead = QuotaRegistry(disk, store, lease_time=0.1)
    ledger = dead.login("alice", home, 1 * MiB)
    upload = QuotaStorage(disk, ledger).open_upload(home + ("big",), 300_000)
    upload.write(bytes(120_000))
    # The server dies here: nothing more of it runs, nothing renews its lease.
    dead.close()
    assert store.usage("alice") == StoredUsage(0, 0, 0)  # a live lease is no change cut off...
    time.sleep(0.15)
    again = CountingStorage(tmp_path / "root")
    registry = QuotaRegistry(again, store, lease_time=0.1)
    registry.book.tick()  # ...until it expires and any server's reaper gives it back
    assert store.usage("alice") == StoredUsage(0, 0, 1)
    ledger = registry.login("alice", home, 1 * MiB)
    assert (ledger.used_bytes, ledger.used_files, ledger.known) == (120_000, 0, True)
    assert again.walks == [home]
    assert store.usage("alice") == StoredUsage(120_000, 0, 0)
    upload.keep()  # (the dead server's objects, released for the test's sake)
    disk.close()
    again.close()
    store.close()


def test_another_servers_upload_under_way_is_no_change_cut_off(tmp_path):
    # Two servers (registries) on one store and one root. B's first login
    # comes while A's upload is under way: B must not take it for a change
    # cut off, walk the home (counting A's partial) and store that, for A's
    # end then to count the same bytes again (1 run in 4 of the two-node
    # PostgreSQL test did).
    store = SqliteUserStore(str(tmp_path / "users.db"))
    store.add(Account("alice", "hash", quota_bytes=1 * MiB))
    home = ("users", "alice")
    disk_a, disk_b = CountingStorage(tmp_path / "root"), CountingStorage(tmp_path / "root")
    disk_a.mkdir(home, parents=True)
    node_a, node_b = QuotaRegistry(disk_a, store), QuotaRegistry(disk_b, store)
    ledger_a = node_a.login("alice", home, 1 * MiB)
    upload = QuotaStorage(disk_a, ledger_a).open_upload(home + ("big",), 300_000)
    upload.write(bytes(120_000))
    ledger_b = node_b.login("alice", home, 1 * MiB)
    assert disk_b.walks == [] and ledger_b.known
    upload.write(bytes(180_000))
    upload.commit(None)
    usage = store.usage("alice")
    assert (usage.used_bytes, usage.used_files, usage.changes) == (300_000, 1, 0)
    assert on_disk(tmp_path / "root" / "users" / "alice") == (300_000, 1)
    for registry in (node_a, node_b):
        registry.close()
    disk_a.close()
    disk_b.close()
    store.close()


def test_a_change_cut_off_for_a_user_without_limits_forgets_the_stale_figure(tmp_path):
    store = SqliteUserStore(str(tmp_path / "users.db"))
    store.add(Account("bob", "hash"))
    store.set_usage("bob", 10, 1)
    store.add_usage("bob", 0, 0, 1)  # a change began, and its server died
    disk = CountingStorage(tmp_path / "root")
    ledger = QuotaRegistry(disk, store).login("bob", ("users", "bob"))
    assert not ledger.known and disk.walks == []  # nothing to enforce: no walk
    assert store.usage("bob") == StoredUsage(None, None, 0)  # measured when asked for
    disk.close()
    store.close()


def test_a_store_that_refuses_writes_costs_no_upload_and_catches_up(counted, files, caplog):
    srv, _ = counted()
    add_user(srv.root, "alice", quota_bytes=1 * MiB)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.put(files("a", os.urandom(100 * KiB)), "a")
    # The database refuses every usage write from now on (as a full disk
    # or a lock held past the timeout would).
    db = sqlite3.connect(users_db(str(srv.root)))
    db.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE OF usage_changes, reserved_bytes ON users "
        "BEGIN SELECT RAISE(FAIL, 'refused'); END"
    )
    db.commit()
    caplog.set_level(logging.WARNING, logger="sockftp.quota")
    client.put(files("b", os.urandom(200 * KiB)), "b")  # stored, and counted in memory
    client.rm("a")
    with pytest.raises(sockftp.QuotaExceeded):  # still enforced, on the exact figure
        client.put(files("c", os.urandom(900 * KiB)), "c")
    assert (client.quota()["used_bytes"], client.quota()["used_files"]) == on_disk(home) == (200 * KiB, 1)
    assert stored(srv.root) == StoredUsage(100 * KiB, 1, 0)  # behind
    warnings = [r.getMessage() for r in caplog.records if r.name == "sockftp.quota"]
    assert len(warnings) == 1 and "sockftp user rescan alice" in warnings[0]
    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    client.put(files("d", os.urandom(10 * KiB)), "d")  # the next change pays what was owed
    assert stored(srv.root) == StoredUsage(210 * KiB, 2, 0)
    assert (210 * KiB, 2) == on_disk(home)


# --- the store itself -----------------------------------------------------------------------


def test_a_database_of_the_previous_schema_is_migrated_with_usage_never_measured(tmp_path):
    path = str(tmp_path / "users.db")
    db = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2):
        for statement in account_schema.MIGRATIONS[version]:
            db.execute(statement)
        db.execute(account_schema.SET_VERSION, (version,))
    db.execute("INSERT INTO users (name, password_hash, quota_bytes) VALUES ('alice', 'hash', 5)")
    db.close()
    with SqliteUserStore(path) as store:
        assert store.get("alice") == Account("alice", "hash", 5)
        assert store.usage("alice") == StoredUsage(None, None, 0)
        assert store.usage("nobody") is None
        store.add_usage("alice", 10, 1, 0)  # never measured stays so
        assert store.usage("alice") == StoredUsage(None, None, 0)
        assert store.set_usage("alice", 10, 1) and not store.set_usage("nobody", 1, 1)
        store.add_usage("alice", 5, 1, 1)
        store.add_usage("alice", -3, 0, -1)
        store.add_usage("alice", 0, 0, -1)  # more ends than begins: the count stays at 0
        assert store.usage("alice") == StoredUsage(12, 2, 0)


def test_usage_writes_keep_the_pools_bound(tmp_path):
    from test_account_store import database_fds

    from sockftp.accounts.sqlite import POOL_SIZE

    path = tmp_path / "users.db"
    store = SqliteUserStore(str(path))
    store.add(Account("alice", "hash"))
    store.set_usage("alice", 0, 0)
    errors = []

    def work():
        try:
            for _ in range(20):
                store.add_usage("alice", 1, 0, 0)
                assert store.get("alice") is not None
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(POOL_SIZE + 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.usage("alice") == StoredUsage(20 * (POOL_SIZE + 8), 0, 0)
    assert 1 <= database_fds(path) <= POOL_SIZE
    store.close()
    assert database_fds(path) == 0


# --- wiring ---------------------------------------------------------------------------------


def test_the_server_gives_its_quota_registry_its_account_store(tmp_path):
    server = SockftpServer(ServerConfig(root=str(tmp_path), port=0, host="127.0.0.1"))
    try:
        assert server.quotas.users is server.users
    finally:
        server.server_close()
        server.storage.close()
        server.users.close()
