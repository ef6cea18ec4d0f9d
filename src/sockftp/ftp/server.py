"""The FTP listener: socketserver's accept loop, one thread per control connection.

:class:`FtpServer` is a second front door of a
:class:`~sockftp.server.SockftpServer` and owns nothing of its own: every
control connection gets a :class:`~sockftp.server.session.Session` over the main
server's storage and authenticator, the identities it makes (homes,
quotas, read-only flags), its bandwidth limits and TLS context, and a slot
in its session registry, so ``max_sessions`` and ``max_sessions_per_ip``
count both protocols together and a stop ends both. Banned addresses are
refused at connect, with a ``421`` reply.

:class:`FtpHandler` runs one control connection: it reads a line, lets
:func:`sockftp.ftp.commands.dispatch` decide, sends the reply, and writes
the main log and the audit log. It is the commands'
:class:`~sockftp.ftp.commands.Link` to the sockets.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time

from ..protocol import tls
from ..protocol.errors import SockftpError, Timeout
from ..protocol.wire import ConnectionClosed
from ..server import audit
from ..server.doors import DoorHandler, FrontDoor
from ..server.ratelimit import RateLimit
from ..server.session import Identity, Session
from ..server.sockets import _peer  # and log peers alike
from . import commands
from .commands import Context, Link, Settings, State
from .control import ABORT, ANSWERED, LATER, ControlConnection
from .data import DataChannels, DataConnection
from .parser import LineTooLong, ParseError, parse_command
from .replies import CLOSING, Reply

log = logging.getLogger("sockftp.ftp")

GREETING = "sockftp FTP server ready"


class FtpServer(FrontDoor):
    """The FTP front door of *main* (a started SockftpServer), listening on
    ``ftp_host`` (default: the main server's host) and ``ftp_port``."""

    name = "FTP"

    def __init__(self, main):
        config = main.config
        require_tls = config.ftp_require_tls
        if require_tls is None:  # by default, as the native protocol: TLS once there is a certificate
            require_tls = main.tls_context is not None
        if require_tls and main.tls_context is None:
            raise ValueError("ftp_require_tls needs a certificate (tls_cert and tls_key)")
        self.settings = Settings(
            tls_available=main.tls_context is not None,
            require_tls=require_tls,
            anonymous=config.anonymous,
            masquerade=config.ftp_masquerade,
        )
        #: The TLS context of data connections (PROT P), or None.
        self.data_tls_context = data_context(config) if main.tls_context is not None else None
        super().__init__(main, config.ftp_host or config.host, config.ftp_port, FtpHandler)

    def refuse(self, sock, error: SockftpError) -> None:
        _refuse(sock, error)


def data_context(config) -> ssl.SSLContext:
    """The TLS context of data connections: the server's certificate and
    settings, with two differences that only data connections need.

    * No TLS 1.3 session tickets. A server sends them after the handshake; a
      client that only uploads never reads them, and some (lftp with GnuTLS)
      lose the end of the file when they close with them unread.
    * A data connection that ends without TLS's close_notify is an error,
      not an end: with ``PROT P`` a truncated upload is never committed.
    """
    context = tls.server_context(config.tls_cert, config.tls_key)
    context.num_tickets = 0
    context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return context


def start(main) -> FtpServer | None:
    """Open *main*'s FTP front door if its config has an ``ftp_port``, and
    run its accept loop in a thread; ``main.stop()`` stops it. Returns it,
    or None without ``ftp_port``."""
    if main.config.ftp_port is None:
        return None
    return FtpServer(main).open()


class FtpHandler(DoorHandler, Link):
    """One control connection, from the greeting to QUIT."""

    server: FtpServer

    def setup(self) -> None:
        main = self.server.main
        config = main.config
        self.label = _peer(self.client_address)  # "host:port", for logs
        self.local = self.request.getsockname()[0]
        self.peer = self.client_address[0]
        self.control = ControlConnection(self.request, config.idle_timeout)
        self.control.during_transfer = self._during_transfer
        self.session = Session(main.storage, self.label, address=self.peer, authenticator=main.authenticator)
        self.state = State()
        self.channels = DataChannels(
            self.local, self.peer, config.ftp_passive_ports, config.ftp_data_timeout, self.server.data_tls_context
        )
        self.session_rate = RateLimit(config.session_rate) if config.session_rate is not None else None
        self.transfer: DataConnection | None = None
        self.login_deadline = time.monotonic() + config.header_timeout
        self.data_in = 0  # file and listing bytes, for the audit log's logout line
        self.data_out = 0

    def handle(self) -> None:
        if not self.quiet:
            log.info("%s FTP session start", self.label)
        started = time.monotonic()
        try:
            self.control.send(Reply(220, GREETING))
            while self._serve_one():
                pass
        except ConnectionClosed as exc:
            log.info("%s connection lost: %s", self.label, exc)
        finally:
            duration = time.monotonic() - started
            moved_in = self.control.bytes_in + self.data_in
            moved_out = self.control.bytes_out + self.data_out
            (log.debug if self.quiet else log.info)(
                "%s FTP session end user=%s in=%d out=%d %.3fs",
                self.label,
                self.session.user,
                moved_in,
                moved_out,
                duration,
            )
            audit.logout(self.session, moved_in, moved_out, duration)
            self.session.logout()
            self.channels.close()

    def finish(self) -> None:
        self.control.close(linger=0 if self.control.closed else 2.0)

    # -- one command -------------------------------------------------------------------------

    def _serve_one(self) -> bool:
        """Read and run one command. False when the session is over."""
        stopping = self.server.main.stopping
        if stopping.is_set():
            return self._goodbye("Server shutting down")
        try:
            line = self.control.read_line(self._wait())
        except Timeout as exc:
            log.info("%s %s", self.label, exc.message)
            return self._goodbye(f"Timeout: {exc.message}; closing")
        except LineTooLong as exc:
            self.control.send(Reply(500, str(exc)))
            return True
        if line is None:
            if stopping.is_set():
                return self._goodbye("Server shutting down")
            return False
        return self._run(line)

    def _wait(self) -> float:
        """The idle timeout, or less before login: a connection gets
        ``header_timeout`` from its start to log in."""
        idle = self.server.main.config.idle_timeout
        if self.session.identity is not None:
            return idle
        left = self.login_deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"not logged in within {self.server.main.config.header_timeout:g} s")
        return min(left, idle)

    def _run(self, line: str) -> bool:
        ctx = Context(self.session, self.state, self.server.settings, self)
        cwd = self.session.cwd  # the audit log resolves paths from where the command started
        verb = _verb(line)
        started = time.monotonic()
        self.record.busy = True
        try:
            reply = commands.dispatch(ctx, line)
        except Exception:  # noqa: BLE001 - a bug in one command must not end the session
            log.exception("%s FTP %s failed", self.label, verb)
            ctx.result = "internal"
            reply = Reply(451, "Internal server error; see the server log")
        finally:
            self.record.busy = False
            self.transfer = None
        if verb in ("STOR", "APPE"):
            self.data_in += ctx.bytes
        else:
            self.data_out += ctx.bytes
        log.info(
            "%s %s %s path=%r bytes=%d %d %.3fs",
            self.label,
            self.session.user,
            verb,
            ctx.path,
            ctx.bytes,
            reply.code,
            time.monotonic() - started,
        )
        if ctx.audit is not None:
            event, fields = ctx.audit
            audit.command(self.session, event, fields, cwd, ctx.bytes, ctx.result)
        self.control.send(reply)
        if self.state.abort_requested:
            self.state.abort_requested = False
            self.control.send(Reply(226, "ABOR successful"))
        if ctx.after is not None:
            try:
                ctx.after()
            except (OSError, ValueError) as exc:
                log.info("%s TLS handshake failed: %s", self.label, exc)
                return False
        return not (ctx.close or reply.code in CLOSING)

    def _goodbye(self, text: str) -> bool:
        try:
            self.control.send(Reply(421, text))
        except ConnectionClosed:
            pass
        return False

    def _during_transfer(self, line: str) -> str:
        """A line that arrived while a transfer runs: ABOR stops it, STAT
        is answered at once, the rest waits (RFC 959 section 4.1.3)."""
        try:
            command = parse_command(line)
        except ParseError:
            return LATER
        if command.verb == "ABOR":
            self.state.abort_requested = True
            return ABORT
        if command.verb == "STAT" and not command.argument.strip() and self.transfer is not None:
            self.control.send(Reply(213, f"Transfer in progress: {self.transfer.bytes} bytes moved"))
            return ANSWERED
        return LATER

    # -- the Link the commands use ---------------------------------------------------------

    def reply(self, reply: Reply) -> None:
        self.control.send(reply)

    def passive(self) -> int:
        return self.channels.passive()

    def active(self, host: str, port: int) -> None:
        self.channels.active(host, port)

    @property
    def data_ready(self) -> bool:
        return self.channels.ready

    def open_data(self, protect: bool) -> DataConnection:
        self.transfer = self.channels.open(protect, self._rate_limits(), self.control)
        self.transfer.use_sendfile = self.server.main.config.sendfile
        return self.transfer

    def start_tls(self) -> None:
        main = self.server.main
        try:
            self.control.start_tls(main.tls_context, main.config.header_timeout)
        finally:
            self.record.sock = self.control.sock  # a stop must reach the TLS socket, even mid-handshake
        self.state.tls = True

    def anonymous_identity(self) -> Identity:
        return self.server.main.anonymous_identity()

    def _rate_limits(self) -> list:
        identity = self.session.identity
        user_rate = None
        if identity is not None:
            user_rate = identity.rate_limit or self.server.main.user_rate_limit(identity.name)
        return [limit for limit in (self.session_rate, user_rate) if limit is not None]


def _verb(line: str) -> str:
    """The command's name for the log: never its argument (PASS!)."""
    word = line.partition(" ")[0]
    name = word.upper()
    return name if name in commands.COMMANDS else repr(word[:16])


def _refuse(sock: socket.socket, error: SockftpError) -> None:
    """Say 421 and why, without blocking the accept loop."""
    try:
        sock.setblocking(False)
        sock.send(Reply(421, error.message).encode())
        while sock.recv(65536):
            pass
    except OSError:
        pass
