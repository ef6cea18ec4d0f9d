"""Modification times are kept: put's optional mtime, the client's default,
and FTP's MFMT (and MDTM with a time), for files and directories."""

from __future__ import annotations

import ftplib
import io
import os

import pytest
from conftest import recv_frame, send_frame
from ftp_support import ftp_server_fixture  # noqa: F401 - a fixture

from sockftp.protocol import checksum
from sockftp.storage import LocalStorage
from sockftp.storage.local_files import decode_kept_checksum

MiB = 1024 * 1024
WHEN = 1_234_567_890.25  # 2009-02-13 23:31:30.25 UTC


def test_put_keeps_the_mtime_it_is_given(srv):
    with srv.client() as client:
        sock = client.wire.sock
        send_frame(sock, {"cmd": "put", "path": "a.txt", "size": 3, "mtime": WHEN}, b"abc")
        assert recv_frame(sock)["ok"] is True
        assert client.stat("a.txt").mtime == pytest.approx(WHEN)
    assert os.stat(srv.anon_dir / "a.txt").st_mtime == pytest.approx(WHEN)


@pytest.mark.parametrize("bad", ["yesterday", -1, 1e300, True, [1]])
def test_a_bad_mtime_is_a_bad_request_and_stores_nothing(srv, bad):
    with srv.client() as client:
        sock = client.wire.sock
        send_frame(sock, {"cmd": "put", "path": "a.txt", "size": 3, "mtime": bad}, b"abc")
        reply = recv_frame(sock)
        assert reply["error"] == "bad_request" and "mtime" in reply["message"]
        assert client.ls() == []  # and the connection is still in step


def test_the_client_keeps_times_both_ways_by_default(srv, tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"s" * 100)
    big.write_bytes(os.urandom(3 * MiB))
    for path in (small, big):
        os.utime(path, (WHEN, WHEN))
    with srv.client() as client:
        client.put(small, "small.txt")
        client.put(big, "big.bin")
        client.put_many([(small, "many.txt")])
        assert {e.name: e.mtime for e in client.ls()} == pytest.approx(
            {"small.txt": WHEN, "big.bin": WHEN, "many.txt": WHEN}
        )
        client.get("big.bin", tmp_path / "back.bin")
        client.get_many([("small.txt", tmp_path / "back.txt")])
        client.put(small, "now.txt", times=False)
        assert client.stat("now.txt").mtime > WHEN + 10**8
    assert os.stat(tmp_path / "back.bin").st_mtime == pytest.approx(WHEN)
    assert os.stat(tmp_path / "back.txt").st_mtime == pytest.approx(WHEN)


def test_a_kept_time_keeps_the_stored_checksum_valid(srv, tmp_path):
    # The checksum cached with a file is keyed by its size and time: the
    # time set at commit must be the one it is keyed by, or every first get
    # would read the whole file to hash it again.
    data = os.urandom(2 * MiB)
    (tmp_path / "f.bin").write_bytes(data)
    os.utime(tmp_path / "f.bin", (WHEN, WHEN))
    with srv.client() as client:
        client.put(tmp_path / "f.bin", "f.bin")
    stored = srv.anon_dir / "f.bin"
    key = (stored.stat().st_size, stored.stat().st_mtime_ns, checksum.of_bytes(data))
    assert decode_kept_checksum(os.getxattr(stored, "user.sockftp.checksum")) == key


def test_storage_set_mtime_on_files_and_directories_keeps_the_cached_checksum(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    storage.mkdir(("d",))
    upload = storage.open_upload(("d", "f.bin"), 1 * MiB)
    data = os.urandom(MiB)
    upload.write(data)
    upload.commit(checksum.of_bytes(data))
    storage.set_mtime(("d", "f.bin"), WHEN)
    storage.set_mtime(("d",), WHEN + 1)
    assert storage.stat(("d", "f.bin")).mtime == pytest.approx(WHEN)
    assert storage.stat(("d",)).mtime == pytest.approx(WHEN + 1)
    cached = decode_kept_checksum(os.getxattr(tmp_path / "root" / "d" / "f.bin", "user.sockftp.checksum"))
    assert cached[1] == (tmp_path / "root" / "d" / "f.bin").stat().st_mtime_ns
    os.symlink("/etc", tmp_path / "root" / "link")
    with pytest.raises(Exception) as refused:
        storage.set_mtime(("link",), WHEN)
    assert refused.value.code == "path_refused"


# --- FTP ---------------------------------------------------------------------------


@pytest.fixture
def ftp(ftp_server):
    srv = ftp_server()
    srv.add_user("alice")
    return srv


def test_mfmt_sets_a_files_and_a_directorys_time(ftp):
    client = ftp.login()
    assert " MFMT" in client.sendcmd("FEAT")
    client.mkd("dir")
    client.storbinary("STOR dir/f.txt", io.BytesIO(b"x"))
    assert client.sendcmd("MFMT 20090213233130 dir/f.txt") == "213 Modify=20090213233130; /dir/f.txt"
    assert client.sendcmd("MFMT 20100101000000.5 dir") == "213 Modify=20100101000000.5; /dir"
    home = ftp.home("alice")
    assert os.stat(home / "dir" / "f.txt").st_mtime == 1234567890
    assert os.stat(home / "dir").st_mtime == pytest.approx(1262304000.5)
    assert client.sendcmd("MDTM dir/f.txt") == "213 20090213233130"
    for bad in ("MFMT 20091313000000 dir", "MFMT yesterday dir", "MFMT 20090213233130"):
        with pytest.raises(ftplib.error_perm, match="^501"):
            client.sendcmd(bad)
    with pytest.raises(ftplib.error_perm, match="^550"):
        client.sendcmd("MFMT 20090213233130 missing.txt")


def test_mdtm_with_a_time_sets_it_as_some_clients_expect(ftp):
    client = ftp.login()
    client.storbinary("STOR f.txt", io.BytesIO(b"x"))
    assert client.sendcmd("MDTM 20090213233130 f.txt").startswith("213 ")
    assert os.stat(ftp.home("alice") / "f.txt").st_mtime == 1234567890
