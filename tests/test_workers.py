"""``sockftp serve --workers N``: N processes on one port (SO_REUSEPORT),
sharing quotas and bans through the account store, here the default SQLite
file (cross-process exactness is the point), stopped together by SIGTERM,
and a worker that dies is started again."""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from cluster_support import race_uploads
from conftest import add_user, encode_frame, recv_frame, wait_until

from sockftp.cli.workers import MIN_LIFETIME
from sockftp.client import Client

KiB = 1024
PID = re.compile(r"sockftp\.server \[(\d+)\]: \S+ session start")


def serving_pids(node) -> set[int]:
    return {int(pid) for pid in PID.findall(node.stderr())}


def worker_pids(parent: int) -> set[int]:
    with open(f"/proc/{parent}/task/{parent}/children") as file:
        return {int(pid) for pid in file.read().split()}


def test_two_workers_share_the_port_a_quota_and_the_bans(spawn_server, tmp_path):
    root = tmp_path / "root"
    add_user(root, "alice", quota_bytes=1000 * KiB)
    node = spawn_server(root, "--workers", "2", "--no-anonymous", "--ban-failures", "3", "--login-failure-delay", "0")
    assert len(worker_pids(node.proc.pid)) == 2
    data = tmp_path / "part"
    data.write_bytes(os.urandom(100 * KiB))
    outcomes = race_uploads(node.port, "alice", "secret", data)
    assert sorted(outcomes) == ["ok"] * 10 + ["quota"] * 10
    stored = [p for p in (root / "users" / "alice").iterdir() if not p.name.startswith(".")]
    assert len(stored) == 10
    assert len(serving_pids(node)) == 2  # the kernel spread the 20 connections

    # Failed logins through both workers add up to one ban, which both refuse.
    replies = [raw_login(node.port, "guess").get("error") for _ in range(3)]
    assert replies == ["auth_failed", "auth_failed", "banned"]

    def all_banned() -> bool:
        # New connections land on either worker: each must refuse.
        return all(raw_login(node.port, "secret").get("error") == "banned" for _ in range(8))

    wait_until(all_banned, timeout=5, interval=0.2, what="both workers refusing the banned address")


def raw_login(port: int, password: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": password}))
        return recv_frame(sock)


def test_sigterm_stops_every_worker_and_a_dead_worker_is_started_again(spawn_server, tmp_path):
    node = spawn_server(tmp_path / "root", "--workers", "2")
    first = worker_pids(node.proc.pid)
    time.sleep(MIN_LIFETIME + 0.1)  # past the start-up window, where a death stops them all
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(worker_pids(node.proc.pid) - {victim}) == 2, timeout=10, what="a new worker")
    for _ in range(6):
        with Client("127.0.0.1", node.port, timeout=10) as client:
            client.ping()
    workers = worker_pids(node.proc.pid)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(15) == 0
    assert not any(_alive(pid) for pid in workers)
    assert node.stdout().count("sockftp stopped") == 1  # one banner for all


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
