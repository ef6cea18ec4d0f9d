"""tus 1.0 on the HTTP door: tuspy cut and resumed, curl by hand, the
core's refusals, checksums, finishing, restarts, expiry and quotas."""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest
import xxhash
from conftest import wait_until
from http_support import basic, http_server_fixture, read_response  # noqa: F401 - the fixture

from sockftp.client import Client
from sockftp.protocol.errors import Busy

tusclient = pytest.importorskip("tusclient.client")

pytestmark = pytest.mark.usefixtures("no_server_errors")

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = {**TUS, "Content-Type": "application/offset+octet-stream"}


def meta(**fields) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def xxh(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


@pytest.fixture
def web(http_server):
    srv = http_server()
    srv.add_user("alice")
    return srv


def auth(headers=None, user="alice"):
    return {**(headers or {}), "Authorization": basic(user)}


def create(web, size: int, user="alice", **fields) -> str:
    status, headers, body = web.request(
        "POST", "/tus/", headers=auth({**TUS, "Upload-Length": str(size), "Upload-Metadata": meta(**fields)}, user)
    )
    assert status == 201, body
    assert headers["tus-resumable"] == "1.0.0" and "upload-expires" in headers
    return headers["location"]


def patch(web, url: str, offset: int, data: bytes, **extra):
    return web.request("PATCH", url, body=data, headers=auth({**CHUNK, "Upload-Offset": str(offset), **extra}))


def head_offset(web, url: str) -> int:
    status, headers, _ = web.request("HEAD", url, headers=auth(TUS))
    assert status == 200 and headers["cache-control"] == "no-store"
    return int(headers["upload-offset"])


def test_tuspy_cut_at_an_offset_then_resumed(web, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    local = tmp_path / "f.bin"
    local.write_bytes(data)
    client = tusclient.TusClient(f"{web.base}/tus/", headers={"Authorization": basic("alice")})
    first = client.uploader(str(local), chunk_size=512 * 1024, metadata={"path": "/f.bin", "checksum": xxh(data)})
    first.upload(stop_at=1024 * 1024)
    assert not (web.home("alice") / "f.bin").exists()
    assert head_offset(web, first.url) == 1024 * 1024
    again = client.uploader(str(local), chunk_size=512 * 1024, url=first.url)
    assert again.offset == 1024 * 1024
    again.upload()
    assert (web.home("alice") / "f.bin").read_bytes() == data
    assert head_offset(web, first.url) == len(data)  # finished: now, and only now, the whole length


def test_the_tus_sequence_by_hand_with_curl(web, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_bytes(b"hello ")
    two.write_bytes(b"world")
    out = web.curl(
        "-i",
        "-X",
        "POST",
        "-H",
        "Tus-Resumable: 1.0.0",
        "-H",
        "Upload-Length: 11",
        "-H",
        "Upload-Metadata: " + meta(filename="hi.txt"),
        f"{web.base}/tus/",
    ).stdout.decode()
    location = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.lower().startswith("location:"))
    for offset, part in ((0, one), (6, two)):
        code = web.curl(
            "-X",
            "PATCH",
            "-H",
            "Tus-Resumable: 1.0.0",
            "-H",
            "Content-Type: application/offset+octet-stream",
            "-H",
            f"Upload-Offset: {offset}",
            "--data-binary",
            f"@{part}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            web.base + location,
        ).stdout
        assert code == b"204"
    assert (web.home("alice") / "hi.txt").read_bytes() == b"hello world"


def test_options_advertises_the_extensions(web):
    status, headers, _ = web.request("OPTIONS", "/tus/")
    assert status == 204
    assert headers["tus-version"] == "1.0.0"
    assert set(headers["tus-extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    }
    assert headers["tus-checksum-algorithm"] == "sha1"


def test_the_core_refusals(web):
    url = create(web, 10, filename="a")
    status, headers, _ = web.request("HEAD", url, headers=auth({"Tus-Resumable": "0.2.2"}))
    assert status == 412 and headers["tus-version"] == "1.0.0"
    status, _, _ = web.request(
        "PATCH", url, body=b"x", headers=auth({**TUS, "Content-Type": "text/plain", "Upload-Offset": "0"})
    )
    assert status == 415
    assert patch(web, url, 3, b"abc")[0] == 409  # wrong offset: untouched
    assert head_offset(web, url) == 0
    assert patch(web, url, 0, b"abc")[0] == 204
    assert head_offset(web, url) == 3
    # another user cannot see it
    web.add_user("bob")
    assert web.request("HEAD", url, headers=auth(TUS, "bob"))[0] == 404


def test_a_chunk_with_a_wrong_sha1_is_dropped(web):
    url = create(web, 6, filename="a")
    good = base64.b64encode(hashlib.sha1(b"abc").digest()).decode()
    bad = base64.b64encode(hashlib.sha1(b"xyz").digest()).decode()
    assert patch(web, url, 0, b"abc", **{"Upload-Checksum": f"sha1 {bad}"})[0] == 460
    assert head_offset(web, url) == 0
    assert patch(web, url, 0, b"abc", **{"Upload-Checksum": f"sha1 {good}"})[0] == 204
    assert patch(web, url, 3, b"def")[0] == 204
    assert (web.home("alice") / "a").read_bytes() == b"abcdef"


def test_a_whole_file_checksum_mismatch_stores_nothing(web):
    url = create(web, 6, filename="a", checksum=xxh(b"abcdeX"))
    assert patch(web, url, 0, b"abc")[0] == 204
    status, _, _ = patch(web, url, 3, b"def")
    assert status == 460
    assert not (web.home("alice") / "a").exists()
    assert web.request("HEAD", url, headers=auth(TUS))[0] == 404
    assert [p for p in os.listdir(web.home("alice"))] == []  # no partial left either


def test_creation_with_upload_and_termination(web):
    status, headers, _ = web.request(
        "POST",
        "/tus/",
        body=b"abc",
        headers=auth({**CHUNK, "Upload-Length": "5", "Upload-Metadata": meta(path="/x/y.txt")}),
    )
    assert status == 404  # no directory /x: refused at creation
    web.request("POST", "/files/x?op=mkdir", user="alice")
    status, headers, body = web.request(
        "POST",
        "/tus/",
        body=b"abc",
        headers=auth({**CHUNK, "Upload-Length": "5", "Upload-Metadata": meta(path="/x/y.txt")}),
    )
    assert status == 201 and headers["upload-offset"] == "3"
    url = headers["location"]
    assert web.request("DELETE", url, headers=auth(TUS))[0] == 204
    assert web.request("HEAD", url, headers=auth(TUS))[0] == 404
    assert os.listdir(web.home("alice") / "x") == []


def test_the_quota_is_reserved_at_creation(http_server):
    srv = http_server()
    srv.add_user("alice", quota_bytes=1000)
    create(srv, 600, filename="a")
    status, headers, body = srv.request(
        "POST", "/tus/", headers=auth({**TUS, "Upload-Length": "600", "Upload-Metadata": meta(filename="b")})
    )
    assert status == 413 and b"quota_exceeded" in body


def test_a_native_put_during_a_patch_is_told_busy(web, tmp_path):
    url = create(web, 10, filename="same")
    sock = web.raw(timeout=10)
    head = f"PATCH {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
    head += (
        f"Content-Type: application/offset+octet-stream\r\nContent-Length: 10\r\nAuthorization: {basic('alice')}\r\n"
    )
    sock.sendall(head.encode() + b"\r\n12345")  # half the body: the PATCH is under way
    local = tmp_path / "n"
    local.write_bytes(b"native")
    with Client("127.0.0.1", web.main.port, user="alice", password="secret", timeout=10) as client:
        wait_until(lambda: head_offset_held(web, url) == 5, what="the first half")
        with pytest.raises(Busy):
            client.put(str(local), "same")
    sock.sendall(b"67890")
    assert read_response(sock).startswith(b"HTTP/1.1 204")
    assert (web.home("alice") / "same").read_bytes() == b"1234567890"


def head_offset_held(web, url: str) -> int:
    upload = web.front.extensions["tus"]._uploads[url.rsplit("/", 1)[1]]
    return upload.upload.offset if upload.upload is not None else -1


def test_an_idle_tus_upload_gives_way_to_the_same_users_native_put(web, tmp_path):
    """Between PATCHes a tus upload is as abandoned as a native put whose
    client is gone: the user's own put takes the path over at once (not
    busy for a day), and the tus client then finds the upload reset."""
    url = create(web, 10, filename="same")
    assert patch(web, url, 0, b"12345")[0] == 204
    local = tmp_path / "n"
    local.write_bytes(b"native")
    with Client("127.0.0.1", web.main.port, user="alice", password="secret", timeout=10) as client:
        client.put(str(local), "same")
    assert (web.home("alice") / "same").read_bytes() == b"native"
    # Another upload of the same size left a partial there meanwhile: not this upload's bytes.
    from sockftp.storage.local import LocalStorage

    other = LocalStorage(web.root).open_upload(("users", "alice", "same"), 10, 0)
    other.write(b"OTHER")
    other.keep()
    assert patch(web, url, 5, b"67890")[0] == 409
    assert head_offset(web, url) == 0
    assert patch(web, url, 0, b"1234567890")[0] == 204
    assert (web.home("alice") / "same").read_bytes() == b"1234567890"


def test_an_upload_survives_a_restart(http_server, tmp_path):
    first = http_server()
    first.add_user("alice")
    url = create(first, 8, filename="r", checksum=xxh(b"abcdefgh"))
    assert patch(first, url, 0, b"abcd")[0] == 204
    first.main.stop(0)
    second = http_server(root=first.root)
    assert head_offset(second, url) == 4
    assert patch(second, url, 4, b"efgh")[0] == 204
    assert (second.home("alice") / "r").read_bytes() == b"abcdefgh"


def test_records_an_older_server_kept_as_files_are_adopted(http_server):
    """Before the records moved into the account store they were files in
    ROOT/.sockftp/tus: an upload under way across the upgrade resumes, and
    the files go (an unreadable one too)."""
    import json

    first = http_server()
    first.add_user("alice")
    url = create(first, 8, filename="u")
    assert patch(first, url, 0, b"abcd")[0] == 204
    upload_id = url.rsplit("/", 1)[1]
    record = first.main.users.load_tus(upload_id)
    first.main.stop(0)
    first.main.users.forget_tus(upload_id)  # as the older server left it: a file only
    files = first.root / ".sockftp" / "tus"
    files.mkdir(parents=True, exist_ok=True)
    (files / f"{upload_id}.json").write_text(record)
    (files / f"{'0' * 32}.json").write_text("{not json")
    assert json.loads(record)["id"] == upload_id
    second = http_server(root=first.root)
    assert os.listdir(files) == []
    assert head_offset(second, url) == 4
    assert patch(second, url, 4, b"efgh")[0] == 204
    assert (second.home("alice") / "u").read_bytes() == b"abcdefgh"


def test_processes_sharing_the_store_take_turns_on_one_upload(http_server):
    """With --workers (or PostgreSQL), a PATCH may reach another process
    than the last: each lets go of the upload after a request, and one
    that served it before sees what the other did (here: finished it)."""
    first = http_server(workers=2)
    first.add_user("alice")
    second = http_server(root=first.root, workers=2)
    url = create(first, 8, filename="w")
    assert patch(first, url, 0, b"abcd")[0] == 204
    assert head_offset(second, url) == 4
    assert patch(second, url, 4, b"efgh")[0] == 204
    assert head_offset(first, url) == 8
    assert patch(first, url, 8, b"x")[0] == 409  # complete, as the other process left it
    assert (first.home("alice") / "w").read_bytes() == b"abcdefgh"


def test_expired_uploads_go(http_server):
    srv = http_server(tus_expiry=0.5)
    srv.add_user("alice")
    url = create(srv, 10, filename="e")
    assert patch(srv, url, 0, b"12345")[0] == 204
    time.sleep(0.7)
    assert srv.request("HEAD", url, headers=auth(TUS))[0] == 404
    assert os.listdir(srv.home("alice")) == []


def test_a_head_after_a_failed_finish_never_says_complete(web):
    """tus-js-client #557: a failed last PATCH must not look done to HEAD."""
    url = create(web, 6, filename="d")
    assert patch(web, url, 0, b"abc")[0] == 204
    (web.home("alice") / "d").mkdir()  # the name is taken by a directory meanwhile
    status, _, body = patch(web, url, 3, b"def")
    assert status == 409 and b"is_a_directory" in body
    offset = head_offset(web, url)
    assert offset < 6  # what the storage could keep, and never all of it: the client sends the rest again
    (web.home("alice") / "d").rmdir()
    assert patch(web, url, offset, b"abcdef"[offset:])[0] == 204
    assert (web.home("alice") / "d").read_bytes() == b"abcdef"
    assert head_offset(web, url) == 6


def test_all_bytes_held_but_never_finished_is_not_complete(http_server):
    """A server that stopped between the last byte and the rename (a crash
    mid-finish): after the restart every byte is in the partial, yet HEAD
    says length - 1, and the last byte again finishes the upload."""
    from sockftp.storage.local import LocalStorage

    first = http_server()
    first.add_user("alice")
    url = create(first, 6, filename="c")
    assert patch(first, url, 0, b"abc")[0] == 204
    first.main.stop(0)
    storage = LocalStorage(first.root)
    upload = storage.open_upload(("users", "alice", "c"), 6, 3)
    upload.write(b"def")
    upload.keep()
    storage.close()
    second = http_server(root=first.root)
    assert head_offset(second, url) == 5
    assert patch(second, url, 5, b"f")[0] == 204
    assert (second.home("alice") / "c").read_bytes() == b"abcdef"
