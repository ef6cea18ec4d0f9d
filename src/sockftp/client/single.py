"""One file at a time, resumable and verified: put and get; and put_delta,
which sends only the blocks of a file that the server's copy lacks.

An upload resumes from what the server holds, a download from the local
partial file (``.NAME.sockftp-part`` beside the target), which becomes the
target only once complete and verified; a lost connection is retried up to
``retries`` times. Whatever fails while raw bytes move, the connection is
closed: it must never be left out of step for the next request.
"""

from __future__ import annotations

import os
import stat as statmod
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from ..protocol import checksum as checksums
from ..protocol.blocks import DIGEST_SIZE, BlockList, block_count, delta_ops, expand_ops, file_blocks
from ..protocol.errors import (
    FATAL_CODES,
    BadRequest,
    ChecksumMismatch,
    ConnectionLost,
    DeltaBaseChanged,
    ErrorCode,
    OffsetMismatch,
    SockftpError,
    error_from_reply,
)
from ..protocol.frames import encoded_size
from ..protocol.limits import DELTA_MAX_OPS, MAX_HEADER_SIZE, MAX_NAME_LENGTH
from ..protocol.wire import ConnectionClosed, SourceEnded

#: progress(done, total): bytes of the current file moved so far, and its size.
Progress = Callable[[int, int], None]

#: Uploads at least this large first ask the server what it holds, to resume;
#: smaller ones are sent whole in one write, header and bytes together.
RESUME_THRESHOLD = 1024 * 1024

#: Suffix of a download in progress, beside its target.
PARTIAL_SUFFIX = ".sockftp-part"


@dataclass(frozen=True)
class TransferResult:
    path: str  # the remote path
    local: str
    size: int  # the whole file
    sent: int  # bytes moved this time (less than size after a resume)
    resumed_from: int
    checksum: str | None


class SingleTransfers:
    """put and get, one file each, with resume, verification and retries.

    Expects of the class it is mixed into (:class:`~sockftp.client.connection.Connection`):
    ``connect``, ``close``, ``_abort``, ``request``, ``_send``, ``_reply``, ``_io``,
    ``_lost``, ``wire`` and ``_wire``, and the ``retries`` attribute.
    """

    def put(
        self,
        local: str | os.PathLike,
        remote: str | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
        times: bool = True,
    ) -> TransferResult:
        """Upload file *local* to *remote* (default: its name, in the current
        remote directory). Resumes an interrupted upload of the same path and
        size; the server commits the file only if its checksum matches. With
        *times*, the stored file keeps *local*'s modification time."""
        local = os.fspath(local)
        remote = remote if remote is not None else os.path.basename(local)
        return self._with_retries(lambda: self._put_once(local, remote, resume, progress, times))

    def _put_once(
        self, local: str, remote: str, resume: bool, progress: Progress | None, times: bool = True
    ) -> TransferResult:
        with open(local, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not statmod.S_ISREG(st.st_mode):
                raise BadRequest(f"not a regular file: {local}")
            size = st.st_size
            mtime = st.st_mtime if times else None
            offset = 0
            if resume and size >= RESUME_THRESHOLD:
                offset = self.request({"cmd": "resume", "path": remote, "size": size})["offset"]
            restarted = False
            while True:
                try:
                    return self._send_file(f, local, remote, size, offset, progress, mtime)
                except ChecksumMismatch:
                    if not offset or restarted:
                        raise
                    # The held part came from another file: start over, once.
                    offset, restarted = 0, True
                except OffsetMismatch as exc:
                    # The partial changed between resume and put: use what is held.
                    held = exc.details.get("offset")
                    if restarted or not isinstance(held, int) or held == offset or not 0 <= held <= size:
                        raise
                    offset, restarted = held, True

    def _send_file(
        self, f, local: str, remote: str, size: int, offset: int, progress, mtime: float | None = None
    ) -> TransferResult:
        hasher = checksums.Hasher()
        header = {"cmd": "put", "path": remote, "size": size, "offset": offset, "checksum": "trailer"}
        if mtime is not None:
            header["mtime"] = mtime  # a server without the "mtime" feature ignores it
        if size < RESUME_THRESHOLD:
            data = os.pread(f.fileno(), size + 1, 0)
            if len(data) != size:
                raise SockftpError(f"{local} changed size while being read", code="local_error")
            hasher.update(data)
            self._send(header, data)
        else:
            if offset:
                f.seek(0)
                checksums.hash_file_into(hasher, f, limit=offset)
            fd = f.fileno()

            def readinto(view, position):
                n = os.preadv(fd, [view], position)
                if progress is not None:
                    progress(position + n, size)
                return n

            self._send(header)
            with self._raw_transfer():
                try:
                    self.wire.send_from(readinto, offset, size - offset, hasher)
                except ConnectionClosed as exc:
                    self._salvage_reply(exc)
                except SourceEnded:
                    raise SockftpError(f"{local} shrank while being sent", code="local_error") from None
        self._send({"checksum": hasher.value()})
        try:
            reply = self._reply()
        except SockftpError:
            if self._wire is not None and self._wire.peer_closed():
                # Refused with more than MAX_DRAIN still to come, the server
                # answered and hung up: the next request needs a new connection.
                self.close()
            raise
        if progress is not None:
            # Only once the reply is read: a callback that raises (a cancel
            # at 100%) must not leave the reply to be read as the next one's.
            progress(size, size)
        return TransferResult(reply.get("path", remote), local, size, size - offset, offset, reply.get("checksum"))

    def put_delta(
        self,
        local: str | os.PathLike,
        remote: str,
        base: BlockList,
        *,
        local_blocks: tuple[bytes, str] | None = None,
        times: bool = True,
        progress: Progress | None = None,
        fallback: bool = True,
    ) -> TransferResult:
        """Upload file *local* over *remote*, sending only the blocks that
        differ from *base*, the server's block list of *remote* (from
        :meth:`blocks`); the server builds the new file from its old one and
        these, verifies the whole and commits it like any upload (feature
        ``delta``). ``sent`` in the result counts the bytes sent.

        *local_blocks*: :func:`~sockftp.protocol.blocks.file_blocks` of
        *local*, if the caller has it (else the file is read once more).
        With *fallback*, the whole file is sent instead when the delta
        cannot be used: the server lacks the feature, *remote* changed
        since *base* (DeltaBaseChanged), the result did not verify, or the
        changes are too scattered for one request."""
        local = os.fspath(local)
        try:
            return self._with_retries(lambda: self._put_delta_once(local, remote, base, local_blocks, times, progress))
        except (DeltaBaseChanged, ChecksumMismatch, _NoDelta) as exc:
            if not fallback:
                raise SockftpError(str(exc), code="local_error") if isinstance(exc, _NoDelta) else exc from None
        return self.put(local, remote, progress=progress, times=times)

    def _put_delta_once(
        self, local: str, remote: str, base: BlockList, local_blocks, times: bool, progress: Progress | None
    ) -> TransferResult:
        if not self.supports("delta"):
            raise _NoDelta("the server does not take deltas")
        with open(local, "rb", buffering=0) as f:
            fd = f.fileno()
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode):
                raise BadRequest(f"not a regular file: {local}")
            size = st.st_size
            digests, checksum = local_blocks or (b"", "")
            if len(digests) != block_count(size, base.block_size) * DIGEST_SIZE or not checksum:
                digests, checksum = file_blocks(fd, size, base.block_size)
            ops = delta_ops(base.digests, base.size, digests, size, base.block_size)
            header = {
                "cmd": "put",
                "path": remote,
                "size": size,
                "checksum": "trailer",
                "delta": {"base": base.checksum, "block_size": base.block_size, "ops": ops},
            }
            if times:
                header["mtime"] = st.st_mtime
            if len(ops) > DELTA_MAX_OPS or encoded_size(header) > MAX_HEADER_SIZE:
                raise _NoDelta(f"the changes to {local} are too scattered for one delta")
            literals = [
                (at, length)
                for at, length, source in expand_ops(ops, base.size, size, base.block_size)
                if source is None
            ]

            def readinto(view, position):
                n = os.preadv(fd, [view], position)
                if progress is not None:
                    progress(position + n, size)
                return n

            self._send(header)
            sent = 0
            with self._raw_transfer():
                try:
                    for at, length in literals:
                        self.wire.send_from(readinto, at, length)
                        sent += length
                except ConnectionClosed as exc:
                    self._salvage_reply(exc)
                except SourceEnded:
                    raise SockftpError(f"{local} shrank while being sent", code="local_error") from None
        # The checksum read before the bytes were sent: if the file changed
        # since, the server finds the result does not match, and stores nothing.
        self._send({"checksum": checksum})
        try:
            reply = self._reply()
        except SockftpError:
            if self._wire is not None and self._wire.peer_closed():
                self.close()  # refused with more than MAX_DRAIN to come: the server hung up
            raise
        if progress is not None:
            progress(size, size)
        return TransferResult(reply.get("path", remote), local, size, sent, 0, reply.get("checksum"))

    @contextmanager
    def _raw_transfer(self):
        """While raw bytes move, any failure leaves the stream out of step
        (bytes announced but not sent, or sent but not read): close the
        connection before passing the failure on, whatever it is, even an
        exception from a progress callback or Ctrl-C. With a reset, not a
        plain close: the server then lets go of an interrupted upload at
        once, rather than once the megabytes still queued have reached it,
        and the same upload run again right away is not told ``busy``."""
        with self._io():  # which closes too, but plainly: reset first
            try:
                yield
            except BaseException:
                self._abort()
                raise

    def _salvage_reply(self, exc: ConnectionClosed) -> NoReturn:
        """The server cut an upload short: it may have said why first."""
        try:
            reply = self.wire.read_header(timeout=2.0)
        except (ConnectionClosed, SockftpError, OSError):
            reply = None
        if reply and reply.get("ok") is False:
            self.close()
            raise error_from_reply(reply)
        self._lost(exc)

    def get(
        self,
        remote: str,
        local: str | os.PathLike | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
        times: bool = True,
    ) -> TransferResult:
        """Download *remote* to *local* (default: its name, in the current
        directory; a directory means a file of that name inside it). The file
        appears under its name only once complete and verified. With *times*,
        it keeps the remote file's modification time."""
        local = os.fspath(local) if local is not None else remote.rstrip("/").rsplit("/", 1)[-1]
        if os.path.isdir(local):
            local = os.path.join(local, remote.rstrip("/").rsplit("/", 1)[-1])
        return self._with_retries(lambda: self._get_once(remote, local, resume, progress, times))

    def _get_once(self, remote: str, local: str, resume: bool, progress, times: bool = True) -> TransferResult:
        partial = partial_path(local)
        offset = 0
        if resume:
            try:
                offset = os.stat(partial).st_size
            except FileNotFoundError:
                pass
        try:
            return self._receive_file(remote, local, partial, offset, progress, times)
        except (ChecksumMismatch, OffsetMismatch):
            if not offset:
                raise
            # The local part no longer matches the remote file: start over, once.
            return self._receive_file(remote, local, partial, 0, progress, times)

    def _receive_file(
        self, remote: str, local: str, partial: str, offset: int, progress, times: bool = True
    ) -> TransferResult:
        # Everything local that can fail is done before asking: once the
        # server starts sending, a local failure would leave its bytes unread.
        hasher = checksums.Hasher()
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if offset:
                with open(fd, "rb", buffering=0, closefd=False) as held:
                    checksums.hash_file_into(hasher, held, limit=offset)
            if os.fstat(fd).st_size != offset:
                # Only when needed: ext4 flushes a file on close once it has
                # been truncated (auto_da_alloc), which costs a large download
                # a synchronous write-out.
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                reply = self.request({"cmd": "get", "path": remote, "offset": offset})
            except SockftpError:
                if not offset:
                    os.unlink(partial)  # ours, and empty: leave nothing behind
                raise
            size, count, expected = reply["size"], reply["filesize"], reply.get("checksum")
            done = offset
            # Disk blocks reserved ahead of the writes: they cost ext4 far
            # less than blocks it must reserve page by page (sockftp.disk.prealloc).
            from ..disk.prealloc import Preallocation  # here: ctypes, which it loads, costs start-up

            ahead = Preallocation.for_file(fd, offset, offset + count)

            def write(chunk):
                nonlocal done
                if ahead is not None:
                    ahead.cover(done + len(chunk))
                _write_all(fd, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)

            try:
                with self._raw_transfer():
                    self.wire.receive(count, write, hasher)
            except BaseException:
                if ahead is not None:
                    ahead.release(done)  # the partial, kept to resume, holds only its bytes
                raise
        finally:
            os.close(fd)
        if progress is not None and not count:
            progress(size, size)
        actual = hasher.value()
        if expected is not None and actual != expected:
            os.unlink(partial)
            raise ChecksumMismatch(f"download of {remote} arrived damaged (expected {expected}, got {actual})")
        os.replace(partial, local)
        mtime = reply.get("mtime")
        if times and isinstance(mtime, (int, float)):
            os.utime(local, (mtime, mtime))
        return TransferResult(reply.get("path", remote), local, size, count, offset, actual)

    def _with_retries(self, attempt):
        """Run a transfer; after a lost connection, reconnect and run it
        again (it resumes from what the server holds, which may be another
        node behind a balancer), up to ``retries`` times, backing off."""
        attempts = 0
        busy_until = None  # time.monotonic() past which busy ends the retries
        while True:
            try:
                if self._wire is None:
                    self.connect()
                return attempt()
            except SockftpError as exc:
                # A lost connection, or one the server has just ended (idle
                # timeout, shutdown): reconnect and resume. After one, busy
                # is most likely this transfer's own previous attempt, which
                # its server (a draining node, say) has not let go of yet,
                # or a dead node's lease has not yet run out: busy_wait.
                lost = isinstance(exc, ConnectionLost) or (exc.code in FATAL_CODES and self._wire is None)
                busy = attempts > 0 and exc.code == ErrorCode.BUSY
                if busy:
                    now = time.monotonic()
                    busy_until = busy_until or now + self.busy_wait
                    if now < busy_until:
                        self.pause_before_retry(attempts, exc)
                        continue
                lost = lost or busy
                if not lost or attempts >= self.retries:
                    raise
                busy_until = None
                attempts += 1
                self.pause_before_retry(attempts, exc)


def partial_path(local: str) -> str:
    """Where a download to *local* is kept until complete: ``.NAME.sockftp-part``
    beside it; or, if that name would be too long for the filesystem (NAME
    is near the limit), NAME cut short and told apart by a hash of it."""
    head, tail = os.path.split(local)
    name = f".{tail}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) > MAX_NAME_LENGTH:
        import hashlib  # here: rarely needed, and slow to import

        digest = hashlib.sha256(os.fsencode(tail)).hexdigest()[:16]
        room = MAX_NAME_LENGTH - len(f"..{digest}{PARTIAL_SUFFIX}")
        name = f".{os.fsencode(tail)[:room].decode('utf-8', 'ignore')}.{digest}{PARTIAL_SUFFIX}"
    return os.path.join(head, name)


def _write_all(fd: int, data) -> None:
    view = data
    while view:
        view = view[os.write(fd, view) :]


class _NoDelta(Exception):
    """A delta cannot be used here: send the whole file."""
