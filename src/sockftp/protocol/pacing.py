"""Charging transferred bytes to bandwidth limits, as both doors' data paths do.

A limit is any object with ``reserve(count) -> seconds to wait`` and a
``chunk_size`` attribute; the server's :class:`~sockftp.server.ratelimit.RateLimit`
is one. The wire only needs this interface, so it lives here with the
protocol and the limit's bookkeeping stays with the server.
"""

from __future__ import annotations

import time


def throttle(limits, count: int) -> None:
    """Wait until *count* bytes may pass every one of *limits*."""
    wait = reserve(limits, count)
    if wait > 0:
        time.sleep(wait)


def reserve(limits, count: int) -> float:
    """Charge *count* bytes to every one of *limits*; the seconds to wait
    before moving them (for a caller that waits its own way).

    The bytes are reserved from all of them at once and the wait is the
    longest, not the sum: a session limited to 4 MB/s inside a user limited
    to 4 MB/s moves 4 MB/s, not 2.
    """
    wait = 0.0
    for limit in limits:
        wait = max(wait, limit.reserve(count))
    return wait


def chunk_size(limits, default: int) -> int:
    """The chunk a transfer under *limits* should move at a time."""
    return min([default, *(limit.chunk_size for limit in limits)])
