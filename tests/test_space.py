"""Uploads the disk cannot hold are refused as announced (insufficient_storage).

On a real filesystem: the reserve (``min_free``) is set relative to what is
free now, so the tests do not depend on how full the machine's disk is.
"""

from __future__ import annotations

import ftplib
import io
import os
import threading

import pytest
from conftest import assert_closed, recv_frame, send_frame

from sockftp import InsufficientStorage
from sockftp.storage import LocalStorage
from sockftp.storage.space import DEFAULT_RESERVE_BYTES, DiskSpace

MiB = 1024 * 1024


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leave_room(storage: LocalStorage, room: int) -> None:
    """Set the reserve so that about *room* bytes are left for uploads."""
    storage.space.min_free = free_bytes(storage.root) - room


def test_the_default_reserve_is_the_smaller_of_one_percent_and_a_gib(tmp_path):
    space = DiskSpace(str(tmp_path))
    assert space.reserve(10 * 1024 * MiB) == 10 * 1024 * MiB // 100
    assert space.reserve(10**15) == DEFAULT_RESERVE_BYTES
    assert DiskSpace(str(tmp_path), 0.05).reserve(1000) == 50
    assert DiskSpace(str(tmp_path), 123).reserve(10**15) == 123


def test_an_upload_larger_than_the_room_is_refused_before_any_disk_work(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    leave_room(storage, 32 * MiB)
    with pytest.raises(InsufficientStorage) as refused:
        storage.open_upload(("big.bin",), 64 * MiB)
    assert refused.value.code == "insufficient_storage"
    assert os.listdir(storage.root) == []  # not even a partial
    upload = storage.open_upload(("fits.bin",), 8 * MiB)
    upload.write(b"x" * MiB)
    upload.keep()


def test_uploads_under_way_are_counted_so_two_cannot_share_one_room(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    leave_room(storage, 48 * MiB)
    first = storage.open_upload(("a.bin",), 30 * MiB)
    with pytest.raises(InsufficientStorage):
        storage.open_upload(("b.bin",), 30 * MiB)
    first.discard()  # its promise goes back with it
    second = storage.open_upload(("b.bin",), 30 * MiB)
    assert storage.space.promised == 30 * MiB
    second.write(b"y" * MiB)  # landed bytes leave the promise: statvfs counts them now
    assert storage.space.promised == 29 * MiB
    second.keep()
    assert storage.space.promised == 0


def test_a_resume_is_promised_only_what_is_still_to_come(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    upload = storage.open_upload(("r.bin",), 40 * MiB)
    upload.write(b"z" * (20 * MiB))
    upload.keep()
    leave_room(storage, 30 * MiB)
    with pytest.raises(InsufficientStorage):
        storage.open_upload(("r.bin",), 40 * MiB)  # 40 MiB from the start: no room
    resumed = storage.open_upload(("r.bin",), 40 * MiB, 20 * MiB)  # the last 20 fit
    assert resumed.offset == 20 * MiB
    resumed.discard()


def test_an_upload_of_unknown_size_stops_at_the_chunk_that_would_not_fit(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    upload = storage.open_upload(("stream.bin",), None)
    upload.write(b"a" * MiB)
    leave_room(storage, 2 * MiB)
    upload.write(b"b" * MiB)
    with pytest.raises(InsufficientStorage):
        upload.write(b"c" * (8 * MiB))
    upload.keep()
    assert upload.offset == 2 * MiB  # what fitted is kept, resumable


def test_racing_announcements_never_promise_more_than_the_room(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    leave_room(storage, 100 * MiB)
    admitted, refused = [], []

    def announce(number: int) -> None:
        try:
            admitted.append(storage.open_upload((f"f{number}",), 30 * MiB))
        except InsufficientStorage:
            refused.append(number)

    threads = [threading.Thread(target=announce, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 3 and len(refused) == 5  # 3 x 30 MiB fit in 100, 4 do not
    for upload in admitted:
        upload.discard()
    assert storage.space.promised == 0


def test_a_petabyte_put_without_a_quota_is_answered_at_once_and_closed(srv):
    # The server has no room for it: refused as announced, not after the
    # bytes that would fill the disk, and the connection closes cleanly
    # rather than draining a petabyte.
    from test_hostile import started_session

    sock = started_session(srv)
    send_frame(sock, {"cmd": "put", "path": "huge.bin", "size": 10**15}, os.urandom(MiB))
    reply = recv_frame(sock)
    assert reply["error"] == "insufficient_storage" and "free" in reply["message"]
    assert_closed(sock)
    with srv.client() as client:  # the server is fine, and so is the area
        assert client.ls() == []


def test_a_refused_put_that_can_be_drained_keeps_the_connection_usable(srv, tmp_path):
    srv.server.storage.space.min_free = free_bytes(srv.root) - 256 * 1024
    local = tmp_path / "one.bin"
    local.write_bytes(os.urandom(MiB))
    with srv.client() as client:
        with pytest.raises(InsufficientStorage):
            client.put(str(local), "one.bin")
        assert client.ls() == []  # the refused bytes were drained: still in step


# --- the FTP door -------------------------------------------------------------------


from ftp_support import ftp_server_fixture  # noqa: E402, F401 - a fixture


def test_ftp_allo_says_at_once_whether_the_disk_can_take_the_file(ftp_server):
    srv = ftp_server()
    srv.add_user("alice")
    client = srv.login()
    assert client.sendcmd("ALLO 1000").startswith("202")
    with pytest.raises(ftplib.error_temp, match="^452"):
        client.sendcmd(f"ALLO {10**15}")
    with pytest.raises(ftplib.error_perm, match="^501"):
        client.sendcmd("ALLO lots")
    assert client.sendcmd("NOOP").startswith("200")


def test_ftp_stor_stops_with_452_when_the_space_runs_out(ftp_server):
    srv = ftp_server()
    home = srv.add_user("alice")
    srv.main.storage.space.min_free = free_bytes(srv.root) - 2 * MiB
    client = srv.login()
    try:
        client.storbinary("STOR big.bin", io.BytesIO(b"s" * (16 * MiB)))
    except ftplib.error_temp as exc:
        assert str(exc).startswith("452")
    except OSError:  # the server closed the data connection first: its reply follows
        with pytest.raises(ftplib.error_temp, match="^452"):
            client.getresp()
    else:
        raise AssertionError("16 MiB were stored in 2 MiB of room")
    assert not (home / "big.bin").exists()  # nothing half-written is visible
    srv.main.storage.space.min_free = 0
    client.storbinary("STOR small.bin", io.BytesIO(b"ok"))
    assert (home / "small.bin").read_bytes() == b"ok"
