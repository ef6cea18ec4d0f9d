"""Many small files over one connection, pipelined: put_many and get_many;
and the ranges of one file (get_ranges), for a download built by a delta.

Requests go out without waiting for each reply, up to a window at a time,
so a thousand small files cost a thousand writes, not a thousand round
trips. Replies are read strictly in order: a batch must never go on over a
new connection, whose replies would be taken for the lost ones'.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..protocol import checksum as checksums
from ..protocol.errors import ChecksumMismatch, ConnectionLost, DeltaBaseChanged, SockftpError
from .single import RESUME_THRESHOLD, TransferResult, _write_all, partial_path

#: on_done(source, target, result, error), called once per file of a batch
#: as soon as it is settled, in the order given: *result* if it was stored,
#: else *error* (the paths as given: local then remote for put_many, remote
#: then local for get_many).
OnDone = Callable[[str, str, TransferResult | None, SockftpError | None], None]


@dataclass(frozen=True)
class RangeResult:
    """What :meth:`PipelinedTransfers.get_ranges` learnt of the remote file:
    its size, time and WHOLE checksum, and the bytes received."""

    path: str
    size: int
    mtime: float
    checksum: str | None
    received: int


#: put_many writes its small files in batches of about this many bytes.
_BATCH_BYTES = 128 * 1024


class PipelinedTransfers:
    """put_many, get_many and get_ranges.

    Expects of the class it is mixed into: ``_send``, ``_send_many``,
    ``_reply``, ``wire`` and ``_wire`` (from
    :class:`~sockftp.client.connection.Connection`), and ``put`` and
    ``_raw_transfer`` (from :class:`~sockftp.client.single.SingleTransfers`).
    """

    def put_many(
        self, pairs, *, window: int = 64, times: bool = True, on_done: OnDone | None = None
    ) -> list[TransferResult]:
        """Upload many files over this connection, pipelined: small files go
        out without waiting for each reply, up to *window* at a time, so a
        thousand small files cost a thousand writes, not a thousand round
        trips. Files of ``RESUME_THRESHOLD`` or more go through :meth:`put`.

        *pairs* are ``(local, remote)``. Every file is tried, even past one
        that cannot be read; the first failure is raised once the rest are
        done. Returns the results of the files that were stored, in order.
        With *times*, each stored file keeps its local modification time.
        *on_done* hears of each file as it is settled (see :data:`OnDone`).
        """
        results: list[TransferResult] = []
        # (local, remote, size, the error of a file that failed before it
        # was sent, which waits its turn here so that files settle in order)
        pending: deque[tuple[str, str, int, SockftpError | None]] = deque()
        failures: list[SockftpError] = []
        # Requests not yet written, each with its file, and their bytes: many
        # small files go out in one write (a write per 4 KiB file was most of
        # this side's system calls, and the server then finds each whole in
        # its buffer at once). Written before any reply is waited for.
        unsent: list[tuple[dict, bytes]] = []
        unsent_bytes = 0

        def send() -> None:
            nonlocal unsent_bytes
            if unsent:
                self._send_frames(unsent)
                unsent.clear()
                unsent_bytes = 0

        def settle(local: str, remote: str, result: TransferResult | None, error: SockftpError | None) -> None:
            if result is not None:
                results.append(result)
            else:
                failures.append(error)
            if on_done is not None:
                on_done(local, remote, result, error)

        def collect() -> None:
            local, remote, size, error = pending.popleft()
            if error is not None:
                settle(local, remote, None, error)
                return
            send()
            caught: list[SockftpError] = []
            reply = self._reply_or_failure(caught)
            if reply is None:
                settle(local, remote, None, caught[0])
                return
            result = TransferResult(reply.get("path", remote), local, size, size, 0, reply.get("checksum"))
            settle(local, remote, result, None)

        for local, remote in pairs:
            local = os.fspath(local)
            try:
                data, st = _read_small(local)
            except SockftpError as exc:
                # (gone since it was listed, say): this file fails, and the
                # batch goes on, its replies still to be read in order.
                pending.append((local, remote, 0, exc))
                continue
            if data is None:
                while pending:
                    collect()
                try:
                    result = self.put(local, remote, times=times)
                except ConnectionLost:
                    raise
                except SockftpError as exc:
                    settle(local, remote, None, exc)
                else:
                    settle(local, remote, result, None)
                continue
            # The checksum goes up front: one frame per file, not two.
            header = {"cmd": "put", "path": remote, "size": st.st_size, "checksum": checksums.of_bytes(data)}
            if times:
                header["mtime"] = st.st_mtime
            if self._wire is None:  # (counted only then: this loop is hot)
                self._check_batch(sum(error is None for *_, error in pending))
            unsent.append((header, data))
            unsent_bytes += len(data)
            pending.append((local, remote, st.st_size, None))
            if unsent_bytes >= _BATCH_BYTES:
                send()
            if len(pending) >= window:
                # Half a window answered at a time, as get_many does: one
                # reply read per file sent would mean one write per file.
                send()
                while len(pending) > window // 2:
                    collect()
        send()
        while pending:
            collect()
        if failures:
            raise failures[0]
        return results

    def _check_batch(self, unanswered: int) -> None:
        """Before sending more of a pipelined batch: if a reply (a fatal
        error, such as shutting_down) closed the connection, the requests
        still unanswered are lost with it, and a new connection must not
        take their place, or its replies would be read as theirs."""
        if unanswered and self._wire is None:
            raise ConnectionLost(f"the connection closed with {unanswered} requests of the batch unanswered")

    def _reply_or_failure(self, failures: list[SockftpError]) -> dict | None:
        """The next reply of a pipelined batch, or None after noting its
        error in *failures* (a lost connection ends the batch)."""
        try:
            return self._reply()
        except ConnectionLost:
            raise
        except SockftpError as exc:
            failures.append(exc)
            return None

    def get_many(
        self, pairs, *, window: int = 64, times: bool = True, on_done: OnDone | None = None
    ) -> list[TransferResult]:
        """Download many small files over this connection, pipelined like
        :meth:`put_many`: up to *window* requests in flight. Each file is
        verified and appears under its name only once complete. *pairs* are
        ``(remote, local)``; the first failure is raised once the rest are
        done. *on_done* hears of each file as it is settled (see :data:`OnDone`)."""
        results: list[TransferResult] = []
        pending: deque[tuple[str, str]] = deque()
        failures: list[SockftpError] = []

        def collect() -> None:
            remote, local = pending.popleft()
            before = len(failures)
            result = receive(remote, local)
            if result is not None:
                results.append(result)
            if on_done is not None:
                on_done(remote, local, result, failures[before] if result is None else None)

        def receive(remote: str, local: str) -> TransferResult | None:
            reply = self._reply_or_failure(failures)
            if reply is None:
                return None
            hasher = checksums.Hasher()
            partial = partial_path(local)
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                fd = None
                failures.append(SockftpError(f"{partial}: {exc.strerror or exc}", code="local_error"))

            def write(chunk) -> None:
                if fd is not None:  # else read anyway, to stay in step
                    _write_all(fd, chunk)

            try:
                with self._raw_transfer():
                    self.wire.receive(reply["filesize"], write, hasher)
            except BaseException:
                if fd is not None:  # a local write failed, or the connection: leave no partial
                    os.close(fd)
                    os.unlink(partial)
                raise
            if fd is None:
                return None
            try:
                if reply.get("checksum") is not None and hasher.value() != reply["checksum"]:
                    os.unlink(partial)
                    failures.append(ChecksumMismatch(f"download of {remote} arrived damaged"))
                    return None
                mtime = reply.get("mtime")
                if times and isinstance(mtime, (int, float)):
                    os.utime(fd, (mtime, mtime))  # through the descriptor: no second path lookup
            finally:
                os.close(fd)
            try:
                os.replace(partial, local)
            except OSError as exc:  # a directory in the way, say: this file fails, the batch goes on in step
                os.unlink(partial)
                failures.append(SockftpError(f"{local}: {exc.strerror or exc}", code="local_error"))
                return None
            size = reply["size"]
            return TransferResult(reply.get("path", remote), local, size, size, 0, hasher.value())

        # Requests go out in batches of half a window, one write each; the
        # other half of the window is still being answered meanwhile.
        batch: list[dict] = []
        for remote, local in pairs:
            batch.append({"cmd": "get", "path": remote})
            pending.append((remote, os.fspath(local)))
            if len(pending) >= window:
                self._check_batch(len(pending) - len(batch))
                self._send_many(batch)
                batch = []
                while len(pending) > window // 2:
                    collect()
        if batch:
            self._check_batch(len(pending) - len(batch))
            self._send_many(batch)
        while pending:
            collect()
        if failures:
            raise failures[0]
        return results

    def get_ranges(
        self,
        remote: str,
        ranges: Iterable[tuple[int, int]],
        write: Callable[[int, memoryview], None],
        *,
        window: int = 16,
    ) -> RangeResult:
        """Download the byte ranges ``(offset, length)`` of file *remote*,
        pipelined over this connection (feature ``delta``), as a download
        built by a delta needs them. ``write(position, chunk)`` gets each
        chunk with its position in the remote file; the chunk is a view of
        a reused buffer, to be consumed before returning. A range past the
        end is cut at the end. With no ranges, only the file's details are
        fetched.

        Raises DeltaBaseChanged if the file changed between two replies
        (its size or checksum differ): the ranges then come from different
        versions. Every reply is read, so the connection stays in step."""
        requests = [(offset, length) for offset, length in ranges] or [(0, 0)]
        failures: list[SockftpError] = []
        pending: deque[tuple[int, int]] = deque()
        first: dict | None = None
        received = 0

        def collect() -> None:
            nonlocal first, received
            offset, length = pending.popleft()
            reply = self._reply_or_failure(failures)
            if reply is None:
                return
            count = reply.get("filesize")
            if first is None:
                first = reply
            same = (reply.get("size"), reply.get("checksum")) == (first.get("size"), first.get("checksum"))
            position = offset

            def deliver(chunk) -> None:
                nonlocal position
                if same and not failures:
                    write(position, chunk)
                position += len(chunk)

            with self._raw_transfer():
                self.wire.receive(count, deliver)
            received += count
            if not same:
                failures.append(DeltaBaseChanged(f"{remote} changed while its ranges were downloaded"))
            elif isinstance(first.get("size"), int) and count != max(0, min(length, first["size"] - offset)):
                failures.append(SockftpError(f"the server sent {count} bytes of a range of {length}", code="bad_reply"))

        batch: list[dict] = []
        for offset, length in requests:
            if failures:
                break  # no more requests; those in flight are still read
            batch.append({"cmd": "get", "path": remote, "offset": offset, "length": length})
            pending.append((offset, length))
            if len(pending) >= window:
                self._check_batch(len(pending) - len(batch))
                self._send_many(batch)
                batch = []
                while len(pending) > window // 2:
                    collect()
        if batch:
            self._check_batch(len(pending) - len(batch))
            self._send_many(batch)
        while pending:
            collect()
        if failures:
            raise failures[0]
        return RangeResult(
            first.get("path", remote), first["size"], first.get("mtime"), first.get("checksum"), received
        )


def _read_small(local: str) -> tuple[bytes | None, os.stat_result]:
    """A file's bytes if it is smaller than RESUME_THRESHOLD (else None), and
    its stat. A failure is a local_error that names the file."""
    try:
        with open(local, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if st.st_size >= RESUME_THRESHOLD:
                return None, st
            data = os.pread(f.fileno(), st.st_size + 1, 0)
    except OSError as exc:
        raise SockftpError(f"{local}: {exc.strerror or exc}", code="local_error") from None
    if len(data) != st.st_size:
        raise SockftpError(f"{local} changed size while being read", code="local_error")
    return data, st
