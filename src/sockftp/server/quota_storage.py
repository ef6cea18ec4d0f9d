"""The storage a user sees: the server's storage with every change
accounted in the user's :class:`~sockftp.server.quota.QuotaLedger`.

Every door (native, FTP) hands its sessions a :class:`QuotaStorage`, so
quotas hold whatever the door, and a new door or backend gets them for
free. This module only wraps: the rules live in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol.errors import Busy, NotFound, QuotaExceeded
from ..protocol.limits import MAX_PATH_DEPTH
from ..protocol.paths import RemotePath
from ..storage import FILE, BlockList, Download, Entry, Storage, TreeEntry, Upload, Usage
from .leases import Lease, UsageKeeper
from .quota import QuotaLedger


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

    def kept_blocks(self, path: RemotePath, download: Download) -> bytes | None:
        return self.inner.kept_blocks(path, download)

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
        keeper = self.ledger.begin()  # it may remove partials: their bytes leave usage
        freed = 0
        try:
            freed = self.inner.rmdir(path)
            self.ledger.adjust(-freed)
        finally:
            self.ledger.end(keeper, -freed, 0)
        return freed

    def remove(self, path: RemotePath) -> None:
        size = self._file_size(path)
        if size is None:
            self.inner.remove(path)  # refused, or a link: no usage
            return
        keeper = self.ledger.begin()
        removed = False
        try:
            self.inner.remove(path)
            removed = True
            self.ledger.adjust(-size, -1)
        finally:
            self.ledger.end(keeper, -size if removed else 0, -1 if removed else 0)

    def rename(self, source: RemotePath, target: RemotePath) -> None:
        replaced = self._file_size(target) if source != target else None
        if replaced is None:
            self.inner.rename(source, target)  # over nothing: usage stays
            return
        keeper = self.ledger.begin()
        renamed = False
        try:
            self.inner.rename(source, target)
            renamed = True
            self.ledger.adjust(-replaced, -1)
        finally:
            self.ledger.end(keeper, -replaced if renamed else 0, -1 if renamed else 0)

    def _known_usage(self) -> None:
        """With limits, the usage must be known before anything is reserved
        against it (it is, unless limits were set on an account never
        measured while it had sessions open). Raises Busy if the measure
        could not run."""
        if self.ledger.limited and not self.ledger.measure():
            raise Busy(f"the usage of {self.ledger.name} is being measured; try again in a few seconds")

    def open_upload(self, path: RemotePath, size: int | None, offset: int = 0, *, at_once: bool = False) -> Upload:
        self._known_usage()
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
        keeper, lease = self._reserve(announced, new_file, credited)
        try:
            upload = self.inner.open_upload(path, size, offset, at_once=at_once)
        except BaseException:
            self._unreserve(keeper, lease, announced, new_file)
            raise
        self.ledger.adjust(-upload.dropped)  # opening cut an old partial back
        wrapped = QuotaUpload(upload, self.ledger, new_file, credited, keeper, -upload.dropped, lease)
        wrapped.pend(-upload.dropped, 0)
        return wrapped

    def _reserve(self, size: int, new_file: bool, replaces: int) -> tuple[UsageKeeper | None, Lease | None]:
        """Reserve, and begin the change: in the account store if the ledger
        reserves there (one write), else in memory (and a write to begin)."""
        lease = self.ledger.lease(size, new_file, replaces)
        if lease is not None:
            return None, lease
        keeper = self.ledger.begin()
        try:
            self.ledger.reserve(size, new_file=new_file, replaces=replaces)
        except BaseException:
            self.ledger.end(keeper, 0, 0)
            raise
        return keeper, None

    def _unreserve(self, keeper: UsageKeeper | None, lease: Lease | None, size: int, new_file: bool) -> None:
        self.ledger.release(size, new_file=new_file)
        if lease is not None:
            self.ledger.end_lease(lease, 0, 0)
        else:
            self.ledger.end(keeper, 0, 0)

    def open_append(self, path: RemotePath, offset: int | None = None) -> Upload:
        replaces = self._file_size(path)
        if replaces is None:
            return self.inner.open_append(path, offset)  # refused: no such file
        self._known_usage()
        # The kept prefix is a copy: it needs room until the commit replaces the file.
        kept = replaces if offset is None else offset
        keeper, lease = self._reserve(kept, False, replaces)
        try:
            upload = self.inner.open_append(path, offset)
        except BaseException:
            self._unreserve(keeper, lease, kept, False)
            raise
        self.ledger.adjust(-upload.dropped)
        self.ledger.wrote(kept)  # the copy is on disk now
        wrapped = QuotaUpload(upload, self.ledger, False, replaces, keeper, kept - upload.dropped, lease)
        wrapped.pend(kept - upload.dropped, -kept)
        return wrapped

    def close(self) -> None:
        pass  # the inner storage belongs to the server


class QuotaUpload(Upload):
    """An upload whose every byte is accounted in *ledger* as it lands, and
    whose whole effect on usage reaches the account store in one write at
    its end (*changed* bytes so far: what opening it did)."""

    def __init__(
        self,
        inner: Upload,
        ledger: QuotaLedger,
        new_file: bool,
        credited: int,
        keeper: UsageKeeper | None = None,
        changed: int = 0,
        lease: Lease | None = None,
    ):
        self.inner = inner
        self.ledger = ledger
        self.new_file = new_file  # reserved a file slot
        self.credited = credited  # bytes of the replaced file credited at reservation
        self.path = inner.path
        self.size = inner.size
        self._reserved = 0 if inner.size is None else inner.size - inner.offset
        self._keeper = keeper  # from ledger.begin(): the change's end goes to it
        self._changed = changed  # bytes this upload added to usage (or took away) so far
        self._lease = lease  # its reservation in the account store, if the ledger keeps them there
        self._pended = [0, 0]  # (used, reserved) changed in memory that the store learns at the end
        self._open = True

    def pend(self, used: int, reserved: int) -> None:
        """Memory is ahead of the store by this much until the end (leases only)."""
        if self._lease is not None:
            self._pended[0] += used
            self._pended[1] += reserved
            self.ledger.pend(used, reserved)

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
            self._changed += written
            self.ledger.wrote(written)
            self.pend(written, -written)

    def write(self, data) -> None:
        if self.size is None:
            # Nothing was announced: reserve this chunk, or refuse it.
            if self._lease is not None:
                self.ledger.grow(self._lease, len(data), self.credited)
            else:
                self.ledger.reserve(len(data), new_file=False, replaces=self.credited)
            self._reserved += len(data)
        before = self.inner.offset
        try:
            self.inner.write(data)
        finally:
            written = self.inner.offset - before
            self._reserved -= written
            self._changed += written
            self.ledger.wrote(written)
            self.pend(written, -written)

    def replaced_size(self) -> int | None:
        return self.inner.replaced_size()

    def commit(self, checksum: str | None) -> int | None:
        if self._lease is not None:
            self.ledger.check_lease(self._lease)  # fencing: raises Busy, and the caller keeps the partial
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
            self._finish(-self.inner.lost)  # written, counted, and gone
            raise
        # The file that was there (if any) is gone; a new name is one more file.
        self._finish(-(replaced or 0), 0 if replaced is not None else 1)
        return replaced

    def keep(self) -> None:
        if not self._open:
            return  # committed or discarded already: nothing left to keep
        try:
            self.inner.keep()
        except BaseException:
            self._finish()
            raise
        self._finish(-self.inner.lost)

    def discard(self) -> None:
        if not self._open:
            return
        held = self.inner.offset
        try:
            self.inner.discard()
        except BaseException:
            self._finish()
            raise
        self._finish(-held)

    def _finish(self, bytes_delta: int = 0, files_delta: int = 0) -> None:
        """Give back what is left of the reservation, apply the end's change
        to usage, and end the change: the one write of the upload to the
        account store, carrying everything it changed."""
        if not self._open:
            return
        self._open = False
        self.ledger.release(self._reserved, self.new_file)
        self._reserved = 0
        self.ledger.adjust(bytes_delta, files_delta)
        if self._lease is not None:
            self.ledger.end_lease(self._lease, self._changed + bytes_delta, files_delta)
            self.ledger.pend(-self._pended[0], -self._pended[1])  # the store has it now
        else:
            self.ledger.end(self._keeper, self._changed + bytes_delta, files_delta)
