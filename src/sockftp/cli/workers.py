"""``sockftp serve --workers N``: N server processes on the same ports.

One server process tops out at one core (the GIL). With ``workers`` above
1, ``serve`` forks N workers before any thread starts; each opens its own
:class:`~sockftp.server.SockftpServer` (and FTP door) on the same ports
with ``SO_REUSEPORT``, so the kernel spreads new connections over them.
They share what nodes share (docs/DEPLOY.md): the data directory and the
account store, where quotas are reserved and bans counted, so a quota or a
ban holds across workers as it does across nodes. SQLite serves here too
(one machine: its write transactions lock the file across processes);
PostgreSQL is needed only across machines.

The parent only supervises: it keeps the ports (a socket bound to each,
never listening, so a port 0 is chosen once for all), passes SIGTERM and
SIGINT on (each worker drains as a lone server does), and starts a worker
again if one dies while the others serve. It must never serve a session.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sockftp.workers")

#: A worker that dies sooner than this after its start is not started again
#: (a bad setting or a port taken would only loop).
MIN_LIFETIME = 2.0

#: Seconds between a worker's checks that its parent still runs.
PARENT_CHECK = 0.5


def reserve_port(host: str, port: int) -> tuple[int, socket.socket]:
    """Bind a socket to *host*:*port* (0: any free port) with SO_REUSEPORT,
    without listening: the port the workers will share, kept for them.
    Returns the port and the socket. Raises OSError."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock.getsockname()[1], sock


def _follow_parent() -> None:
    """In a worker: drain (SIGTERM to itself) if the parent dies, even by
    kill -9, rather than serve on as an orphan nobody stops."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent", daemon=True).start()


def supervise(
    count: int, run_worker: Callable[[int, Callable[[], None]], int], keep: list[socket.socket], on_ready
) -> int:
    """Fork *count* workers, each running ``run_worker(index, ready)`` (its
    exit status; it calls ``ready()`` once it listens), and wait for them
    all. ``on_ready()`` runs in this process once every worker first
    listens: the "listening" line is only true then. *keep*: the sockets
    holding the ports, closed in each worker. Returns 0 once every worker
    has exited after a stop, else 1 (the workers failed at start)."""
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    stopping = False
    ready_read, ready_write = os.pipe()
    pipe_open = True  # closed once the first workers are ready: later ones report to no one

    def ready() -> None:
        if pipe_open:
            os.write(ready_write, b".")

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                for sock in keep:
                    sock.close()
                if pipe_open:
                    os.close(ready_read)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _follow_parent()
                status = run_worker(index, ready)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - a worker must end here, never return into the parent's code
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(status)
        children[pid] = (index, time.monotonic())

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for index in range(count):
        start(index)
    os.close(ready_write)  # the workers hold it: it reads as closed once none is left
    waiting = count
    while waiting > 0 and (got := os.read(ready_read, waiting)):
        waiting -= len(got)
    os.close(ready_read)
    pipe_open = False
    if waiting == 0:
        on_ready()
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid, (None, 0.0))
        if index is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(status)
        if time.monotonic() - started < MIN_LIFETIME:
            log.error("worker %d exited at start (status %d); stopping the others", index, code)
            failed = True
            forward(signal.SIGTERM, None)
            continue
        log.warning("worker %d exited (status %d); starting it again", index, code)
        start(index)
    for sock in keep:
        sock.close()
    return 1 if failed else 0
