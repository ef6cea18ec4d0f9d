"""Bandwidth limits: the token bucket alone, the wire under it, and real servers.

The issue's bar: a limit holds within 10% over a transfer of a few seconds.
Timed tests use 4 MB/s and about 3 s of transfer, so the whole file runs in
well under 20 s.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.protocol.pacing import chunk_size, throttle
from sockftp.protocol.wire import Wire
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig, users_db
from sockftp.server.ratelimit import MIN_CHUNK, RateLimit

pytestmark = pytest.mark.usefixtures("no_server_errors")

RATE = 4_000_000  # bytes per second
TOLERANCE = 0.10


class FakeTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def assert_rate(moved: int, seconds: float, rate: float = RATE) -> float:
    measured = moved / seconds
    assert abs(measured / rate - 1) < TOLERANCE, f"{measured / 1e6:.2f} MB/s against a limit of {rate / 1e6:.2f} MB/s"
    return measured


# --- the bucket ----------------------------------------------------------------------------------


def test_a_full_bucket_lets_its_burst_through_then_paces_at_the_rate():
    fake = FakeTime()
    limit = RateLimit(1000, burst=500, clock=fake.clock, sleep=fake.sleep)
    limit.consume(500)
    assert fake.slept == []  # the burst passes at once
    limit.consume(100)
    assert fake.slept == [pytest.approx(0.1)]
    for _ in range(10):
        limit.consume(100)
    assert fake.now - 100.0 == pytest.approx(1.1)  # 1100 bytes past the burst at 1000 B/s


def test_a_pause_refills_the_bucket_up_to_the_burst_only():
    fake = FakeTime()
    limit = RateLimit(1000, burst=200, clock=fake.clock, sleep=fake.sleep)
    limit.consume(200)
    fake.now += 60  # idle for a minute: still only 200 bytes of credit
    limit.consume(200)
    assert fake.slept == []
    limit.consume(200)
    assert fake.slept == [pytest.approx(0.2)]


def test_the_default_burst_and_chunk_are_a_twentieth_of_a_second():
    limit = RateLimit(RATE)
    assert limit.burst == RATE / 20
    assert limit.chunk_size == RATE // 20
    assert RateLimit(100).chunk_size == MIN_CHUNK  # never tiny system calls
    assert RateLimit(10**12).chunk_size <= 4 * 1024 * 1024  # never more than a transfer buffer
    assert chunk_size([RateLimit(RATE), RateLimit(RATE / 2)], 10**9) == RATE // 40


@pytest.mark.parametrize("rate", [0, -1, float("nan")])
def test_a_limit_must_be_positive(rate):
    with pytest.raises(ValueError):
        RateLimit(rate)


def test_threads_sharing_a_limit_get_the_rate_together_and_fair_shares():
    limit = RateLimit(2_000_000, burst=0)
    finished: list[float] = []
    started = time.monotonic()

    def worker():
        for _ in range(25):
            limit.consume(10_000)
        finished.append(time.monotonic() - started)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert_rate(1_000_000, elapsed, 2_000_000)
    # Served in turn: nobody finishes long before the others.
    assert min(finished) > 0.8 * elapsed


def test_several_limits_cost_the_longest_wait_not_the_sum():
    both = [RateLimit(2_000_000, burst=0), RateLimit(2_000_000, burst=0)]
    started = time.monotonic()
    for _ in range(25):
        throttle(both, 20_000)
    assert_rate(500_000, time.monotonic() - started, 2_000_000)


# --- the wire ------------------------------------------------------------------------------------


@pytest.fixture
def wire_pair():
    a, b = socket.socketpair()
    with a, b:
        yield Wire(a, idle_timeout=5), Wire(b, idle_timeout=5)


def test_a_wire_has_no_limits_unless_given_some(wire_pair):
    sender, receiver = wire_pair
    assert sender.limits == [] and receiver.limits == []


def _reader(wire: Wire, count: int, into: bytearray) -> threading.Thread:
    thread = threading.Thread(target=wire.receive, args=(count, into.extend))
    thread.start()
    return thread


def test_throttled_sends_hold_the_rate_and_send_every_byte(wire_pair, tmp_path):
    sender, receiver = wire_pair
    rate = 8_000_000
    sender.limits = [RateLimit(rate)]
    data = os.urandom(rate // 2)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    for how in ("send_from", "send_file"):  # send_file must not use sendfile() when throttled
        got = bytearray()
        reader = _reader(receiver, len(data), got)
        started = time.monotonic()
        fd = os.open(path, os.O_RDONLY)
        try:
            if how == "send_file":
                sender.send_file(fd, 0, len(data))
            else:
                sender.send_from(lambda view, position, fd=fd: os.preadv(fd, [view], position), 0, len(data))
        finally:
            os.close(fd)
        reader.join(5)
        elapsed = time.monotonic() - started
        assert got == data
        assert_rate(len(data) - rate / 20, elapsed, rate)  # less the burst
        sender.limits[0] = RateLimit(rate)  # a fresh bucket for the next round


def test_throttled_receives_hold_the_rate(wire_pair):
    sender, receiver = wire_pair
    rate = 8_000_000
    receiver.limits = [RateLimit(rate)]
    data = os.urandom(rate // 2)
    got = bytearray()
    reader = _reader(receiver, len(data), got)
    started = time.monotonic()
    sender.send_from(lambda view, position: _copy(data, view, position), 0, len(data))
    reader.join(5)
    assert got == data
    assert_rate(len(data) - rate / 20, time.monotonic() - started, rate)


def _copy(data: bytes, view, position: int) -> int:
    n = min(len(view), len(data) - position)
    view[:n] = data[position : position + n]
    return n


# --- real servers ----------------------------------------------------------------------------------


def test_a_session_limit_holds_on_a_three_second_put_and_get(server, files, tmp_path):
    srv = server(session_rate=RATE)
    data = os.urandom(3 * RATE)
    local = files("big.bin", data)
    with srv.client() as c:
        started = time.monotonic()
        c.put(local, "big.bin")
        put_rate = assert_rate(len(data), time.monotonic() - started)
        started = time.monotonic()
        c.get("big.bin", tmp_path / "copy.bin")
        get_rate = assert_rate(len(data), time.monotonic() - started)
    assert (tmp_path / "copy.bin").read_bytes() == data
    print(f"session limit {RATE / 1e6:.1f} MB/s: put {put_rate / 1e6:.3f} MB/s, get {get_rate / 1e6:.3f} MB/s")


def test_a_user_limit_is_shared_by_all_of_that_users_sessions(server, files):
    srv = server(user_rate=RATE)  # anonymous sessions are one user
    data = os.urandom(3 * RATE // 2)
    local = files("half.bin", data)
    clients = [srv.client() for _ in range(2)]
    finished: list[float] = []
    started = time.monotonic()

    def upload(c, name):
        c.put(local, name)
        finished.append(time.monotonic() - started)

    threads = [threading.Thread(target=upload, args=(c, f"part{i}.bin")) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    measured = assert_rate(2 * len(data), elapsed)
    assert min(finished) > 0.8 * elapsed  # shared fairly, not one after the other
    print(f"user limit {RATE / 1e6:.1f} MB/s, two sessions: {measured / 1e6:.3f} MB/s together")


def test_the_user_limit_follows_the_login_and_users_do_not_share(server, tmp_path):
    srv = server(anonymous=False, user_rate=RATE, login_failure_delay=0.05)
    store = SqliteUserStore(users_db(str(srv.root)))
    try:
        for name in ("alice", "bob"):
            store.add(Account(name, hash_password(f"{name}'s password")))
    finally:
        store.close()
    data = os.urandom(RATE)
    for name in ("alice", "bob"):
        home = srv.root / "users" / name
        home.mkdir(parents=True, exist_ok=True)
        (home / "f.bin").write_bytes(data)
    sessions = [("alice", 0), ("alice", 1), ("bob", 0)]
    clients = []
    for name, _ in sessions:
        c = srv.client()
        c.request({"cmd": "auth", "user": name, "password": f"{name}'s password"})  # no limit before, one after
        clients.append(c)
    finished: dict[tuple, float] = {}
    started = time.monotonic()

    def download(c, key):
        c.get("f.bin", tmp_path / f"{key[0]}-{key[1]}.bin")
        finished[key] = time.monotonic() - started

    threads = [threading.Thread(target=download, args=(c, key)) for c, key in zip(clients, sessions, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alice = assert_rate(2 * len(data), max(finished[("alice", 0)], finished[("alice", 1)]))
    bob = assert_rate(len(data), finished[("bob", 0)])  # his own limit, not a third of alice's
    print(f"user limit {RATE / 1e6:.1f} MB/s: alice's two sessions {alice / 1e6:.3f} MB/s, bob {bob / 1e6:.3f} MB/s")


def test_an_unlimited_server_is_not_slowed(server, files, tmp_path):
    srv = server()
    assert srv.server.user_rate_limit("anonymous") is None
    data = os.urandom(32 * 1024 * 1024)
    local = files("big.bin", data)
    with srv.client() as c:
        started = time.monotonic()
        c.put(local, "big.bin")
        c.get("big.bin", tmp_path / "copy.bin")
        elapsed = time.monotonic() - started
    # 64 MB moved: at the 4 MB/s of the other tests that would take 16 s.
    assert elapsed < 2, f"64 MB took {elapsed:.2f} s"


@pytest.mark.parametrize("setting", ["session_rate", "user_rate"])
def test_a_negative_limit_is_refused_at_startup(tmp_path, setting):
    with pytest.raises(ValueError, match=setting):
        SockftpServer(ServerConfig(root=str(tmp_path / "root"), port=0, **{setting: -1}))
