"""One HTTP/1.1 connection: h11 turns bytes into requests, this module moves the bytes.

h11 (sans-IO, like the native protocol's frame codec) parses and checks
every request head and body framing, chunked included; this module owns
the socket and the limits around it:

* a request head must arrive whole within ``header_timeout`` of its first
  byte, and stay under ``MAX_HEAD`` bytes (431 past it): a slowloris client
  holds a worker for seconds, not forever;
* between requests a kept-alive connection waits ``KEEPALIVE`` seconds at
  most (or ``idle_timeout``, if less), and a body's bytes may pause
  ``idle_timeout`` at most;
* a request with both ``Content-Length`` and ``Transfer-Encoding`` is
  refused and the connection closed (request smuggling: a proxy in front
  may frame it the other way); h11 itself refuses conflicting lengths;
* ``Expect: 100-continue`` is answered when, and only when, the handler
  starts reading the body: a refusal before that is sent without the
  client ever sending its bytes;
* a body the handler did not read is drained if small, else the
  connection closes after the response;
* a file body goes out with ``sendfile`` on a plain socket without a
  bandwidth limit, else through a buffer, paced by the limits.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus

import h11

from ..protocol import pacing
from ..protocol.errors import ConnectionLost, Timeout
from ..protocol.wire import ConnectionClosed, Wire
from .router import FileBody, Response

#: Bytes a request head may take (request line and headers).
MAX_HEAD = 16 * 1024
#: Seconds a kept-alive connection may wait for its next request.
KEEPALIVE = 60.0
#: Bytes of a body the handler left unread that are read and dropped to
#: keep the connection; past this it closes instead.
MAX_UNREAD = 1024 * 1024
RECV_SIZE = 256 * 1024


class Closed(Exception):
    """The connection is over (the peer left, or it cannot go on)."""


class Exchange:
    """The body of the request under way, and how its response goes out."""

    def __init__(self, conn: HttpConnection, request: h11.Request):
        self.conn = conn
        self.request = request
        self.body_done = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.limits: list = []  # bandwidth limits (set once the request is logged in)
        #: The client waits for "100 Continue" before sending its body (h11
        #: forgets this once a response is sent, so it is noted here).
        self.awaiting_continue = conn.h11.they_are_waiting_for_100_continue

    def body(self) -> Iterator[bytes]:
        """The body's chunks as they arrive."""
        conn = self.conn
        if self.body_done:
            return
        if conn.h11.they_are_waiting_for_100_continue:
            conn.send_raw(conn.h11.send(h11.InformationalResponse(status_code=100, headers=[])))
        self.awaiting_continue = False
        while True:
            event = conn.next_event(conn.idle_timeout, what="the request body")
            if isinstance(event, h11.Data):
                self.bytes_in += len(event.data)
                if self.limits:
                    pacing.throttle(self.limits, len(event.data))
                yield event.data
            elif isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return
            else:  # ConnectionClosed mid-body
                raise Closed("the client closed the connection in the middle of the body")

    @property
    def tls(self) -> bool:
        return self.conn.tls


class HttpConnection:
    """A socket served with h11: :meth:`serve` runs requests until it ends."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        idle_timeout: float,
        header_timeout: float,
        use_sendfile: bool = True,
        stopping=None,
    ):
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.keepalive = min(KEEPALIVE, idle_timeout)
        self.use_sendfile = use_sendfile and not self.tls
        self.stopping = stopping
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.bytes_in = 0
        self.bytes_out = 0
        self.requests = 0

    # -- reading ----------------------------------------------------------------------------

    def next_event(self, timeout: float, what: str = "data", deadline: float | None = None):
        """The next h11 event, reading as needed: each read waits *timeout*
        at most, and all of them end by *deadline* (``time.monotonic()``)."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            wait = timeout
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise Timeout(f"{what} did not arrive within {self.header_timeout:g} s")
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                raise Timeout(f"{what} did not arrive within {wait:g} s") from None
            except OSError as exc:
                raise Closed(str(exc)) from None
            self.bytes_in += len(data)
            self.h11.receive_data(data)

    def read_request_head(self) -> h11.Request | None:
        """The next request's head; None when the client closed (or went
        quiet) between requests."""
        # Wait for the first byte with the keep-alive timeout, then give the
        # whole head header_timeout from that byte on.
        if self.h11.their_state is h11.IDLE and not self._buffered():
            self.sock.settimeout(self.keepalive)
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                return None
            except OSError:
                return None
            if not data:
                return None
            self.bytes_in += len(data)
            self.h11.receive_data(data)
        deadline = time.monotonic() + self.header_timeout
        event = self.next_event(self.header_timeout, "the request head", deadline)
        if isinstance(event, h11.ConnectionClosed):
            return None
        # h11 bounds a head only while it is incomplete: one that arrived
        # whole in a single read is measured here.
        if isinstance(event, h11.Request) and _head_size(event) > MAX_HEAD:
            raise h11.RemoteProtocolError(f"the request head is over {MAX_HEAD} bytes", error_status_hint=431)
        return event

    def _buffered(self) -> bool:
        return bool(self.h11.trailing_data[0])

    # -- writing -----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if not data:
            return
        self.sock.settimeout(self.idle_timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise Timeout(f"the client read nothing for {self.idle_timeout:g} s") from None
        except OSError as exc:
            raise Closed(str(exc)) from None
        self.bytes_out += len(data)

    def send_response(self, exchange: Exchange, response: Response, head_only: bool) -> None:
        headers = list(response.headers)
        body = response.body
        if isinstance(body, (bytes, bytearray, memoryview)):
            if not any(k.lower() == "content-length" for k, _v in headers):
                headers.append(("Content-Length", str(len(body))))
        elif isinstance(body, FileBody):
            if not any(k.lower() == "content-length" for k, _v in headers):
                headers.append(("Content-Length", str(body.count)))
        if self.stopping is not None and self.stopping.is_set():
            headers.append(("Connection", "close"))
        self.send_raw(
            self.h11.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        )
        if head_only or body is None or response.status in (204, 304):
            if isinstance(body, FileBody):
                body.download.close()
            self.send_raw(self.h11.send(h11.EndOfMessage()))
            return
        if isinstance(body, (bytes, bytearray, memoryview)):
            if body:
                self._paced(exchange, len(body))
                self.send_raw(self.h11.send(h11.Data(data=bytes(body))))
            exchange.bytes_out += len(body)
        elif isinstance(body, FileBody):
            try:
                self._send_file(exchange, body)
            finally:
                body.download.close()
        else:
            for chunk in body:
                if chunk:
                    self._paced(exchange, len(chunk))
                    self.send_raw(self.h11.send(h11.Data(data=chunk)))
                    exchange.bytes_out += len(chunk)
        self.send_raw(self.h11.send(h11.EndOfMessage()))

    def _paced(self, exchange: Exchange, count: int) -> None:
        if exchange.limits:
            pacing.throttle(exchange.limits, count)

    def _send_file(self, exchange: Exchange, body: FileBody) -> None:
        # h11 counts the bytes against the Content-Length; they go around
        # it, through the native protocol's wire: sendfile on a plain socket
        # without a bandwidth limit, else a pooled buffer, paced.
        self.h11.send_with_data_passthrough(h11.Data(data=_Placeholder(body.count)))
        wire = Wire(self.sock, self.idle_timeout)
        wire.use_sendfile = self.use_sendfile
        wire.limits = exchange.limits
        fd = body.download.fileno()
        try:
            if fd is not None and wire.use_sendfile:
                wire.send_file(fd, body.offset, body.count)
            else:
                wire.send_from(body.download.readinto, body.offset, body.count)
        finally:
            self.bytes_out += wire.bytes_out
            exchange.bytes_out += wire.bytes_out

    # -- the loop --------------------------------------------------------------------------

    def finish_exchange(self, exchange: Exchange) -> bool:
        """After a response: drop what is left of a small unread body and
        get ready for the next request. False if the connection must close."""
        if self.h11.our_state is not h11.DONE:
            return False
        if self.h11.their_state is h11.SEND_BODY:
            if exchange.awaiting_continue:
                return False  # refused before "100 Continue": the body may or may not follow
            dropped = 0
            try:
                for chunk in exchange.body():
                    dropped += len(chunk)
                    if dropped > MAX_UNREAD:
                        return False
            except (Timeout, Closed, h11.RemoteProtocolError):
                return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            try:
                self.h11.start_next_cycle()
            except h11.LocalProtocolError:
                return False
            return True
        return False

    def refuse(self, status: int, message: str) -> None:
        """Answer a request h11 could not parse (or that we refuse to
        frame), then stop: nothing after it can be trusted."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f'{{"error":"bad_request","message":{_json_text(message)}}}\n'.encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        try:
            self.send_raw(self.h11.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))))
            self.send_raw(self.h11.send(h11.Data(data=body)))
            self.send_raw(self.h11.send(h11.EndOfMessage()))
        except (h11.LocalProtocolError, Closed, Timeout):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _Placeholder:
    """What h11 counts for a file body it does not carry."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count


def _head_size(request: h11.Request) -> int:
    size = len(request.method) + len(request.target) + 12
    for name, value in request.headers:
        size += len(name) + len(value) + 4
    return size


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Checksum Mismatch" if status == 460 else b""


def _json_text(text: str) -> str:
    import json

    return json.dumps(text)


def serve(conn: HttpConnection, handle: Callable[[Exchange], Response | None]) -> None:
    """Run *conn*'s requests through *handle* until the connection ends.
    *handle* answers a request (it may raise Closed)."""
    while True:
        if conn.stopping is not None and conn.stopping.is_set():
            return
        try:
            request = conn.read_request_head()
        except h11.RemoteProtocolError as exc:
            conn.refuse(exc.error_status_hint, str(exc) or "malformed request")
            return
        except Timeout as exc:
            conn.refuse(408, exc.message)
            return
        except Closed:
            return
        if request is None:
            return
        conn.requests += 1
        exchange = Exchange(conn, request)
        try:
            handle(exchange)
        except h11.RemoteProtocolError as exc:
            conn.refuse(exc.error_status_hint, str(exc) or "malformed request")
            return
        except (Closed, Timeout, ConnectionLost, ConnectionClosed):
            return
        if not conn.finish_exchange(exchange):
            return
