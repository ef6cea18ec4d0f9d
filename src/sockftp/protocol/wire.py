"""Socket I/O for frames and raw file bytes, shared by server and client.

This is the only module that reads or writes a connected socket. Frames are
parsed by :mod:`sockftp.protocol.frames`; here we only move bytes: whole headers
in and out, and the raw bytes that follow a header, through the fast paths
(large reused buffers, ``sendfile``) with hashing on the way.

Peer failures surface as two exceptions: :class:`ConnectionClosed` (the
peer went away or the socket broke, at any byte) and
:class:`~sockftp.protocol.errors.Timeout`.

The socket may be a TLS one (:class:`ssl.SSLSocket`): everything works the
same, except that ``sendfile`` cannot be used (the kernel cannot encrypt),
so :meth:`Wire.send_file` copies instead. Raw bytes may be throttled by
bandwidth limits (:attr:`Wire.limits`); without any, the fast paths are
untouched.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time

from .errors import Timeout
from .frames import FrameDecoder, encode_header
from .limits import TRANSFER_BUFFER_SIZE
from .pacing import chunk_size, reserve, throttle

# Reads between transfers. Below glibc's mmap threshold (128 KiB), so the
# buffer recv() allocates comes from the heap rather than a fresh mapping.
_RECV_CHUNK = 64 * 1024

#: Bytes of replies that may be held back for one write (see send_header).
_HOLD_LIMIT = 256 * 1024

#: What poll() reports once the socket can receive nothing more: a close or
#: half-close by the peer, or our own shutdown (POLLRDHUP, Linux only); a
#: reset or hang-up (POLLHUP, POLLERR) is reported whatever is asked for.
_HANG_UP_EVENTS = getattr(select, "POLLRDHUP", 0)

#: TCP states (Linux's numbers, the first byte of TCP_INFO) in which the
#: peer has sent all it ever will: it closed or reset the connection.
#: TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING; not FIN_WAIT1 and 2,
#: where only our side has closed (a server cutting a session).
_PEER_DONE_STATES = frozenset({6, 7, 8, 9, 11})
_TCP_INFO = getattr(socket, "TCP_INFO", None)


class ConnectionClosed(Exception):
    """The peer closed the connection or it broke."""


class SourceEnded(Exception):
    """A file being sent ended before the count announced to the peer."""


class BufferPool:
    """Transfer buffers lent to whichever session is moving data.

    Idle sessions hold no buffer, so thousands of them cost little memory.
    At most *large_count* transfers at a time get a large buffer (reused,
    not allocated per transfer); the others, and transfers too small to
    need one, get a small buffer of their own. So a crowd of clients that
    start transfers and then stall pins at most
    ``large_count * size + sessions * small_size`` bytes, not 4 MiB each.
    """

    def __init__(self, size: int = TRANSFER_BUFFER_SIZE, large_count: int = 64, small_size: int = 128 * 1024):
        self.size = size
        self.small_size = small_size
        # One slot per large buffer: None until first used, then the buffer.
        # A stack, so the buffer given back last is lent first: its pages
        # are mapped and warm, while a slot never used costs a fresh 4 MiB
        # zeroed with the GIL held. As a queue, the unused slots came first:
        # 50 transfers after 50 others allocated 14 buffers anew
        # (docs/BENCHMARKS.md, "Buffers lent last in, first out").
        # list.append and list.pop are each one step under the GIL and take
        # no lock that a thread could hold while it waits for the GIL: with
        # a lock (the BoundedSemaphore of old), 500 busy sessions queued
        # behind it for seconds (bench/soak.py, 433 of 531 threads waiting).
        self._slots: list[bytearray | None] = [None] * large_count

    def take(self, want: int) -> bytearray:
        """A buffer for a transfer of *want* bytes."""
        if want > self.small_size:
            try:
                buffer = self._slots.pop()
            except IndexError:
                pass
            else:
                return bytearray(self.size) if buffer is None else buffer
        return bytearray(max(1, min(want, self.small_size)))

    def give(self, buffer: bytearray) -> None:
        if len(buffer) == self.size:
            self._slots.append(buffer)


BUFFERS = BufferPool()


class Wire:
    """Frames and raw bytes over one connected socket.

    Args:
        sock: a connected stream socket (plain or TLS).
        idle_timeout: seconds any single wait for the peer may last.
        header_timeout: seconds a header may take from its first byte to
            its last; None for no such limit.
    """

    def __init__(self, sock: socket.socket, idle_timeout: float | None = None, header_timeout: float | None = None):
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.decoder = FrameDecoder()
        self.bytes_in = 0
        self.bytes_out = 0
        #: Send files with sendfile(): it saves the server a copy and about
        #: 40% of its CPU per byte (docs/BENCHMARKS.md). The server turns it
        #: on unless configured off. Never on TLS, where the kernel cannot
        #: encrypt.
        self.use_sendfile = False
        # ssl is imported by whoever made a TLS socket; a plaintext client
        # never loads it (it costs a command's start-up several ms).
        ssl = sys.modules.get("ssl")
        self.tls = ssl is not None and isinstance(sock, ssl.SSLSocket)
        #: Bandwidth limits (:class:`~sockftp.server.ratelimit.RateLimit`) that every
        #: raw byte, in or out, is charged to. Empty: no throttling at all.
        self.limits: list = []
        #: The peer's first two bytes, to tell a TLS client from a plaintext one.
        self.opening = b""
        # Replies held back while the peer's next request is already here
        # (see send_header's *hold*): they go out with the next write, and
        # before anything waits for the peer.
        self._held = bytearray()
        #: Hold every reply, however much is held and whatever follows, for
        #: :meth:`send_held_now` (a session served on the parking lot's
        #: thread, which must never wait for a peer).
        self.hold_all = False
        #: Called just before any reply goes out, held or not (the session's
        #: audit lines, :class:`sockftp.server.audit.Held`, are written first).
        self.before_send = None
        self._poller: select.poll | None = None  # made on the first wait, then reused
        self._hang_up_poller: select.poll | None = None  # the same, for pacing (see _pace)
        #: Pacing waits end early when the peer hangs up (see _pace): where
        #: the system says which side did (TCP_INFO), and until our own
        #: shutdown makes every wait end at once.
        self._tells_hang_up = _TCP_INFO is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        self._watch_hang_up = self._tells_hang_up
        # Python enforces a socket timeout by polling before every send and
        # recv: two system calls for one. A plaintext socket is left blocking
        # and the kernel keeps the timeout (SO_RCVTIMEO/SO_SNDTIMEO), which
        # ends a stalled call with EAGAIN. TLS keeps Python's timeouts: its
        # library must see a blocking socket that really blocks.
        self._kernel_timeouts = not self.tls and sock.family in (socket.AF_INET, socket.AF_INET6)
        # Set by the first call that may wait (each sets its own value
        # first), not here: a login served on the parking lot, which never
        # waits, pays no system calls for them.
        self._timeout: float | None = -1.0  # what the socket has now; -1: not set yet

    # -- headers -----------------------------------------------------------

    def send_header(self, header: dict, payload: bytes = b"", *, hold: bool = False) -> None:
        """Send one frame, and *payload* raw bytes in the same write.

        With *hold*, and when the peer's next bytes are already buffered
        (a pipelining client), the frame waits to go out with the next
        write: a batch of small replies costs one system call, not one
        each. Nothing held ever waits on the peer: every read and every
        wait for input sends it first."""
        if payload and self.limits:
            throttle(self.limits, len(payload))
        data = encode_header(header) + payload if payload else encode_header(header)
        if self.hold_all:
            self._held += data
            return
        if hold and self.decoder.buffered and not self.limits and len(self._held) + len(data) <= _HOLD_LIMIT:
            self._held += data
            return
        self._sendall(data)

    def send_headers(self, headers: list[dict]) -> None:
        """Send several frames in one write (a batch of pipelined requests)."""
        self._sendall(b"".join(encode_header(header) for header in headers))

    def send_frames(self, frames: list[tuple[dict, bytes]]) -> None:
        """Send several frames, each followed by its raw payload, in one
        write (a batch of pipelined small uploads)."""
        if self.limits:
            throttle(self.limits, sum(len(payload) for _, payload in frames))
        parts = []
        for header, payload in frames:
            parts += (encode_header(header), payload)
        self._sendall(b"".join(parts))

    @property
    def holding(self) -> bool:
        """True while replies are held back."""
        return bool(self._held)

    def flush(self) -> None:
        """Send the replies held back, if any (not while :attr:`hold_all`)."""
        if self._held and not self.hold_all:
            self._sendall(b"")

    # -- serving without waiting ---------------------------------------------------

    def read_now(self) -> int:
        """Take what the socket holds now into the decoder, never waiting.
        The number of bytes; 0 if none are there, or if the peer has closed
        or the socket broke (the next ordinary read reports that). Not on TLS,
        whose records may need a write to read."""
        try:
            data = self.sock.recv(_RECV_CHUNK, socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError included
            return 0
        if self.bytes_in < 2:
            self.opening = (self.opening + data)[:2]
        self.bytes_in += len(data)
        self.decoder.feed(data)
        return len(data)

    def send_held_now(self) -> bool:
        """Send the replies held back as far as the socket takes them now,
        never waiting; True when none are left (the rest goes out with the
        next write, or at the next :meth:`flush`)."""
        if self._held:
            if self.before_send is not None:
                self.before_send()
            try:
                sent = self._send_now(self._held)
            except OSError:  # full, or broken: the next write waits, or reports it
                return False
            del self._held[:sent]
            self.bytes_out += sent
        return not self._held

    def _send_now(self, data) -> int:
        if not self.tls:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        # A TLS socket's send takes no flags: it is made non-blocking for
        # the call instead (SSLWantWriteError, an OSError, when it is full).
        timeout = self.sock.gettimeout()
        self.sock.settimeout(0)
        try:
            return self.sock.send(data)
        finally:
            self.sock.settimeout(timeout)

    def read_header(self, timeout: float | None = None) -> dict | None:
        """The next header, or None if the peer closed cleanly between frames.

        *timeout* replaces the idle timeout for this read, if given.

        Raises:
            BadFrame, BadJson, BadRequest: from the decoder.
            ConnectionClosed: the peer left in the middle of a header.
            Timeout: the idle or header deadline passed.
        """
        idle = self.idle_timeout if timeout is None else timeout
        deadline = None
        while True:
            header = self.decoder.next_header()
            if header is not None:
                return header
            pending = self.decoder.header_pending()
            if pending and deadline is None and self.header_timeout is not None:
                deadline = time.monotonic() + self.header_timeout
            wait = idle
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"header not complete within {self.header_timeout:g} s")
                wait = left if wait is None else min(wait, left)
            try:
                data = self._recv(wait)
            except Timeout:
                if deadline is not None and deadline - time.monotonic() <= 0.001:
                    raise Timeout(f"header not complete within {self.header_timeout:g} s") from None
                raise
            if not data:
                if pending:
                    raise ConnectionClosed("peer closed the connection in the middle of a header")
                return None
            self.decoder.feed(data)

    def wait_for_input(self, timeout: float) -> bool:
        """True once there is something to read (bytes already buffered, or
        the socket readable, which includes the peer closing) within
        *timeout* seconds; False if none came."""
        if self.decoder.buffered or (self.tls and self.sock.pending()):
            return True
        self.flush()
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        try:
            return bool(self._poller.poll(timeout * 1000))
        except OSError:
            return True  # let the read that follows meet the error

    def _set_timeout(self, seconds: float | None) -> None:
        """Let each wait for the peer last at most *seconds* (None: forever)."""
        if seconds == self._timeout:
            return
        self._timeout = seconds
        if not self._kernel_timeouts:
            self.sock.settimeout(seconds)
            return
        if self.sock.gettimeout() is not None:
            self.sock.settimeout(None)
        # 0 means "no timeout" to the kernel; the smallest real one is 1 us.
        micros = 0 if seconds is None else max(round(seconds * 1e6), 1)
        value = struct.pack("ll", micros // 1_000_000, micros % 1_000_000)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def _recv(self, wait: float | None) -> bytes:
        self.flush()
        self._set_timeout(wait)
        try:
            data = self.sock.recv(_RECV_CHUNK)
        except (TimeoutError, BlockingIOError):
            raise Timeout(f"no data from the peer for {wait:g} s") from None
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from None
        if self.bytes_in < 2:
            self.opening = (self.opening + data)[:2]
        self.bytes_in += len(data)
        return data

    # -- raw bytes in -------------------------------------------------------------

    def receive(self, count: int, write, hasher=None, pooled: bool = True) -> None:
        """Receive exactly *count* raw bytes, handing each chunk to *write*
        (and first to *hasher*). Bytes already buffered behind the header
        come first. Chunks are views of a reused buffer: *write* must not
        keep them. *pooled* False uses a small private buffer instead of the
        shared pool's large ones (for bytes that are only thrown away)."""
        limits = self.limits
        head = self.decoder.take_raw(count)
        if head:
            count -= len(head)
            if hasher is not None:
                hasher.update(head)
            write(head)
            if limits and self._pace(limits, len(head)):
                limits = []
        if not count:
            return
        want = chunk_size(limits, count) if limits else count
        buffer = BUFFERS.take(want) if pooled else bytearray(min(want, 64 * 1024))
        try:
            view = memoryview(buffer)
            self._restore_idle_timeout()
            size = min(len(buffer), want) if limits else len(buffer)
            # TLS hands over one 16 KiB record per call: gather a full buffer
            # before hashing and writing, or a 4 MiB buffer costs 256 writes.
            gather = self.tls and not limits
            while count:
                n = self._recv_into(view[: min(size, count)], count, gather)
                count -= n
                self.bytes_in += n
                chunk = view[:n]
                if hasher is not None:
                    hasher.update(chunk)
                write(chunk)
                # Paid after the bytes arrive: while we wait, TCP's flow
                # control holds the sender back.
                if limits and self._pace(limits, n):
                    limits, size = [], len(buffer)
        finally:
            if pooled:
                BUFFERS.give(buffer)

    def _pace(self, limits, count: int) -> bool:
        """Charge *count* bytes received to *limits* and wait as they say,
        but only until the peer hangs up; True if it has. Then all it will
        ever send is in our buffers already: pacing the rest would slow no
        one down, only delay the end of the transfer, and what that end
        releases. (An interrupted upload held its partial while the megabytes
        queued in the two kernels trickled in at the session's rate, and the
        client run again at once was told ``busy`` for as long.)"""
        wait = reserve(limits, count)
        if wait <= 0:
            return False
        if self._watch_hang_up:
            deadline = time.monotonic() + wait
            if not self._hung_up_within(wait):
                return False
            if self.peer_hung_up():
                return True
            # Our own side was shut (a server cutting the session): pace as
            # ever, until the peer's next bytes meet a reset. Poll would
            # no longer wait.
            self._watch_hang_up = False
            wait = deadline - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return False

    def _recv_into(self, view: memoryview, remaining: int, gather: bool) -> int:
        """Receive into *view*: what one call brings, or with *gather* until
        it is full. *remaining* is the count still to come, for the error."""
        if self._held:
            self.flush()
        n = 0
        while True:
            try:
                got = self.sock.recv_into(view[n:])
            except (TimeoutError, BlockingIOError):
                raise Timeout(f"no data from the peer for {self.idle_timeout:g} s") from None
            except OSError as exc:
                raise ConnectionClosed(str(exc)) from None
            if not got:
                raise ConnectionClosed(f"peer closed the connection with {remaining - n} bytes still to come")
            n += got
            if not gather or n == len(view):
                return n

    def discard(self, count: int) -> None:
        """Read and drop *count* raw bytes."""
        self.receive(count, _ignore, pooled=False)

    # -- raw bytes out ------------------------------------------------------------

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """Send *count* bytes of file *fd* from *offset*, zero-copy.

        Over TLS, or when throttled, the bytes are copied through a buffer
        instead (sendfile cannot encrypt, nor send in measured slices)."""
        if self.tls or self.limits:
            try:
                self.send_from(lambda view, position: os.preadv(fd, [view], position), offset, count)
            except SourceEnded as exc:
                raise ConnectionClosed(str(exc)) from None
            return
        self.flush()
        self._restore_idle_timeout()
        out = self.sock.fileno()
        sent = 0
        try:
            while sent < count:
                if self._kernel_timeouts:
                    n = os.sendfile(out, fd, offset + sent, count - sent)
                else:
                    n = self.sock.sendfile(_FdFile(fd), offset + sent, count - sent)
                if not n:
                    break
                sent += n
        except (TimeoutError, BlockingIOError):
            raise Timeout(f"the peer read nothing for {self.idle_timeout:g} s") from None
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from None
        finally:
            self.bytes_out += sent
        if sent != count:
            raise ConnectionClosed(f"file ended after {sent} of {count} bytes")

    def send_from(self, readinto, offset: int, count: int, hasher=None) -> None:
        """Send *count* bytes read by ``readinto(view, position)`` from *offset*."""
        limits = self.limits
        want = chunk_size(limits, count) if limits else count
        buffer = BUFFERS.take(want)
        try:
            view = memoryview(buffer)
            size = min(len(buffer), want) if limits else len(buffer)
            position = offset
            end = offset + count
            while position < end:
                n = readinto(view[: min(size, end - position)], position)
                if not n:
                    # The stream promised more bytes than exist: our side's
                    # fault, and the connection can no longer be used.
                    raise SourceEnded(f"source ended after {position - offset} of {count} bytes")
                chunk = view[:n]
                if hasher is not None:
                    hasher.update(chunk)
                if limits:
                    throttle(limits, n)
                self._sendall(chunk)
                position += n
        finally:
            BUFFERS.give(buffer)

    def _sendall(self, data) -> None:
        """sendall, with the idle timeout applying to each wait for the peer.

        (socket.sendall applies its timeout to the whole call, which would
        cut off a client reading a 4 MiB chunk slower than 4 MiB per timeout.)
        """
        self._restore_idle_timeout()
        if self.before_send is not None:
            self.before_send()
        if self._held:
            data, self._held = self._held + data, bytearray()
        view = memoryview(data)
        send = self.sock.send
        try:
            while view:
                view = view[send(view) :]
        except (TimeoutError, BlockingIOError):
            raise Timeout(f"the peer read nothing for {self.idle_timeout:g} s") from None
        except OSError as exc:
            raise ConnectionClosed(str(exc)) from None
        self.bytes_out += len(data)

    def _restore_idle_timeout(self) -> None:
        self._set_timeout(self.idle_timeout)

    # -- closing ------------------------------------------------------------------

    def peer_hung_up(self) -> bool:
        """True once the peer can send nothing more: it closed, half-closed
        or reset the connection, though what it sent before may still be
        unread (unlike :meth:`peer_closed`); not when only our side has
        shut. Never waits, and may be asked from any thread. Always False
        where the system does not tell (no TCP_INFO, not TCP)."""
        if not self._tells_hang_up:
            return False
        try:
            state = self.sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
        except OSError:
            return self.sock.fileno() < 0  # closed here: nothing more comes
        return state in _PEER_DONE_STATES

    def _hung_up_within(self, seconds: float) -> bool:
        """Wait *seconds*, or less if the socket can receive nothing more
        meanwhile (the peer hung up, or our side was shut); True if so.
        Only from the thread that moves the session's bytes."""
        if self._hang_up_poller is None:
            self._hang_up_poller = select.poll()
            self._hang_up_poller.register(self.sock, _HANG_UP_EVENTS)
        try:
            return bool(self._hang_up_poller.poll(seconds * 1000))
        except OSError:
            return True  # the socket is gone

    def peer_closed(self) -> bool:
        """True if the peer has ended the stream and nothing it sent is left
        to read, so the connection cannot carry another request. Never waits."""
        if self.decoder.buffered or (self.tls and self.sock.pending()):
            return False
        try:
            # The plain socket's recv, even under TLS: only the end matters here.
            return socket.socket.recv(self.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def linger_close(self, seconds: float = 2.0) -> None:
        """Close so that our last reply reaches the peer even if it is still
        sending: half-close, read and drop what comes for a while, then close.
        (Closing with unread input makes the kernel send RST, which can
        destroy the reply before the peer reads it.)

        On TLS the half-close skips TLS's close_notify (the peer sees the
        end of the stream, which is all it needs); the rest is drained as
        raw records."""
        try:
            self.flush()
        except (ConnectionClosed, Timeout):
            pass
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # ssl.SSLError too; or the peer has already gone
            pass
        try:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                self._set_timeout(left)
                if not self.sock.recv(_RECV_CHUNK):
                    break
        except OSError:
            pass
        finally:
            self.close()

    def abort(self) -> None:
        """Close at once with a reset, dropping whatever is still unsent.

        For a stream left out of step in the middle of raw bytes: those
        still queued are of no use to the peer, and after a plain close it
        would still wait for them all, as the end of the stream reaches it
        only behind them. (A server kept an interrupted upload's partial
        locked until they had trickled in, and the client run again at once
        was told ``busy``.)"""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class _FdFile:
    """The minimum of a file object that ``socket.sendfile`` needs."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int):
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fd, offset, whence)


def _ignore(_chunk) -> None:
    pass
