"""Per-user quotas: bytes and files, enforced when an upload is announced.

A :class:`QuotaLedger` holds one user's usage (what their home holds on
disk, partial uploads included) and reservations (bytes announced by
uploads under way and not yet written). :class:`QuotaStorage` wraps the
storage a user sees and keeps the ledger right on every change, so every
front end gets quotas for free.

The rules, so N parallel uploads that together exceed the quota cannot all
pass (checked in the account store, against every server's usage and
reservations, for an account whose usage it knows: :mod:`.leases`; else
under the ledger's lock):

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

Where usage comes from: the account store keeps it beside the user's
limits (:class:`UsageKeeper`), and every commit, delete, rename and
truncation changes it there in the step that changes the ledger, so a
login reads it with one indexed query and never walks the home. Each
change is counted in the store before it is made and taken back with its
effect after (two short writes), so a server killed in the middle of one
leaves a trace, and that user's usage is measured again at their next
login: it is right after restarts and crashes alike.

The home is walked (:meth:`QuotaLedger.measure`) only when the usage is not
known: never measured (a new account, or the store just migrated), or a
change was cut off as above; for a user with limits at their first login,
for one without limits only when the ``quota`` command asks (with nothing
to enforce, a login measures nothing). An admin's ``sockftp user rescan``
measures it anew (:mod:`sockftp.server.rescan`); a running server reads
the stored usage again at the user's next first session. The anonymous
area is no account: its usage lives in memory, measured at the first
``quota`` that asks, and kept exact from then on while the server runs.

A measure holds off the user's new changes (they wait in
:meth:`QuotaLedger.begin`) and waits for those under way to end, so it
never counts a change twice or misses one.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..accounts import StoreError, UserStore
from ..accounts.base import RESERVED_NAMES
from ..protocol.errors import Busy, QuotaExceeded
from ..protocol.paths import RemotePath
from ..storage import Storage, Usage
from .leases import Fenced, Lease, LeaseBook, Refused, Unreachable, UsageKeeper, human, refusal

log = logging.getLogger("sockftp.quota")

#: Seconds a measure waits for a user's changes under way (uploads,
#: deletes) to end before it gives up; their new changes wait meanwhile.
QUIET_WAIT = 5.0


@dataclass
class QuotaLedger:
    """One user's usage, reservations and limits (None: no limit).

    With *known* False the usage was never measured: ``used_bytes`` and
    ``used_files`` count only the changes since, and nothing is enforced
    against them (a ledger with limits is measured before any upload)."""

    name: str
    used_bytes: int
    used_files: int
    quota_bytes: int | None = None
    max_files: int | None = None
    reserved_bytes: int = 0
    reserved_files: int = 0
    known: bool = True

    def __post_init__(self):
        self.lock = threading.Lock()
        self._turns = threading.Condition(self.lock)
        # A mark per logged-in session. list.append and pop are single steps
        # under the GIL, so sessions come and go without taking a lock.
        self._present: list[None] = []
        self._busy = 0  # changes begun and not ended (an upload, from its opening to its end)
        self._held = False  # a load or a measure is under way: new changes wait
        #: Writes usage changes to the account store; None: memory only
        #: (no account, or a usage the store does not know).
        self.keeper: UsageKeeper | None = None
        #: The account store, to read and measure into; None: no account.
        self.users: UserStore | None = None
        #: Where the home is measured: (storage, home); None: nowhere.
        self.source: tuple[Storage, RemotePath] | None = None
        self._unsaved = False  # measured, but the store refused the measure
        #: StoredUsage.version as read before the last measure: the store
        #: takes the measure only if no server changed the usage since.
        self._version: int | None = None
        #: What this server's uploads under leases changed in memory and the
        #: store learns only at their ends: (used, reserved) bytes.
        self._pending = [0, 0]
        #: Reservations in the account store, shared by every server on it
        #: (see sockftp.server.leases); None: in memory only.
        self.book: LeaseBook | None = None
        #: The account as last read (sockftp.server.watch): writes refused,
        #: or why its sessions are refused (deleted, disabled).
        self.read_only = False
        self.gone: str | None = None

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
            refused = refusal(
                size,
                files,
                replaces,
                (self.used_bytes, self.used_files, self.reserved_bytes, self.reserved_files),
                (self.quota_bytes, self.max_files),
            )
            if refused is not None:
                raise refused
            self.reserved_bytes += size
            self.reserved_files += files

    # -- reservations in the account store (every server's; see sockftp.server.leases) --

    def lease(self, size: int, new_file: bool, replaces: int = 0) -> Lease | None:
        """Reserve room for an upload in the account store, against every
        server's usage and reservations, as a change of the home under way
        (:meth:`begin` and :meth:`reserve` in one write). None if this
        ledger reserves in memory only (no store, or a usage the store does
        not know), or if the store cannot be reached and there are no
        limits to enforce: then the caller goes on as :meth:`begin` does.
        Raises QuotaExceeded."""
        book = self.book
        if book is None or self.keeper is None:
            return None
        files = 1 if new_file else 0
        with self._turns:
            while self._held:
                self._turns.wait()
            self._busy += 1
        try:
            lease = book.take(self.name, size, files, replaces)
        except Refused as refused:
            self._done()
            raise self._refused(size, files, replaces, refused.state) from None
        except Unreachable:
            # The store is down: as when any usage write fails, the ledger
            # in memory goes on enforcing (this server's view only, until
            # the store is back) and the usage it owes is written later.
            self._done()
            return None
        except BaseException:
            self._done()
            raise
        with self.lock:
            self.reserved_bytes += size
            self.reserved_files += files
        return lease

    def _refused(self, size: int, files: int, replaces: int, state) -> QuotaExceeded:
        if state is None:
            with self.lock:
                figures = (self.used_bytes, self.used_files, self.reserved_bytes, self.reserved_files)
            limits = (self.quota_bytes, self.max_files)
        else:
            figures = (state.used_bytes or 0, state.used_files or 0, state.reserved_bytes, state.reserved_files)
            limits = (state.quota_bytes, state.max_files)
        return refusal(size, files, replaces, figures, limits) or QuotaExceeded("the quota would be exceeded")

    def grow(self, lease: Lease, count: int, replaces: int) -> None:
        """Room under *lease* for *count* more bytes (an upload of unannounced
        size). Raises QuotaExceeded."""
        try:
            self.book.grow(lease, count, replaces)
        except Refused as refused:
            raise self._refused(count, 0, replaces, refused.state) from None
        except Unreachable:
            pass  # as in lease(): this server's view enforces until the store is back
        with self.lock:
            self.reserved_bytes += count

    def end_lease(self, lease: Lease, bytes_delta: int, files_delta: int) -> None:
        """The upload of *lease* is done and changed usage by this much: its
        lease and its effect in one write (later, by the renewer, if the
        store is down now)."""
        keeper = self.keeper
        if self.book.end(lease, bytes_delta, files_delta) and keeper is not None and keeper.owes:
            keeper.flush()  # the store is back: what it missed meanwhile
        self._done()

    def check_lease(self, lease: Lease) -> None:
        """Before an upload under *lease* commits: refuse it if its
        reservation may have been given back (this server was cut off from
        the store for longer than the lease time, and another server took
        it for dead), rather than store a file no reservation made room
        for. Asks the store only if the lease was not renewed lately."""
        try:
            self.book.check(lease)
        except Fenced as exc:
            raise Busy(
                f"{exc} while this server was cut off from the account database; nothing was stored "
                "and the partial upload is kept: send it again to resume"
            ) from None

    def check_commit(self, replaced: int | None, credited: int, reserved_file: bool) -> None:
        """Refuse a commit that no longer fits because the file credited at
        its reservation (*credited* bytes; a file slot unless
        *reserved_file*) is not the one it replaces now. Checked against
        the account store's figures when it keeps them (every server's
        changes, and this upload's bytes still in its reservation), else
        against this server's: a round trip only in that rare case."""
        bytes_due = self.quota_bytes is not None and (replaced or 0) < credited
        file_due = self.max_files is not None and replaced is None and not reserved_file
        if not (bytes_due or file_due):
            return
        state = self._shared_state()
        with self.lock:
            if state is None:  # our written bytes are in used_bytes already
                figures = (self.used_bytes, self.used_files, self.reserved_bytes, self.reserved_files)
            else:
                figures = (state.used_bytes or 0, state.used_files or 0, state.reserved_bytes, state.reserved_files)
        used_bytes, used_files, reserved_bytes, reserved_files = figures
        if bytes_due and used_bytes - (replaced or 0) + reserved_bytes > self.quota_bytes:
            raise QuotaExceeded(
                f"quota of {human(self.quota_bytes)} exceeded: the file this upload was to replace "
                "was moved or removed meanwhile; nothing was stored",
                quota_bytes=self.quota_bytes,
                used_bytes=used_bytes,
            )
        if file_due and used_files + reserved_files + 1 > self.max_files:
            raise QuotaExceeded(
                f"file limit of {self.max_files} reached: the file this upload was to replace "
                "was moved or removed meanwhile; nothing was stored",
                max_files=self.max_files,
                used_files=used_files,
            )

    def _shared_state(self):
        """The account's usage and reservations as the store has them, if it
        keeps them for every server and is not behind this one (an end or a
        usage write it owes); else None: this server's figures are the truth."""
        book, keeper = self.book, self.keeper
        if book is None or keeper is None or keeper.owes or book.owes:
            return None
        try:
            state = self.users.quota_state(self.name)
        except StoreError:
            return None
        return state if state is not None and state.used_bytes is not None else None

    def pend(self, used: int, reserved: int) -> None:
        """An upload under a lease changed this server's figures by this
        much ahead of the store (see :meth:`to_wire`)."""
        with self.lock:
            self._pending[0] += used
            self._pending[1] += reserved

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
        """The ``quota`` reply: from the account store when it keeps the
        usage for every server, so every server agrees on it, plus what this
        server's own uploads under way wrote (the store learns it at their
        ends; another server's count as reserved until then); else this
        server's figures. A usage not known is sent as 0 with
        ``usage_known`` false: clients that predate the field still get
        integers."""
        state = self._shared_state() if self.known else None
        with self.lock:
            if state is not None:
                used_bytes = state.used_bytes + self._pending[0]
                used_files = state.used_files
                reserved = state.reserved_bytes + self._pending[1]
            else:
                used_bytes, used_files, reserved = self.used_bytes, self.used_files, self.reserved_bytes
            return {
                "user": self.name,
                "used_bytes": used_bytes if self.known else 0,
                "used_files": used_files if self.known else 0,
                "usage_known": self.known,
                "reserved_bytes": reserved,
                "quota_bytes": self.quota_bytes,
                "max_files": self.max_files,
            }

    # -- changes, and the measures and loads that must not overlap them -------------------

    def begin(self) -> UsageKeeper | None:
        """A change of the home begins (an upload opens, a file is removed):
        counted, and recorded in the store as under way before anything
        changes. Waits while a load or a measure is under way. Returns what
        :meth:`end` takes back."""
        with self._turns:
            while self._held:
                self._turns.wait()
            self._busy += 1
            keeper = self.keeper
        if keeper is not None:
            keeper.add(0, 0, 1)
        return keeper

    def end(self, keeper: UsageKeeper | None, bytes_delta: int, files_delta: int) -> None:
        """The change that :meth:`begin` returned *keeper* for is done, and
        changed usage by this much (the ledger was adjusted as it went):
        one write to the store."""
        if keeper is not None:
            keeper.add(bytes_delta, files_delta, -1)
        self._done()

    def _done(self) -> None:
        with self._turns:
            self._busy -= 1
            if not self._busy:
                self._turns.notify_all()

    def try_hold(self) -> bool:
        """Hold off changes if none is under way; False if one is."""
        with self.lock:
            if self._held or self._busy:
                return False
            self._held = True
            return True

    def hold(self, wait: float) -> bool:
        """Hold off new changes and wait, up to *wait* seconds, for those
        under way to end. False (and nothing held) if they did not."""
        deadline = time.monotonic() + wait
        with self._turns:
            if not self._turns.wait_for(lambda: not self._held, wait):
                return False
            self._held = True
            if self._turns.wait_for(lambda: not self._busy, max(0.0, deadline - time.monotonic())):
                return True
            self._held = False
            self._turns.notify_all()
            return False

    def let_go(self) -> None:
        with self._turns:
            self._held = False
            self._turns.notify_all()

    def measure(self, wait: float = QUIET_WAIT) -> bool:
        """Make the usage known: measure the home if it is not. True if it
        is known now; False if changes under way did not end within *wait*
        seconds, or there is nowhere to measure."""
        if self.known:
            return True
        if self.source is None or not self.hold(wait):
            return False
        try:
            if not self.known:  # else measured while this one waited
                self._measure()
        finally:
            self.let_go()
        return self.known

    def load(self) -> None:
        """Read the usage from the account store again, measuring the home
        if the store does not know it and there are limits to enforce.
        Only while held (:meth:`try_hold`), at a user's first session."""
        if self.users is None:
            if self.limited:
                self._measure()  # nowhere to keep it: measured at each first session, as before the store kept it
            return
        if self.keeper is not None and self.keeper.owes:
            self.keeper.flush()
            if self.keeper.owes:
                return  # the store is behind: memory is the truth
        if self._unsaved:
            self._save()
            return
        try:
            stored = self.users.usage(self.name)
        except StoreError as exc:
            log.warning("could not read the usage of %s from the account store: %s", self.name, exc)
            stored = None
        if stored is not None:
            self._version = stored.version
        if stored is not None and stored.known:
            # Ends of this user's uploads that this server could not write
            # yet (the store was down or full) are not in the stored figure.
            owed_bytes, owed_files = self.book.owed(self.name) if self.book is not None else (0, 0)
            with self.lock:
                self.used_bytes = stored.used_bytes + owed_bytes
                self.used_files = stored.used_files + owed_files
                self.known = True
            if self.keeper is None:
                self.keeper = UsageKeeper(self.users, self.name)
            return
        if stored is not None:  # never measured, or a change of it was cut off
            with self.lock:
                self.known = False
            self.keeper = None
        if self.limited and not self.known:
            self._measure()
        elif stored is not None and stored.used_bytes is not None and not self.known:
            # A server died mid-change and nothing is enforced: forget the
            # stale figure rather than measure (a quota command will).
            self._store_measure(None)

    def _measure(self) -> None:
        """Walk the home and take what it holds as usage (held, nothing under
        way on this server). Another server's change may be under way: then
        the store refuses the measure (see :meth:`UserStore.set_usage`)."""
        storage, home = self.source
        if self.users is not None:
            try:
                stored = self.users.usage(self.name)
            except StoreError:
                stored = None
            if stored is not None:
                self._version = stored.version
                if stored.known:  # another server measured it meanwhile
                    with self.lock:
                        self.used_bytes, self.used_files, self.known = stored.used_bytes, stored.used_files, True
                    self.keeper = UsageKeeper(self.users, self.name)
                    return
        usage = storage.usage(home)
        with self.lock:
            self.used_bytes, self.used_files, self.known = usage.bytes, usage.files, True
        self._save()

    def _save(self) -> None:
        """Store the usage in memory as a measure (held, nothing under way)."""
        self._unsaved = False
        if self.users is None:
            return
        self.keeper = None
        stored = self._store_measure(Usage(self.used_bytes, self.used_files))
        if stored:
            self.keeper = UsageKeeper(self.users, self.name)
        elif stored is None:
            # Another server changed the usage while this one walked the
            # home: the walk may have counted its change, or missed it.
            # Unknown again; measured at the next upload that needs it.
            log.info("the measure of %s's usage overlapped another server's change; it is measured again", self.name)
            with self.lock:
                self.known = False

    def _store_measure(self, usage: Usage | None) -> bool | None:
        """True if stored; False if the store could not be written (kept to
        store later); None if it refused (no account, or changed since)."""
        try:
            if usage is None:
                stored = self.users.set_usage(self.name, None, None, version=self._version)
            else:
                stored = self.users.set_usage(self.name, usage.bytes, usage.files, version=self._version)
        except StoreError as exc:
            self._unsaved = usage is not None
            log.warning(
                "could not store the usage of %s; it is kept in memory and stored again later: %s", self.name, exc
            )
            return False
        if stored:
            self._version = None if self._version is None else self._version + 1
        return True if stored else None


def ledger_of(session) -> QuotaLedger:
    """The ledger of *session*'s logged-in user, as every door's quota
    reply shows it: the one its storage keeps, or, for a storage without
    accounting, one measured now."""
    ledger = getattr(session.storage, "ledger", None)
    if ledger is None:
        usage = session.storage.usage(session.identity.home)
        return QuotaLedger(session.user, usage.bytes, usage.files)
    return ledger


class QuotaRegistry:
    """The ledgers of the users who logged in since the server started.

    *users* is the account store that keeps each account's usage; without
    it, usage lives in memory only, and a user with limits is measured at
    each first session, as before the store kept it."""

    def __init__(self, storage: Storage, users: UserStore | None = None, lease_time: float = 60.0):
        self.storage = storage
        self.users = users
        #: Reservations in the store, and their renewer (see sockftp.server.leases).
        self.book = LeaseBook(users, lease_time) if users is not None else None
        self._ledgers: dict[str, QuotaLedger] = {}
        self._lock = threading.Lock()

    def login(self, name: str, home: RemotePath, quota_bytes=None, max_files=None) -> QuotaLedger:
        """The ledger of *name* for one more session; :meth:`logout` when it
        ends. Limits are refreshed from the account at every login.

        At a user's first session (none other open), their usage is read
        from the account store again (an indexed query: an admin's rescan
        is picked up), and their home measured only if the store does not
        know it and there are limits to enforce. Their changes wait
        meanwhile; other users' do not.

        While the user has other sessions, this takes no lock: under the
        soak's 500 clients the registry's lock, taken by every session as it
        began and ended, held up to 387 of them at a time, so ended sessions
        kept their places and new clients were refused as too many."""
        ledger = self.join(name, quota_bytes, max_files)
        if ledger is not None:
            return ledger
        if self.book is not None:
            self.book.start()  # this server reaps every server's expired leases, uploading or not
        with self._lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                ledger = self._ledgers[name] = QuotaLedger(name, 0, 0, known=False)
                ledger.source = (self.storage, home)
                ledger.users = None if name in RESERVED_NAMES else self.users
                ledger.book = None if ledger.users is None else self.book
            ledger.quota_bytes = quota_bytes
            ledger.max_files = max_files
            # A first session reads the store again (under the lock, so that
            # a concurrent first login does not too). Nothing to read and
            # nothing to enforce (the anonymous area): no hold at all.
            due = ledger.users is not None or ledger.limited
            loading = not ledger.sessions and due and ledger.try_hold()
            ledger.join()
        if loading:
            try:
                ledger.load()  # a query; a walk only if unknown with limits
            except BaseException:
                ledger.leave()
                raise
            finally:
                ledger.let_go()
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

    def active(self) -> list[QuotaLedger]:
        """The ledgers of users with sessions open, but the anonymous area's."""
        return [ledger for ledger in list(self._ledgers.values()) if ledger.sessions and ledger.users is not None]

    def close(self) -> None:
        """Stop renewing leases (those still live expire by themselves)."""
        if self.book is not None:
            self.book.stop()

    def logout(self, ledger: QuotaLedger) -> None:
        ledger.leave()
        keeper = ledger.keeper
        if keeper is not None and keeper.owes:
            keeper.flush()  # a last try at what the store missed

    def removed_behind(self, name: str, size: int) -> None:
        """*size* bytes of *name*'s were removed behind the sessions' backs
        (the janitor's expired partials): usage gives them back, in memory
        and in the account store. A user with no ledger here (not logged
        in since the start) has only the store to tell; that write is made
        under the registry's lock, so a first login reads the store either
        before it (and then its ledger takes the change) or after."""
        with self._lock:
            ledger = self._ledgers.get(name)
            if ledger is None:
                if self.users is not None and name not in RESERVED_NAMES:
                    try:
                        self.users.add_usage(name, -size, 0, 0)
                    except StoreError as exc:
                        log.warning(
                            "the usage of %s still counts a removed partial of %s (run: sockftp user rescan %s): %s",
                            name,
                            human(size),
                            name,
                            exc,
                        )
                return
        keeper = ledger.begin()  # after a load or measure under way, which may have counted the partial
        ledger.adjust(-size)
        ledger.end(keeper, -size, 0)
