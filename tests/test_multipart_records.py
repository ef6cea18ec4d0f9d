"""The multipart upload records of an object store, in both account stores
(SQLite, and PostgreSQL as nodes share it): one lease holder at a time,
and nothing recorded by a generation that lost the lease."""

from __future__ import annotations

import threading
import time

import pytest
from test_account_store import make_store  # noqa: F401 - the fixture over both stores

from sockftp.accounts.multipart import PartRecord


@pytest.fixture
def nodes(make_store):  # noqa: F811
    """Two stores over one database, as two nodes open it."""
    return make_store(), make_store()


def claim(store, owner: str, lease: float = 30.0, key: str = "bucket/users/a/f"):
    now = time.time()
    return store.claim_upload(key, owner, now + lease, now)


def test_one_lease_holder_at_a_time_and_a_free_lease_is_taken(nodes):
    one, two = nodes
    first = claim(one, "node-1")
    assert (first.generation, first.upload_id, first.held) == (1, None, 0)
    assert claim(two, "node-2") is None  # held
    assert claim(one, "node-1").generation == 2  # its owner may claim it again
    assert one.release_upload("bucket/users/a/f", 2)
    taken = claim(two, "node-2")
    assert taken.generation == 3
    assert not one.renew_upload("bucket/users/a/f", 2, time.time() + 30)


def test_an_expired_lease_is_taken_and_the_old_holder_records_nothing(nodes):
    one, two = nodes
    old = claim(one, "node-1", lease=-1)  # expired at once: the node is thought dead
    state = {"upload_id": "mpu-1", "size": 100, "base": 0, "copied": 0}
    assert one.set_upload("bucket/users/a/f", old.generation, state, time.time(), True)
    new = claim(two, "node-2")
    assert new.generation == old.generation + 1 and new.upload_id == "mpu-1"
    # The old node wakes up and finishes its part: refused.
    assert not one.record_part("bucket/users/a/f", old.generation, PartRecord(1, 10, "e1", "h1"), 0, 0)
    assert two.record_part("bucket/users/a/f", new.generation, PartRecord(1, 10, "e2", "h2"), time.time() + 30, 0)
    assert two.peek_upload("bucket/users/a/f").parts == [PartRecord(1, 10, "e2", "h2")]
    assert not one.forget_upload("bucket/users/a/f", old.generation)


def test_a_part_sent_again_is_recorded_once(nodes):
    one, _ = nodes
    record = claim(one, "node-1")
    for etag in ("first", "again"):
        assert one.record_part("bucket/users/a/f", record.generation, PartRecord(1, 10, etag, "h"), time.time(), 0)
    assert one.peek_upload("bucket/users/a/f").parts == [PartRecord(1, 10, "again", "h")]
    assert one.held_in_parts("bucket/users/") == 10


def test_what_a_resume_counts_on(nodes):
    one, _ = nodes
    key = "bucket/users/a/f"
    record = claim(one, "node-1")
    # A sealed partial of 12 bytes, and a new upload copying its first 10:
    # until the copies are recorded, the partial is what is held.
    state = {"upload_id": "mpu", "size": 30, "base": 12, "copied": 10}
    assert one.set_upload(key, record.generation, state, time.time(), True)
    assert one.peek_upload(key).held == 12
    one.record_part(key, record.generation, PartRecord(1, 5, "c1", "copy"), time.time(), 0)
    assert one.peek_upload(key).held == 12
    one.record_part(key, record.generation, PartRecord(2, 5, "c2", "copy"), time.time(), 0)
    one.record_part(key, record.generation, PartRecord(3, 8, "d", "h"), time.time(), 0)
    assert one.peek_upload(key).held == 18


def test_expired_and_kept_uploads_are_found_under_a_prefix_only(nodes):
    one, _ = nodes
    now = time.time()
    for key in ("b/users/a/x", "b/users/a/d/y", "b/users/ab/z", "b/users/a%/w"):
        record = one.claim_upload(key, "n", now + 30, now)
        one.release_upload(key, record.generation)
    live = one.claim_upload("b/users/a/live", "n", now + 30, now)
    assert live is not None
    found = sorted(one.expired_uploads("b/users/a/", now + 1, now))
    assert found == ["b/users/a/d/y", "b/users/a/x"]  # not ab/, not a%/, not the live one
    assert one.expired_uploads("b/users/a/", now - 1, now) == []  # touched since the cutoff
    assert sorted(one.uploads_under("b/users/a/")) == ["b/users/a/d/y", "b/users/a/live", "b/users/a/x"]


def test_racing_claims_make_one_winner(nodes):
    one, two = nodes
    claim(one, "node-0", lease=-1)  # a free row to race for
    winners = []
    barrier = threading.Barrier(8)

    def race(store, owner):
        barrier.wait()
        if claim(store, owner) is not None:
            winners.append(owner)

    threads = [threading.Thread(target=race, args=((one, two)[i % 2], f"node-{i + 1}")) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_a_resume_counts_only_the_parts_from_part_1_without_a_gap(nodes):
    # Parts travel several at once: a crash can leave part 3 recorded and
    # part 2 not. Part 3 is not counted, nor completed into the object.
    one, _ = nodes
    key = "bucket/users/a/f"
    record = claim(one, "node-1")
    for number in (1, 3):
        one.record_part(key, record.generation, PartRecord(number, 5, f"e{number}", "h"), time.time(), 0)
    found = one.peek_upload(key)
    assert [part.number for part in found.run] == [1] and found.held == 5
