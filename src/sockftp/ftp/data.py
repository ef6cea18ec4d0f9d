"""FTP data connections: opening them, moving bytes over them, closing them.

One :class:`DataChannels` per control connection opens the data
connection of each transfer, the way the client last asked:

* passive (``PASV``, ``EPSV``): a listener on the control connection's own
  address, on a port from the configured range, waiting at most the data
  timeout for one connection, and only from the client's own address (any
  other is dropped: nobody else can steal the transfer);
* active (``PORT``, ``EPRT``): a connect to the address the client gave,
  from the control connection's address. Whether that address is allowed
  (RFC 2577: the client's own host, no privileged port) is decided by the
  commands, before it gets here.

With ``PROT P`` the connection is wrapped in TLS, the server's side of the
handshake, whichever side connected (RFC 4217).

A :class:`DataConnection` moves a transfer's bytes, through the shared
buffer pool and the session's bandwidth limits, and keeps an eye on the
control connection while it does: a client that sends ``ABOR`` (or whose
control connection closes) ends the transfer with :class:`TransferAborted`.
An upload ends when the client closes the data connection (stream mode
has no other end marker); that end counts only if the control connection
has not said otherwise by then.

This module moves bytes and never decides what they mean.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import select
import socket
import ssl
import time

from ..protocol import tls
from ..protocol.limits import TRANSFER_BUFFER_SIZE
from ..protocol.pacing import chunk_size, throttle
from ..protocol.wire import BUFFERS
from .parser import same_host

log = logging.getLogger("sockftp.ftp")

#: While bytes flow without a pause, the control connection is looked at
#: this often (seconds); when the data connection would block, at once.
CONTROL_CHECK_INTERVAL = 0.25

#: Seconds a TLS data connection waits for the client's close_notify.
TLS_CLOSE_TIMEOUT = 2.0

#: Bytes of a listing sent per write.
_TEXT_CHUNK = 64 * 1024


class DataError(Exception):
    """The data connection could not be opened (reply 425)."""


class TransferFailed(Exception):
    """The data connection broke or timed out during the transfer (reply 426)."""


class TransferAborted(TransferFailed):
    """The client aborted the transfer: ABOR, or its control connection closed."""


class ControlWatch:
    """What a transfer asks of its control connection. The server's
    control connection implements it; tests may give a stub."""

    def fileno(self) -> int:
        return -1

    def interrupted(self) -> bool:
        """Read what the client sent meanwhile, without waiting, and answer
        what must be answered during a transfer (STAT). True if the
        transfer must stop: ABOR arrived, or the connection closed."""
        return False


class DataConnection:
    """One transfer's connected data socket (plain or TLS).

    Args:
        sock: the connected socket.
        timeout: seconds any wait for the client may last.
        limits: the session's :class:`~sockftp.server.ratelimit.RateLimit` objects.
        watch: the control connection, see :class:`ControlWatch`.
    """

    def __init__(self, sock: socket.socket, timeout: float, limits=(), watch: ControlWatch | None = None):
        self.sock = sock
        self.timeout = timeout
        self.limits = list(limits)
        self.watch = watch or ControlWatch()
        self.tls = isinstance(sock, ssl.SSLSocket)
        #: Send files with sendfile() (``serve --sendfile``), where it can:
        #: not over TLS, which the kernel cannot encrypt, nor when throttled.
        self.use_sendfile = False
        #: Bytes moved so far, either way.
        self.bytes = 0
        self._control = self.watch.fileno()
        self._next_check = time.monotonic() + CONTROL_CHECK_INTERVAL
        sock.setblocking(False)

    # -- out -------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send *data* (a listing)."""
        view = memoryview(data)
        for start in range(0, len(view), _TEXT_CHUNK):
            self._send_all(view[start : start + _TEXT_CHUNK])

    def send_from(self, readinto, offset: int, count: int) -> None:
        """Send *count* bytes that ``readinto(view, position)`` reads from *offset*."""
        limits = self.limits
        want = chunk_size(limits, count) if limits else count
        buffer = BUFFERS.take(want)
        try:
            view = memoryview(buffer)
            size = min(len(buffer), want)
            position, end = offset, offset + count
            while position < end:
                n = readinto(view[: min(size, end - position)], position)
                if not n:
                    raise TransferFailed(f"the file ended after {position - offset} of {count} bytes")
                if limits:
                    throttle(limits, n)
                self._send_all(view[:n])
                position += n
        finally:
            BUFFERS.give(buffer)

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send *count* bytes of file *fd* from *offset*: with sendfile() if
        it is on and can be used, else through a buffer."""
        if not self.use_sendfile or self.tls or self.limits:
            self.send_from(lambda view, position: os.preadv(fd, [view], position), offset, count)
            return
        position, end = offset, offset + count
        while position < end:
            self._check_control()
            try:
                sent = os.sendfile(self.sock.fileno(), fd, position, end - position)
            except BlockingIOError:
                self._wait(select.POLLOUT)
                continue
            except OSError as exc:
                raise TransferFailed(f"data connection lost: {tls.describe_error(exc)}") from None
            if not sent:
                raise TransferFailed(f"the file ended after {position - offset} of {count} bytes")
            position += sent
            self.bytes += sent

    def _send_all(self, view: memoryview) -> None:
        while view:
            self._check_control()
            try:
                sent = self.sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._wait(select.POLLOUT)
                continue
            except ssl.SSLWantReadError:
                self._wait(select.POLLIN)
                continue
            except OSError as exc:
                raise TransferFailed(f"data connection lost: {tls.describe_error(exc)}") from None
            view = view[sent:]
            self.bytes += sent

    # -- in ----------------------------------------------------------------------------

    def receive(self, write, hasher=None) -> int:
        """Receive until the client closes the data connection, handing each
        chunk to *hasher* and to *write* (which must not keep it). Returns
        the bytes received. An exception from *write* ends the transfer and
        is raised as it is."""
        limits = self.limits
        want = chunk_size(limits, TRANSFER_BUFFER_SIZE) if limits else TRANSFER_BUFFER_SIZE
        buffer = BUFFERS.take(want)
        received = 0
        try:
            view = memoryview(buffer)
            size = min(len(buffer), want)
            while True:
                self._check_control()
                try:
                    n = self.sock.recv_into(view, size)
                except (BlockingIOError, ssl.SSLWantReadError):
                    self._wait(select.POLLIN)
                    continue
                except ssl.SSLWantWriteError:
                    self._wait(select.POLLOUT)
                    continue
                except OSError as exc:
                    raise TransferFailed(f"data connection lost: {tls.describe_error(exc)}") from None
                if not n:
                    break
                chunk = view[:n]
                if hasher is not None:
                    hasher.update(chunk)
                write(chunk)
                received += n
                self.bytes += n
                if limits:
                    throttle(limits, n)
        finally:
            BUFFERS.give(buffer)
        # The end of the bytes is the end of the file only if the client did
        # not abort, or go away, meanwhile.
        if self.watch.interrupted():
            raise TransferAborted("the client aborted the upload")
        return received

    def receive_whole(self, into: bytearray, limit: int, within: float) -> bool:
        """Receive into *into* the whole upload, if it ends within *limit*
        bytes and *within* seconds: True then. Else False, with what came
        by then in *into*, and :meth:`receive` takes the rest.

        A small upload that arrives at once can then be stored with its
        size known, in one go (see ``Storage.open_upload``'s *at_once*).
        On an exception (TransferFailed, TransferAborted), *into* holds
        what arrived before it."""
        if self.limits:
            return False  # throttled: it waits by design, so it is never "at once"
        deadline = time.monotonic() + within
        while True:
            self._check_control()
            try:
                data = self.sock.recv(limit + 1 - len(into))
            except (BlockingIOError, ssl.SSLWantReadError):
                if not self._wait(select.POLLIN, deadline):
                    return False
                continue
            except ssl.SSLWantWriteError:
                if not self._wait(select.POLLOUT, deadline):
                    return False
                continue
            except OSError as exc:
                raise TransferFailed(f"data connection lost: {tls.describe_error(exc)}") from None
            if not data:
                break
            into += data
            self.bytes += len(data)
            if len(into) > limit:
                return False
        if self.watch.interrupted():  # as receive(): the end counts only if not aborted
            raise TransferAborted("the client aborted the upload")
        return True

    # -- waiting -------------------------------------------------------------------------

    def _wait(self, events: int, until: float | None = None) -> bool:
        """Wait until the data socket is ready for *events*, watching the
        control connection meanwhile; True then. False if *until* (a
        ``time.monotonic()`` value) passes first. Raises TransferFailed
        after the timeout, TransferAborted if the client aborts."""
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        if self._control >= 0:
            poller.register(self._control, select.POLLIN | select.POLLPRI)
        deadline = time.monotonic() + self.timeout
        while True:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise TransferFailed(f"no data moved for {self.timeout:g} s")
            if until is not None:
                if now >= until:
                    return False
                left = min(left, until - now)
            ready = {fd for fd, _ in poller.poll(left * 1000)}
            if self.sock.fileno() in ready:
                # Bytes first: what the client sent before its ABOR is kept.
                # _check_control still looks at the control connection
                # while bytes keep coming.
                return True
            if ready and self.watch.interrupted():
                raise TransferAborted("the client aborted the transfer")

    def _check_control(self) -> None:
        """Between chunks of a transfer that never has to wait: look at the
        control connection now and then."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CONTROL_CHECK_INTERVAL
        if self.watch.interrupted():
            raise TransferAborted("the client aborted the transfer")

    # -- closing -------------------------------------------------------------------------

    def close(self, clean: bool = True) -> None:
        """Close: over TLS after a close_notify each way (clients such as
        Python's ftplib wait for ours), never longer than a moment. After
        an abort or a failure (not *clean*), at once."""
        sock = self.sock
        try:
            if self.tls and clean:
                sock.settimeout(min(self.timeout, TLS_CLOSE_TIMEOUT))
                try:
                    sock = sock.unwrap()
                except (OSError, ValueError):
                    pass  # the client closed without it, or went away
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        finally:
            sock.close()
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(clean=exc_type is None)


class DataChannels:
    """The data connections of one control connection.

    Args:
        local: the control connection's address on the server (the
            passive listener binds there; active connects come from there).
        peer: the client's address (the only one a data connection may
            come from or go to).
        passive_ports: (first, last) ports for passive listeners, or None
            for any free port.
        timeout: seconds to wait for a passive connection, an active
            connect, a TLS handshake, or any byte of a transfer.
        tls_context: the TLS context of data connections, for ``PROT P``
            (see :func:`sockftp.ftp.server.data_context`).
    """

    def __init__(
        self,
        local: str,
        peer: str,
        passive_ports: tuple[int, int] | None,
        timeout: float,
        tls_context: ssl.SSLContext | None = None,
    ):
        self.local = local
        self.peer = peer
        self.passive_ports = passive_ports
        self.timeout = timeout
        self.tls_context = tls_context
        self.family = socket.AF_INET6 if ":" in local else socket.AF_INET
        self._listener: socket.socket | None = None
        self._active: tuple[str, int] | None = None

    @property
    def ready(self) -> bool:
        """True if PASV, EPSV, PORT or EPRT has said how to connect."""
        return self._listener is not None or self._active is not None

    def passive(self) -> int:
        """Listen for the next transfer's connection; return the port.
        Raises DataError if no port of the range is free."""
        self.reset()
        for port in self._candidate_ports():
            # Non-blocking from the start: _accept polls it itself (a listener
            # with a timeout costs a system call to set it, and its accepted
            # socket another to make it blocking, which DataConnection undoes).
            listener = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            try:
                # Each transfer the server ends first leaves its port in
                # TIME_WAIT for a minute; without this a burst of transfers
                # larger than the range finds no port. Linux still refuses
                # a port another socket listens on, so busy ports are skipped.
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.local, port))
                listener.listen(1)
            except OSError as exc:
                listener.close()
                if exc.errno == errno.EADDRINUSE and port:
                    continue
                raise DataError(f"cannot listen for a data connection: {exc.strerror or exc}") from None
            self._listener = listener
            return listener.getsockname()[1]
        first, last = self.passive_ports
        raise DataError(f"no free passive port in {first}-{last}; try again")

    def _candidate_ports(self) -> list[int]:
        if self.passive_ports is None:
            return [0]  # any free port
        first, last = self.passive_ports
        # In random order, so that concurrent sessions rarely collide and
        # the next port cannot be guessed from the last one.
        return random.sample(range(first, last + 1), min(last - first + 1, 256))

    def active(self, host: str, port: int) -> None:
        """Connect to *host*:*port* for the next transfer."""
        self.reset()
        self._active = (host, port)

    def open(self, protect: bool, limits=(), watch: ControlWatch | None = None) -> DataConnection:
        """The next transfer's data connection, in TLS if *protect*.

        Raises DataError if there is no passive or active address, or the
        connection or its handshake fails or times out.
        """
        if self._listener is not None:
            sock = self._accept()
        elif self._active is not None:
            sock = self._connect()
        else:
            raise DataError("use PASV, EPSV, PORT or EPRT first")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if protect:
            sock = self._wrap(sock)
        return DataConnection(sock, self.timeout, limits, watch)

    def _accept(self) -> socket.socket:
        listener, self._listener = self._listener, None
        deadline = time.monotonic() + self.timeout
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        try:
            while True:
                try:
                    # Most clients connect as soon as PASV answers: try first.
                    sock, address = listener.accept()
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DataError(f"no data connection within {self.timeout:g} s") from None
                    poller.poll(left * 1000)
                    continue
                except OSError as exc:
                    raise DataError(f"cannot accept the data connection: {exc.strerror or exc}") from None
                if same_host(address[0], self.peer):
                    return sock
                # RFC 2577: a connection from another host would steal the transfer.
                log.warning("data connection from %s for a session of %s refused", address[0], self.peer)
                sock.close()
                if time.monotonic() >= deadline:  # others' connections never extend the wait
                    raise DataError(f"no data connection within {self.timeout:g} s")
        finally:
            listener.close()

    def _connect(self) -> socket.socket:
        address, self._active = self._active, None
        try:
            return socket.create_connection(address, timeout=self.timeout, source_address=(self.local, 0))
        except OSError as exc:
            raise DataError(f"cannot connect to {address[0]} port {address[1]}: {exc.strerror or exc}") from None

    def _wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        if self.tls_context is None:
            sock.close()
            raise DataError("this server has no TLS certificate")
        try:
            # An end without close_notify raises, never reads as the end of the file.
            wrapped = self.tls_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=False
            )
        except (OSError, ValueError) as exc:
            sock.close()
            raise DataError(f"TLS failed: {tls.describe_error(exc)}") from None
        try:
            tls.handshake(wrapped, self.timeout)
        except (OSError, ValueError) as exc:
            wrapped.close()
            raise DataError(f"TLS handshake on the data connection failed: {tls.describe_error(exc)}") from None
        return wrapped

    def reset(self) -> None:
        """Forget the passive listener or active address (a new one comes)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._active = None

    close = reset
