"""The server: socketserver's accept loop, bounded, with a thread for each busy session.

The design is the seed's: ``serve_forever()`` waits on a selector for the
listening socket, ``_handle_request_noblock()`` accepts, ``verify_request()``
decides, ``process_request()`` starts a thread and ``finish_request()``
runs a :class:`~sockftp.server.handler.SessionHandler`, whose ``handle()``
reads frames and runs commands. What differs from the seed, and why:

* the listen backlog is 1024, not 5 (a burst of connects is not dropped);
* ``verify_request`` enforces a cap on sessions in total and per address,
  answering ``too_many_sessions`` past either;
* sessions are tracked in a set, not ThreadingMixIn's list of threads,
  which is scanned on every accept and slows accepting to a crawl with
  thousands of sessions open;
* a session holds a thread only while it has work: one that goes quiet
  parks its socket in a selector and frees its thread, so 10,000 idle
  sessions cost memory for their sockets and state, not for 10,000 threads
  (:mod:`sockftp.server.scheduler`);
* :meth:`SockftpServer.stop` shuts down gracefully: stop accepting, end
  idle sessions, give busy ones a grace period, then cut them (an upload
  cut short stays a resumable partial, never a visible file);
* with TLS, each session's thread does its own handshake, under the header
  timeout, so a slow or silent client never holds up the accept loop;
* bandwidth limits throttle each session, and each user's sessions together.

The server decides how sessions arrive and are scheduled; the handler
(:mod:`sockftp.server.handler`) decides what a session does. Neither knows
the other's details. This module must never read or answer a request
itself: past admission (and the one frame refusing a connection), every
byte of a session is the handler's.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass, field

from ..accounts import Account, UserStore
from ..accounts.stores import open_store
from ..protocol import tls
from ..protocol.errors import Banned, SockftpError, TooManySessions, WouldBlock
from ..protocol.frames import encode_header
from ..protocol.limits import LISTEN_BACKLOG, SESSION_STACK_SIZE, WORKER_LINGER
from ..storage import LocalStorage, Storage
from .auth import Authenticator
from .config import STATE_DIR, USERS_DIR, ServerConfig, user_home
from .handler import QUICK_WHILE_BUSY, SessionHandler
from .janitor import Janitor
from .proxied import Arrival, ProxyError, is_trusted, networks, receive
from .quota import QuotaRegistry
from .quota_storage import QuotaStorage
from .ratelimit import RateLimit
from .scheduler import ParkingLot, WorkerPool
from .session import ANONYMOUS, ANONYMOUS_HOME, Identity
from .sockets import _peer
from .uploads import UploadHolders
from .watch import AccountWatcher

log = logging.getLogger("sockftp.server")


@dataclass(eq=False)
class SessionRecord:
    """What the server tracks of a live session."""

    sock: socket.socket
    ip: str
    started: float = field(default_factory=time.monotonic)
    busy: bool = False  # running a command (as opposed to waiting for one)


class SessionRegistry:
    """Live sessions, with their count per address, under one lock."""

    def __init__(self, max_total: int, max_per_ip: int):
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._lock = threading.Lock()
        self._sessions: set[SessionRecord] = set()
        self._per_ip: dict[str, int] = {}
        self._empty = threading.Condition(self._lock)

    def admit(self, sock: socket.socket, ip: str) -> SessionRecord:
        """Register a new session. Raises TooManySessions past a cap."""
        with self._lock:
            if len(self._sessions) >= self.max_total:
                raise TooManySessions(f"the server is full ({self.max_total} sessions); try again later")
            if self._per_ip.get(ip, 0) >= self.max_per_ip:
                raise TooManySessions(f"too many sessions from {ip} (limit {self.max_per_ip})")
            record = SessionRecord(sock, ip)
            self._sessions.add(record)
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            return record

    def release(self, record: SessionRecord) -> None:
        with self._lock:
            if record in self._sessions:
                self._sessions.remove(record)
                left = self._per_ip[record.ip] - 1
                if left:
                    self._per_ip[record.ip] = left
                else:
                    del self._per_ip[record.ip]
            if not self._sessions:
                self._empty.notify_all()

    def __len__(self) -> int:
        return len(self._sessions)

    def interrupt(self, idle_only: bool) -> None:
        """Wake sessions blocked on their socket so they end.

        Idle sessions get their read side shut: their pending read returns
        end-of-stream and they say goodbye. Otherwise both sides are cut.
        """
        with self._lock:
            targets = [r for r in self._sessions if not (idle_only and r.busy)]
        for record in targets:
            try:
                # socket.socket's own shutdown, even for a TLS socket: the
                # SSLSocket one would drop the TLS layer under the session's
                # thread, and its goodbye frame would go out unencrypted.
                socket.socket.shutdown(record.sock, socket.SHUT_RD if idle_only else socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_empty(self, timeout: float) -> bool:
        with self._lock:
            return self._empty.wait_for(lambda: not self._sessions, timeout)


def open_storage(config: ServerConfig, users: UserStore) -> Storage:
    """The storage *config* names: the data directory, or an S3 bucket
    (whose uploads keep their state in *users*, the account store)."""
    if config.storage is None:
        return LocalStorage(config.root, fsync=config.fsync, min_free=config.min_free)
    from ..storage.s3 import PART_SIZE, S3Storage, parse_url

    bucket, prefix = parse_url(config.storage)
    return S3Storage(
        bucket,
        prefix,
        state=users,
        part_size=config.s3_part_size or PART_SIZE,
        lease_time=config.lease_time,
        spool_dir=os.path.join(config.root, STATE_DIR, "spool"),
    )


class SockftpServer(socketserver.TCPServer):
    """A sockftp server. ``serve_forever()`` runs it; ``stop()`` ends it."""

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True

    def __init__(self, config: ServerConfig, storage: Storage | None = None, users: UserStore | None = None):
        self.config = config
        # Settings that can be wrong are checked before anything is opened.
        #: The TLS context of every session's handshake; None: plaintext.
        self.tls_context: ssl.SSLContext | None = _tls_context(config)
        for name in ("session_rate", "user_rate"):
            if getattr(config, name) is not None and not getattr(config, name) > 0:
                raise ValueError(f"{name} must be above 0 bytes per second (or None for no limit)")
        self._user_rates: dict[str, RateLimit] = {}
        self._user_rates_lock = threading.Lock()
        self.users = users or open_store(config.db, config.root)
        self.storage = storage or open_storage(config, self.users)
        self.authenticator = Authenticator(self.users, config, make_identity=self.identity_for)
        self.authenticator.bans.start()  # the bans earned before a restart, and on other servers
        self.quotas = QuotaRegistry(self.storage, self.users, config.lease_time)
        self.watcher = AccountWatcher(self.quotas, self.users)  # account changes reach open sessions
        self.watcher.start()
        #: The uploads under way, so that a resume need not wait out one whose client is gone.
        self.uploads = UploadHolders()
        self.janitor = Janitor(self.storage, config.partial_ttl, removed=self._partial_removed)
        self.sessions = SessionRegistry(config.max_sessions, config.max_sessions_per_ip)
        self.stopping = threading.Event()
        #: Other listeners over this server's accounts, storage and session
        #: registry (the FTP front door, sockftp.ftp): stop() stops them too.
        self.front_ends: list = []
        self._serving = threading.Event()
        self._stop_lock = threading.Lock()
        self._serve_lock = threading.Lock()  # serve_forever's start against stop()
        self._stopped = False
        self._last_accept_warning = 0.0
        #: The balancers that may send a PROXY header; None: the protocol is off.
        self.proxy_trusted = networks(config.proxy_trusted) if config.proxy_protocol else None
        _raise_file_limit(config.max_sessions)
        self._admitted: dict[socket.socket, SessionRecord] = {}  # verified, not yet started
        self.workers = WorkerPool("session", linger=WORKER_LINGER)
        self.parking = ParkingLot()
        family, address = _resolve(config.host, config.port)
        self.address_family = family
        self.allow_reuse_port = config.workers > 1  # the other workers listen on this port too
        super().__init__(address, SessionHandler)
        if config.anonymous:
            self.storage.mkdir(ANONYMOUS_HOME, parents=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def display_address(self) -> str:
        host = self.server_address[0]
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def _partial_removed(self, directory, size: int) -> None:
        """The janitor removed a partial of *size* bytes in *directory*:
        its owner's usage gives the bytes back."""
        if directory[:1] == ANONYMOUS_HOME:
            self.quotas.removed_behind(ANONYMOUS, size)
        elif len(directory) >= 2 and directory[0] == USERS_DIR:
            self.quotas.removed_behind(directory[1], size)

    def user_rate_limit(self, name: str) -> RateLimit | None:
        """The bandwidth limit all of user *name*'s sessions share, or None
        without ``user_rate``. One per user name, for the server's lifetime.

        Sessions apply it unless their :class:`Identity` carries a
        ``rate_limit`` of its own."""
        if self.config.user_rate is None:
            return None
        with self._user_rates_lock:
            limit = self._user_rates.get(name)
            if limit is None:
                limit = self._user_rates[name] = RateLimit(self.config.user_rate)
            return limit

    # -- socketserver's template steps ------------------------------------------

    def identity_for(self, account: Account, quick: bool = False) -> Identity:
        """The identity of a user who just logged in: their home, created if
        missing, seen through their quota.

        With *quick*, only for a user with another session open, whose home
        exists and whose usage is known; else WouldBlock (a first session
        may create the home and measure it, a walk of the whole tree)."""
        home = user_home(account.name)
        if quick:
            ledger = self.quotas.join(account.name, account.quota_bytes, account.max_files)
            if ledger is None:
                raise WouldBlock
        else:
            self.storage.mkdir(home, parents=True)
            ledger = self.quotas.login(account.name, home, account.quota_bytes, account.max_files)
        ledger.read_only, ledger.gone = account.read_only, None  # as of this login, until the watcher reads it again
        return Identity(
            account.name,
            home,
            can_write=not account.read_only,
            storage=QuotaStorage(self.storage, ledger),
            on_logout=lambda: self.quotas.logout(ledger),
            account=ledger,
        )

    def anonymous_identity(self) -> Identity:
        """The shared identity of sessions that never log in (--anonymous)."""
        ledger = self.quotas.login(ANONYMOUS, ANONYMOUS_HOME)
        return Identity(
            ANONYMOUS,
            ANONYMOUS_HOME,
            storage=QuotaStorage(self.storage, ledger),
            on_logout=lambda: self.quotas.logout(ledger),
        )

    def admit(self, sock: socket.socket, client_address) -> SessionRecord:
        """Admit a connection to any front end (this one, or FTP's): the ban
        list, then the session caps. Raises Banned or TooManySessions; each
        front end refuses in its own protocol."""
        self.authenticator.bans.check(client_address[0])
        return self.sessions.admit(sock, client_address[0])

    def trusts_proxy(self, client_address) -> bool:
        """False if the PROXY protocol is on and *client_address* (a
        socket's peer) may not send it: that connection is closed unanswered,
        on the accept thread (it costs nothing to tell)."""
        if self.proxy_trusted is None or is_trusted(client_address[0], self.proxy_trusted):
            return True
        log.warning("refused %s: not a trusted proxy (proxy_trusted)", _peer(client_address))
        return False

    def arrive(self, sock: socket.socket, client_address, answer=None) -> tuple[Arrival, SessionRecord] | None:
        """The start of a connection that came through a balancer: read its
        PROXY header, in the session's thread, then admit it by the real
        client's address (a LOCAL one, the balancer's own health check, by
        its socket address and without the ban list: a banned client behind
        the same balancer must not take the balancer's checks down).

        Every door calls this first when ``proxy_trusted`` is set, before
        sending anything. Returns the arrival and its registry record, or
        None if the connection was refused: logged, answered by
        ``answer(sock, error)`` in the door's protocol (by default the
        native one's error frame) when it was the
        admission that failed (a bad header gets no answer); the caller
        closes it."""
        try:
            arrival = receive(sock, client_address, self.proxy_trusted, self.config.header_timeout)
        except ProxyError as exc:
            log.info("%s refused: %s", _peer(client_address), exc)
            return None
        try:
            if arrival.local:
                return arrival, self.sessions.admit(sock, arrival.address[0])
            return arrival, self.admit(sock, arrival.address)
        except (TooManySessions, Banned) as exc:
            log.warning("refused %s via %s: %s", _peer(arrival.address), _peer(client_address), exc.message)
            (answer or refuse)(sock, exc)
            return None

    def verify_request(self, request, client_address) -> bool:
        if self.proxy_trusted is not None:
            # Admitted in the session's thread, by the address in its header.
            return self.trusts_proxy(client_address)
        try:
            self._admitted[request] = self.admit(request, client_address)
            return True
        except (TooManySessions, Banned) as exc:
            log.warning("refused %s: %s", _peer(client_address), exc.message)
            refuse(request, exc)
            return False

    def process_request(self, request, client_address) -> None:
        record = self._admitted.pop(request, None)  # None: admitted once its PROXY header is read
        handler = self.RequestHandlerClass(request, client_address, self, record)
        if record is not None and self.tls_context is None and not self.config.anonymous and self.lot_may_serve():
            # No thread yet: the session waits in the parking lot, whose
            # thread serves its hello and token login (see SessionHandler).
            # Not while many workers are busy: the accept loop and the
            # parking lot, one thread each, would then wait for the GIL
            # behind all of them at every step of every new session.
            handler.start_parked()
            return
        try:
            self.workers.submit(handler.start)
        except BaseException:
            # No thread, no session: give its slot back (socketserver closes
            # the socket after handle_error).
            if record is not None:
                self.sessions.release(record)
            raise

    def lot_may_serve(self) -> bool:
        """True while few enough workers are busy for the parking lot's one
        thread to serve quick requests itself; past QUICK_WHILE_BUSY it
        would wait for the GIL behind all of them at every step."""
        return self.workers.busy <= QUICK_WHILE_BUSY

    def park(self, handler: SessionHandler, deadline: float | None) -> None:
        """Free *handler*'s thread until its client sends something, or until
        *deadline* (``time.monotonic()``)."""
        self.parking.park(handler.request, deadline, handler.wake)

    def session_ended(self, handler: SessionHandler) -> None:
        if handler.record is not None:  # None: refused before admission (a bad PROXY header)
            self.sessions.release(handler.record)
        self.shutdown_request(handler.connection)

    def handle_error(self, request, client_address) -> None:
        log.exception("error accepting %s", _peer(client_address))

    def get_request(self):
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The connection stays queued and the listener stays readable:
                # without a pause the accept loop would spin at full CPU.
                now = time.monotonic()
                if now - self._last_accept_warning > 10:
                    self._last_accept_warning = now
                    log.warning("cannot accept connections: %s; pausing", exc.strerror)
                time.sleep(0.1)
            raise

    def server_activate(self) -> None:
        # Sessions need far less than the default 8 MiB of stack address space.
        threading.stack_size(SESSION_STACK_SIZE)
        super().server_activate()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        # Decided under one lock with stop(): either the stop comes first
        # and we never serve, or we serve and the stop waits for the loop to
        # end. Without it a stop in between waited for a loop never begun.
        with self._serve_lock:
            if self.stopping.is_set():
                return
            self._serving.set()
        self.janitor.start()
        try:
            super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    # -- stopping ------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully. Call from a thread other than ``serve_forever``'s.

        Stops accepting, ends idle sessions at once, lets busy ones finish for
        *grace* seconds, then cuts the rest.
        """
        with self._stop_lock:  # a second signal waits for the first stop
            if self._stopped:
                return
            self._stop(self.config.shutdown_grace if grace is None else grace)
            self._stopped = True

    def _stop(self, grace: float) -> None:
        with self._serve_lock:
            self.stopping.set()
            serving = self._serving.is_set()
        self.janitor.stop()
        for front_end in self.front_ends:
            front_end.stop_accepting()
        if serving:
            self.shutdown()  # returns once serve_forever has stopped accepting
        self.server_close()
        log.info("stopping: %d sessions open", len(self.sessions))
        self.sessions.interrupt(idle_only=True)
        if not self.sessions.wait_empty(grace):
            log.info("stopping: cutting %d busy sessions", len(self.sessions))
            self.sessions.interrupt(idle_only=False)
            if not self.sessions.wait_empty(5.0):
                # Leave storage open for the stragglers; the process is ending.
                log.warning("stopping: %d sessions did not end", len(self.sessions))
                return
        self.parking.close()
        self.workers.close()
        self.watcher.close()
        self.quotas.close()
        self.authenticator.bans.close()
        self.storage.close()
        self.users.close()
        log.info("stopped")


def _raise_file_limit(max_sessions: int) -> None:
    """Raise the soft limit on open files as far as allowed: a session uses
    one descriptor, three while it uploads."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3 * max_sessions + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            new = soft
        if new < want:
            log.warning(
                "open-file limit %d is low for %d sessions; raise it (ulimit -n) or lower --max-sessions",
                new,
                max_sessions,
            )


def _resolve(host: str, port: int):
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return family, address[:2]


def _tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    if not config.tls_cert and not config.tls_key:
        return None
    if not (config.tls_cert and config.tls_key):
        raise ValueError("TLS needs both a certificate (tls_cert) and its private key (tls_key)")
    return tls.server_context(config.tls_cert, config.tls_key)


def refuse(sock: socket.socket, error: SockftpError) -> None:
    """Tell a refused client why, without blocking the accept loop."""
    try:
        sock.setblocking(False)
        sock.send(encode_header(error.to_reply()))
        # Read what the client already sent, so closing does not answer
        # with a reset that could destroy our reply before it is read.
        while sock.recv(65536):
            pass
    except OSError:
        pass


# SessionHandler is the handler's (sockftp.server.handler); it stays
# importable from here, as it was from sockftp.server before the split.
__all__ = ["ServerConfig", "SessionHandler", "SockftpServer"]
