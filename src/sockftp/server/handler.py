"""A session's loop: socketserver's request handler for the native protocol.

A :class:`SessionHandler` serves one connection from its setup (and TLS
handshake) to its goodbye: it reads frames, runs their commands through
:mod:`sockftp.server.commands`, replies, and parks when the client goes
quiet; woken, it serves quick requests on the parking lot's thread and
hands the rest to a worker (:mod:`sockftp.server.scheduler`).

It must never accept or admit a connection (the session caps, the ban
list), nor decide how sessions are scheduled: that is
:mod:`sockftp.server.listener`'s, which it knows only through the few
methods it calls on its server, and imports only for type checking (the
listener imports this module: anything more would be a cycle).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import time
from typing import TYPE_CHECKING

from ..protocol import tls
from ..protocol.errors import (
    FATAL_CODES,
    ErrorCode,
    Internal,
    ShuttingDown,
    SockftpError,
    Timeout,
    TlsRequired,
    WouldBlock,
)
from ..protocol.limits import PARK_AFTER
from ..protocol.wire import ConnectionClosed, Wire
from . import (
    audit,
    commands,
    sync_commands,  # noqa: F401 - registers tree, blocks and utime with the commands
)
from .ratelimit import RateLimit
from .session import Session
from .sockets import _close, _peer

if TYPE_CHECKING:
    from .listener import SessionRecord, SockftpServer

# The listener's logger: a session's lines read as they always have.
log = logging.getLogger("sockftp.server")

#: Quick requests served on the parking lot's thread per wake, at most: a
#: client pipelining pings must not hold up the other parked sessions.
QUICK_BATCH = 32

#: Busy workers above which the parking lot serves nothing itself.
QUICK_WHILE_BUSY = 8

#: Commands quick enough that a reply held back for a pipelined batch may
#: wait for them (get flushes itself before hashing a large file).
HOLD_ACROSS = frozenset({"put", "get", "stat", "ping", "pwd", "cd", "mkdir", "rm", "mv", "quota", "utime"})


class SessionHandler(socketserver.BaseRequestHandler):
    """One connection: read a frame, run its command, reply; until done.

    socketserver's handler runs a whole session in its constructor. Here a
    session runs in slices (see :mod:`sockftp.server.scheduler`): :meth:`start`
    sets up and serves, and whenever the client goes quiet the session
    parks, to be :meth:`wake`-d by its next request, on whichever worker
    thread is free. :meth:`setup`, :meth:`handle` and :meth:`finish` keep
    socketserver's meanings.
    """

    server: SockftpServer

    def __init__(self, request, client_address, server: SockftpServer, record: SessionRecord):
        self.request = self.connection = request
        self.client_address = client_address
        self.server = server
        self.record = record
        self.peer = _peer(client_address)
        self.wire = None
        self.session = None
        self._ended = False
        self.audit_held = audit.Held()
        #: A balancer's own connection (a PROXY LOCAL: its health check):
        #: served, but not logged as a session.
        self.quiet = False

    def start(self) -> None:
        """The session's first slice, on a worker thread."""
        if self.record is None and not self._arrive():
            return
        if self._begin(may_wait=True):
            self._slice(timed_out=False)

    def _arrive(self) -> bool:
        """Through a balancer: read the PROXY header, then be admitted by
        the real client's address, which the session goes by from then on.
        False if refused (logged; the connection is closed)."""
        arrived = self.server.arrive(self.request, self.client_address)
        if arrived is None:
            self._ended = True
            self.server.session_ended(self)
            return False
        arrival, self.record = arrived
        self.client_address = arrival.address
        self.peer = _peer(arrival.address)
        self.quiet = arrival.local
        return True

    def start_parked(self) -> None:
        """The session's start without a thread (a plaintext server's accept
        loop): set up, and park until the client's first request."""
        if self._begin(may_wait=False):
            self._park()

    def _begin(self, may_wait: bool) -> bool:
        """Set up; False if the session ended instead. *may_wait*: on a
        worker, which may linger for a refused client to read why."""
        try:
            self.setup()
            if self.wire is None:  # TLS refused or failed, and logged
                self._end()
                return False
            if not self.quiet:
                log.info("%s session start", self.peer)
            self.started = self.last_active = time.monotonic()
            return True
        except SockftpError as exc:
            # The server could not set the session up (out of descriptors,
            # its storage failing): the client is told why, not hung up on.
            log.warning("%s session refused: %s", self.peer, exc)
            self.session = None  # it never began: nothing to log out
            if self.wire is not None and may_wait:
                self._goodbye(exc)
            self._end()
            return False
        except Exception:  # noqa: BLE001 - one session's bug must not reach the others
            log.exception("session %s failed", self.peer)
            self._end()
            return False

    def _park(self) -> None:
        try:
            self.server.park(self, self._deadline())
        except RuntimeError:  # the parking lot has closed: the server is stopping
            self._end()

    def wake(self, timed_out: bool) -> None:
        """Called by the parking lot, on its thread: the client sent
        something (or went away), or the session's deadline passed.

        Quick requests are served right here, and the session parks again:
        a client that connects, says hello and logs in with a token (a
        reconnect) never takes a thread. Anything else goes to a worker, and
        so does everything while many workers are busy: this one thread
        then waits for the GIL behind all of them at every step, and every
        session it serves or wakes waits with it (the soak: reconnects took
        2.2 s instead of 0.13 s)."""
        if not timed_out and self.server.lot_may_serve():
            try:
                served = self._serve_quick()
            except Exception:  # noqa: BLE001 - a bug here must neither stop the lot nor strand the session
                log.exception("session %s: serving on the parking lot failed", self.peer)
                served = False
            if served:
                self._park()
                return
        try:
            self.server.workers.submit(self._slice, timed_out)
        except RuntimeError:  # stopping, or no thread to be had: end here
            self._end()

    def _serve_quick(self) -> bool:
        """Serve what the client has sent, on the parking lot's thread, as
        long as each request is a quick command that can be done without
        waiting, at most QUICK_BATCH of them. True: all served and all
        replies sent. False: a worker must go on from where this stopped
        (the rest is still buffered, the replies not sent yet are held)."""
        wire = self.wire
        deadline = self._deadline()
        if wire.tls or self.server.stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
            return False  # a worker says goodbye, or times the session out
        if not wire.read_now():
            return False  # nothing came: the peer closed, or the socket broke
        wire.hold_all = True  # the replies go out together, without waiting
        try:
            served_all = self._serve_buffered_quick()
        finally:
            wire.hold_all = False
        return wire.send_held_now() and served_all

    def _serve_buffered_quick(self) -> bool:
        decoder = self.wire.decoder
        for _ in range(QUICK_BATCH):
            try:
                header = decoder.peek_header()
            except SockftpError:
                return False  # a bad frame: the worker meets it again, and answers
            if header is None:
                return not decoder.buffered  # part of a header: the worker times it
            name = header.get("cmd")
            command = commands.COMMANDS.get(name) if isinstance(name, str) else None
            if command is None or not command.quick:
                return False  # refused or run by a worker, as ever
            self._apply_rate_limits()
            if self._run(header, quick=True) is None:
                return False  # it would wait: still buffered, for the worker
            self.last_active = time.monotonic()
        return not decoder.buffered

    def _slice(self, timed_out: bool) -> None:
        try:
            if timed_out:
                more = self._time_out()
            else:
                more = self.handle()
            if more:
                self.server.park(self, self._deadline())
                return
        except Exception:  # noqa: BLE001 - one session's bug must not reach the others
            log.exception("session %s failed", self.peer)
        self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self.audit_held.write()
            if self.session is not None and not self.quiet:
                log.info(
                    "%s session end user=%s in=%d out=%d %.3fs",
                    self.peer,
                    self.session.user,
                    self.wire.bytes_in,
                    self.wire.bytes_out,
                    time.monotonic() - self.started,
                )
                audit.logout(self.session, self.wire.bytes_in, self.wire.bytes_out, time.monotonic() - self.started)
                self.session.logout()
            if self.wire is not None:
                # A reply still held (normally sent already), if the socket
                # takes it now: this may run on the parking lot's thread, and
                # the peer may have stopped reading.
                self.wire.send_held_now()
            self.finish()
        except Exception:  # noqa: BLE001
            log.exception("ending session %s failed", self.peer)
        finally:
            self.server.session_ended(self)

    def setup(self) -> None:
        config = self.server.config
        # Replies are small writes answering small reads; without this,
        # Nagle's algorithm meets delayed ACKs and a small get waits ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.wire = None
        if self.server.tls_context is not None:
            tls_sock = self._start_tls()
            if tls_sock is None:
                return  # refused or failed, and logged; handle() does nothing
            self.request = tls_sock
        self.wire = Wire(self.request, config.idle_timeout, config.header_timeout)
        self.wire.use_sendfile = config.sendfile
        self.wire.before_send = self.audit_held.write
        self.session_rate = RateLimit(config.session_rate) if config.session_rate is not None else None
        self._rated_identity = None
        self.session = Session(
            self.server.storage,
            self.peer,
            address=self.client_address[0],
            authenticator=self.server.authenticator,
            uploads=self.server.uploads,
        )
        if config.anonymous:
            self.session.login(self.server.anonymous_identity())
        self._apply_rate_limits()
        self.login_deadline = time.monotonic() + config.header_timeout

    def _start_tls(self) -> ssl.SSLSocket | None:
        """The connection wrapped in TLS, or None if it was refused or the
        handshake failed (logged in one line, never a traceback).

        Everything here, from the first byte to the end of the handshake,
        must happen within the header timeout. A client whose first bytes
        are not a TLS record speaks plaintext: it gets a plaintext
        ``tls_required`` frame and the connection closes.
        """
        sock = self.request
        timeout = self.server.config.header_timeout
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        try:
            opening = sock.recv(2, socket.MSG_PEEK)
        except TimeoutError:
            log.info("%s sent nothing within %g s; closing", self.peer, timeout)
            return None
        except OSError as exc:
            log.info("%s connection lost before TLS: %s", self.peer, tls.describe_error(exc))
            return None
        if not opening:
            log.info("%s closed before TLS", self.peer)
            return None
        if not tls.looks_like_tls(opening):
            log.info("%s plaintext client on a TLS port; refused", self.peer)
            wire = Wire(sock, timeout)
            try:
                wire.send_header(TlsRequired("this server speaks TLS only: connect with --tls").to_reply())
            except (ConnectionClosed, SockftpError):
                return None
            wire.linger_close()
            return None
        try:
            tls_sock = self.server.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.info("%s TLS failed: %s", self.peer, tls.describe_error(exc))
            return None
        # The accepted socket is now tls_sock's: a shutdown must reach this one.
        self.record.sock = tls_sock
        try:
            tls.handshake(tls_sock, max(deadline - time.monotonic(), 0.001))
        except (OSError, ValueError) as exc:
            log.info("%s TLS handshake failed: %s", self.peer, tls.describe_error(exc))
            _close(tls_sock)
            return None
        log.debug("%s TLS %s %s", self.peer, tls_sock.version(), tls_sock.cipher()[0])
        return tls_sock

    def _apply_rate_limits(self) -> None:
        """Throttle the wire by this session's limit and its user's. Checked
        before each command, since ``auth`` can change the user."""
        identity = self.session.identity
        if identity is self._rated_identity:
            return
        self._rated_identity = identity
        user_rate = None
        if identity is not None:
            user_rate = identity.rate_limit or self.server.user_rate_limit(identity.name)
        self.wire.limits = [limit for limit in (self.session_rate, user_rate) if limit is not None]

    def finish(self) -> None:
        # socketserver closes the socket it accepted, but TLS took that over.
        if isinstance(self.request, ssl.SSLSocket):
            _close(self.request)

    def handle(self) -> bool:
        """Serve requests while they come. True when the client has gone
        quiet (the session should park), False when the session is over."""
        while True:
            deadline = self._deadline()
            wait = PARK_AFTER if deadline is None else min(PARK_AFTER, deadline - time.monotonic())
            if wait <= 0:
                return self._time_out()
            try:
                ready = self.wire.wait_for_input(wait)  # sends the replies held first
            except (ConnectionClosed, SockftpError) as exc:  # the peer never took the replies held
                log.info("%s %s; closing", self.peer, exc)
                return False
            if not ready:
                if deadline is not None and time.monotonic() >= deadline:
                    return self._time_out()
                return True
            if not self._serve_one():
                return False
            self.last_active = time.monotonic()

    def _deadline(self) -> float | None:
        """When the session times out if no request comes: the idle timeout
        after its last request, or sooner while it must log in and has not
        (it gets ``header_timeout`` from its start to do so, so clients that
        never log in cannot hold sessions by pinging)."""
        idle = self.server.config.idle_timeout
        deadline = None if idle is None else self.last_active + idle
        if self.session.identity is None:
            deadline = self.login_deadline if deadline is None else min(deadline, self.login_deadline)
        return deadline

    def _time_out(self) -> bool:
        exc = self._timeout()
        log.info("%s %s", self.peer, exc)
        return self._goodbye(exc)

    def _timeout(self) -> Timeout:
        if self.session.identity is None and time.monotonic() >= self.login_deadline:
            return Timeout(f"not logged in within {self.server.config.header_timeout:g} s")
        return Timeout(f"no data from the peer for {self.server.config.idle_timeout:g} s")

    def _wait_for_request(self) -> float | None:
        """How long a read of the next request may wait (it only waits when
        a header arrives in pieces): until the session's deadline."""
        deadline = self._deadline()
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        return left

    def _serve_one(self) -> bool:
        """Serve one request. False when the session is over."""
        stopping = self.server.stopping
        if stopping.is_set():
            return self._goodbye(ShuttingDown("the server is shutting down"))
        try:
            header = self.wire.read_header(self._wait_for_request())
        except SockftpError as exc:  # bad frame, bad JSON, timeout
            if exc.code == ErrorCode.BAD_FRAME and not self.wire.tls and tls.looks_like_tls(self.wire.opening):
                # A frame in reply would only confuse its TLS library: close,
                # and the client reports a failed handshake.
                log.info("%s client tried TLS on a plaintext port; closing", self.peer)
                return False
            if exc.code in FATAL_CODES:
                log.info("%s %s", self.peer, exc)
                return self._goodbye(exc)
            return self._reply_error(None, exc)
        except ConnectionClosed as exc:
            log.info("%s connection lost: %s", self.peer, exc)
            return False
        if header is None:
            if stopping.is_set():
                return self._goodbye(ShuttingDown("the server is shutting down"))
            return False
        self._apply_rate_limits()
        return self._run(header)

    def _run(self, header: dict, quick: bool = False) -> bool | None:
        """Run the request *header*, already read (with *quick*: peeked, on
        the parking lot's thread). False when the session is over; None
        (only with *quick*) when it would have to wait, and nothing was
        done: it is still buffered for a worker to run."""
        ctx = commands.Context(self.session, self.wire, quick=quick)
        cwd = self.session.cwd  # the audit log resolves paths from where the command started
        name = header.get("cmd") if isinstance(header.get("cmd"), str) else "?"
        if name not in HOLD_ACROSS:
            # A reply held back for a pipelined batch must not wait out
            # slow work: an auth (argon2, the failure delay), a tree walk.
            try:
                self.wire.flush()
            except (ConnectionClosed, SockftpError) as exc:  # the peer never took them
                log.info("%s %s; closing", self.peer, exc)
                return False
        started = time.monotonic()
        self.record.busy = True
        result = "ok"
        audited = False

        def audit_first(outcome: str) -> None:
            # The line is held before the reply is sent: whichever write
            # carries the reply writes the line first (Wire.before_send).
            nonlocal audited
            audited = True
            audit.command(self.session, name, header, cwd, ctx.bytes, outcome, self.audit_held)

        try:
            reply = commands.dispatch(ctx, header)
            if reply is not None:
                audit_first(result)
                # Held back while the client's next request is already
                # here: a pipelined batch gets its replies in few writes.
                self.wire.send_header(reply, hold=True)
        except WouldBlock:
            result = None
            return None
        except SockftpError as exc:
            if quick and exc.code in FATAL_CODES:
                result = None  # closing waits for the peer (linger_close): a worker's job
                return None
            result = str(exc.code)
            if exc.code in FATAL_CODES:
                ctx.close = True
            if ctx.wire_dirty:
                ctx.close = True
            else:
                audit_first(result)
                if not self._send_error(exc):
                    return False
        except ConnectionClosed as exc:
            result = "connection_lost"
            log.info("%s connection lost during %r: %s", self.peer, name[:32], exc)
            return False
        except Exception:  # noqa: BLE001 - a bug in one command must not end the server
            result = "internal"
            log.exception("%s %r failed", self.peer, name[:32])
            ctx.close = ctx.close or ctx.wire_dirty
            if not ctx.wire_dirty:
                audit_first(result)
                if not self._send_error(Internal("internal server error; see the server log")):
                    return False
        finally:
            self.record.busy = False
            if result is not None:  # None: not run, left for a worker
                if quick:
                    self.wire.decoder.next_header()  # served: consume the request peeked
                self._log_command(name, ctx, result, started)
                if not audited:  # a command that sent its own replies (get, list), or none
                    audit.command(self.session, name, header, cwd, ctx.bytes, result, self.audit_held)
                if not self.wire.holding:
                    self.audit_held.write()  # nothing to wait for
        if ctx.close:
            self.wire.linger_close()
            return False
        return True

    def _log_command(self, name: str, ctx: commands.Context, result: str, started: float) -> None:
        if self.quiet:
            return
        log.info(
            "%s %s %s path=%r bytes=%d %s %.3fs",
            self.peer,
            self.session.user,
            # A name the client made up is quoted: it may hold a newline.
            name if name in commands.COMMANDS else repr(name[:32]),
            ctx.path,
            ctx.bytes,
            result,
            time.monotonic() - started,
        )

    def _reply_error(self, name, exc: SockftpError) -> bool:
        log.info("%s request refused: %s", self.peer, exc)
        return self._send_error(exc)

    def _send_error(self, exc: SockftpError) -> bool:
        try:
            self.wire.send_header(exc.to_reply())
            return True
        except (ConnectionClosed, SockftpError):
            return False

    def _goodbye(self, exc: SockftpError) -> bool:
        if self._send_error(exc):
            self.wire.linger_close()
        return False


__all__ = ["HOLD_ACROSS", "QUICK_BATCH", "QUICK_WHILE_BUSY", "SessionHandler"]
