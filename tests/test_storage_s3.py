"""What only S3Storage does, against a real SeaweedFS (tests/s3_support.py):
leases taken over, the SeaweedFS quirks that can bite an upload's state,
renames by RenameObject, and the limits of a directory's move. The
contract both backends keep is in tests/test_storage_contract.py."""

from __future__ import annotations

import os
import time

import pytest
from conftest import wait_until
from s3_support import BUCKET
from test_storage_contract import PART, make_s3_store, put, read, upload

from sockftp.accounts.sqlite import SqliteUserStore
from sockftp.protocol import checksum, errors
from sockftp.storage import s3 as s3_module


@pytest.fixture
def state(tmp_path):
    store = SqliteUserStore(str(tmp_path / "users.db"))
    yield store
    store.close()


@pytest.fixture
def store(seaweed, s3_prefix, state, tmp_path):
    return make_s3_store(seaweed, s3_prefix, state, spool_dir=str(tmp_path / "spool"))


def keys(seaweed, store) -> list[str]:
    listed = seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix=store.prefix + "/")
    return sorted(item["Key"][len(store.prefix) + 1 :] for item in listed.get("Contents", ()))


def test_keys_mirror_paths_and_a_directory_is_a_marker(seaweed, store):
    store.mkdir(("users", "alice", "docs"), parents=True)
    put(store, ("users", "alice", "docs", "a.txt"), b"hello")
    assert keys(seaweed, store) == ["users/alice/docs/", "users/alice/docs/a.txt"]
    head = seaweed.client().head_object(Bucket=BUCKET, Key=f"{store.prefix}/users/alice/docs/a.txt")
    assert head["Metadata"]["sockftp-checksum"] == checksum.of_bytes(b"hello")


def test_a_node_that_lost_its_lease_records_nothing_and_the_new_holder_finishes_exact(store, state):
    data = os.urandom(3 * PART)
    store.lease_time = 0.2
    slow = store.open_upload(("f",), len(data))
    slow.write(data[:PART])  # part 1, sent and recorded in the background
    wait_until(lambda: store.partial_size(("f",), len(data)) == PART)
    time.sleep(0.3)  # the slow node is thought dead: its lease ran out
    store.lease_time = 2.0
    assert store.partial_size(("f",), len(data)) == PART
    taker = store.open_upload(("f",), len(data), offset=PART)
    hasher = checksum.Hasher()
    taker.hash_existing(hasher)
    # The old node wakes up and sends its next part: refused, recorded nowhere.
    with pytest.raises(errors.Busy):
        slow.write(data[PART : 2 * PART])
        slow._land_all()  # (sent in the background: told at the next write, or here)
    slow.keep()  # as the command layer does after a failure: changes nothing
    taker.write(data[PART:])
    hasher.update(data[PART:])
    assert hasher.value() == checksum.of_bytes(data)
    taker.commit(hasher.value())
    assert read(store, ("f",)) == data


def test_a_part_sent_twice_is_listed_twice_but_completes_from_our_record(seaweed, store):
    # SeaweedFS keeps every UploadPart of a part number: ListParts shows a
    # retried part twice. The upload completes from its own record, which
    # holds the part as last sent.
    client = seaweed.client()
    key = store.key(("f",))
    upload_id = store.create_multipart(("f",), key)
    first, again = os.urandom(PART), os.urandom(PART)
    store.upload_part(("f",), key, upload_id, 1, first, PART)
    etag = store.upload_part(("f",), key, upload_id, 1, again, PART)
    listed = client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)["Parts"]
    assert [part["PartNumber"] for part in listed] == [1, 1]
    store.complete(("f",), key, upload_id, [(1, etag)])
    assert read(store, ("f",)) == again
    # ListParts after Complete: 4.48 answers NoSuchUpload (older ones gave an
    # empty 200, #5024); either way nothing here asks it.
    with pytest.raises(client.exceptions.NoSuchUpload):
        client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)


def test_a_part_under_5_mib_is_refused_unless_last_so_no_smaller_part_size_is_allowed(seaweed, store, state):
    key = store.key(("small",))
    upload_id = store.create_multipart(("small",), key)
    one = store.upload_part(("small",), key, upload_id, 1, b"x" * 1024, 1024)
    two = store.upload_part(("small",), key, upload_id, 2, b"y" * 1024, 1024)
    with pytest.raises(errors.IOFailure) as info:
        store.complete(("small",), key, upload_id, [(1, one), (2, two)])
    assert "EntityTooSmall" in str(info.value)
    store.abort(("small",), key, upload_id)
    client = seaweed.client()
    with pytest.raises(client.exceptions.NoSuchUpload):  # ListParts after Abort
        client.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id)
    with pytest.raises(ValueError):
        make_s3_store(seaweed, store.prefix, state, part_size=PART - 1)


def test_a_node_dead_between_complete_and_its_record_is_resumed_from_the_object(store, state):
    # It completed the multipart upload into the sealed partial and died
    # before recording it: the records still name the upload, now gone.
    data = os.urandom(2 * PART + 10)
    up = store.open_upload(("f",), len(data))
    up.write(data[: 2 * PART])
    up._land_all()  # both parts stored and recorded
    store.complete(("f",), up.partial, up.upload_id, up.parts)
    up._close()  # (the node is gone: nothing of it runs on)
    state.release_upload(up.state_key, up.generation)
    assert store.partial_size(("f",), len(data)) == 2 * PART
    resumed = store.open_upload(("f",), len(data), offset=2 * PART)
    hasher = checksum.Hasher()
    resumed.hash_existing(hasher)
    resumed.write(data[2 * PART :])
    hasher.update(data[2 * PART :])
    resumed.commit(hasher.value())
    assert hasher.value() == checksum.of_bytes(data)
    assert read(store, ("f",)) == data


def test_usage_counts_the_parts_of_an_upload_under_way(store):
    up = store.open_upload(("f",), 2 * PART)
    up.write(os.urandom(PART + 3))
    # The part the store holds, once recorded; the 3 bytes spooled are not there yet.
    wait_until(lambda: store.usage(()).bytes == PART)
    up.discard()
    assert store.usage(()).bytes == 0


def test_a_rename_keeps_the_checksum_and_moves_no_data(store):
    data = os.urandom(PART + 1)
    put(store, ("a",), data)
    store.mkdir(("d",))
    store.rename(("a",), ("d", "b"))
    with store.open_read(("d", "b")) as download:
        assert download.stored_checksum() == checksum.of_bytes(data)
    assert read(store, ("d", "b")) == data


def test_a_download_of_a_file_replaced_meanwhile_fails_clearly(store):
    put(store, ("f",), b"old" * 1000)
    with store.open_read(("f",)) as download:
        put(store, ("f",), b"new" * 1000)
        with pytest.raises(errors.IOFailure) as info:
            download.readinto(memoryview(bytearray(10)), 0)
        assert "changed" in info.value.message


def test_a_directory_move_is_refused_past_its_limit_and_with_uploads_inside(store, monkeypatch):
    store.mkdir(("d",))
    for name in "abcd":
        put(store, ("d", name), name.encode())
    monkeypatch.setattr(s3_module, "MAX_DIRECTORY_MOVE", 3)
    with pytest.raises(errors.PermissionDenied) as info:
        store.rename(("d",), ("e",))
    assert "more than 3 objects" in info.value.message
    assert sorted(e.name for e in store.list(("d",))) == list("abcd")  # nothing moved
    monkeypatch.setattr(s3_module, "MAX_DIRECTORY_MOVE", 1000)
    kept = upload(store, ("d", "partial"), b"xy", size=10)
    kept.keep()
    with pytest.raises(errors.Busy):
        store.rename(("d",), ("e",))
    store.open_upload(("d", "partial"), 1).discard()
    store.rename(("d",), ("e",))
    assert sorted(e.name for e in store.list(("e",))) == list("abcd")


def test_parse_url():
    assert s3_module.parse_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert s3_module.parse_url("s3://bucket") == ("bucket", "")
    for bad in ("http://x/y", "s3:///prefix"):
        with pytest.raises(ValueError):
            s3_module.parse_url(bad)


@pytest.mark.timeout(30)
def test_an_empty_put_leaves_the_connection_usable_for_the_next_request(store):
    # SeaweedFS 4.48 answered an empty PUT sent with "Expect: 100-continue"
    # (a directory's marker) twice; the next request on that connection
    # read the stray answer and then waited out its 60 s read timeout.
    for round_ in range(3):
        store.mkdir((f"d{round_}",))
        upload(store, (f"kept{round_}",), b"xx", size=10).keep()
        put(store, (f"d{round_}", "f"), b"y")
    assert store.partial_size(("kept2",), 10) == 2


def test_the_requests_sent_are_counted_by_operation(store):
    """What bench/cluster_cost.py reports: a put under a part is one
    PutObject; a stat one HeadObject."""
    store.requests.clear()
    put(store, ("small",), b"x" * 1000)
    assert store.requests["PutObject"] == 1
    store.requests.clear()
    store.stat(("small",))
    assert dict(store.requests) == {"HeadObject": 1}
