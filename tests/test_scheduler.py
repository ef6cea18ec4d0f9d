"""Idle sessions park and free their thread; work never waits behind work."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
from conftest import LineStops, encode_frame, recv_frame, returns_at_once, round_trip, send_frame, wait_until

from sockftp.protocol.limits import PARK_AFTER
from sockftp.server.scheduler import ParkingLot, WorkerPool

# --- the worker pool -------------------------------------------------------------------------------


def test_pool_never_queues_a_call_behind_a_running_one():
    pool = WorkerPool(linger=0.5)
    release = threading.Event()
    started = []
    lock = threading.Lock()

    def long_call(n):
        with lock:
            started.append(n)
        release.wait(5)

    try:
        for n in range(20):
            pool.submit(long_call, n)
        wait_until(lambda: len(started) == 20, what="all 20 calls running at once")
    finally:
        release.set()
        pool.close()


def test_submit_does_not_wait_for_a_new_worker_to_get_going(monkeypatch):
    """Under load a new thread can take long to first run (it waits for the
    GIL). The accept loop submits every new session: if submit waited for
    the thread, as threading.Thread.start() does, the soak's clients waited
    10 s to connect. Here every new thread is made to start 1 s late."""
    import _thread

    real = _thread.start_new_thread

    def late(function, args, kwargs=None):
        return real(lambda: (time.sleep(1.0), function(*args, **(kwargs or {}))), ())

    monkeypatch.setattr(_thread, "start_new_thread", late)
    monkeypatch.setattr(threading, "_start_new_thread", late)
    pool = WorkerPool(name="late", linger=0.3)
    ran = threading.Event()
    names = []
    try:
        started = time.monotonic()
        pool.submit(lambda: (names.append(threading.current_thread().name), ran.set()))
        assert time.monotonic() - started < 0.5, "submit waited for the new thread"
        assert ran.wait(5)
        assert names == ["late-1"]
    finally:
        pool.close()


def test_a_worker_stopped_anywhere_in_its_wait_never_holds_up_submit():
    """A worker can stall at any point (waiting for the GIL, say). If it held
    a lock of the pool meanwhile, the accept loop's submit would wait too: in
    the soak, up to 450 connections queued behind the pool's lock. Here a
    worker is stopped at every line of its wait for work, and each time
    another thread's submit must return at once."""
    pool = WorkerPool(name="stall", linger=0.5)
    stops = LineStops(until_return_of="_wait")
    ran = []

    def check(n):
        assert returns_at_once(lambda: pool.submit(ran.append, n)), f"submit waited for a worker stopped at line {n}"

    try:
        pool.submit(sys.settrace, stops.trace)  # the worker traces what it runs next: its wait
        count = stops.each_stop(check)
        assert count >= 2
        wait_until(lambda: len(ran) == count, what="every submitted call run")
    finally:
        stops.finish()
        pool.close()


def test_pool_reuses_a_free_worker_and_lets_idle_ones_end():
    pool = WorkerPool(linger=0.3)
    names = []
    done = threading.Event()
    pool.submit(lambda: names.append(threading.current_thread().name))
    wait_until(lambda: pool.idle == 1, what="a worker waiting for work")
    pool.submit(lambda: (names.append(threading.current_thread().name), done.set()))
    assert done.wait(5)
    assert names[0] == names[1], "the waiting worker took the second call"
    wait_until(lambda: pool.threads == 0, timeout=3, what="the idle worker ending after its linger")
    pool.close()


def test_pool_survives_a_failing_call_and_refuses_work_once_closed():
    pool = WorkerPool(linger=0.5)
    ran = threading.Event()
    pool.submit(lambda: 1 / 0)
    pool.submit(ran.set)
    assert ran.wait(5)
    pool.close()
    with pytest.raises(RuntimeError):
        pool.submit(ran.set)


# --- the parking lot -------------------------------------------------------------------------------


@pytest.fixture
def lot():
    lot = ParkingLot()
    yield lot
    lot.close()


def test_a_parked_socket_wakes_when_readable_and_only_once(lot):
    a, b = socket.socketpair()
    woken = []
    lot.park(a, time.monotonic() + 0.3, woken.append)
    time.sleep(0.1)
    assert woken == []
    b.send(b"x")
    wait_until(lambda: woken == [False], what="woken as readable")
    time.sleep(0.4)  # past the deadline: no second wake
    assert woken == [False]
    assert len(lot) == 0
    a.close(), b.close()


def test_a_parked_socket_wakes_at_its_deadline(lot):
    pairs = [socket.socketpair() for _ in range(3)]
    woken = {}
    start = time.monotonic()
    for n, (a, _) in enumerate(pairs):
        lot.park(a, start + 0.2 * (n + 1), lambda t, n=n: woken.setdefault(n, (t, time.monotonic() - start)))
    wait_until(lambda: len(woken) == 3, what="three deadlines")
    for n in range(3):
        timed_out, after = woken[n]
        assert timed_out is True
        assert 0.2 * (n + 1) - 0.01 <= after < 0.2 * (n + 1) + 0.5
    for a, b in pairs:
        a.close(), b.close()


def test_a_burst_of_arrivals_wakes_the_watcher_once(lot):
    # The accept loop parks every new session: a send and a wake-up for each
    # cost a burst of 300 logins about 5% of its time (docs/BENCHMARKS.md).
    busy, release = threading.Event(), threading.Event()
    a, b = socket.socketpair()
    lot.park(a, None, lambda timed_out: (busy.set(), release.wait(30)))
    b.send(b"x")
    assert busy.wait(5), "the watcher never woke the first socket"
    before = lot.wakeups
    pairs = [socket.socketpair() for _ in range(20)]
    woken = []
    try:
        for x, _ in pairs:
            lot.park(x, None, woken.append)  # while the watcher is busy
        assert lot.wakeups - before == 1
    finally:
        release.set()
    for _, y in pairs:
        y.send(b"x")
    wait_until(lambda: len(woken) == 20, what="every arrival admitted by that one wake-up")
    # The next round is woken again.
    c, d = socket.socketpair()
    lot.park(c, None, woken.append)
    assert lot.wakeups - before == 2
    d.send(b"x")
    wait_until(lambda: len(woken) == 21, what="a later arrival admitted")
    for x, y in [(a, b), (c, d), *pairs]:
        x.close(), y.close()


def test_closing_the_lot_wakes_every_parked_socket():
    lot = ParkingLot()
    a, b = socket.socketpair()
    woken = []
    lot.park(a, None, woken.append)
    wait_until(lambda: len(lot) == 1, what="parked")
    lot.close()
    assert woken == [False]
    with pytest.raises(RuntimeError):
        lot.park(a, None, woken.append)
    a.close(), b.close()


# --- sessions in a server --------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    round_trip(sock)
    return sock


def test_idle_sessions_hold_no_thread_and_are_served_when_they_speak(server):
    running = server()
    socks = [connect(running.port) for _ in range(40)]
    wait_until(lambda: len(running.server.parking) == 40, timeout=PARK_AFTER + 3, what="40 parked sessions")
    wait_until(lambda: running.server.workers.threads == 0, timeout=10, what="every worker thread gone")
    for sock in socks:  # pipelined, then read: each wakes its own session
        send_frame(sock, {"cmd": "ping"})
    for sock in socks:
        assert recv_frame(sock)["ok"] is True
    for sock in socks:
        sock.close()
    running.wait_idle()


def test_a_parked_session_still_times_out(server):
    running = server(idle_timeout=PARK_AFTER + 0.5)
    sock = connect(running.port)
    started = time.monotonic()
    wait_until(lambda: len(running.server.parking) == 1, what="parked")
    reply = recv_frame(sock)
    assert reply["error"] == "timeout"
    assert PARK_AFTER + 0.4 < time.monotonic() - started < PARK_AFTER + 3
    running.wait_idle()


def test_a_parked_session_that_never_logs_in_is_closed_at_the_login_deadline(server, tmp_path):
    running = server(anonymous=False, header_timeout=PARK_AFTER + 0.5)
    sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
    sock.sendall(encode_frame({"cmd": "ping"}))
    assert recv_frame(sock)["ok"] is True
    wait_until(lambda: len(running.server.parking) == 1, what="parked")
    assert "not logged in" in recv_frame(sock)["message"]


def test_stopping_tells_parked_sessions_and_ends_them(server):
    running = server()
    socks = [connect(running.port) for _ in range(5)]
    wait_until(lambda: len(running.server.parking) == 5, timeout=PARK_AFTER + 3, what="parked")
    running.stop(grace=2)
    for sock in socks:
        assert recv_frame(sock)["error"] == "shutting_down"
    assert running.session_count == 0
