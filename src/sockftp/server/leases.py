"""What the quota keeps in the account store: usage changes
(:class:`UsageKeeper`) and reservations, kept there so that a quota holds
across every server (node) that shares the store: an upload's lease.

An upload reserves its remaining bytes (and a file slot, if its name is
new) in the store with one conditional write (:meth:`UserStore.reserve`):
it passes only if the account's usage plus every node's reservations plus
this fit its limits, and the row lock of that write makes a racing
reservation on another node wait and check again. Its end moves what it
wrote into usage and gives the rest back in one transaction
(:meth:`UserStore.finish`). So an upload costs two writes to the store on
its success path, the same two that kept usage before leases.

A reservation is a lease: its node renews it every ``lease_time / 3``
seconds while the upload runs. A node that dies (kill -9, a power cut)
renews nothing, and after ``lease_time`` any node's :class:`LeaseBook`
gives its leases back (the reaper runs with the renewals). What the dead
node wrote into partials stays counted as a change under way, so that
user's usage is measured again (see ``sockftp user rescan``).

Where it is not exact: a node cut off from the database for longer than
``lease_time`` may have its leases given back while its uploads still run;
and expiry is judged by each node's wall clock, so nodes' clocks should
agree to well within ``lease_time`` (NTP).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from ..accounts import QuotaState, StoreError, UserStore
from ..protocol.errors import QuotaExceeded

log = logging.getLogger("sockftp.quota")

#: Bytes an upload of unannounced size (FTP's STOR) reserves at a time,
#: so that it costs a write to the store per MiB, not per chunk.
GRANULE = 1 << 20


class UsageKeeper:
    """Writes one user's usage changes through to the account store.

    A write that fails (the store's disk is full, its lock held past the
    timeout) loses nothing and fails nothing: the ledger in memory is
    exact and goes on enforcing, and what the store missed is owed and
    added to the next write (the user's next change, or their last
    logout). The first failure and the recovery are logged; a server that
    stops while it owes leaves the stored usage wrong, which the warning
    says, with the command that measures it again."""

    def __init__(self, users: UserStore, name: str):
        self.users = users
        self.name = name
        self._lock = threading.Lock()
        self._owed = (0, 0, 0)  # bytes, files, changes under way
        self._failing = False

    @property
    def owes(self) -> bool:
        return self._owed != (0, 0, 0)

    def add(self, bytes_delta: int, files_delta: int, changes_delta: int) -> None:
        with self._lock:
            owed_bytes, owed_files, owed_changes = self._owed
            self._owed = (0, 0, 0)
        delta = (owed_bytes + bytes_delta, owed_files + files_delta, owed_changes + changes_delta)
        if delta == (0, 0, 0):
            return
        try:
            self.users.add_usage(self.name, *delta)
        except StoreError as exc:
            with self._lock:
                owed_bytes, owed_files, owed_changes = self._owed
                self._owed = (owed_bytes + delta[0], owed_files + delta[1], owed_changes + delta[2])
                first, self._failing = not self._failing, True
            if first:
                log.warning(
                    "the usage of %s is counted in memory only until the account store can be written "
                    "(if the server stops first, run: sockftp user rescan %s): %s",
                    self.name,
                    self.name,
                    exc,
                )
            return
        if self._failing:
            self._failing = False
            log.warning("the usage of %s is in the account store again", self.name)

    def flush(self) -> None:
        """Write what is owed, if anything."""
        if self.owes:
            self.add(0, 0, 0)


def human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Refused(Exception):
    """The reservation does not fit; *state* is what it was checked against."""

    def __init__(self, state: QuotaState | None):
        super().__init__("refused")
        self.state = state


class Unreachable(Exception):
    """The store could not be asked."""


@dataclass
class Lease:
    id: str
    name: str
    files: int
    spare: int = 0  # reserved and not yet written (uploads of unannounced size)


class LeaseBook:
    """This node's leases: taken, grown, ended, renewed; and the reaper of
    every node's expired ones."""

    def __init__(self, users: UserStore, lease_time: float, clock=time.time):
        self.users = users
        self.lease_time = lease_time
        self.node = uuid.uuid4().hex[:16]
        self._clock = clock
        self._live: dict[str, Lease] = {}
        #: Ends the store refused (it was down): (lease, bytes, files), by id.
        self._unfinished: dict[str, tuple[Lease, int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def take(self, name: str, size: int, files: int, replaces: int) -> Lease:
        """A lease of *size* bytes and *files* files for *name*. Raises
        Refused, or Unreachable."""
        self.start()
        lease = Lease(uuid.uuid4().hex, name, files)
        with self._lock:
            self._live[lease.id] = lease  # renewed from now, should the write outlast a renewal
        try:
            state = self.users.reserve(
                name, lease.id, self.node, size, files, replaces, self._clock() + self.lease_time
            )
        except StoreError as exc:
            self._forget(lease)
            raise Unreachable(str(exc)) from exc
        except BaseException:
            self._forget(lease)
            raise
        if state is None:
            self._forget(lease)
            try:
                raise Refused(self.users.quota_state(name))
            except StoreError:
                raise Refused(None) from None
        return lease

    def grow(self, lease: Lease, count: int, replaces: int) -> None:
        """Make room under *lease* for *count* more bytes. Raises Refused or
        Unreachable."""
        if count <= lease.spare:
            lease.spare -= count
            return
        need = count - lease.spare
        try:
            for size in dict.fromkeys((max(need, GRANULE), need)):  # a granule, else just what is needed
                if self.users.grow(lease.name, lease.id, size, replaces):
                    lease.spare += size - count
                    return
        except StoreError as exc:
            raise Unreachable(str(exc)) from exc
        try:
            raise Refused(self.users.quota_state(lease.name))
        except StoreError:
            raise Refused(None) from None

    def end(self, lease: Lease, bytes_delta: int, files_delta: int) -> bool:
        """End *lease*, adding the upload's effect to usage, in one write.
        If the store cannot be written now, the end is kept, its lease
        renewed, and both are written together at the renewer's next
        rounds until one succeeds: nothing is lost, nothing counted twice.
        False in that case."""
        try:
            self.users.finish(lease.name, lease.id, bytes_delta, files_delta)
        except StoreError as exc:
            with self._lock:
                self._unfinished[lease.id] = (lease, bytes_delta, files_delta)
            log.warning("the end of an upload of %s is written later: %s", lease.name, exc)
            return False
        self._forget(lease)
        return True

    def _finish_owed(self) -> None:
        with self._lock:
            owed = list(self._unfinished.values())
        for lease, bytes_delta, files_delta in owed:
            self.users.finish(lease.name, lease.id, bytes_delta, files_delta)  # StoreError: next round
            with self._lock:
                self._unfinished.pop(lease.id, None)
            self._forget(lease)

    def _forget(self, lease: Lease) -> None:
        with self._lock:
            self._live.pop(lease.id, None)

    @property
    def live(self) -> int:
        return len(self._live)

    # -- the renewer and reaper --------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def tick(self) -> None:
        """Renew this node's leases, then give back every node's expired ones."""
        with self._lock:
            ids = list(self._live)
        now = self._clock()
        try:
            self.users.renew(ids, now + self.lease_time)
            self._finish_owed()
            for name, size, files in self.users.reap(now):
                log.warning(
                    "gave back an expired reservation of %s (%d bytes, %d files): its server died?",
                    *(name, size, files),
                )
        except StoreError as exc:
            if not self._failing:
                log.warning("cannot renew reservations in the account store: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.warning("reservations are renewed in the account store again")
            self._failing = False

    def _run(self) -> None:
        while not self._stop.wait(self.lease_time / 3):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the renewer must outlive any bug of one round
                log.exception("renewing reservations failed")


def refusal(size: int, files: int, replaces: int, figures: tuple, limits: tuple) -> QuotaExceeded | None:
    """Why a reservation of *size* bytes and *files* files (crediting
    *replaces* bytes) does not fit *figures* (used and reserved bytes and
    files) under *limits* (bytes, files); None if it fits."""
    used_bytes, used_files, reserved_bytes, reserved_files = figures
    quota_bytes, max_files = limits
    if quota_bytes is not None and used_bytes + reserved_bytes + size - replaces > quota_bytes:
        free = max(0, quota_bytes - used_bytes - reserved_bytes)
        return QuotaExceeded(
            f"quota of {human(quota_bytes)} exceeded: {human(size)} announced, {human(free)} free",
            quota_bytes=quota_bytes,
            used_bytes=used_bytes,
        )
    if max_files is not None and files and used_files + reserved_files + files > max_files:
        return QuotaExceeded(f"file limit of {max_files} reached", max_files=max_files, used_files=used_files)
    return None


__all__ = ["GRANULE", "Lease", "LeaseBook", "Refused", "Unreachable", "UsageKeeper", "human", "refusal"]
