"""Share links in the account stores, SQLite and PostgreSQL alike: kept by
the hash of their secret, listed and revoked by their owner only, gone
when they expire and when their owner's account is deleted."""

from __future__ import annotations

import pytest

from sockftp.accounts import Account, ShareRecord
from sockftp.accounts.stores import open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    db = str(tmp_path / "users.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(db, str(tmp_path))
    store.add(Account("alice", "hash-a"))
    store.add(Account("bob", "hash-b"))
    yield store
    store.close()


def record(id_, owner="alice", created=100.0, expires=1000.0, kind="read", password_hash=None):
    return ShareRecord(id_, "hash-" + id_, owner, "/docs/a.txt", kind, password_hash, created, expires)


def test_a_share_is_found_by_its_hash_while_it_lives(store):
    link = record("s1", password_hash="argon2-hash")
    store.add_share(link)
    assert store.share("hash-s1", 500.0) == link
    assert store.share("hash-s1", 1000.0) is None  # expired: refused from its expiry on
    assert store.share("s1", 500.0) is None  # the public id is no secret


def test_a_share_without_expiry_never_expires(store):
    store.add_share(record("forever", expires=None, kind="drop"))
    assert store.share("hash-forever", 1e12).kind == "drop"


def test_shares_are_listed_and_revoked_by_their_owner_only(store):
    store.add_share(record("s1", created=100.0))
    store.add_share(record("s2", created=200.0))
    store.add_share(record("b1", owner="bob"))
    store.add_share(record("old", created=50.0, expires=60.0))
    assert [s.id for s in store.shares("alice", 150.0)] == ["s1", "s2"]
    assert store.revoke_share("bob", "s1") is False  # not bob's
    assert store.revoke_share("alice", "s1") is True
    assert store.revoke_share("alice", "s1") is False
    assert [s.id for s in store.shares("alice", 150.0)] == ["s2"]
    assert store.share("hash-s1", 150.0) is None


def test_adding_a_share_forgets_expired_ones_and_deleting_the_owner_forgets_theirs(store):
    store.add_share(record("old", created=50.0, expires=60.0))
    store.add_share(record("new", created=100.0))
    assert store.share("hash-old", 0.0) is None  # dropped, not merely hidden
    store.add_share(record("b1", owner="bob"))
    store.delete("bob")
    assert store.share("hash-b1", 150.0) is None
    assert store.share("hash-new", 150.0) is not None
