"""A transfer survives the death or the draining of its node (issue 19):
``sockftp serve`` processes on one PostgreSQL database and one data
directory, behind a small balancer (tests/cluster_support.Forwarder, which
sends the PROXY v2 header as HAProxy does and gives each new connection to
the first node that accepts it). The client reconnects, logs in again by
token and resumes from the offset the new node gives.

Everything is real: PostgreSQL (tests/pg_support.py), server processes,
kill -9 and SIGTERM, files in tmp dirs, checked byte for byte.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import threading
import time

import pytest
from click.testing import CliRunner
from cluster_support import Forwarder
from conftest import wait_until
from test_two_nodes import PASSWORD, add_user

from sockftp.cli import main
from sockftp.client import Client

MiB = 1 << 20

#: Each session's bandwidth on the nodes: slow enough for a kill to land
#: mid-transfer, fast enough for a short test.
RATE = "16M"


@pytest.fixture
def cluster(tmp_path, pg_url, spawn_server):
    """Nodes on one root and database, behind a Forwarder: ``cluster.node()``
    starts one; ``cluster.balancer`` lists them in order of preference."""

    class Cluster:
        root = tmp_path / "root"
        db = pg_url

        def __init__(self):
            self.balancer = Forwarder([])

        def node(self, *extra):
            node = spawn_server(
                self.root,
                "--db",
                self.db,
                "--no-anonymous",
                "--proxy-protocol",
                "--proxy-trusted",
                "127.0.0.1",
                "--session-rate",
                RATE,
                *extra,
            )
            self.balancer.backends.append(("127.0.0.1", node.port))
            return node

        def client(self, **kwargs) -> Client:
            return Client("127.0.0.1", self.balancer.port, timeout=10, user="alice", password=PASSWORD, **kwargs)

    made = Cluster()
    add_user(made.root, made.db, "alice")
    yield made
    made.balancer.close()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def kill_when(predicate, proc, sig=signal.SIGKILL) -> threading.Thread:
    def run():
        wait_until(predicate, timeout=20, interval=0.02, what="the transfer under way")
        proc.send_signal(sig)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def partial_bytes(home) -> int:
    return sum(p.stat().st_size for p in home.glob(".*sockftp*")) if home.exists() else 0


def test_an_upload_whose_node_is_killed_completes_through_another_node(cluster, files):
    first = cluster.node()
    cluster.node()
    local = files("big.bin", os.urandom(40 * MiB))
    home = cluster.root / "users" / "alice"
    attempts = []
    with cluster.client(retries=5) as client:
        client.on_retry = lambda *args: attempts.append(args)
        killer = kill_when(lambda: partial_bytes(home) > 8 * MiB, first.proc)
        result = client.put(str(local), "big.bin")
        killer.join()
        assert client.token is not None  # the reconnect logged in by token
    assert first.proc.wait(5) == -signal.SIGKILL
    assert digest(home / "big.bin") == digest(local)
    assert len(attempts) >= 1 and result.resumed_from > 0  # resumed, not started over
    assert cluster.balancer.connections >= 2


def test_a_download_whose_node_is_killed_completes_through_another_node_and_says_so(cluster, tmp_path):
    home = cluster.root / "users" / "alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "big.bin").write_bytes(os.urandom(40 * MiB))
    first = cluster.node()
    cluster.node()
    target = tmp_path / "down.bin"
    partial = tmp_path / ".down.bin.sockftp-part"
    killer = kill_when(lambda: partial.exists() and partial.stat().st_size > 8 * MiB, first.proc)
    result = CliRunner().invoke(
        main,
        ["get", "big.bin", str(target), "-q", "--port", str(cluster.balancer.port), "--user", "alice"],
        env={"SOCKFTP_PASSWORD": PASSWORD},
    )
    killer.join()
    assert result.exit_code == 0, result.output
    assert digest(target) == digest(home / "big.bin")
    [line] = [line for line in result.output.splitlines() if "reconnecting" in line]
    assert line.startswith("sockftp: ") and "(attempt 1 of 5)" in line


def test_retries_0_turns_it_off(cluster, files):
    first = cluster.node()
    cluster.node()
    local = files("big.bin", os.urandom(40 * MiB))
    home = cluster.root / "users" / "alice"
    killer = kill_when(lambda: partial_bytes(home) > 8 * MiB, first.proc)
    result = CliRunner().invoke(
        main,
        ["put", str(local), "big.bin", "-q", "--retries", "0", "--port", str(cluster.balancer.port), "-u", "alice"],
        env={"SOCKFTP_PASSWORD": PASSWORD},
    )
    killer.join()
    assert result.exit_code == 3 and "reconnecting" not in result.output
    assert not (home / "big.bin").exists()


def test_a_draining_node_fails_its_checks_at_once_and_its_sessions_move_away_unharmed(cluster, files):
    first = cluster.node("--drain-grace", "1")
    cluster.node()
    local = files("big.bin", os.urandom(40 * MiB))
    home = cluster.root / "users" / "alice"
    with cluster.client(retries=5) as idle, cluster.client(retries=5) as busy:
        idle.ping()
        drained_at = []

        def drain():
            wait_until(lambda: partial_bytes(home) > 4 * MiB, timeout=20, interval=0.02)
            first.proc.send_signal(signal.SIGTERM)
            drained_at.append(time.monotonic())

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        # The busy session's upload outlasts the grace: cut, it resumes on
        # the other node; the caller sees only a result.
        busy.put(str(local), "big.bin")
        drainer.join()
        # The node stopped listening at once (a balancer's check fails).
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", first.port), timeout=2).close()
        # The idle session was told goodbye; its next request goes through
        # the other node without an error.
        assert [entry.name for entry in idle.ls("/")] == ["big.bin"]
    assert digest(home / "big.bin") == digest(local)
    assert first.proc.wait(10) == 0


def test_a_resume_that_finds_its_old_upload_still_held_waits_for_it(server, files):
    """After a cut, the old server may hold the upload's partial a moment
    longer (a draining node finishing the session): the retry's busy is
    retried too, not reported."""
    srv = server(session_rate=8 * MiB)
    local = files("big.bin", os.urandom(24 * MiB))
    released = []

    def cut_and_hold():
        wait_until(lambda: partial_bytes(srv.anon_dir) > 4 * MiB, timeout=20, interval=0.01)
        [partial] = srv.anon_dir.glob(".*sockftp*")
        srv.server.sessions.interrupt(idle_only=False)
        with open(partial, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # once the server lets go: the retry finds it busy
            time.sleep(1.0)
            released.append(time.monotonic())

    holder = threading.Thread(target=cut_and_hold, daemon=True)
    holder.start()
    with srv.client(retries=5) as client:
        result = client.put(str(local), "big.bin")
    holder.join()
    assert released and result.resumed_from > 0
    assert digest(srv.anon_dir / "big.bin") == digest(local)


def test_a_sync_whose_node_is_killed_completes_through_another_node(cluster, tmp_path):
    first = cluster.node()
    cluster.node()
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(20):
        (tree / "sub" / f"small-{i}").write_bytes(os.urandom(1000 + i))
    (tree / "big.bin").write_bytes(os.urandom(40 * MiB))
    home = cluster.root / "users" / "alice"
    with cluster.client(retries=5) as client:
        killer = kill_when(lambda: partial_bytes(home / "t") > 8 * MiB, first.proc)
        client.sync_up(str(tree), "t")
        killer.join()
    assert first.proc.wait(5) == -signal.SIGKILL
    for path in tree.rglob("*"):
        if path.is_file():
            assert digest(home / "t" / path.relative_to(tree)) == digest(path)


def test_a_sync_of_many_small_files_whose_node_is_killed_mid_batch_completes(cluster, tmp_path):
    """The pipelined engine (put_many): the node dies with a window of
    small puts unanswered; the sync reconnects through another node, plans
    again and sends what is missing. Every file arrives whole."""
    first = cluster.node()
    cluster.node()
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(1000):
        (tree / f"small-{i:04}").write_bytes(os.urandom(8000 + i))
    target = cluster.root / "users" / "alice" / "t"
    attempts = []

    def arrived() -> bool:
        return target.exists() and sum(1 for _ in target.iterdir()) >= 100

    with cluster.client(retries=5) as client:
        client.on_retry = lambda *args: attempts.append(args)
        killer = kill_when(arrived, first.proc)
        client.sync_up(str(tree), "t")
        killer.join()
    assert first.proc.wait(5) == -signal.SIGKILL and attempts
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in tree.iterdir())
    for path in tree.iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes()
