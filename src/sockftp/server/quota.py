"""Per-user quotas: bytes and files, enforced when an upload is announced.

A :class:`QuotaLedger` holds one user's usage (what their home holds on
disk, partial uploads included) and reservations (bytes announced by
uploads under way and not yet written). :class:`QuotaStorage` wraps the
storage a user sees and keeps the ledger right on every change, so every
front end gets quotas for free.

The rules, all under the ledger's lock, so N parallel uploads that together
exceed the quota cannot all pass:

* An upload reserves ``size - offset`` bytes when it starts, and one file if
  its name is new. It passes if usage + reservations + this, minus the size
  of the file it replaces, fit the limits: replacing a file at the quota's
  edge with one of the same size is allowed. An upload whose size is not
  announced (FTP's ``STOR``) reserves its file when it starts and each
  chunk before it is written, by the same rule, so it fails at the chunk
  that would pass the quota.
* Written bytes move from the reservation to usage as they land, so an
  upload cut short leaves usage equal to what its partial holds, ready to
  resume; the rest of its reservation is released.
* On commit the replaced file's bytes leave usage; a discarded upload's
  partial leaves usage; deletes and renames over files adjust it too.

Usage is never stored: it is measured from the storage when a user first
logs in after a start, so it is right after restarts and crashes, and kept
exact in memory from then on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..protocol.errors import NotFound, QuotaExceeded
from ..protocol.limits import MAX_PATH_DEPTH
from ..protocol.paths import RemotePath
from ..storage import FILE, BlockList, Download, Entry, Storage, TreeEntry, Upload, Usage


def human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass
class QuotaLedger:
    """One user's usage, reservations and limits (None: no limit)."""

    name: str
    used_bytes: int
    used_files: int
    quota_bytes: int | None = None
    max_files: int | None = None
    reserved_bytes: int = 0
    reserved_files: int = 0

    def __post_init__(self):
        self.lock = threading.Lock()
        # A mark per logged-in session. list.append and pop are single steps
        # under the GIL, so sessions come and go without taking a lock.
        self._present: list[None] = []

    @property
    def sessions(self) -> int:
        """Logged-in sessions using this ledger."""
        return len(self._present)

    @property
    def limited(self) -> bool:
        """True if a quota or a file limit is set."""
        return self.quota_bytes is not None or self.max_files is not None

    def join(self) -> None:
        self._present.append(None)

    def leave(self) -> None:
        try:
            self._present.pop()
        except IndexError:
            pass  # more logouts than logins: nothing to undo

    def reserve(self, size: int, new_file: bool, replaces: int = 0) -> None:
        """Reserve room for an upload of *size* more bytes. Raises QuotaExceeded."""
        files = 1 if new_file else 0
        with self.lock:
            if self.quota_bytes is not None:
                after = self.used_bytes + self.reserved_bytes + size - replaces
                if after > self.quota_bytes:
                    free = max(0, self.quota_bytes - self.used_bytes - self.reserved_bytes)
                    raise QuotaExceeded(
                        f"quota of {human(self.quota_bytes)} exceeded: {human(size)} announced, {human(free)} free",
                        quota_bytes=self.quota_bytes,
                        used_bytes=self.used_bytes,
                    )
            if self.max_files is not None and files:
                if self.used_files + self.reserved_files + files > self.max_files:
                    raise QuotaExceeded(
                        f"file limit of {self.max_files} reached", max_files=self.max_files, used_files=self.used_files
                    )
            self.reserved_bytes += size
            self.reserved_files += files

    def check_commit(self, replaced: int | None, credited: int, reserved_file: bool) -> None:
        """Refuse a commit that no longer fits because the file credited at
        its reservation (*credited* bytes; a file slot unless
        *reserved_file*) is not the one it replaces now."""
        with self.lock:
            if self.quota_bytes is not None and (replaced or 0) < credited:
                # Our written bytes are in used_bytes already.
                if self.used_bytes - (replaced or 0) + self.reserved_bytes > self.quota_bytes:
                    raise QuotaExceeded(
                        f"quota of {human(self.quota_bytes)} exceeded: the file this upload was to replace "
                        "was moved or removed meanwhile; nothing was stored",
                        quota_bytes=self.quota_bytes,
                        used_bytes=self.used_bytes,
                    )
            if self.max_files is not None and replaced is None and not reserved_file:
                if self.used_files + self.reserved_files + 1 > self.max_files:
                    raise QuotaExceeded(
                        f"file limit of {self.max_files} reached: the file this upload was to replace "
                        "was moved or removed meanwhile; nothing was stored",
                        max_files=self.max_files,
                        used_files=self.used_files,
                    )

    def wrote(self, count: int) -> None:
        """*count* reserved bytes were written: they are usage now."""
        with self.lock:
            self.reserved_bytes -= count
            self.used_bytes += count

    def release(self, size: int, new_file: bool) -> None:
        """Give back what a finished or failed upload did not use."""
        with self.lock:
            self.reserved_bytes -= size
            self.reserved_files -= 1 if new_file else 0

    def adjust(self, bytes_delta: int, files_delta: int = 0) -> None:
        with self.lock:
            self.used_bytes += bytes_delta
            self.used_files += files_delta

    def to_wire(self) -> dict:
        with self.lock:
            return {
                "user": self.name,
                "used_bytes": self.used_bytes,
                "used_files": self.used_files,
                "reserved_bytes": self.reserved_bytes,
                "quota_bytes": self.quota_bytes,
                "max_files": self.max_files,
            }


class QuotaRegistry:
    """The ledgers of the users who logged in since the server started."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._ledgers: dict[str, QuotaLedger] = {}
        self._lock = threading.Lock()

    def login(self, name: str, home: RemotePath, quota_bytes=None, max_files=None) -> QuotaLedger:
        """The ledger of *name* for one more session; :meth:`logout` when it
        ends. Usage is measured from *home* whenever the user has no other
        session and no upload under way, so changes made behind the server's
        back (an admin deleting files, an account re-created) are picked up.
        Limits are refreshed from the account at every login.

        While the user has other sessions, this takes no lock: under the
        soak's 500 clients the registry's lock, taken by every session as it
        began and ended, held up to 387 of them at a time, so ended sessions
        kept their places and new clients were refused as too many."""
        ledger = self.join(name, quota_bytes, max_files)
        if ledger is not None:
            return ledger
        with self._lock:
            ledger = self._ledgers.get(name)
            idle = ledger is None or (ledger.sessions == 0 and ledger.reserved_bytes == 0)
        usage = self.storage.usage(home) if idle else None  # a walk: not under the lock
        with self._lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                ledger = self._ledgers[name] = QuotaLedger(name, usage.bytes, usage.files)
            elif usage is not None and ledger.sessions == 0 and ledger.reserved_bytes == 0:
                with ledger.lock:
                    ledger.used_bytes, ledger.used_files = usage.bytes, usage.files
            ledger.quota_bytes = quota_bytes
            ledger.max_files = max_files
            ledger.join()  # under the lock: a concurrent first login must not apply an older measure
            return ledger

    def join(self, name: str, quota_bytes=None, max_files=None) -> QuotaLedger | None:
        """The ledger of *name* for one more session if they have a session
        open (so no measure is due); else None, and nothing changes."""
        ledger = self._ledgers.get(name)
        if ledger is None or not ledger.sessions:
            return None
        ledger.quota_bytes = quota_bytes
        ledger.max_files = max_files
        ledger.join()
        return ledger

    def logout(self, ledger: QuotaLedger) -> None:
        ledger.leave()

    def removed_behind(self, name: str, size: int) -> None:
        """*size* bytes of *name*'s were removed behind the sessions' backs
        (the janitor's expired partials): usage gives them back."""
        ledger = self._ledgers.get(name)
        if ledger is not None:
            ledger.adjust(-size)


class QuotaStorage(Storage):
    """*inner*, with every change accounted in *ledger*."""

    def __init__(self, inner: Storage, ledger: QuotaLedger):
        self.inner = inner
        self.ledger = ledger

    # -- reading: as it is --------------------------------------------------------

    def stat(self, path: RemotePath) -> Entry:
        return self.inner.stat(path)

    def list(self, path: RemotePath) -> Iterator[Entry]:
        return self.inner.list(path)

    @property
    def keeps_checksums(self) -> bool:
        return self.inner.keeps_checksums

    def tree(self, path: RemotePath, checksums: bool = False, max_depth: int = MAX_PATH_DEPTH) -> Iterator[TreeEntry]:
        return self.inner.tree(path, checksums, max_depth)

    def blocks(self, path: RemotePath) -> BlockList:
        return self.inner.blocks(path)

    def open_read(self, path: RemotePath) -> Download:
        return self.inner.open_read(path)

    def partial_size(self, path: RemotePath, size: int | None) -> int:
        return self.inner.partial_size(path, size)

    def checksum(self, path: RemotePath) -> str:
        return self.inner.checksum(path)

    def usage(self, path: RemotePath) -> Usage:
        return self.inner.usage(path)

    def check_space(self, count: int) -> None:
        self.inner.check_space(count)

    def set_mtime(self, path: RemotePath, mtime: float) -> None:
        self.inner.set_mtime(path, mtime)

    def mkdir(self, path: RemotePath, parents: bool = False) -> None:
        self.inner.mkdir(path, parents)

    # -- changes: accounted ------------------------------------------------------------

    def _file_size(self, path: RemotePath) -> int | None:
        try:
            entry = self.inner.stat(path)
        except NotFound:
            return None
        return entry.size if entry.type == FILE else None

    def rmdir(self, path: RemotePath) -> int:
        freed = self.inner.rmdir(path)
        self.ledger.adjust(-freed)
        return freed

    def remove(self, path: RemotePath) -> None:
        size = self._file_size(path)
        self.inner.remove(path)
        if size is not None:
            self.ledger.adjust(-size, -1)

    def rename(self, source: RemotePath, target: RemotePath) -> None:
        replaced = self._file_size(target) if source != target else None
        self.inner.rename(source, target)
        if replaced is not None:
            self.ledger.adjust(-replaced, -1)

    def open_upload(self, path: RemotePath, size: int | None, offset: int = 0, *, at_once: bool = False) -> Upload:
        if self.ledger.limited:
            replaces = self._file_size(path)
            new_file, credited = replaces is None, replaces or 0
        else:
            # Nothing to refuse, so no need to know now what the upload
            # replaces (a walk and a stat, a sixth of a small put's time):
            # the commit measures it anyway, and checks the limits again
            # should another login have set some meanwhile.
            new_file, credited = False, 0
        announced = 0 if size is None else size - offset  # unknown: reserved chunk by chunk
        self.ledger.reserve(announced, new_file=new_file, replaces=credited)
        try:
            upload = self.inner.open_upload(path, size, offset, at_once=at_once)
        except BaseException:
            self.ledger.release(announced, new_file=new_file)
            raise
        self.ledger.adjust(-upload.dropped)  # opening cut an old partial back
        return QuotaUpload(upload, self.ledger, new_file, credited)

    def open_append(self, path: RemotePath, offset: int | None = None) -> Upload:
        replaces = self._file_size(path)
        if replaces is None:
            return self.inner.open_append(path, offset)  # refused: no such file
        # The kept prefix is a copy: it needs room until the commit replaces the file.
        kept = replaces if offset is None else offset
        self.ledger.reserve(kept, new_file=False, replaces=replaces)
        try:
            upload = self.inner.open_append(path, offset)
        except BaseException:
            self.ledger.release(kept, new_file=False)
            raise
        self.ledger.adjust(-upload.dropped)
        self.ledger.wrote(kept)  # the copy is on disk now
        return QuotaUpload(upload, self.ledger, False, replaces)

    def close(self) -> None:
        pass  # the inner storage belongs to the server


class QuotaUpload(Upload):
    def __init__(self, inner: Upload, ledger: QuotaLedger, new_file: bool, credited: int):
        self.inner = inner
        self.ledger = ledger
        self.new_file = new_file  # reserved a file slot
        self.credited = credited  # bytes of the replaced file credited at reservation
        self.path = inner.path
        self.size = inner.size
        self._reserved = 0 if inner.size is None else inner.size - inner.offset
        self._open = True

    @property
    def offset(self) -> int:
        return self.inner.offset

    def set_mtime(self, mtime: float | None) -> None:
        self.inner.set_mtime(mtime)

    def set_blocks(self, block_size: int, digests: bytes) -> None:
        self.inner.set_blocks(block_size, digests)

    def hash_existing(self, hasher) -> None:
        self.inner.hash_existing(hasher)

    def copy_from(self, source: Download, position: int, count: int, hasher) -> None:
        # Copied bytes land on disk like written ones: usage, from the reservation.
        before = self.inner.offset
        try:
            self.inner.copy_from(source, position, count, hasher)
        finally:
            written = self.inner.offset - before
            self._reserved -= written
            self.ledger.wrote(written)

    def write(self, data) -> None:
        if self.size is None:
            # Nothing was announced: reserve this chunk, or refuse it.
            self.ledger.reserve(len(data), new_file=False, replaces=self.credited)
            self._reserved += len(data)
        before = self.inner.offset
        try:
            self.inner.write(data)
        finally:
            written = self.inner.offset - before
            self._reserved -= written
            self.ledger.wrote(written)

    def replaced_size(self) -> int | None:
        return self.inner.replaced_size()

    def commit(self, checksum: str | None) -> int | None:
        if self.ledger.limited:
            # Measured now, where the file will land: the file credited at
            # the start may have been moved or removed since, and then the
            # upload must fit without that credit.
            try:
                self.ledger.check_commit(self.inner.replaced_size(), self.credited, self.new_file)
            except QuotaExceeded:
                self.discard()
                raise
        # Without limits nothing can refuse it: the commit says what it
        # replaced (a new file's lookup is a sixteenth of a small put).
        try:
            replaced = self.inner.commit(checksum)
        except BaseException:
            self.ledger.adjust(-self.inner.lost)  # written, counted, and gone
            raise
        finally:
            self._finish()
        # The file that was there (if any) is gone; a new name is one more file.
        self.ledger.adjust(-(replaced or 0), 0 if replaced is not None else 1)
        return replaced

    def keep(self) -> None:
        if not self._open:
            return  # committed or discarded already: nothing left to keep
        try:
            self.inner.keep()
        finally:
            self._finish()
        self.ledger.adjust(-self.inner.lost)

    def discard(self) -> None:
        if not self._open:
            return
        held = self.inner.offset
        try:
            self.inner.discard()
        finally:
            self._finish()
        self.ledger.adjust(-held)

    def _finish(self) -> None:
        if self._open:
            self._open = False
            self.ledger.release(self._reserved, self.new_file)
            self._reserved = 0
