"""Which session holds which upload, so that a resume need not be told ``busy`` by one whose client is gone.

An upload locks its partial from its start to its end (see
:mod:`sockftp.storage.local`), and a second upload of the path is refused
``busy`` meanwhile. When the client of the first goes away, its session
lets go only once it has noticed: at its next read of the socket, which
may be a while if it is not reading (it may be hashing what a resumed
partial already holds, or waiting for a slow disk). Meanwhile the client,
run again, would be told ``busy`` by an upload that can no longer finish.

So each upload is noted here while it runs, with a way to ask whether its
peer has hung up. An upload that finds the path held by a session of the
same user whose peer has hung up waits for it to let go, at most
:data:`TAKEOVER_WAIT`; one held by a live peer, or by another user, is
refused as before, at once. "Same user" is the account name; on an
anonymous server every session is the anonymous user, who may therefore
take over a partial any anonymous session left behind. That grants
nothing new: once released, any anonymous session could resume it anyway
(and a resume whose first part came from another file fails its checksum).

This module never touches a socket itself: a holder brings its own test
(``Wire.peer_hung_up``), which is only called under the lock its release
takes, so never once the holder's socket may have been closed and its
descriptor reused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

#: Longest an upload waits for a holder whose client is gone to let go
#: (seconds); it is then refused ``busy``, as it would have been at once.
TAKEOVER_WAIT = 2.0


class Holder:
    """An upload under way: whose, and how to ask whether its client is gone."""

    __slots__ = ("user", "hung_up")

    def __init__(self, user: str, hung_up: Callable[[], bool]):
        self.user = user
        self.hung_up = hung_up


class UploadHolders:
    """The uploads under way in one server, by storage path; thread-safe."""

    def __init__(self, wait: float = TAKEOVER_WAIT):
        self.wait = wait
        self._changed = threading.Condition(threading.Lock())
        self._holders: dict[Hashable, Holder] = {}
        self._waiting = 0  # threads in wait_for_abandoned: only they need a notify

    def hold(self, path: Hashable, user: str, hung_up: Callable[[], bool]) -> Holder:
        """Note that an upload of *path* by *user* holds it now (call once
        its lock is taken); *hung_up()* tells, without waiting, whether its
        client is gone. Pass what it returns to :meth:`release`."""
        holder = Holder(user, hung_up)
        with self._changed:
            self._holders[path] = holder
        return holder

    def release(self, path: Hashable, holder: Holder) -> None:
        """The upload *holder* of *path* has let go (after its lock is released)."""
        with self._changed:
            # A later upload may have taken the path (and noted itself) already.
            if self._holders.get(path) is holder:
                del self._holders[path]
            if self._waiting:
                self._changed.notify_all()

    def wait_for_abandoned(self, path: Hashable, user: str) -> None:
        """If *path* is held by an upload of *user* whose client has hung
        up, wait until it lets go, at most :attr:`wait` seconds. Returns at
        once if it is held by a live client or another user, or not held."""
        if path not in self._holders:  # the usual case, without the lock
            return
        deadline = time.monotonic() + self.wait
        with self._changed:
            while True:
                holder = self._holders.get(path)
                if holder is None or holder.user != user or not holder.hung_up():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._waiting += 1
                try:
                    self._changed.wait(left)
                finally:
                    self._waiting -= 1

    def __len__(self) -> int:
        return len(self._holders)
