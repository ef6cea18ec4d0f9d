"""The open files of an S3Storage: a download (ranged GETs) and an upload
(a multipart upload whose state lives in the account store).

An upload spools at most one part on local disk, never a whole file in
memory, and sends it as a part of a multipart upload once it is full. Each
part is recorded in the shared state (:mod:`sockftp.accounts.multipart`)
only after the store has it, under the generation of the lease this upload
holds: a node that lost its lease records nothing.

The bytes before a resume's offset sit in the *sealed partial*, an
ordinary hidden object beside the target (``.sockftp-part-<hash>``, the
name LocalStorage gives its partial files). Sealing completes the open
multipart upload into that object: a clean stop (:meth:`S3Upload.keep`)
seals what it has, its tail under a part included; a resume after a crash
seals the parts recorded. A resumed upload reads that object back to hash
the prefix (:meth:`S3Upload.hash_existing`, as LocalStorage reads its
partial), copies its whole parts into the new multipart upload on the
store's side (UploadPartCopy) and spools the rest. Commit completes into
the partial's name, gives it its checksum in metadata and renames it over
the target: the object appears whole, verified, with its checksum.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import xxhash

from ..protocol.errors import Busy, IOFailure, NoSpace, SockftpError
from ..protocol.paths import RemotePath
from .base import Download, Upload

if TYPE_CHECKING:
    from .s3 import S3Storage

log = logging.getLogger("sockftp.storage")

#: Metadata keys (x-amz-meta-...) of a committed object.
META_CHECKSUM = "sockftp-checksum"
#: The largest range one UploadPartCopy copies (S3 allows 5 GiB).
_COPY_CHUNK = 1024 * 1024 * 1024
#: Parts of one upload travelling to the store at once, each from a spool
#: file of its own, while the next one is received: one at a time left the
#: link idle during each part's round trip.
IN_FLIGHT = 4
#: Threads sending parts, shared by every upload of the process.
SENDERS = 32
_senders_pool: ThreadPoolExecutor | None = None
_senders_lock = threading.Lock()


def _senders() -> ThreadPoolExecutor:
    global _senders_pool
    with _senders_lock:
        if _senders_pool is None:
            _senders_pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="s3-part")
        return _senders_pool


class S3Download(Download):
    """An object opened for reading: one streaming GET from the offset
    asked, re-opened only when a read is not where the last one ended.
    Every GET carries the ETag seen at opening, so an object replaced
    meanwhile fails clearly instead of mixing two versions."""

    def __init__(self, storage: S3Storage, path: RemotePath, key: str, head: dict):
        self.storage = storage
        self.path = path
        self.key = key
        self.size = int(head["ContentLength"])
        self.mtime = head["LastModified"].timestamp()
        self.etag = head.get("ETag")
        self._kept = head.get("Metadata", {}).get(META_CHECKSUM)
        self._body = None
        self._position = -1

    def stored_checksum(self) -> str | None:
        return self._kept

    def checksum(self) -> str:
        if self._kept is None:
            hasher = xxhash.xxh3_128()
            buffer = bytearray(4 * 1024 * 1024)
            view = memoryview(buffer)
            position = 0
            while position < self.size:
                n = self.readinto(view, position)
                if not n:
                    raise IOFailure("{path} shrank while it was read", path=self.path)
                hasher.update(view[:n])
                position += n
            self._kept = f"xxh3-128:{hasher.hexdigest()}"
        return self._kept

    def readinto(self, buffer, offset: int) -> int:
        if offset >= self.size:
            return 0
        if self._body is None or offset != self._position:
            self._close_body()
            self._body = self.storage.get_range(self.path, self.key, offset, self.size, self.etag)
            self._position = offset
        try:
            n = _read_into(self._body, buffer)
        except Exception as exc:  # noqa: BLE001 - the connection broke mid-body
            self._close_body()
            raise self.storage.error(exc, self.path) from None
        if not n:
            self._close_body()
            raise IOFailure("{path} ended early while it was read; try again", path=self.path)
        self._position += n
        return n

    def _close_body(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: BLE001 - closing a broken stream
                pass

    def close(self) -> None:
        self._close_body()


def _read_into(body, buffer) -> int:
    """Read from a GET's body into *buffer*. Straight from the socket where
    the body is not encoded: urllib3's own readinto reads into a new bytes
    object and copies that (a 1 GiB get spent a core's share doing it)."""
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if fp is not None and hasattr(fp, "readinto") and not raw.headers.get("content-encoding"):
        return fp.readinto(buffer)
    if raw is not None and hasattr(raw, "readinto"):
        return raw.readinto(buffer)
    data = body.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)


class S3Upload(Upload):
    """An upload of *path* to the object *key*, holding the lease of its
    state (generation *generation*; None: an upload all in hand that
    claimed nothing, see S3Storage.open_upload).

    *base*: bytes of *source* (the sealed partial, or the file appended
    to) that come first; the new multipart upload copies the whole parts
    of them and spools the rest."""

    def __init__(
        self,
        storage: S3Storage,
        path: RemotePath,
        size: int | None,
        offset: int,
        generation: int | None,
        source: str | None = None,
        source_etag: str | None = None,
    ):
        self.storage = storage
        self.path = path
        self.size = size
        self.offset = offset
        self.generation = generation
        self.key = storage.key(path)
        self.partial = storage.partial_key(path)
        self.state_key = storage.state_key(path)
        self.part_size = storage.part_size_for(size)
        #: Where the first *offset* bytes are read or copied from.
        self.source, self.source_etag = source, source_etag
        #: Whole parts of the source copied on the store's side; the rest spooled.
        self.copied = (offset // self.part_size) * self.part_size if source else 0
        self.primed = offset == self.copied  # the spool holds source[copied:offset] (or needs none)
        self.upload_id: str | None = None
        self.parts: list[tuple[int, str]] = []  # (number, etag), in order
        self.spool = None
        self.spooled = 0
        #: Parts sent and not yet recorded: (number, size, digest, spool, future).
        self._pending: deque = deque()
        self._part_hash = xxhash.xxh3_128()
        self._renewed = time.monotonic()
        self._done = False
        self.written = False
        #: Bytes of the sealed partial this upload resumed from, which a
        #: resume may count on until the new upload's copies are recorded.
        self.resumed_from = offset if source is not None and source == self.partial else 0

    # -- the spool ----------------------------------------------------------------------

    def _spool(self):
        if self.spool is None:
            try:
                self.spool = tempfile.TemporaryFile(dir=self.storage.spool_dir)  # noqa: SIM115 - closed by _close
            except OSError as exc:
                raise IOFailure(f"cannot make a spool file for {{path}}: {exc.strerror}", path=self.path) from None
        return self.spool

    def _spool_write(self, data) -> None:
        try:
            self._spool().write(data)
        except OSError as exc:
            raise NoSpace(f"the server's spool for {{path}} is full: {exc.strerror}", path=self.path) from None
        self._part_hash.update(data)
        self.spooled += len(data)

    def _prime(self, hasher=None) -> None:
        """Read the source back: all of it into *hasher* if given, and what
        lies past the copied parts into the spool."""
        if self.primed and hasher is None:
            return
        start = 0 if hasher is not None else self.copied
        position = start
        buffer = bytearray(min(4 * 1024 * 1024, max(self.offset - start, 1)))
        view = memoryview(buffer)
        body = None
        try:
            while position < self.offset:
                if body is None:
                    body = self.storage.get_range(self.path, self.source, position, self.offset, self.source_etag)
                n = _read_into(body, view[: min(len(buffer), self.offset - position)])
                if not n:
                    raise IOFailure("the partial of {path} is shorter than recorded", path=self.path)
                chunk = view[:n]
                if hasher is not None:
                    hasher.update(chunk)
                if not self.primed and position + n > self.copied:
                    self._spool_write(chunk[max(0, self.copied - position) :])
                position += n
        except SockftpError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken read-back
            raise self.storage.error(exc, self.path) from None
        finally:
            if body is not None:
                body.close()
        self.primed = True

    # -- Upload ------------------------------------------------------------------------

    def hash_existing(self, hasher) -> None:
        if self.offset:
            self._prime(hasher)

    def write(self, data) -> None:
        self._prime()
        self._renew()
        self.written = True
        while self._pending and self._pending[0][4].done():
            self._land_oldest()  # a part's failure is told at the next write
        view = memoryview(data).cast("B")
        while view:
            room = self.part_size - self.spooled
            self._spool_write(view[:room])
            self.offset += min(room, len(view))
            view = view[room:]
            if self.spooled >= self.part_size:
                self._send_part()

    def replaced_size(self) -> int | None:
        head = self.storage.head(self.path, self.key)
        return None if head is None else int(head["ContentLength"])

    def commit(self, checksum: str | None) -> int | None:
        self._prime()
        self.storage.refuse_directory(self.path)
        replaced = self.replaced_size()
        metadata = {} if checksum is None else {META_CHECKSUM: checksum}
        if self.upload_id is None and not self.copied:
            # All of it in the spool: one PutObject, atomic on any S3.
            self.storage.put_file(self.path, self.key, self._rewound(), self.spooled, metadata)
            if self.source == self.partial:
                self.storage.delete(self.path, self.partial)  # the sealed partial, now in the file
        else:
            self._seal()
            self.storage.publish(self.path, self.partial, self.key, metadata)
        self._forget()
        self._close()
        return replaced

    def keep(self) -> None:
        if self._done:
            return
        try:
            if self.generation is None:
                self.lost = self.offset  # claimed nothing, so it keeps nothing
            elif self.offset == 0:
                self._forget()
            elif not self.written and self.source == self.partial:
                self.storage.release(self)  # the sealed partial holds it all already
            else:
                self._prime()
                if self.upload_id is None and not self.copied:
                    self.storage.put_file(self.path, self.partial, self._rewound(), self.spooled, {})
                else:
                    self._seal()
                self.storage.record_sealed(self, self.offset)
                self.storage.release(self)
        except Exception as exc:  # noqa: BLE001 - keep runs in a finally: report, never raise
            log.warning("could not keep the partial of %s: %s", "/".join(self.path), exc)
            self.storage.release(self, quiet=True)
        self._close()

    def discard(self) -> None:
        if self._done:
            return
        try:
            if self.upload_id is not None:
                self.storage.abort(self.path, self.key, self.upload_id)
            if self.generation is not None:
                self.storage.delete(self.path, self.partial)
                self._forget()
        except Exception as exc:  # noqa: BLE001 - the janitor finishes what this cannot
            log.warning("could not discard the partial of %s: %s", "/".join(self.path), exc)
            self.storage.release(self, quiet=True)
        self._close()

    # -- parts ---------------------------------------------------------------------------

    def _rewound(self):
        spool = self._spool()
        spool.flush()
        spool.seek(0)
        return spool

    def _start(self) -> None:
        """Open the multipart upload (and record it), then copy the source's
        whole parts into it on the store's side."""
        self.upload_id = self.storage.create_multipart(self.path, self.partial)
        state = {"upload_id": self.upload_id, "size": self.size, "base": self.resumed_from, "copied": self.copied}
        self.storage.set_state(self, state, drop_parts=True)
        position = 0
        while position < self.copied:
            count = min(_COPY_CHUNK // self.part_size * self.part_size or self.part_size, self.copied - position)
            number = len(self.parts) + 1
            etag = self.storage.copy_part(
                self.path, self.partial, self.upload_id, number, self.source, self.source_etag, position, count
            )
            self._record(number, count, etag, "copy")
            position += count

    def _send_part(self) -> None:
        """Send the spooled part in the background, and take the next part
        into a new spool meanwhile; at most IN_FLIGHT parts travel at once."""
        if self.upload_id is None:
            self._start()
        number = len(self.parts) + len(self._pending) + 1
        spool, size = self._rewound(), self.spooled
        digest = f"xxh3-128:{self._part_hash.hexdigest()}"
        future = _senders().submit(self._send, number, spool, size, digest)
        self._pending.append((number, size, digest, spool, future))
        self.spool, self.spooled, self._part_hash = None, 0, xxhash.xxh3_128()
        while len(self._pending) >= IN_FLIGHT:
            self._land_oldest()

    def _send(self, number: int, spool, size: int, digest: str) -> str:
        """Send one part and record it as soon as the store has it (in a
        sender thread). Its ETag."""
        try:
            etag = self.storage.upload_part(self.path, self.partial, self.upload_id, number, spool, size)
        except IOFailure:
            # Sealed by the node that took this upload over? Then say so.
            if self.generation is not None and not self.storage.renew(self):
                raise Busy("the upload of {path} was taken over by another; resume it again", path=self.path) from None
            raise
        if self.generation is not None and not self.storage.record_part(self, number, size, etag, digest):
            raise Busy("the upload of {path} was taken over by another; resume it again", path=self.path)
        return etag

    def _land_oldest(self) -> None:
        """Wait for the oldest part sent to be stored and recorded."""
        number, _size, _digest, spool, future = self._pending.popleft()
        try:
            etag = future.result()
        finally:
            spool.close()
        self.parts.append((number, etag))
        self._renewed = time.monotonic()

    def _land_all(self) -> None:
        while self._pending:
            self._land_oldest()

    def _record(self, number: int, size: int, etag: str, digest: str) -> None:
        if self.generation is not None and not self.storage.record_part(self, number, size, etag, digest):
            raise Busy("the upload of {path} was taken over by another; resume it again", path=self.path)
        self.parts.append((number, etag))
        self._renewed = time.monotonic()

    def _seal(self) -> None:
        """Complete what this upload holds into the sealed partial."""
        if self.upload_id is None:
            self._start()
        if self.spooled or not (self.parts or self._pending):
            self._send_part()
        self._land_all()
        self.storage.complete(self.path, self.partial, self.upload_id, self.parts)
        self.upload_id = None
        self.parts = []

    def _renew(self) -> None:
        if self.generation is None:
            return
        now = time.monotonic()
        if now - self._renewed > self.storage.lease_time / 3:
            if not self.storage.renew(self):
                raise Busy("the upload of {path} was taken over by another; resume it again", path=self.path)
            self._renewed = now

    def _forget(self) -> None:
        if self.generation is not None:
            self.storage.forget(self)

    def _close(self) -> None:
        self._done = True
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.close()
        while self._pending:  # parts still travelling after a failure: let them end
            _, _, _, spool, future = self._pending.popleft()
            try:
                future.result()
            except Exception:  # noqa: BLE001 - the upload failed already
                pass
            spool.close()


def new_owner() -> str:
    """A lease owner: unique to one upload in one process on one host."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex}"
