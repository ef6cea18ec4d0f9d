"""The HTTP door's file API (docs/HTTP.md): GET/HEAD with ranges, PUT,
listings, mkdir, move, delete, the quota, with curl and http.client on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from http_support import http_server_fixture  # noqa: F401 - the fixture

from sockftp.protocol import checksum as checksums

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
def web(http_server):
    srv = http_server()
    srv.add_user("alice")
    return srv


def test_healthz_needs_no_login(web):
    status, body = web.json("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"


def test_files_need_a_login(web):
    status, headers, _ = web.request("GET", "/files/")
    assert status == 401
    assert headers["www-authenticate"].startswith("Basic")


def test_put_then_get_round_trip_with_headers(web):
    data = os.urandom(200_000)
    status, body = web.json("PUT", "/files/a.bin", body=data, user="alice")
    assert status == 201
    assert body["checksum"] == checksums.of_bytes(data)
    assert (web.home("alice") / "a.bin").read_bytes() == data
    status, headers, got = web.request("GET", "/files/a.bin", user="alice")
    assert status == 200 and got == data
    assert headers["x-checksum"] == checksums.of_bytes(data)
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert headers["accept-ranges"] == "bytes"


def test_a_put_replacing_a_file_says_200(web):
    assert web.request("PUT", "/files/a", body=b"one", user="alice")[0] == 201
    assert web.request("PUT", "/files/a", body=b"two", user="alice")[0] == 200
    assert (web.home("alice") / "a").read_bytes() == b"two"


def test_listing_mkdir_move_delete(web):
    assert web.json("POST", "/files/d?op=mkdir", user="alice")[0] == 201
    web.request("PUT", "/files/d/f.txt", body=b"hello", user="alice")
    status, body = web.json("GET", "/files/d/", headers={"Accept": "application/json"}, user="alice")
    assert status == 200 and body["path"] == "/d"
    assert [(e["name"], e["size"]) for e in body["entries"]] == [("f.txt", 5)]
    status, body = web.json("POST", "/files/d/f.txt?op=move&to=/g.txt", user="alice")
    assert status == 200 and body == {"source": "/d/f.txt", "target": "/g.txt"}
    assert web.request("DELETE", "/files/d", user="alice")[0] == 204
    assert web.request("DELETE", "/files/g.txt", user="alice")[0] == 204
    assert sorted(os.listdir(web.home("alice"))) == []


def test_a_big_listing_streams_in_chunks(web):
    home = web.home("alice")
    web.request("POST", "/files/big?op=mkdir", user="alice")
    for i in range(600):
        (home / "big" / f"f{i:05d}").write_bytes(b"")
    sock = web.raw()
    from http_support import basic, read_response

    sock.sendall(
        b"GET /files/big/ HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n"
        + f"Authorization: {basic('alice')}\r\n\r\n".encode()
    )
    raw = read_response(sock)
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    status, body = web.json("GET", "/files/big/", user="alice")
    assert len(body["entries"]) == 600


def test_quota(http_server):
    srv = http_server()
    srv.add_user("alice", quota_bytes=1000)
    status, body = srv.json("GET", "/api/quota", user="alice")
    assert status == 200 and body["quota_bytes"] == 1000 and body["used_bytes"] == 0
    status, body = srv.json("PUT", "/files/big", body=b"x" * 2000, user="alice")
    assert status == 413 and body["error"] == "quota_exceeded"
    assert not os.listdir(srv.home("alice"))


def test_a_wrong_checksum_stores_nothing(web):
    status, body = web.json(
        "PUT", "/files/a", body=b"abc", headers={"X-Checksum": checksums.of_bytes(b"abd")}, user="alice"
    )
    assert status == 422 and body["error"] == "checksum_mismatch"
    assert not os.listdir(web.home("alice"))
    status, _ = web.json(
        "PUT", "/files/a", body=b"abc", headers={"X-Checksum": checksums.of_bytes(b"abc")}, user="alice"
    )
    assert status == 201


def test_errors_are_json(web):
    status, body = web.json("GET", "/files/nope", user="alice")
    assert status == 404 and body["error"] == "not_found"
    status, body = web.json("PATCH", "/files/nope", user="alice")
    assert status == 405


def test_curl_upload_download_range_and_resume(web, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    local = tmp_path / "up.bin"
    local.write_bytes(data)
    web.curl("-T", str(local), f"{web.base}/files/up.bin")  # with Expect: 100-continue
    assert (web.home("alice") / "up.bin").read_bytes() == data
    chunked = web.curl("-H", "Transfer-Encoding: chunked", "-T", str(local), f"{web.base}/files/chunked.bin")
    assert json.loads(chunked.stdout)["checksum"] == checksums.of_bytes(data)
    got = web.curl("-r", "100-199", f"{web.base}/files/up.bin").stdout
    assert got == data[100:200]
    partial = tmp_path / "down.bin"
    partial.write_bytes(data[:1_000_000])
    web.curl("-C", "-", "-o", str(partial), f"{web.base}/files/up.bin")
    assert partial.read_bytes() == data
    past = web.curl("-r", f"{len(data)}-", "-o", "/dev/null", "-w", "%{http_code}", f"{web.base}/files/up.bin")
    assert past.stdout == b"416"


def test_if_range_with_a_stale_etag_sends_everything(web):
    web.request("PUT", "/files/a", body=b"0123456789", user="alice")
    status, headers, _ = web.request("HEAD", "/files/a", user="alice")
    etag = headers["etag"]
    status, _, body = web.request("GET", "/files/a", headers={"Range": "bytes=2-4", "If-Range": etag}, user="alice")
    assert status == 206 and body == b"234"
    status, _, body = web.request(
        "GET", "/files/a", headers={"Range": "bytes=2-4", "If-Range": '"stale"'}, user="alice"
    )
    assert status == 200 and body == b"0123456789"
    status, headers, body = web.request("GET", "/files/a", headers={"Range": "bytes=-3"}, user="alice")
    assert status == 206 and body == b"789" and headers["content-range"] == "bytes 7-9/10"


def test_a_hostile_name_downloads_as_an_attachment(web):
    name = '<img src=x onerror=alert(1)>"q.txt'
    from urllib.parse import quote

    assert web.request("PUT", "/files/" + quote(name), body=b"x", user="alice")[0] == 201
    status, headers, _ = web.request("GET", "/files/" + quote(name), user="alice")
    assert status == 200
    disposition = headers["content-disposition"]
    assert disposition.startswith('attachment; filename="<img src=x onerror=alert(1)>_q.txt"')
    assert "filename*=UTF-8''%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E%22q.txt" in disposition


def test_a_big_download_to_a_slow_reader_arrives_whole(web):
    """The socket's buffer fills while the client is not reading: the
    server must wait for room, not give up at the first full buffer."""
    data = os.urandom(8 * 1024 * 1024)
    (web.home("alice")).mkdir(parents=True, exist_ok=True)
    (web.home("alice") / "big.bin").write_bytes(data)
    from http_support import basic, read_response

    sock = web.raw(timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    request = f"GET /files/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {basic('alice')}\r\n\r\n"
    sock.sendall(request.encode())
    time.sleep(0.5)
    raw = read_response(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == data


def test_the_audit_log_sees_http_like_every_door(web, audit_file):
    web.request("PUT", "/files/a.txt", body=b"abc", user="alice")
    web.request("GET", "/files/a.txt", user="alice")
    web.request("POST", "/files/a.txt?op=move&to=/b.txt", user="alice")
    web.request("DELETE", "/files/b.txt", user="alice")
    web.request("GET", "/files/", user="alice", password="wrong")
    web.request("DELETE", "/files/nope", user="alice")
    from conftest import wait_until

    wait_until(lambda: "result=not_found" in audit_file.read_text(), what="the audit lines")
    text = audit_file.read_text()
    assert "event=login user=alice ip=127.0.0.1 method=password" in text
    assert "event=put user=alice ip=127.0.0.1 path='/a.txt' bytes=3 result=ok" in text
    assert "event=get user=alice ip=127.0.0.1 path='/a.txt' bytes=3 result=ok" in text
    assert "event=mv user=alice ip=127.0.0.1 path='/a.txt' target='/b.txt' result=ok" in text
    assert "event=rm user=alice ip=127.0.0.1 path='/b.txt' result=ok" in text
    assert "event=login-failed user=alice ip=127.0.0.1 method=password result=auth_failed" in text
    assert "event=rm user=alice ip=127.0.0.1 path='/nope' result=not_found" in text


def test_a_session_bandwidth_limit_paces_http_downloads(http_server):
    srv = http_server(session_rate=1024 * 1024)
    srv.add_user("alice")
    srv.home("alice").mkdir(parents=True, exist_ok=True)
    (srv.home("alice") / "f").write_bytes(b"x" * (768 * 1024))
    srv.request("GET", "/healthz")
    started = time.monotonic()
    status, _, body = srv.request("GET", "/files/f", user="alice")
    assert status == 200 and len(body) == 768 * 1024
    assert time.monotonic() - started >= 0.4  # 768 KiB at 1 MiB/s, less the first burst
