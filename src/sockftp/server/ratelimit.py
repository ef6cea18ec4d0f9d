"""Bandwidth limits: a token bucket that any number of threads share.

A :class:`RateLimit` lets through *bytes_per_second* on average, in bursts
of at most *burst* bytes. One limits a session; one shared by all of a
user's sessions limits that user. :class:`~sockftp.protocol.wire.Wire` charges every
raw file byte it moves to the limits it is given; frame headers are free.

The bucket works by reservation: a caller takes the bytes it wants at once,
running the bucket into debt if need be, and then sleeps until the debt it
made is paid, outside the lock. Callers are thus served in the order they
asked, each waiting for its own share only, and the lock is held for a few
arithmetic operations. This module never touches a socket.
"""

from __future__ import annotations

import threading
import time

from ..protocol.limits import TRANSFER_BUFFER_SIZE

#: A throttled transfer moves at most this fraction of a second's allowance
#: per chunk, so a chunk is never a large share of a second and several
#: sessions sharing one limit take turns often.
CHUNK_SECONDS = 1 / 20

#: Smallest chunk a throttled transfer moves, whatever the rate: below this
#: the system calls cost more than they are worth.
MIN_CHUNK = 1024


class RateLimit:
    """At most *bytes_per_second* on average, thread-safe.

    Args:
        bytes_per_second: the rate, above 0.
        burst: bytes that may pass at once after a pause (the bucket's
            size). Default: 1/20 of a second's worth, so a transfer of a
            few seconds averages within a few percent of the rate.
        clock, sleep: for tests.
    """

    def __init__(self, bytes_per_second: float, burst: float | None = None, *, clock=time.monotonic, sleep=time.sleep):
        if not bytes_per_second > 0:
            raise ValueError(f"a bandwidth limit must be above 0 bytes per second, not {bytes_per_second}")
        self.rate = float(bytes_per_second)
        self.burst = float(burst) if burst is not None else max(self.rate * CHUNK_SECONDS, MIN_CHUNK)
        if self.burst < 0:
            raise ValueError("burst must not be negative")
        #: Bytes a throttled transfer should move per chunk.
        self.chunk_size = int(min(max(self.rate * CHUNK_SECONDS, MIN_CHUNK), TRANSFER_BUFFER_SIZE))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._updated = clock()

    def reserve(self, count: int) -> float:
        """Take *count* bytes now; return the seconds to wait before moving them."""
        with self._lock:
            now = self._clock()
            tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - count
            self._tokens = tokens
            self._updated = now
        return -tokens / self.rate if tokens < 0 else 0.0

    def consume(self, count: int) -> None:
        """Wait until *count* more bytes may pass."""
        wait = self.reserve(count)
        if wait > 0:
            self._sleep(wait)

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g} B/s, burst={self.burst:g})"
