"""The HTTP listener: socketserver's accept loop, one worker per connection.

:class:`HttpServer` is a front door of a :class:`~sockftp.server.SockftpServer`,
like :class:`~sockftp.ftp.FtpServer`, and owns nothing of its own: its
connections are admitted by the main server (bans, session caps), run on
its worker pool, get a :class:`~sockftp.server.session.Session` over its
storage and authenticator, and share its TLS certificate, bandwidth limits
and audit log. It stops with the main server.

:class:`HttpHandler` runs one connection (:mod:`sockftp.http.conn`) and
answers each request: the route (:mod:`sockftp.http.router`), the login
(:mod:`sockftp.http.auth`), the handler, the security headers every
response carries, the log line and the audit line.

Routes come from modules that each have a ``register(door)``: the file API
and the health check (``files``), tus (``tus``), and any named in
:data:`ROUTE_MODULES` (the browser UI adds itself there).
"""

from __future__ import annotations

import importlib
import logging
import socket
import ssl
import time
from urllib.parse import unquote_to_bytes

import h11

from ..protocol.errors import Banned, SockftpError, Timeout, TlsRequired, TooManySessions
from ..protocol.wire import ConnectionClosed
from ..server import audit
from ..server.doors import DoorHandler, FrontDoor
from ..server.ratelimit import RateLimit
from ..server.session import Session
from ..server.sockets import _peer
from .auth import Login
from .conn import Closed, Exchange, HttpConnection, serve
from .router import DEFAULT_CSP, SECURITY_HEADERS, HttpError, Request, Response, Router, error_response, parse_query

log = logging.getLogger("sockftp.http")

#: Modules (under sockftp.http) whose ``register(door)`` adds routes, in order.
ROUTE_MODULES = ["files", "tus", "ui", "shares"]


class HttpServer(FrontDoor):
    """The HTTP front door of *main* (a started SockftpServer), listening
    on ``http_host`` (default: the main server's host) and ``http_port``."""

    name = "HTTP"

    def __init__(self, main):
        config = main.config
        self.router = Router()
        super().__init__(main, config.http_host or config.host, config.http_port, HttpHandler)
        #: State route modules keep for the door's lifetime (tus uploads...).
        self.extensions: dict[str, object] = {}
        #: Functions that hide secrets a request target may carry (a share
        #: link's) before it is logged; route modules add theirs.
        self.redactors: list = []
        for name in ROUTE_MODULES:
            importlib.import_module(f"{__package__}.{name}").register(self)

    def loggable(self, target: str) -> str:
        """*target* as log lines show it: without the secrets the route
        modules' redactors hide, and at most 200 characters."""
        for redact in self.redactors:
            target = redact(target)
        return target[:200]

    def refuse(self, sock, error: SockftpError) -> None:
        _refuse(sock, 503 if isinstance(error, TooManySessions) else 403, error.message)

    def stop_accepting(self) -> None:
        super().stop_accepting()
        for extension in self.extensions.values():
            close = getattr(extension, "close", None)
            if close is not None:
                close()


def start(main) -> HttpServer | None:
    """Open *main*'s HTTP front door if its config has an ``http_port``,
    and run its accept loop in a thread; ``main.stop()`` stops it."""
    if main.config.http_port is None:
        return None
    return HttpServer(main).open()


class HttpHandler(DoorHandler):
    """One connection, from its first request to its close."""

    server: HttpServer

    def setup(self) -> None:
        main = self.server.main
        config = main.config
        self.label = _peer(self.client_address)
        self.peer = self.client_address[0]
        sock = self.request
        if main.tls_context is not None:
            sock.settimeout(config.header_timeout)
            try:
                sock = main.tls_context.wrap_socket(sock, server_side=True)
            except (OSError, ValueError) as exc:
                log.info("%s TLS handshake failed: %s", self.label, exc)
                self.conn = None
                return
            finally:
                self.record.sock = sock if isinstance(sock, ssl.SSLSocket) else self.request
        self.conn = HttpConnection(
            sock,
            idle_timeout=config.idle_timeout,
            header_timeout=config.header_timeout,
            use_sendfile=config.sendfile,
            stopping=main.stopping,
        )
        self.session = Session(main.storage, self.label, address=self.peer, authenticator=main.authenticator)
        self.session.uploads = main.uploads
        self.login = Login(self.server, self.session)
        self.session_rate = RateLimit(config.session_rate) if config.session_rate is not None else None

    def handle(self) -> None:
        if self.conn is None:
            return
        started = time.monotonic()
        try:
            serve(self.conn, self._answer)
        finally:
            duration = time.monotonic() - started
            audit.logout(self.session, self.conn.bytes_in, self.conn.bytes_out, duration)
            self.login.close()
            log.debug("%s HTTP connection end, %d requests", self.label, self.conn.requests)

    def finish(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # -- one request ----------------------------------------------------------------------

    def _answer(self, exchange: Exchange) -> None:
        # Busy from the head to the last byte of the answer: a stop's first
        # step shuts only idle connections, and this one is not.
        self.record.busy = True
        try:
            self._answer_busy(exchange)
        finally:
            self.record.busy = False

    def _answer_busy(self, exchange: Exchange) -> None:
        event = exchange.request
        method = event.method.decode("ascii", "replace")
        target = event.target.decode("ascii", "replace")
        started = time.monotonic()
        request = None
        close = False
        response = None
        result = "ok"
        try:
            try:
                request = self._request(exchange, event, method, target)
                response = self._route(request, exchange)
            except (Closed, Timeout, ConnectionClosed):
                result = "cut"
                raise  # the connection is over (Timeout is a SockftpError, but no answer can follow it)
            except (HttpError, SockftpError) as exc:
                if isinstance(exc, SockftpError) and request is not None and request.session is not None:
                    exc.localize(self.session.display)
                response = error_response(exc)
                result = str(exc.code)
                close = isinstance(exc, (Banned, TlsRequired)) or getattr(exc, "close", False)
            except h11.RemoteProtocolError:
                result = "bad_request"
                raise
            except Exception:  # noqa: BLE001 - a bug in one handler must not end the others
                log.exception("%s HTTP %s %s failed", self.label, method, self.server.loggable(target))
                response = error_response(HttpError(500, "internal server error; see the server log", code="internal"))
                result = "internal"
            _secure(response)
            if close:
                response.headers.append(("Connection", "close"))
            try:
                self.conn.send_response(exchange, response, head_only=method == "HEAD")
            except (Closed, Timeout, ConnectionClosed):
                result = "cut"
                raise
            finally:
                if response.after is not None:
                    response.after()
        finally:
            log.info(
                "%s %s %s %r %s in=%d out=%d %.3fs",
                self.label,
                self.session.user,
                method,
                self.server.loggable(target),
                response.status if response is not None else "-",
                exchange.bytes_in,
                exchange.bytes_out,
                time.monotonic() - started,
            )
            if request is not None and "audit" in request.state:
                name, fields = request.state["audit"]
                moved = exchange.bytes_in if name == "put" else exchange.bytes_out
                audit.command(self.session, name, fields, (), moved, result)
        if close:
            raise Closed("refused")

    def _request(self, exchange: Exchange, event: h11.Request, method: str, target: str) -> Request:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("ascii").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if "transfer-encoding" in headers and "content-length" in headers:
            # h11 lets Transfer-Encoding win; a proxy in front might not.
            raise _Smuggling("a request may not have both Content-Length and Transfer-Encoding")
        raw_path, _, query = _origin_form(event.target).partition(b"?")
        if not raw_path.startswith(b"/"):
            raise HttpError(400, "the request target must be a path")
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "the path is not UTF-8 once percent-decoded") from None
        return Request(
            method=method,
            target=target,
            path=path,
            query=parse_query(query.decode("ascii", "replace")),
            headers=headers,
            exchange=exchange,
            session=self.session,
            door=self.server,
            tls=self.conn.tls,
            peer=self.peer,
        )

    def _route(self, request: Request, exchange: Exchange) -> Response:
        route = self.server.router.match(request.method, request.path)
        request.prefix = route.prefix
        if route.auth != "none":
            self.login.authenticate(request, required=route.auth == "required")
            exchange.limits = self._rate_limits()
        return route.handler(request)

    def _rate_limits(self) -> list:
        identity = self.session.identity
        user_rate = None
        if identity is not None:
            user_rate = identity.rate_limit or self.server.main.user_rate_limit(identity.name)
        return [limit for limit in (self.session_rate, user_rate) if limit is not None]


def _origin_form(target: bytes) -> bytes:
    """The path and query of *target*, which a server must accept in
    absolute form too (``http://host/path``, RFC 9112 section 3.2.2)."""
    lower = target[:8].lower()
    if lower.startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        slash = rest.find(b"/")
        return rest[slash:] if slash >= 0 else b"/"
    return target


class _Smuggling(HttpError):
    close = True

    def __init__(self, message: str):
        super().__init__(400, message)


def _secure(response: Response) -> None:
    """Add the headers every response carries, unless the handler set its own."""
    present = {name.lower() for name, _value in response.headers}
    for name, value in SECURITY_HEADERS:
        if name.lower() not in present:
            response.headers.append((name, value))
    if "content-security-policy" not in present:
        response.headers.append(("Content-Security-Policy", DEFAULT_CSP))


def _refuse(sock: socket.socket, status: int, message: str) -> None:
    """Say why, without blocking the accept loop."""
    body = message.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} Refused\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        sock.setblocking(False)
        sock.send(head + body)
    except OSError:
        pass
