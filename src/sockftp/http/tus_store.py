"""tus uploads under way: their records on disk, their open uploads in memory, their expiry.

A tus upload is a storage upload like any other: its bytes go to the
storage's hidden partial of the target path (so a native ``put`` of the
same path meets it as it would another ``put``: busy while it is held,
atomic at the end). What tus adds is a name for it (the id in its URL)
and what its creation said (the target, the length, the metadata, the
checksum to verify). That record is a small JSON text in the account
store (accounts/tus_records.py; written whole), so an upload survives a
restart of the server and, behind a balancer, resumes on any node that
shares the store and the storage: its bytes are in the partial, its record
there, and the next PATCH reopens the partial (held by one node at a time:
the storage upload's lease or lock). Records a server kept as files in
``ROOT/.sockftp/tus`` before are moved into the store at start.

While the server runs, an upload holds its storage upload open between
PATCHes, with the quota its creation reserved, and a login of its own (the
connection that created it may be long gone). Each PATCH pushes its expiry
``tus_expiry`` seconds on; an expired upload is dropped, bytes, reservation
and record, by a thread that looks every ``SWEEP`` seconds, or at its next
request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field

from ..protocol.errors import NotFound, SockftpError
from ..server import receive
from ..server.config import STATE_DIR

log = logging.getLogger("sockftp.http.tus")

_ID = re.compile(r"^[0-9a-f]{32}$")
#: Seconds between two looks for expired uploads.
SWEEP = 60.0
#: Seconds a request waits for another request on the same upload to end.
TURN_WAIT = 2.0


@dataclass
class Record:
    """What a tus upload's creation said, as kept on disk."""

    id: str
    user: str
    path: list[str]  # the storage path of the target
    shown: str  # the target as the user sees it, for messages and logs
    size: int
    metadata: dict[str, str]
    checksum: str | None  # "xxh3-128:HEX" the whole file must have, or None
    created: float
    expires: float
    done: bool = False  # finalised: the file is in place


@dataclass
class Upload:
    """A tus upload this server is serving: its record, and while it is
    open, its storage upload, its hasher and the login that holds them."""

    record: Record
    lock: threading.Lock = field(default_factory=threading.Lock)
    identity: object = None
    upload: object = None  # the storage's Upload, held between PATCHes
    hasher: object = None
    lists: bool = False
    #: Its note in the server's UploadHolders while it holds the partial.
    holder: object = None
    holders: object = None
    #: Another upload of the path took it over (see TusStore._idle): the
    #: bytes there now are not this upload's, and it starts again from 0.
    reset: bool = False

    @property
    def offset(self) -> int:
        return self.upload.offset if self.upload is not None else 0

    def close(self, keep: bool) -> None:
        """Let go of the storage upload (keeping its bytes, or not) and the login."""
        upload, self.upload, self.hasher = self.upload, None, None
        try:
            if upload is not None:
                upload.keep() if keep else upload.discard()
        finally:
            holder, self.holder = self.holder, None
            if holder is not None:
                self.holders.release(tuple(self.record.path), holder)
            identity, self.identity = self.identity, None
            if identity is not None and identity.on_logout is not None:
                identity.on_logout()


class TusStore:
    """The tus uploads of one door."""

    def __init__(self, main):
        self.main = main
        self.records = main.users  # the account store: save_tus, load_tus... (accounts/tus_records.py)
        self.expiry = main.config.tus_expiry
        #: Other processes serve these uploads too (nodes sharing a
        #: PostgreSQL store, or --workers): an upload must not stay held
        #: here between requests, since its next PATCH may reach another
        #: process, which could not take it over while it is (see let_go).
        self.shared = main.users.shared or main.config.workers > 1
        self._uploads: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._adopt_files(os.path.join(main.config.root, STATE_DIR, "tus"))
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="tus expiry", daemon=True)
        self._sweeper.start()

    # -- records in the account store ---------------------------------------------------

    def save(self, record: Record) -> None:
        """Write *record* whole: a crash leaves the old record or the new one."""
        self.records.save_tus(record.id, record.user, json.dumps(asdict(record)), record.expires)

    def _load(self, upload_id: str) -> Record | None:
        text = self.records.load_tus(upload_id)
        if text is None:
            return None
        try:
            return Record(**json.loads(text))
        except (ValueError, TypeError) as exc:
            log.warning("tus upload %s: unreadable record, dropped: %s", upload_id, exc)
            self._forget(upload_id)
            return None

    def _forget(self, upload_id: str) -> None:
        self.records.forget_tus(upload_id)

    def _adopt_files(self, directory: str) -> None:
        """Move the records an older server kept as files into the store,
        so that uploads under way across an upgrade still resume."""
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(directory, name)
            upload_id = name.removesuffix(".json")
            if name.endswith(".json") and _ID.match(upload_id):
                try:
                    with open(path, "rb") as file:
                        self.save(Record(**json.loads(file.read())))
                except (OSError, ValueError, TypeError) as exc:
                    log.warning("tus upload %s: unreadable record file, dropped: %s", upload_id, exc)
            os.unlink(path)  # adopted, unreadable, or a temporary left by a crash

    # -- uploads ------------------------------------------------------------------------

    def create(self, identity, target, shown: str, size: int, metadata: dict, checksum: str | None) -> Upload:
        """A new upload of *size* bytes to *target*, opened with *identity*
        (a login the upload keeps until it ends): the quota is reserved and
        the partial held from now on. Raises what ``open_upload`` raises
        (QuotaExceeded, Busy, NotFound...)."""
        now = time.time()
        record = Record(
            secrets.token_hex(16), identity.name, list(target), shown, size, metadata, checksum, now, now + self.expiry
        )
        upload = Upload(record, identity=identity)
        try:
            self._open(upload, 0)
            self.save(record)
        except BaseException:
            upload.close(keep=False)
            raise
        self.let_go(upload)
        with self._lock:
            self._uploads[record.id] = upload
        return upload

    def get(self, upload_id: str, user: str) -> Upload:
        """*user*'s upload *upload_id*; NotFound if there is none (or it is
        someone else's: the same answer, so ids cannot be probed)."""
        if not _ID.match(upload_id):
            raise NotFound("no such upload")
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is not None and self.shared and upload.upload is None:
                # Another process may have moved it on, finished or dropped it.
                record = self._load(upload_id)
                if record is None:
                    self._uploads.pop(upload_id, None)
                    upload = None
                else:
                    upload.record = record
            elif upload is None:
                record = self._load(upload_id)
                if record is not None:
                    upload = self._uploads[upload_id] = Upload(record)
        if upload is None or upload.record.user != user:
            raise NotFound("no such upload (finished long ago, expired, or terminated)")
        return upload

    def let_go(self, upload: Upload) -> None:
        """After a request, when other processes serve these uploads too:
        let go of the storage upload, keeping its bytes, so that the next
        PATCH may take it wherever it lands. One process alone keeps it
        open (with its hasher) for the next PATCH instead."""
        if self.shared and upload.upload is not None:
            upload.close(keep=True)

    def acquire(self, upload: Upload) -> None:
        """Take *upload*'s turn; raise Busy if another request keeps it."""
        from ..protocol.errors import Busy

        if not upload.lock.acquire(timeout=TURN_WAIT):
            raise Busy("another request on this upload is under way")

    def offset(self, upload: Upload) -> int:
        """The offset a HEAD reports: the bytes held, but never all of them
        unless the upload was finalised (tus-js-client #557: a client that
        sees offset == length takes a failed last PATCH for a success)."""
        record = upload.record
        if record.done:
            return record.size
        if upload.upload is not None:
            held = upload.upload.offset
        elif upload.reset:
            held = 0
        else:
            held = self.main.storage.partial_size(tuple(record.path), record.size)
        return min(held, record.size - 1) if record.size else 0

    def reopen(self, upload: Upload, offset: int) -> None:
        """Make sure *upload* holds its storage upload at *offset* (after a
        restart, or after a PATCH that failed): bytes beyond it are dropped."""
        if upload.upload is not None and upload.upload.offset == offset:
            return
        if upload.upload is not None:
            upload.upload.keep()
            upload.upload = None
        if upload.identity is None:
            upload.identity = self.login(upload.record.user)
        self._open(upload, offset)
        upload.reset = False

    def _open(self, upload: Upload, offset: int) -> None:
        record = upload.record
        storage = upload.identity.storage or self.main.storage
        opened = storage.open_upload(tuple(record.path), record.size, offset)
        try:
            lists = receive.keeps_blocks(storage, record.size)
            hasher = receive.hasher_for(lists)
            if opened.offset:
                opened.hash_existing(hasher)
        except BaseException:
            opened.keep()
            raise
        upload.upload, upload.hasher, upload.lists = opened, hasher, lists
        if upload.holder is None:
            upload.holders = self.main.uploads
            upload.holder = self.main.uploads.hold(tuple(record.path), record.user, lambda: self._idle(upload))

    def _idle(self, upload: Upload) -> bool:
        """Asked (by an upload of the same path and user: a native put, a
        PUT, another tus upload) whether *upload* is abandoned. Between
        PATCHes it is, as a native put whose client is gone: it lets go of
        the partial, keeping the bytes, in a thread of its own (this runs
        under the holders' lock), and its next PATCH finds where things
        stand. During a PATCH it is not, and the other upload is told busy."""
        if not upload.lock.acquire(blocking=False):
            return False

        def let_go() -> None:
            try:
                upload.reset = True
                upload.close(keep=True)
            except SockftpError as exc:
                log.warning("tus upload %s: letting go: %s", upload.record.id, exc)
            finally:
                upload.lock.release()

        threading.Thread(target=let_go, name="tus let go", daemon=True).start()
        return True

    def login(self, user: str):
        """A login of *user* for an upload to hold (its quota, its home)."""
        main = self.main
        if user == "anonymous" and main.config.anonymous:
            return main.anonymous_identity()
        account = main.users.get(user)
        if account is None or account.disabled:
            raise NotFound("the account of this upload is gone")
        return main.identity_for(account)

    def touch(self, upload: Upload) -> None:
        upload.record.expires = time.time() + self.expiry
        self.save(upload.record)

    def finished(self, upload: Upload) -> None:
        """The file is in place: the record says so until it expires."""
        upload.upload = None
        upload.record.done = True
        self.save(upload.record)
        upload.close(keep=True)

    def drop(self, upload: Upload) -> None:
        """Terminate *upload*: its bytes, reservation and record go."""
        record = upload.record
        try:
            if upload.upload is None and not record.done:
                try:
                    self.reopen(upload, self.main.storage.partial_size(tuple(record.path), record.size))
                except SockftpError:
                    pass  # nothing held any more (the janitor took it), or held by another upload
            upload.close(keep=False)
        finally:
            self._forget(record.id)
            with self._lock:
                self._uploads.pop(record.id, None)

    # -- expiry -------------------------------------------------------------------------

    def expired(self, upload: Upload) -> bool:
        return upload.record.expires <= time.time()

    def sweep(self) -> None:
        """Drop every expired upload no request is using."""
        now = time.time()
        with self._lock:
            known = dict(self._uploads)
        for upload_id in self.records.expired_tus(now):
            if upload_id not in known and _ID.match(upload_id):
                record = self._load(upload_id)
                if record is not None and record.expires <= now:
                    known[upload_id] = Upload(record)
        for upload in known.values():
            if upload.record.expires > now or not upload.lock.acquire(blocking=False):
                continue
            try:
                log.info("tus upload %s of %s expired", upload.record.id, upload.record.shown)
                self.drop(upload)
            except Exception:  # noqa: BLE001 - one upload's trouble must not stop the sweep
                log.exception("dropping expired tus upload %s failed", upload.record.id)
            finally:
                upload.lock.release()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(min(SWEEP, self.expiry / 4)):
            try:
                self.sweep()
            except Exception as exc:  # noqa: BLE001 - the store unreachable a while (StoreError): next sweep
                log.warning("tus expiry: %s", exc)

    def close(self) -> None:
        """At the door's stop: uploads keep their bytes (a restart resumes them)."""
        self._stop.set()
        with self._lock:
            uploads, self._uploads = list(self._uploads.values()), {}
        for upload in uploads:
            try:
                upload.close(keep=True)
            except SockftpError as exc:
                log.warning("tus upload %s: %s", upload.record.id, exc)
