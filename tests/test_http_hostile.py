"""Hostile HTTP on the door: request smuggling, oversize and slow heads,
path traversal, names that are not UTF-8, guessed passwords, and TLS."""

from __future__ import annotations

import os
import socket
import ssl
import time

import pytest
import trustme
from http_support import basic, http_server_fixture, read_response  # noqa: F401 - the fixture

from sockftp.http.auth import is_loopback
from sockftp.protocol.errors import Banned

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
def web(http_server):
    srv = http_server()
    srv.add_user("alice")
    (srv.home("alice")).mkdir(parents=True, exist_ok=True)
    return srv


def exchange(web, raw: bytes, timeout: float = 5.0) -> bytes:
    sock = web.raw(timeout)
    sock.sendall(raw)
    return read_response(sock)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


AUTH = f"Authorization: {basic('alice')}\r\n".encode()


def test_content_length_with_transfer_encoding_is_refused_and_closed(web):
    smuggled = b"GET /files/secret HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    raw = (
        b"PUT /files/a HTTP/1.1\r\nHost: x\r\n"
        + AUTH
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + body
    )
    response = exchange(web, raw)
    assert status_of(response) == 400
    assert response.count(b"HTTP/1.1") == 1  # the smuggled request was never answered: the connection closed
    assert not (web.home("alice") / "a").exists()


def test_two_different_content_lengths_are_refused(web):
    raw = b"PUT /files/a HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc"
    response = exchange(web, raw)
    assert status_of(response) == 400
    assert response.count(b"HTTP/1.1") == 1
    assert not (web.home("alice") / "a").exists()


def test_an_oversize_head_gets_431_and_a_close(web):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    response = exchange(web, raw)
    assert status_of(response) == 431


def test_slowloris_is_cut_off_after_the_header_timeout(http_server):
    srv = http_server(header_timeout=0.5)
    sock = srv.raw(timeout=5)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    started = time.monotonic()
    try:
        for _ in range(20):  # a header line every 0.2 s: never idle, never done
            sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.2)
    except OSError:
        pass
    response = read_response(sock)
    assert time.monotonic() - started < 4.0
    assert response == b"" or status_of(response) == 408
    # and others were served meanwhile, and after
    assert srv.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        b"/files/../../etc/passwd",
        b"/files/%2e%2e/%2e%2e/etc/passwd",
        b"/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        b"/files/a/..%2f..%2f..%2fetc/passwd",
        b"/files/.sockftp-part-x",
    ],
)
def test_path_traversal_is_refused(web, target):
    (web.root / "secret").write_bytes(b"do not serve")
    response = exchange(web, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH + b"\r\n")
    assert status_of(response) == 400
    assert b"do not serve" not in response and b"root:x:0" not in response


def test_another_users_home_is_out_of_reach(web):
    web.add_user("bob")
    bob = web.home("bob")
    bob.mkdir(parents=True, exist_ok=True)
    (bob / "b.txt").write_bytes(b"bob's")
    response = exchange(web, b"GET /files/../bob/b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH + b"\r\n")
    assert status_of(response) == 400 and b"bob's" not in response


def test_a_path_that_is_not_utf8_is_a_clear_400(web):
    response = exchange(web, b"GET /files/%ff%fe.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH + b"\r\n")
    assert status_of(response) == 400 and b"UTF-8" in response


def test_a_file_named_in_bytes_that_are_not_utf8_is_listed_without_a_crash(web):
    os.makedirs(web.home("alice"), exist_ok=True)
    with open(os.path.join(os.fsencode(web.home("alice")), b"bad\xffname"), "wb") as file:
        file.write(b"x")
    status, body = web.json("GET", "/files/", user="alice")
    assert status == 200 and len(body["entries"]) == 1


def test_wrong_passwords_count_toward_a_ban(http_server):
    srv = http_server(ban_failures=3, ban_time=60)
    srv.add_user("alice")
    for _ in range(3):
        status, _, _ = srv.request("GET", "/files/", user="alice", password="wrong")
        assert status in (401, 403)
    # banned now: the right password is refused, and new connections are too
    status, _, _ = srv.request("GET", "/files/", user="alice")
    assert status == 403
    with pytest.raises(Banned):
        srv.main.authenticator.bans.check("127.0.0.1")
    response = exchange(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # refused at connect, like every door
    assert status_of(response) == 403


def test_a_bad_bearer_token_is_401_and_a_good_one_works(web):
    status, _, _ = web.request("GET", "/files/", headers={"Authorization": "Bearer sockftp_nope"})
    assert status == 401
    from sockftp.client import Client

    with Client("127.0.0.1", web.main.port, user="alice", password="secret", timeout=10, keep_token=True) as client:
        client.pwd()
        token = client.token
    assert token
    status, _, _ = web.request("GET", "/files/", headers={"Authorization": f"Bearer {token}"})
    assert status == 200


def test_basic_credentials_are_refused_in_clear_off_loopback():
    # The door's rule; a test server may only listen on 127.0.0.1, so the
    # address check itself is what can be tested here.
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("192.168.1.2") and not is_loopback("2001:db8::1") and not is_loopback("garbage")


def test_pipelined_requests_are_answered_in_order(web):
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3
    raw += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = exchange(web, raw)
    assert response.count(b"HTTP/1.1 200") == 4


def test_a_refused_upload_with_expect_100_sends_no_continue(http_server):
    srv = http_server()
    srv.add_user("alice", quota_bytes=10)
    sock = srv.raw()
    sock.sendall(
        b"PUT /files/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n" + AUTH + b"\r\n"
    )
    started = time.monotonic()
    response = read_response(sock)
    assert b"100 Continue" not in response and status_of(response) == 413
    # and the connection closes at once: the body may or may not follow, so it cannot go on
    assert time.monotonic() - started < 2.0


def test_the_door_serves_over_tls_and_basic_works_there(http_server, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = http_server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    srv.add_user("alice")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as plain:
        with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            sock.sendall(
                b"PUT /files/t HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n" + AUTH + b"\r\nhi"
            )
            assert status_of(read_response(sock)) == 201
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as plain:
        with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            sock.sendall(b"GET /files/t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + AUTH + b"\r\n")
            response = read_response(sock)
    assert status_of(response) == 200 and response.endswith(b"\r\n\r\nhi")


def test_a_body_that_stalls_is_cut_after_the_idle_timeout_and_kept_resumable(http_server):
    srv = http_server(idle_timeout=0.5)
    srv.add_user("alice")
    sock = srv.raw(timeout=5)
    sock.sendall(b"PUT /files/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n" + AUTH + b"\r\n" + b"x" * 100)
    started = time.monotonic()
    response = read_response(sock)
    assert time.monotonic() - started < 3.0
    assert b"201" not in response and not (srv.home("alice") / "slow").exists()
    assert srv.main.storage.partial_size(("users", "alice", "slow"), 1000) == 100
    assert srv.request("GET", "/healthz")[0] == 200


def test_a_stop_ends_kept_alive_connections_at_once(http_server):
    srv = http_server()
    conn = srv.conn()
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    started = time.monotonic()
    srv.main.stop(5)  # a grace of 5 s, which an idle connection must not use up
    assert time.monotonic() - started < 2.5


def test_a_counted_body_is_read_around_h11_and_h11_still_ends_the_message():
    """The upload fast path (HttpConnection.read_counted_body) leans on
    h11's ContentLengthReader: if a new h11 changes it, this says so."""
    import h11

    from sockftp.http.conn import Exchange, HttpConnection

    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = HttpConnection(ours, idle_timeout=5, header_timeout=5)
        theirs.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123")
        request = conn.read_request_head()
        assert isinstance(request, h11.Request)
        exchange = Exchange(conn, request)
        chunks = exchange.body()
        assert next(chunks) == b"0123"  # what h11 had buffered with the head, through h11
        theirs.sendall(b"456789GET / HTTP/1.1\r\n")  # the rest, and the start of the next request
        assert next(chunks) == b"456789"  # read around h11, never past the body
        assert list(chunks) == []
        assert conn.h11.their_state is h11.DONE
        assert conn.read_counted_body() is None  # nothing counted is left
        # Read by this module, not by h11 (which would hold the next request's bytes now):
        assert conn.h11.trailing_data[0] == b""
        ours.settimeout(5)
        assert ours.recv(100) == b"GET / HTTP/1.1\r\n"


def test_a_change_another_sites_page_makes_with_cached_basic_credentials_is_refused(web):
    # A browser that has Basic credentials for this server sends them with
    # any form another site's page posts here; the UI's cookie logins have
    # a CSRF token, Basic has only what the browser says of the page.
    def mkdir(name: str, extra: bytes) -> bytes:
        head = f"POST /files/{name}/?op=mkdir HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
        return exchange(web, head.encode() + AUTH + extra + b"\r\n")

    forged = [
        b"Origin: https://evil.example\r\n",
        b"Origin: null\r\n",
        b"Sec-Fetch-Site: cross-site\r\nOrigin: https://evil.example\r\n",
        b"Sec-Fetch-Site: same-site\r\n",
    ]
    for number, extra in enumerate(forged):
        response = mkdir(f"forged{number}", extra)
        assert status_of(response) == 403 and b"cross_site" in response, response
        assert not (web.home("alice") / f"forged{number}").exists()
    # The server's own origin, a browser's typed-in request, and scripts (no header) pass.
    for number, extra in enumerate(
        [b"Origin: http://x\r\n", b"Sec-Fetch-Site: same-origin\r\n", b"Sec-Fetch-Site: none\r\n", b""]
    ):
        assert status_of(mkdir(f"fine{number}", extra)) in (200, 201), extra
        assert (web.home("alice") / f"fine{number}").is_dir()
    # Reading is not a change: a cross-site GET is answered (the browser keeps the answer from the page).
    response = exchange(
        web,
        b"GET /files/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://evil.example\r\n" + AUTH + b"\r\n",
    )
    assert status_of(response) == 200
