"""The transfer buffer pool: bounded memory however many transfers stall."""

from __future__ import annotations

from sockftp.wire import BufferPool


def test_only_a_bounded_number_of_transfers_get_a_large_buffer():
    pool = BufferPool(size=1024 * 1024, large_count=2, small_size=64 * 1024)
    first, second, third = (pool.take(10 * 1024 * 1024) for _ in range(3))
    assert [len(b) for b in (first, second, third)] == [1024 * 1024, 1024 * 1024, 64 * 1024]
    pool.give(third)
    pool.give(first)
    again = pool.take(10 * 1024 * 1024)
    assert again is first  # reused, not allocated anew
    assert len(pool.take(10 * 1024 * 1024)) == 64 * 1024  # second and again are out


def test_small_transfers_get_a_buffer_their_size():
    pool = BufferPool(size=1024 * 1024, large_count=1, small_size=64 * 1024)
    assert len(pool.take(4096)) == 4096
    assert len(pool.take(0)) == 1
    assert len(pool.take(1024 * 1024)) == 1024 * 1024  # the one large buffer
