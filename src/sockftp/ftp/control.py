"""The FTP control connection: command lines in, replies out, TLS on demand.

Lines come through a :class:`~sockftp.ftp.parser.LineReader`. Waits are
bounded by the idle timeout (and by the login deadline, which the handler
passes in). ``AUTH TLS`` upgrades the connection in place; anything the
client sent before the handshake is dropped, so no command can be
smuggled in clear into the encrypted session.

During a transfer the data connection looks at the control connection now
and then (:meth:`ControlConnection.interrupted`): lines that arrive are
handed to the handler, which answers ``ABOR`` and ``STAT`` at once and
queues the rest for after the transfer.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable

from ..protocol import tls
from ..protocol.errors import Timeout
from ..protocol.wire import ConnectionClosed
from .data import ControlWatch
from .parser import LineReader, LineTooLong
from .replies import Reply

_RECV = 64 * 1024

#: Command lines a client may send ahead during a transfer (to be run after
#: it). Past this the control connection is not read until the transfer
#: ends, so TCP holds the client back instead of our memory filling up.
MAX_QUEUED_LINES = 64

#: What the handler says of a line that arrived during a transfer.
ABORT, ANSWERED, LATER = "abort", "answered", "later"


class ControlConnection(ControlWatch):
    """Command lines and replies over one connected socket.

    Args:
        sock: the accepted socket.
        idle_timeout: seconds any single wait for the client may last.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float):
        self.sock = sock
        self._tls = False  # read on every recv and send: an attribute, not an isinstance
        self.idle_timeout = idle_timeout
        self.reader = LineReader()
        self.queued: deque[str] = deque()
        self.closed = False  # the client's side has ended
        self.bytes_in = 0
        self.bytes_out = 0
        #: Called with each line that arrives during a transfer; returns
        #: ABORT, ANSWERED or LATER. Set by the handler.
        self.during_transfer: Callable[[str], str] = lambda line: LATER
        # Urgent data stays in the stream: ftplib sends ABOR's last byte as
        # TCP urgent data, which would otherwise vanish from the line.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
        # Replies are small writes answering small reads: no Nagle delay.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # In clear, the waits are the kernel's (SO_RCVTIMEO, SO_SNDTIMEO) on
        # a blocking socket: a socket with a Python timeout is polled before
        # every recv and send, and toggled to non-blocking and back around
        # each look during a transfer. That was a third of a small upload's
        # system calls, each a release and a retake of the GIL, which is
        # what parallel sessions queue for. TLS keeps Python's timeouts.
        self._recv_timeout: float | None = None  # the kernel's, while in clear
        sock.settimeout(None)
        _set_kernel_timeout(sock, socket.SO_SNDTIMEO, idle_timeout)
        self._kernel_timeout(idle_timeout)

    @property
    def tls(self) -> bool:
        return self._tls

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_line(self, timeout: float | None = None) -> str | None:
        """The next command line, or None once the client has closed.

        Raises:
            Timeout: nothing came for *timeout* (default: the idle timeout).
            LineTooLong: a line over the limit (the next call goes on after it).
            ConnectionClosed: the connection broke.
        """
        if self.queued:
            return self.queued.popleft()
        while True:
            line = self.reader.next_line()
            if line is not None:
                return line
            if self.closed:
                return None
            data = self._recv(self.idle_timeout if timeout is None else timeout)
            if not data:
                self.closed = True
                return None
            self.reader.feed(data)

    def _timeout(self, seconds: float | None) -> None:
        # settimeout costs system calls; most calls change nothing.
        if self.sock.gettimeout() != seconds:
            self.sock.settimeout(seconds)

    def _kernel_timeout(self, seconds: float) -> None:
        if seconds != self._recv_timeout:
            _set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, seconds)
            self._recv_timeout = seconds

    def _recv(self, timeout: float) -> bytes:
        try:
            if self.tls:
                self._timeout(timeout)
            else:
                self._kernel_timeout(timeout)
            data = self.sock.recv(_RECV)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: SO_RCVTIMEO passed
            raise Timeout(f"no command for {timeout:g} s") from None
        except OSError as exc:
            raise ConnectionClosed(tls.describe_error(exc)) from None
        self.bytes_in += len(data)
        return data

    def send(self, reply: Reply) -> None:
        """Send *reply*. Raises ConnectionClosed."""
        data = reply.encode()
        if self.tls:
            self._timeout(self.idle_timeout)
        try:
            self.sock.sendall(data)
        except OSError as exc:  # in clear, BlockingIOError after SO_SNDTIMEO
            raise ConnectionClosed(tls.describe_error(exc)) from None
        self.bytes_out += len(data)

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """Upgrade to TLS, the server's side, within *timeout* seconds.
        Raises OSError or ValueError if the handshake fails."""
        self.reader = LineReader()  # nothing sent in clear carries over
        self.queued.clear()
        wrapped = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock, self._tls = wrapped, True
        tls.handshake(wrapped, timeout)
        wrapped.settimeout(self.idle_timeout)

    # -- during a transfer ----------------------------------------------------------

    def interrupted(self) -> bool:
        """Read what arrived, without waiting; True if the transfer must
        stop (ABOR, or the client closed or broke the connection)."""
        abort = False
        try:
            while not self.closed and len(self.queued) < MAX_QUEUED_LINES:
                data = self._recv_now()
                if data is None:
                    break
                if not data:
                    self.closed = True
                    return True
                self.reader.feed(data)
        except ConnectionClosed:
            self.closed = True
            return True
        while True:
            try:
                line = self.reader.next_line()
            except LineTooLong:
                continue
            if line is None:
                return abort
            verdict = self.during_transfer(line)
            if verdict == ABORT:
                abort = True
            elif verdict == LATER:
                self.queued.append(line)

    def _recv_now(self) -> bytes | None:
        """What the client has sent, b"" at its end, None if nothing yet."""
        try:
            if self.tls:
                # Non-blocking for this read (MSG_DONTWAIT would not do: Python polls
                # a socket with a timeout before reading it); the next wait restores it.
                self._timeout(0.0)
                data = self.sock.recv(_RECV)
            else:
                data = self.sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return None
        except OSError as exc:
            raise ConnectionClosed(tls.describe_error(exc)) from None
        self.bytes_in += len(data)
        return data

    # -- closing -------------------------------------------------------------------------

    def close(self, linger: float = 2.0) -> None:
        """Close so that the last reply arrives even if the client is still
        sending: half-close, drop what comes for a moment, close."""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_WR)
        except OSError:
            pass
        try:
            deadline = time.monotonic() + linger
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(_RECV):
                    break
        except OSError:
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass


def _set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Bound each blocking recv (SO_RCVTIMEO) or send (SO_SNDTIMEO) of
    *sock* to *seconds*; past it, the call fails with EAGAIN."""
    seconds = max(seconds, 0.001)  # 0 would mean no bound at all
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", whole, int((seconds - whole) * 1e6)))
