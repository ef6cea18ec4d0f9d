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
node wrote into partials stays counted as a change cut off, so that
user's usage is measured again (see ``sockftp user rescan``). A given-back
lease stays a day as a tombstone, so that the late end of an upload whose
node was only cut off from the store still counts, once.

Nothing is counted twice when a write's reply is lost (a database
restart): an end deletes its lease as it moves the bytes, so a retry finds
nothing to move; the :class:`UsageKeeper`'s writes carry ids of their own.

Fencing: a node cut off from the store for longer than ``lease_time`` may
have its leases given back while its uploads still run. Before one
commits, :meth:`LeaseBook.check` makes sure its lease is live (asking the
store only if it was not renewed within ``lease_time / 2``); if not, the
upload fails and its partial is kept. Expiry is judged by each node's
wall clock, so nodes' clocks should agree to well within ``lease_time /
2`` (NTP).
"""

from __future__ import annotations

import logging
import os
import socket
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
    timeout, the database restarting) loses nothing and fails nothing: the
    ledger in memory is exact and goes on enforcing, and what the store
    missed is owed and written again at the next write (the user's next
    change, or their last logout). Each write carries an id of its own
    (:meth:`UserStore.add_usage`), kept with it while it is owed: a write
    the database applied but whose reply was lost is written again under
    the same id and counts once. The first failure and the recovery are
    logged; a server that stops while it owes leaves the stored usage
    wrong, which the warning says, with the command that measures it again."""

    def __init__(self, users: UserStore, name: str):
        self.users = users
        self.name = name
        self._lock = threading.Lock()
        #: Writes not known to have landed, oldest first: (id, bytes, files, changes).
        self._owed: list[tuple[str, int, int, int]] = []
        #: Ids of writes that landed, for the store to forget with the next write.
        self._done: list[str] = []
        self._failing = False

    @property
    def owes(self) -> bool:
        return bool(self._owed)

    def add(self, bytes_delta: int, files_delta: int, changes_delta: int) -> None:
        with self._lock:
            if (bytes_delta, files_delta, changes_delta) != (0, 0, 0):
                self._owed.append((uuid.uuid4().hex, bytes_delta, files_delta, changes_delta))
            owed, self._owed = self._owed, []
            done, self._done = self._done, []
        try:
            while owed:
                op, *delta = owed[0]
                self.users.add_usage(self.name, *delta, op=op, done=done)
                done = [op]
                owed.pop(0)
        except StoreError as exc:
            with self._lock:
                self._owed[:0] = owed  # before any added meanwhile: the same order
                self._done[:0] = done
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
        with self._lock:
            self._done.extend(done)
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


class Fenced(Exception):
    """The lease may have been given back: its upload must not commit."""


@dataclass
class Lease:
    id: str
    name: str
    files: int
    spare: int = 0  # reserved and not yet written (uploads of unannounced size)
    #: This node's clock before the last write that found the lease live
    #: (its reservation or a renewal): it lives until confirmed + lease_time.
    confirmed: float = 0.0
    #: A renewal found it given back (this node was cut off from the store
    #: for longer than the lease time).
    fenced: bool = False
    #: Its reservation is in the store (a renewal before it was would not find it).
    held: bool = False


class LeaseBook:
    """This node's leases: taken, grown, ended, renewed; and the reaper of
    every node's expired ones."""

    def __init__(self, users: UserStore, lease_time: float, clock=time.time):
        self.users = users
        self.lease_time = lease_time
        #: HOST:PID:RANDOM, so that a server restarted on the same host
        #: knows its dead predecessor's leases (see reap_dead_neighbours).
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
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
        lease = Lease(uuid.uuid4().hex, name, files, confirmed=self._clock())
        with self._lock:
            self._live[lease.id] = lease  # renewed once held (lease.held), should the write outlast a round
        try:
            state = self.users.reserve(
                name, lease.id, self.node, size, files, replaces, lease.confirmed + self.lease_time
            )
        except StoreError as exc:
            # The database may have applied it and lost the reply: the
            # renewer ends it (nothing written, nothing to count), so its
            # reservation does not wait for the lease time to be given back.
            with self._lock:
                self._unfinished[lease.id] = (lease, 0, 0)
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
        lease.held = True
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

    def check(self, lease: Lease) -> None:
        """Before an upload under *lease* commits: raise Fenced unless the
        lease is surely live. It is while this node renewed it less than
        half a lease time ago (the success path asks nothing); else the
        store is asked, and the lease renewed if it is still there."""
        if lease.fenced:
            raise Fenced(f"the reservation of this upload of {lease.name} was given back")
        now = self._clock()
        if now - lease.confirmed < self.lease_time / 2:
            return
        try:
            live = lease.id in self.users.renew([lease.id], now + self.lease_time)
        except StoreError as exc:
            raise Fenced(f"the reservation of this upload of {lease.name} cannot be confirmed: {exc}") from exc
        if not live:
            lease.fenced = True
            raise Fenced(f"the reservation of this upload of {lease.name} was given back")
        lease.confirmed = now

    def end(self, lease: Lease, bytes_delta: int, files_delta: int) -> bool:
        """End *lease*, adding the upload's effect to usage, in one write.
        If the store cannot be written now, the end is kept, its lease
        renewed, and both are written together at the renewer's next
        rounds until one succeeds: nothing is lost, nothing counted twice
        (the end of a lease is written once however often it is sent).
        False in that case."""
        try:
            ended = self.users.finish(lease.name, lease.id, bytes_delta, files_delta)
        except StoreError as exc:
            with self._lock:
                self._unfinished[lease.id] = (lease, bytes_delta, files_delta)
            log.warning("the end of an upload of %s is written later: %s", lease.name, exc)
            return False
        if ended is False:
            log.warning("an upload of %s ended after its reservation was given back; its usage is counted", lease.name)
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
    def owes(self) -> bool:
        """Ends the store has not taken yet: its usage is behind this server's."""
        return bool(self._unfinished)

    def owed(self, name: str) -> tuple[int, int]:
        """The bytes and files that the ends of *name*'s uploads the store has
        not taken yet will add to its usage there."""
        with self._lock:
            ends = [(used, files) for lease, used, files in self._unfinished.values() if lease.name == name]
        return sum(used for used, _ in ends), sum(files for _, files in ends)

    @property
    def live(self) -> int:
        return len(self._live)

    # -- the renewer and reaper --------------------------------------------------------

    def start(self) -> None:
        """Start the renewer and reaper, once; and first give back the
        leases of this host's servers that are dead, before any login of
        this server reads a usage they would make look right."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                try:
                    self.reap_dead_neighbours()
                except StoreError as exc:
                    log.warning("cannot look for dead servers' reservations: %s", exc)
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def reap_dead_neighbours(self) -> None:
        """Give back at once the leases of servers of this host whose process
        is gone (a server killed and restarted: its predecessor's partials
        are then measured at their users' next first login, without waiting
        for the lease time). Other hosts' leases wait for their expiry."""
        host = socket.gethostname()
        dead = []
        for node in self.users.lease_nodes():
            parts = node.split(":")
            if len(parts) != 3 or parts[0] != host or not parts[1].isdigit() or node == self.node:
                continue
            if not _alive(int(parts[1])):
                dead.append(node)
        if dead:
            for name, size, files in self.users.reap_nodes(dead, self._clock()):
                log.warning("gave back a reservation of %s (%d bytes, %d files): its server died", name, size, files)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def tick(self) -> None:
        """Renew this node's leases, then give back every node's expired ones."""
        with self._lock:
            leases = [lease for lease in self._live.values() if lease.held]
        now = self._clock()
        try:
            live = self.users.renew([lease.id for lease in leases], now + self.lease_time)
            for lease in leases:
                if lease.id in live:
                    lease.confirmed = max(lease.confirmed, now)
                elif not lease.fenced and lease.id not in self._unfinished:
                    lease.fenced = True
                    log.warning("a reservation of %s was given back while this server was cut off", lease.name)
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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


__all__ = ["GRANULE", "Fenced", "Lease", "LeaseBook", "Refused", "Unreachable", "UsageKeeper", "human", "refusal"]
