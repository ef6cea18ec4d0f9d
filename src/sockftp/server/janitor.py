"""The janitor: removes partial uploads abandoned for longer than ``partial_ttl``.

An interrupted upload leaves a hidden partial so that it can resume. One
that no client ever comes back for would stay for good, and an anonymous
client could fill the disk with them (SECURITY.md once listed this as a
known gap). The janitor walks the storage at start and then every
:data:`INTERVAL` seconds in a thread of its own, and removes the partials
nothing has written to for ``partial_ttl`` seconds and no upload holds.
Until then a partial counts against its owner's quota, as it always has.

The walk never blocks a login or a transfer: it takes no lock that they
take, and each partial is removed under the same file lock an upload
holds, so a partial being resumed is never taken from under it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..protocol.paths import RemotePath, to_text
from ..protocol.units import human_size
from ..storage import Storage

log = logging.getLogger("sockftp.janitor")

#: Seconds between two sweeps. Partials expire after days; an hour late is
#: nothing, and a walk of a big tree an hour costs little.
INTERVAL = 3600.0
#: Seconds after start before the first sweep, so it does not compete with
#: the first clients of a server that was just restarted.
FIRST_SWEEP = 10.0


class Janitor:
    """Sweeps *storage* for partials untouched for *ttl* seconds.

    Args:
        storage: the whole tree (the server's storage, not a user's view).
        ttl: seconds a partial may stay untouched.
        removed: called with the directory and size of each partial
            removed, so the owner's usage can be given back.
        clock: seconds since the epoch, for tests.
    """

    def __init__(
        self,
        storage: Storage,
        ttl: float,
        removed: Callable[[RemotePath, int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.storage = storage
        self.ttl = ttl
        self.removed = removed
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> tuple[int, int]:
        """Remove what has expired now; returns (partials, bytes) removed."""
        count = total = 0
        for directory, size in self.storage.expire_partials((), self.clock() - self.ttl):
            count += 1
            total += size
            log.info(
                "removed an abandoned partial upload in %s (%s, untouched for over %s)",
                to_text(directory),
                human_size(size),
                _duration(self.ttl),
            )
            if self.removed is not None:
                self.removed(directory, size)
        if count:
            log.info("janitor: %d abandoned partial uploads removed, %s freed", count, human_size(total))
        return count, total

    def start(self, first: float = FIRST_SWEEP, interval: float = INTERVAL) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, args=(first, interval), name="sockftp-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, first: float, interval: float) -> None:
        wait = first
        while not self._stop.wait(wait):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a failed sweep must not end the server; try next time
                log.exception("the janitor's sweep failed")
            wait = interval


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"
