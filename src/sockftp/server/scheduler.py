"""Who runs a session when: worker threads for sessions with work, and one
selector thread watching the sockets of idle sessions.

The seed gave every connection a thread for its whole life. A thread costs
about 20 KB of resident memory even when it only waits, so 10,000 idle
sessions would cost 200 MB. Here a session holds a thread only while it has
something to do: when it has been quiet for a moment it *parks*, its socket
goes into a :class:`ParkingLot` (an epoll set, a few hundred bytes of kernel
memory per socket) and its thread goes back to the :class:`WorkerPool`. The
next byte from the client, or its deadline, hands the session to a worker
again. A session is only ever run by one thread at a time: it is either
parked or running, never both.

Some requests never need a worker. A plaintext session starts parked, and
when it wakes, the watching thread serves quick requests itself: ``hello``,
``ping`` and a login by re-login token (a hash and an index lookup), each
of which either finishes without waiting or raises :class:`~sockftp.protocol.errors.WouldBlock`
before it changes anything. A crowd of clients that reconnect at once then
costs one thread, not one thread each: starting and switching between 300
threads cost 0.8 ms of server CPU per login (bench/logins.py). It does so
only while few workers are busy: under load, that one thread would wait for
the GIL behind all of them at every step, and every session it serves or
wakes would wait with it.
"""

from __future__ import annotations

import _thread
import heapq
import itertools
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sockftp.scheduler")


class WorkerPool:
    """Threads that run submitted calls, started on demand and never fewer
    than there are calls to run: a call never waits behind another one,
    because a session's call may last as long as a 1 TB transfer.

    A worker with nothing to do waits *linger* seconds for more work, then
    ends, so a burst of clients leaves no crowd of idle threads behind.

    No lock is taken on the way: an idle worker waits on a mailbox of its
    own (a SimpleQueue) kept in a list, and submit pops a mailbox and posts
    the call to it. list.append, pop and remove and SimpleQueue.put are
    each one step under the GIL. With a lock, a thread that held it while
    waiting for the GIL held up every other: under the soak's 500 clients the
    accept loop waited for it with up to 450 connections queued, and old
    sessions were reaped so late that clients were refused for too many
    sessions. For the same reason a worker is started without waiting for
    it to run (threading.Thread.start() waits: 10 s reconnects in the soak).
    """

    def __init__(self, name: str = "worker", linger: float = 5.0):
        self.name = name
        self.linger = linger
        self._idle: list[queue.SimpleQueue] = []  # mailboxes of waiting workers, latest last
        self._live: set[object] = set()  # a token per worker thread
        self._closed = False
        self._numbers = itertools.count(1)

    def submit(self, call: Callable, *args) -> None:
        """Run ``call(*args)`` in a worker. Raises RuntimeError when no
        thread can be started (the caller still owns what *args* hold)."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        try:
            mailbox = self._idle.pop()
        except IndexError:
            pass
        else:
            mailbox.put((call, args))
            return
        token = object()
        self._live.add(token)
        try:
            _thread.start_new_thread(self._worker, (call, args, f"{self.name}-{next(self._numbers)}", token))
        except BaseException:
            self._live.discard(token)
            raise

    def _worker(self, call: Callable, args: tuple, name: str, token: object) -> None:
        threading.current_thread().name = name  # for logs and py-spy
        mailbox: queue.SimpleQueue = queue.SimpleQueue()
        try:
            while True:
                try:
                    call(*args)
                except Exception:  # noqa: BLE001 - the call's owner logs its own failures; this is the backstop
                    log.exception("%s: unexpected error", threading.current_thread().name)
                call = args = None  # drop references while waiting
                job = self._wait(mailbox)
                if job is None:
                    return
                call, args = job
        finally:
            self._live.discard(token)

    def _wait(self, mailbox: queue.SimpleQueue) -> tuple[Callable, tuple] | None:
        """The next call for this worker, or None when it should end."""
        self._idle.append(mailbox)
        if not self._closed:
            try:
                return mailbox.get(timeout=self.linger)
            except queue.Empty:
                pass
        try:
            self._idle.remove(mailbox)
        except ValueError:
            # submit() or close() took the mailbox meanwhile: what it posts
            # (a call, or None from close) is on its way.
            return mailbox.get()
        return None

    @property
    def threads(self) -> int:
        return len(self._live)

    @property
    def idle(self) -> int:
        """Workers waiting for a call."""
        return len(self._idle)

    @property
    def busy(self) -> int:
        """Workers running a call (an estimate: it is read without a lock)."""
        return max(len(self._live) - len(self._idle), 0)

    def close(self) -> None:
        """Refuse new work; idle workers end at once, busy ones when done."""
        self._closed = True
        while True:
            try:
                mailbox = self._idle.pop()
            except IndexError:
                return
            mailbox.put(None)


class ParkingLot:
    """Sockets of idle sessions, watched by one thread.

    ``park(sock, deadline, wake)`` hands a socket over; ``wake(timed_out)``
    is called exactly once, from the watching thread: with False when the
    socket becomes readable (a request, the peer closing, or a shutdown by
    the server), with True when *deadline* (a ``time.monotonic()`` value)
    passes first. *wake* runs on the watching thread, so it must never
    wait: it serves what can be served at once, and hands the rest of the
    session to a worker. It may park the socket again.
    """

    def __init__(self, name: str = "parking"):
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._arrivals: list[tuple[socket.socket, float, Callable[[bool], None]]] = []
        self._deadlines: list[tuple[float, int, int]] = []  # (deadline, ticket, fd), a heap
        self._parked: dict[int, tuple[int, socket.socket, Callable[[bool], None]]] = {}  # fd -> (ticket, sock, wake)
        self._tickets = itertools.count()
        self._closed = False
        self._signalled = False  # a wake-up byte is on its way for arrivals not yet admitted
        #: Wake-ups of the watching thread that park has asked for (tests read it).
        self.wakeups = 0
        # Written to wake the selector when a socket arrives or on close.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, sock: socket.socket, deadline: float | None, wake: Callable[[bool], None]) -> None:
        own = threading.get_ident() == self._thread.ident
        with self._lock:
            if self._closed:
                raise RuntimeError("the parking lot is closed")
            self._arrivals.append((sock, deadline, wake))
            if own:
                return  # parked again by a wake: admitted at the end of this round
            # One wake-up per round is enough: the round it starts admits
            # every arrival until then. In a burst of new sessions the
            # accept loop would otherwise pay a send, and the watcher a
            # wake-up, for each one.
            signalled, self._signalled = self._signalled, True
            if not signalled:
                self.wakeups += 1
        if signalled:
            return
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the selector is awake anyway

    def _run(self) -> None:
        while True:
            timeout = None
            if self._deadlines:
                timeout = max(self._deadlines[0][0] - time.monotonic(), 0)
            events = self._selector.select(timeout)
            woken = []
            for key, _ in events:
                if key.fileobj is self._wake_r:
                    self._drain_wakeups()
                    continue
                woken.append((key.fd, False))
            now = time.monotonic()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, ticket, fd = heapq.heappop(self._deadlines)
                entry = self._parked.get(fd)
                if entry is not None and entry[0] == ticket:
                    woken.append((fd, True))
            for fd, timed_out in woken:
                entry = self._parked.pop(fd, None)
                if entry is None:
                    continue  # readable and timed out in the same round
                self._selector.unregister(entry[1])
                self._call(entry[2], timed_out)
            if not self._admit():
                return

    def _admit(self) -> bool:
        """Watch the sockets parked since the last round. False once closed."""
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
            self._signalled = False  # a park from now on wakes the next round
            closed = self._closed
        for sock, deadline, wake in arrivals:
            if closed:
                self._call(wake, False)
                continue
            try:
                self._selector.register(sock, selectors.EVENT_READ)
            except (ValueError, OSError):
                # Closed under us: waking it lets the session see that and end.
                self._call(wake, False)
                continue
            ticket = next(self._tickets)
            self._parked[sock.fileno()] = (ticket, sock, wake)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, ticket, sock.fileno()))
        if len(self._deadlines) > 2 * len(self._parked) + 64:
            # Sessions woken by a request leave their deadline behind; drop
            # those, or busy sessions that park often would grow the heap.
            self._deadlines = [d for d in self._deadlines if self._parked.get(d[2], (None,))[0] == d[1]]
            heapq.heapify(self._deadlines)
        if closed:
            for _, sock, wake in self._parked.values():
                self._selector.unregister(sock)
                self._call(wake, False)
            self._parked.clear()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
            return False
        return True

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    @staticmethod
    def _call(wake: Callable[[bool], None], timed_out: bool) -> None:
        try:
            wake(timed_out)
        except Exception:  # noqa: BLE001 - one session's failure must not stop the watcher
            log.exception("waking a parked session failed")

    def close(self) -> None:
        """Wake every parked session (as if readable) and stop watching."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        self._thread.join(5.0)
