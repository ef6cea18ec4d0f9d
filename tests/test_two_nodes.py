"""Two ``sockftp serve`` processes on one PostgreSQL database and one data
directory (issue 17): a quota exact across both, under racing uploads,
through a node's kill -9 and a database restart.

Everything is real: a throwaway PostgreSQL cluster (tests/pg_support.py),
server subprocesses on 127.0.0.1, clients over TCP, files in tmp dirs.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import psycopg
import pytest
from click.testing import CliRunner
from conftest import wait_until

from sockftp.cli import main
from sockftp.client import Client
from sockftp.protocol.errors import QuotaExceeded, SockftpError

KiB = 1024
PASSWORD = "correct horse battery staple"


def add_user(root, db, name, *options):
    result = CliRunner().invoke(
        main,
        ["user", "add", name, *options, "--password-stdin", "--root", str(root), "--db", db],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output


def state(db, name="alice"):
    """(used_bytes, used_files, reserved_bytes, live leases) as the database has them."""
    with psycopg.connect(db, autocommit=True) as conn:
        used, files, reserved = conn.execute(
            "SELECT used_bytes, used_files, reserved_bytes FROM users WHERE name = %s", (name,)
        ).fetchone()
        leases = conn.execute("SELECT COUNT(*) FROM leases WHERE user_name = %s AND NOT reaped", (name,)).fetchone()[0]
    return used, files, reserved, leases


def on_disk(home) -> tuple[int, int]:
    total = count = 0
    for directory, _dirs, names in os.walk(home):
        for name in names:
            total += os.path.getsize(os.path.join(directory, name))
            count += not name.startswith(".sockftp")
    return total, count


@pytest.fixture
def nodes(tmp_path, pg_url, spawn_server):
    """Start nodes on one root and database; settings go in a config file."""

    def start(count=2, **settings):
        config = tmp_path / "node.toml"
        config.write_text("".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in settings.items()))
        root = tmp_path / "root"
        return [spawn_server(root, "--db", pg_url, "--no-anonymous", "--config", str(config)) for _ in range(count)]

    start.root = tmp_path / "root"
    start.db = pg_url
    return start


def test_twenty_uploads_racing_at_the_quota_edge_on_two_nodes_never_exceed_it(nodes, files):
    add_user(nodes.root, nodes.db, "alice", "--quota", f"{1000 * KiB}")
    node_a, node_b = nodes()
    data = files("part", os.urandom(100 * KiB))
    outcomes: list[str] = []
    start = threading.Barrier(20)

    def racer(index):
        node = (node_a, node_b)[index % 2]
        client = Client("127.0.0.1", node.port, user="alice", password=PASSWORD, timeout=30)
        try:
            start.wait()
            client.put(data, f"f{index}")
            outcomes.append("stored")
        except QuotaExceeded:
            outcomes.append("refused")
        finally:
            client.close()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Exactly ten fit; neither node let an eleventh through.
    assert sorted(outcomes) == ["refused"] * 10 + ["stored"] * 10
    home = nodes.root / "users" / "alice"
    used, used_files, reserved, leases = state(nodes.db)
    assert (used, used_files) == on_disk(home) == (1000 * KiB, 10)
    assert (reserved, leases) == (0, 0)


def test_a_killed_nodes_reservations_are_given_back_within_the_lease_time(nodes, files):
    add_user(nodes.root, nodes.db, "alice", "--quota", f"{1000 * KiB}")
    lease_time = 1.0
    node_a, node_b = nodes(lease_time=lease_time, session_rate="50K")
    big = files("big", os.urandom(900 * KiB))
    uploader = Client("127.0.0.1", node_a.port, user="alice", password=PASSWORD, timeout=30)
    thread = threading.Thread(target=lambda: _swallow(uploader.put, big, "big"), daemon=True)
    thread.start()
    wait_until(lambda: state(nodes.db)[3] == 1, timeout=10, what="the upload's lease")
    assert state(nodes.db)[2] == 900 * KiB
    on_b = Client("127.0.0.1", node_b.port, user="alice", password=PASSWORD, timeout=30)
    with pytest.raises(QuotaExceeded):
        on_b.put(files("second", os.urandom(200 * KiB)), "second")  # the lease holds on B
    time.sleep(lease_time)  # renewed meanwhile: still held
    assert state(nodes.db)[3] == 1
    os.kill(node_a.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: state(nodes.db)[2:] == (0, 0), timeout=10, what="the dead node's lease given back")
    # Renewed every lease_time / 3: it expires at most lease_time after the
    # kill, and a reaper's round comes within another lease_time / 3.
    assert time.monotonic() - killed <= lease_time * 4 / 3 + 1.0
    on_b.put(files("second", os.urandom(200 * KiB)), "second")
    on_b.close()


def _swallow(call, *args):
    try:
        call(*args)
    except (SockftpError, OSError):
        pass


def test_a_database_restart_mid_run_gives_clear_errors_and_loses_nothing(nodes, files, postgres_cluster):
    add_user(nodes.root, nodes.db, "alice", "--quota", "100M")
    node_a, node_b = nodes(lease_time=1.0)  # ends refused by the database are written at the next renewal
    errors: list[Exception] = []
    stored = []
    stop = threading.Event()

    def uploader(node, prefix):
        client = Client("127.0.0.1", node.port, user="alice", password=PASSWORD, timeout=30)
        data = files(prefix, os.urandom(10 * KiB))
        index = 0
        while not stop.is_set():
            try:
                client.put(data, f"{prefix}{index}")
                stored.append(f"{prefix}{index}")
            except SockftpError as exc:  # a clear error, never a dead server
                errors.append(exc)
            index += 1
        client.close()

    threads = [threading.Thread(target=uploader, args=(node, p)) for node, p in ((node_a, "a"), (node_b, "b"))]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(stored) >= 10, timeout=20, what="uploads before the restart")
    postgres_cluster.restart()
    count = len(stored)
    wait_until(lambda: len(stored) >= count + 20, timeout=30, what="uploads after the restart")
    stop.set()
    for thread in threads:
        thread.join()
    for exc in errors:
        assert exc.code in ("busy", "io_error", "internal") or "database" in str(exc), exc
    assert node_a.proc.poll() is None and node_b.proc.poll() is None
    home = nodes.root / "users" / "alice"
    # Nothing lost: every stored file is there, and once both nodes have
    # written what they owed, the usage is what the home holds.
    assert {f"{name}" for name in stored} <= set(os.listdir(home))
    # Nothing counted twice either: every usage write is idempotent (a lease's
    # end, or a write under its own id), so one that the database applied
    # but whose reply the restart lost, written again, counts once; and a
    # node's first login no longer takes the other's uploads under way for
    # changes cut off, measuring the home under them.
    try:
        wait_until(lambda: state(nodes.db)[:2] == on_disk(home), timeout=15, what="usage caught up")
    except AssertionError:
        logs = "".join(log.read_text() for log in sorted(nodes.root.parent.glob("serve-*.log")))
        raise AssertionError(
            f"usage {state(nodes.db)} against the disk {on_disk(home)}; errors {errors}\n{logs}"
        ) from None
    assert state(nodes.db)[2:] == (0, 0)


def test_an_upload_costs_two_round_trips_to_the_database(server, pg_url, files):
    """The success path of a put: its conditional reservation and its
    commit's transaction, one statement each; nothing else."""
    srv = server(anonymous=False, db=pg_url)
    users = srv.server.users
    from sockftp.accounts import Account, hash_password

    users.add(Account("alice", hash_password(PASSWORD), quota_bytes=10 * 1024 * KiB))
    client = Client(srv.host, srv.port, user="alice", password=PASSWORD, timeout=10)
    data = files("small", b"x" * 1000)
    client.put(data, "warm-up")  # the first session's reads are behind us
    # The server's own rounds are the store's round trips, not the upload's:
    # the bans copied every second would land in a put's count now and then.
    srv.server.authenticator.bans.close()
    srv.server.quotas.close()
    costs = []
    for index in range(5):
        before = users.round_trips
        client.put(data, f"f{index}")
        costs.append(users.round_trips - before)
    assert costs == [2] * 5
    client.close()


def test_tokens_and_bans_are_shared_and_a_restart_forgives_no_ban(nodes, spawn_server):
    from sockftp.protocol.errors import AuthFailed, Banned

    add_user(nodes.root, nodes.db, "alice")
    node_a, node_b = nodes(ban_failures=3, ban_time=600, login_failure_delay=0)
    # A token issued by A logs in on B.
    on_a = Client("127.0.0.1", node_a.port, user="alice", password=PASSWORD, timeout=10)
    token = on_a.token
    on_a.close()  # without quit, which would revoke it
    on_b = Client("127.0.0.1", node_b.port, user="alice", token=token, timeout=10)
    assert on_b.quota()["user"] == "alice"
    on_b.close()
    # Two failures on A and one on B: banned everywhere.
    for node in (node_a, node_a, node_b):
        with pytest.raises((AuthFailed, Banned)):
            Client("127.0.0.1", node.port, user="alice", password="wrong", timeout=10)

    def refused(node):
        try:
            Client("127.0.0.1", node.port, user="alice", password=PASSWORD, timeout=10).close()
        except (Banned, SockftpError, OSError) as exc:
            return isinstance(exc, Banned) or "banned" in str(exc).lower() or "too many failed" in str(exc)
        return False

    wait_until(lambda: refused(node_a) and refused(node_b), timeout=5, what="the ban on both nodes")
    # A node started afresh refuses it too.
    os.kill(node_a.proc.pid, signal.SIGKILL)
    node_c = spawn_server(nodes.root, "--db", nodes.db, "--no-anonymous")
    assert refused(node_c)


def admin(nodes, *args):
    result = CliRunner().invoke(main, ["user", *args, "--root", str(nodes.root), "--db", nodes.db])
    assert result.exit_code == 0, result.output


def test_account_changes_reach_open_sessions_on_every_node_within_seconds(nodes, files):
    from sockftp.protocol.errors import PermissionDenied

    add_user(nodes.root, nodes.db, "alice")
    node_a, node_b = nodes()
    sessions = [Client("127.0.0.1", n.port, user="alice", password=PASSWORD, timeout=10) for n in (node_a, node_b)]
    data = files("d", os.urandom(10 * KiB))
    for client in sessions:
        client.put(data, "before")

    def refused(client, error, name):
        try:
            client.put(data, name)
        except error:
            return True
        return False

    admin(nodes, "set", "alice", "--read-only")
    for client in sessions:
        wait_until(lambda c=client: refused(c, PermissionDenied, "ro"), timeout=6, what="read-only on an open session")
    admin(nodes, "set", "alice", "--read-write")
    for index, client in enumerate(sessions):
        wait_until(lambda c=client, i=index: not refused(c, PermissionDenied, f"rw{i}"), timeout=6, what="read-write")
    admin(nodes, "set", "alice", "--quota", "35K")  # 30K stored: before, rw0, rw1
    for client in sessions:
        wait_until(lambda c=client: refused(c, QuotaExceeded, "over"), timeout=6, what="a new quota on an open session")
    admin(nodes, "del", "alice")

    def listing_refused(client):
        try:
            client.ls("/")
        except PermissionDenied as exc:
            return "deleted" in str(exc)
        return False

    for client in sessions:
        wait_until(lambda c=client: listing_refused(c), timeout=6, what="deleted on an open session")
        with pytest.raises(PermissionDenied, match="deleted"):
            client.put(data, "gone")
        client.close()


def test_a_node_cut_off_past_the_lease_time_does_not_commit_and_its_partial_counts_once(
    server, pg_url, pg_relay, files
):
    """Fencing: node A loses the database for longer than the lease time,
    node B's reaper gives A's lease back, A gets the database back before
    its upload ends. The upload must not commit against a reservation that
    no longer exists: it fails with a clear, retryable error, the partial
    stays (counted once) and resumes."""
    from sockftp.accounts import Account, hash_password
    from sockftp.accounts.stores import open_store
    from sockftp.server.leases import LeaseBook

    MiB = 1024 * KiB
    lease_time = 0.5
    node_a = server(anonymous=False, db=pg_relay.url(pg_url), lease_time=lease_time, session_rate=512 * KiB)
    node_a.server.users.add(Account("alice", hash_password(PASSWORD), quota_bytes=100 * MiB))
    node_b = open_store(pg_url, str(node_a.root))
    reaper_b = LeaseBook(node_b, lease_time)
    big = files("big", os.urandom(2 * MiB))  # 4 s at the session's rate
    client = Client(node_a.host, node_a.port, user="alice", password=PASSWORD, timeout=30)
    outcome: list[object] = []

    def upload():
        try:
            outcome.append(client.put(big, "big"))
        except SockftpError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    wait_until(lambda: state(pg_url)[3] == 1, timeout=10, what="the upload's lease")
    pg_relay.sever()  # A is cut off
    wait_until(lambda: reaper_b.tick() or state(pg_url)[3] == 0, timeout=10, what="B giving A's lease back")
    pg_relay.mend()
    thread.join(30)
    (refused,) = outcome
    assert isinstance(refused, SockftpError) and refused.code == "busy", refused
    assert "given back" in str(refused) and "resume" in str(refused)
    home = node_a.root / "users" / "alice"
    assert "big" not in os.listdir(home)
    partial, files_on_disk = on_disk(home)
    assert 0 < partial <= 2 * MiB and files_on_disk == 0  # all its bytes, perhaps: only the commit was refused
    wait_until(lambda: state(pg_url) == (partial, 0, 0, 0), timeout=10, what="the partial counted once")
    client.put(big, "big")  # resumed: the rest, now under a live lease
    assert state(pg_url) == (2 * MiB, 1, 0, 0) and on_disk(home) == (2 * MiB, 1)
    assert node_b.usage("alice").known
    client.close()
    node_b.close()


def test_quota_replies_and_the_commit_recheck_come_from_the_database(nodes, files):
    """Each node shows the usage every node agrees on, not its memory; and
    an upload whose replaced file moved away is rechecked at its commit
    against what the database has (another node freed room meanwhile),
    not against this node's stale figures."""
    add_user(nodes.root, nodes.db, "alice", "--quota", f"{100 * KiB}")
    (node_b,) = nodes(count=1)
    (node_a,) = nodes(count=1, session_rate="20K")  # A's uploads take seconds
    on_b = Client("127.0.0.1", node_b.port, user="alice", password=PASSWORD, timeout=30)
    for name, size in (("f", 50), ("x", 40), ("y", 5)):
        on_b.put(files(name, os.urandom(size * KiB)), name)
    on_a = Client("127.0.0.1", node_a.port, user="alice", password=PASSWORD, timeout=30)  # A reads 95K
    on_b.rm("y")
    assert on_a.quota()["used_bytes"] == on_b.quota()["used_bytes"] == 90 * KiB
    outcome: list[object] = []

    def replace_f():
        try:
            outcome.append(on_a.put(files("f2", os.urandom(50 * KiB)), "f"))  # credited f's 50K
        except SockftpError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=replace_f)
    thread.start()
    wait_until(lambda: state(nodes.db)[3] == 1, timeout=10, what="A's upload under way")
    on_b.mv("f", "g")  # A's upload now replaces nothing...
    on_b.rm("x")  # ...but B made room for it: 50K used, 50K reserved by A
    thread.join(30)
    assert not isinstance(outcome[0], Exception), outcome  # A's memory said 140K of 100K
    home = nodes.root / "users" / "alice"
    assert state(nodes.db) == (*on_disk(home), 0, 0) == (100 * KiB, 2, 0, 0)
    assert on_a.quota()["used_bytes"] == on_b.quota()["used_bytes"] == 100 * KiB
    on_a.close()
    on_b.close()


def test_account_changes_reach_another_nodes_open_session_within_a_second(nodes, files):
    """LISTEN/NOTIFY: a change made through the CLI (on node A's side)
    reaches node B's open session well before the 2 s poll could (which
    stays, as a 30 s fallback). Four changes in a row, each within 1 s:
    polling alone passes that about one run in forty."""
    from sockftp.protocol.errors import PermissionDenied

    add_user(nodes.root, nodes.db, "alice")
    (node_b,) = nodes(count=1)
    on_b = Client("127.0.0.1", node_b.port, user="alice", password=PASSWORD, timeout=10)
    data = files("d", b"x")
    latencies = []

    def writable() -> bool:
        try:
            on_b.put(data, "probe")
        except PermissionDenied:
            return False
        return True

    for read_only in (True, False, True, False):
        admin(nodes, "set", "alice", "--read-only" if read_only else "--read-write")
        changed = time.monotonic()
        wait_until(lambda r=read_only: writable() != r, timeout=5, interval=0.02, what="the change on node B")
        latencies.append(time.monotonic() - changed)
    assert max(latencies) < 1.0, latencies
    on_b.close()
