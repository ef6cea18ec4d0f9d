"""The transfer buffer pool: bounded memory however many transfers stall;
replies sent without waiting, on TLS too; and a peer that hangs up in the
middle of paced bytes."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import trustme
from conftest import LineStops, recv_frame, returns_at_once, wait_until
from faults import reset

from sockftp.protocol.wire import BufferPool, ConnectionClosed, Wire
from sockftp.server.ratelimit import RateLimit


def test_only_a_bounded_number_of_transfers_get_a_large_buffer():
    pool = BufferPool(size=1024 * 1024, large_count=2, small_size=64 * 1024)
    first, second, third = (pool.take(10 * 1024 * 1024) for _ in range(3))
    assert [len(b) for b in (first, second, third)] == [1024 * 1024, 1024 * 1024, 64 * 1024]
    pool.give(third)
    pool.give(first)
    again = pool.take(10 * 1024 * 1024)
    assert again is first  # reused, not allocated anew
    assert len(pool.take(10 * 1024 * 1024)) == 64 * 1024  # second and again are out


def test_the_buffer_given_back_last_is_lent_first():
    # Before any slot never used: that one would cost a fresh buffer,
    # zeroed with the GIL held, in every run of a crowd.
    pool = BufferPool(size=1024 * 1024, large_count=3, small_size=64 * 1024)
    first, second = pool.take(10 * 1024 * 1024), pool.take(10 * 1024 * 1024)
    pool.give(first)
    pool.give(second)
    assert pool.take(10 * 1024 * 1024) is second
    assert pool.take(10 * 1024 * 1024) is first


def test_small_transfers_get_a_buffer_their_size():
    pool = BufferPool(size=1024 * 1024, large_count=1, small_size=64 * 1024)
    assert len(pool.take(4096)) == 4096
    assert len(pool.take(0)) == 1
    assert len(pool.take(1024 * 1024)) == 1024 * 1024  # the one large buffer


def test_a_thread_stalled_anywhere_in_give_never_holds_up_take():
    """A session thread can stall at any point (waiting for the GIL, say).
    If it held a lock of the pool meanwhile, every other transfer would
    queue behind it: bench/soak.py found 433 of 531 server threads waiting
    on the BoundedSemaphore the pool used to have, uploads taking 16 s, and
    cut-off uploads still holding their partial's lock 20 s later. Here the
    giving thread is stopped at every line it runs, in give() and below, and
    each time another thread must get a buffer and give it back at once."""
    pool = BufferPool(size=1024, large_count=2, small_size=16)
    lent = pool.take(1024)
    stops = LineStops()
    stops.run(lambda: pool.give(lent))

    def check(n):
        assert returns_at_once(lambda: pool.give(pool.take(1024))), f"take() waited for give() stopped at line {n}"

    assert stops.each_stop(check) >= 1
    assert {len(pool.take(1024)) for _ in range(2)} == {1024}  # both large buffers are back


def test_replies_held_on_a_tls_session_go_out_without_waiting():
    # A session ending with replies still held sends them as far as the
    # socket takes them now (SessionHandler._end); a TLS socket's send takes
    # no MSG_DONTWAIT, and once raised ValueError there.
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    a, b = socket.socketpair()
    a.settimeout(5), b.settimeout(5)
    wrapped = {}
    handshake = threading.Thread(
        target=lambda: wrapped.setdefault("server", server_context.wrap_socket(a, server_side=True))
    )
    handshake.start()
    client = client_context.wrap_socket(b, server_hostname="localhost")
    handshake.join(5)
    wire = Wire(wrapped["server"], idle_timeout=5)
    wire.hold_all = True
    wire.send_header({"ok": True, "n": 1})
    wire.send_header({"ok": True, "n": 2})
    wire.hold_all = False
    assert wire.send_held_now() is True
    assert not wire.holding
    assert wrapped["server"].gettimeout() == 5, "the socket's timeout is as it was"
    assert [recv_frame(client)["n"] for _ in range(2)] == [1, 2]
    client.close(), wire.close()


# -- a peer that hangs up ---------------------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair over 127.0.0.1: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname(), timeout=5)
        ours, _ = listener.accept()
    return ours, peer


def test_peer_hung_up_is_the_peer_closing_or_resetting_not_our_own_shutdown():
    ours, peer = tcp_pair()
    wire = Wire(ours, idle_timeout=5)
    peer.sendall(b"unread")
    assert not wire.peer_hung_up()
    peer.shutdown(socket.SHUT_WR)
    wait_until(wire.peer_hung_up, what="the half-close seen")  # though its bytes are still unread
    wire.close(), peer.close()

    ours, peer = tcp_pair()
    wire = Wire(ours, idle_timeout=5)
    ours.shutdown(socket.SHUT_RDWR)  # a server cutting a session: the peer is still there
    time.sleep(0.05)
    assert not wire.peer_hung_up()
    reset(peer)
    wait_until(wire.peer_hung_up, what="the reset seen")
    wire.close()
    assert wire.peer_hung_up()  # closed here: nothing more can come


def paced_receive(wire: Wire, count: int) -> tuple[list[int], list[BaseException], threading.Thread]:
    """Receive *count* bytes on *wire* at 1,000 bytes a second, in a thread."""
    wire.limits = [RateLimit(1000)]
    got: list[int] = []
    failed: list[BaseException] = []

    def receive():
        try:
            wire.receive(count, lambda chunk: got.append(len(chunk)))
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            failed.append(exc)

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    return got, failed, thread


def test_a_paced_receive_ends_at_once_when_the_peer_resets():
    # Paced, the 8 KiB queued would take 8 s; the peer is gone, so the
    # receive takes what had arrived and stops.
    ours, peer = tcp_pair()
    wire = Wire(ours, idle_timeout=30)
    peer.sendall(b"x" * 8192)
    got, failed, thread = paced_receive(wire, 65536)
    wait_until(lambda: got, what="the first paced chunk")
    reset(peer)
    thread.join(1.0)
    assert not thread.is_alive(), "still pacing bytes from a peer that is gone"
    assert failed and isinstance(failed[0], ConnectionClosed)
    wire.close()


def test_a_paced_receive_whose_peer_sent_all_then_closed_finishes_at_once():
    ours, peer = tcp_pair()
    wire = Wire(ours, idle_timeout=30)
    peer.sendall(b"x" * 8192)
    got, failed, thread = paced_receive(wire, 8192)
    wait_until(lambda: got, what="the first paced chunk")
    peer.shutdown(socket.SHUT_WR)
    thread.join(1.0)
    assert not thread.is_alive() and not failed
    assert sum(got) == 8192
    wire.close(), peer.close()


def test_a_paced_receive_goes_on_pacing_after_our_own_shutdown():
    # A server cutting a busy session shuts its socket: the peer may still
    # be sending, so that is no reason to stop pacing.
    ours, peer = tcp_pair()
    wire = Wire(ours, idle_timeout=30)
    peer.sendall(b"x" * 3072)
    got, failed, thread = paced_receive(wire, 3072)
    wait_until(lambda: got, what="the first paced chunk")
    ours.shutdown(socket.SHUT_RD)
    thread.join(0.5)
    assert thread.is_alive(), "stopped pacing though the peer is still there"
    thread.join(5)
    assert not thread.is_alive() and not failed
    assert sum(got) == 3072
    wire.close(), peer.close()
