"""TLS: verified connections, refusals that say why, and no hangs either way.

A throwaway CA from ``trustme`` issues the server's certificate for
127.0.0.1, ::1 and localhost. Servers are real, on loopback, started with
``server(tls_cert=..., tls_key=...)``; clients are the library's.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time

import pytest
import trustme
from conftest import assert_closed, have_ipv6_loopback, recv_frame, send_frame, wait_until

import sockftp
from sockftp.client import Client
from sockftp.protocol import tls
from sockftp.protocol.errors import ConnectionLost, ShuttingDown, TlsRequired
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA file, and the server's certificate and key files (one for our
    addresses, one for another host)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    files = {"ca": directory / "ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for name, hosts in (("server", ("127.0.0.1", "::1", "localhost")), ("other", ("files.example.org",))):
        cert = ca.issue_cert(*hosts)
        files[f"{name}_cert"] = directory / f"{name}.crt"
        files[f"{name}_key"] = directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(files[f"{name}_cert"]))
        cert.private_key_pem.write_to_path(str(files[f"{name}_key"]))
    return {k: str(v) for k, v in files.items()}


@pytest.fixture
def tls_server(server, pki):
    """Factory: a TLS server with our certificate (plus any overrides)."""

    def start(**overrides):
        overrides.setdefault("tls_cert", pki["server_cert"])
        overrides.setdefault("tls_key", pki["server_key"])
        return server(**overrides)

    return start


def tls_client(srv, pki, **kwargs) -> Client:
    kwargs.setdefault("tls", True)
    kwargs.setdefault("tls_ca", pki["ca"])
    return srv.client(**kwargs)


def tls_raw(srv, pki) -> ssl.SSLSocket:
    """A raw socket wrapped in verified TLS, for speaking frames by hand."""
    return tls.client_context(pki["ca"]).wrap_socket(srv.raw(), server_hostname=srv.host)


# --- verified connections ------------------------------------------------------------------------


def test_put_and_get_round_trip_over_verified_tls(tls_server, pki, files, tmp_path):
    srv = tls_server()
    data = os.urandom(3 * 1024 * 1024 + 17)  # past the resume threshold: the streamed path
    small = b"small file, sent with its header"
    with tls_client(srv, pki) as c:
        assert c.wire.tls and c.wire.sock.version() in ("TLSv1.2", "TLSv1.3")
        c.put(files("big.bin", data), "big.bin")
        c.put(files("small.txt", small), "small.txt")
        c.get("big.bin", tmp_path / "big.copy")
        c.get("small.txt", tmp_path / "small.copy")
        assert [e.name for e in c.ls()] == ["big.bin", "small.txt"]
    assert (srv.anon_dir / "big.bin").read_bytes() == data
    assert (tmp_path / "big.copy").read_bytes() == data
    assert (tmp_path / "small.copy").read_bytes() == small


def test_downloads_over_tls_never_use_sendfile_even_when_asked(tls_server, pki, files, tmp_path):
    srv = tls_server(sendfile=True)
    data = os.urandom(2 * 1024 * 1024)
    (srv.anon_dir / "f.bin").write_bytes(data)
    with tls_client(srv, pki) as c:
        c.get("f.bin", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == data


def test_localhost_name_verifies_too(tls_server, pki):
    srv = tls_server()
    with Client("localhost", srv.port, tls=True, tls_ca=pki["ca"], timeout=5) as c:
        c.ping()


@pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback")
def test_tls_over_ipv6(tls_server, pki):
    srv = tls_server(host="::1")
    with tls_client(srv, pki) as c:
        c.ping()


# --- what the client refuses -----------------------------------------------------------------


def test_an_untrusted_certificate_is_refused_unless_insecure_is_asked_for(tls_server, pki):
    srv = tls_server()
    with pytest.raises(ConnectionLost) as refused:
        srv.client(tls=True)  # the system's CAs do not know ours
    message = str(refused.value)
    assert "certificate" in message and "not trusted" in message
    assert "--tls-ca" in message and "--insecure" in message
    with srv.client(tls=True, insecure=True) as c:
        c.ping()  # encrypted, unauthenticated: only when asked for
    with tls_client(srv, pki) as c:
        c.ping()  # the server is unharmed by the refused handshake


def test_a_certificate_for_another_host_is_refused(tls_server, pki):
    srv = tls_server(tls_cert=pki["other_cert"], tls_key=pki["other_key"])
    with pytest.raises(ConnectionLost) as refused:
        tls_client(srv, pki)
    assert "another host" in str(refused.value) and "127.0.0.1" in str(refused.value)
    with srv.client(tls=True, insecure=True) as c:
        c.ping()


def test_an_unreadable_ca_file_is_a_local_error(tls_server, tmp_path):
    srv = tls_server()
    with pytest.raises(sockftp.SockftpError) as failed:
        srv.client(tls=True, tls_ca=str(tmp_path / "missing.pem"))
    assert failed.value.code == "local_error" and "missing.pem" in str(failed.value)


# --- the wrong protocol on either side: a clear error, never a hang --------------------------


def test_a_plaintext_client_of_a_tls_server_gets_tls_required_at_once(tls_server, pki):
    srv = tls_server()
    started = time.monotonic()
    with pytest.raises(TlsRequired) as refused:
        srv.client()
    assert time.monotonic() - started < 2
    assert "--tls" in str(refused.value)
    # By hand: the answer to the first frame is a plaintext tls_required frame, then the end.
    with srv.raw() as raw:
        send_frame(raw, {"cmd": "hello", "versions": [1]})
        reply = recv_frame(raw)
        assert reply["ok"] is False and reply["error"] == "tls_required"
        assert_closed(raw)
    with tls_client(srv, pki) as c:
        c.ping()


def test_a_tls_client_of_a_plaintext_server_gets_connection_lost_at_once(server, pki, caplog):
    caplog.set_level(logging.INFO, logger="sockftp")
    srv = server()
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as refused:
        tls_client(srv, pki)
    assert time.monotonic() - started < 2
    assert "does not speak TLS" in str(refused.value)
    wait_until(lambda: "client tried TLS on a plaintext port" in caplog.text, what="the server's log line")
    with srv.client() as c:
        c.ping()


def test_a_tls_client_refused_before_tls_starts_is_told_it_may_have_been_refused(tls_server, pki):
    # too_many_sessions is answered by the accept loop, which never does TLS.
    srv = tls_server(max_sessions=1)
    with tls_client(srv, pki) as first:
        with pytest.raises(ConnectionLost) as refused:
            tls_client(srv, pki)
        assert "refused" in str(refused.value) and "too many sessions" in str(refused.value)
        first.ping()


def test_a_client_gives_up_on_a_server_that_never_answers_the_handshake(pki):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (in the kernel), never answers
        started = time.monotonic()
        with pytest.raises(ConnectionLost) as refused:
            Client("127.0.0.1", silent.getsockname()[1], tls=True, tls_ca=pki["ca"], timeout=0.5)
        assert time.monotonic() - started < 3
    assert "does not speak TLS" in str(refused.value)


# --- the server's handshake: in the session thread, under the header timeout -----------------


def test_a_silent_connection_is_dropped_after_the_header_timeout_while_others_are_served(tls_server, pki):
    srv = tls_server(header_timeout=1.5)
    silent = srv.raw()
    started = time.monotonic()
    for _ in range(3):
        with tls_client(srv, pki) as c:  # not held up by the silent one
            c.ping()
    assert time.monotonic() - started < 1.0
    assert_closed(silent, timeout=5)
    assert 1.4 < time.monotonic() - started < 4


def test_a_handshake_trickled_byte_by_byte_is_cut_at_the_header_timeout(tls_server, pki):
    srv = tls_server(header_timeout=1.0)
    hello = _client_hello(srv.host, srv.port)
    trickler = srv.raw()
    started = time.monotonic()
    closed = threading.Event()

    def trickle():
        try:
            for byte in hello:
                trickler.send(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            closed.set()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    with tls_client(srv, pki) as c:
        c.ping()  # while the trickler holds its own thread
    wait_until(lambda: srv.session_count == 0, timeout=5, what="the trickler's session to end")
    assert 0.9 < time.monotonic() - started < 3
    trickler.close()
    thread.join(5)


@pytest.mark.parametrize(
    "garbage",
    [b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x01\x02\x00" + os.urandom(512)],
    ids=["short-record", "junk-record"],
)
def test_a_broken_handshake_ends_that_session_quietly(tls_server, pki, garbage, caplog):
    caplog.set_level(logging.INFO, logger="sockftp")
    srv = tls_server()
    with srv.raw() as raw:
        raw.sendall(garbage)
        read_until_closed(raw)  # perhaps a TLS alert first
    wait_until(lambda: "TLS handshake failed" in caplog.text, what="one log line")
    assert "Traceback" not in caplog.text
    with tls_client(srv, pki) as c:
        c.ping()


def test_a_client_that_stops_reading_a_download_is_cut_after_the_idle_timeout(tls_server, pki):
    srv = tls_server(idle_timeout=0.5)
    (srv.anon_dir / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    sock = tls_raw(srv, pki)
    send_frame(sock, {"cmd": "get", "path": "big.bin"})
    # ...and never read: the server's TLS writes time out.
    srv.wait_idle(timeout=10)
    sock.close()
    with tls_client(srv, pki) as c:
        c.ping()


def test_stopping_the_server_tells_idle_tls_sessions_over_tls(tls_server, pki):
    srv = tls_server()
    c = tls_client(srv, pki)
    c.ping()
    stopper = threading.Thread(target=srv.stop, kwargs={"grace": 2})
    stopper.start()
    wait_until(lambda: srv.server.stopping.is_set())
    srv.wait_idle(timeout=5)  # the idle session ended at once, not after the grace
    with pytest.raises(ShuttingDown):
        c.ping()  # the goodbye frame was readable: it went out encrypted
    stopper.join(5)


# --- server settings -------------------------------------------------------------------------


def test_a_certificate_without_a_key_or_a_key_without_one_is_refused(tmp_path, pki):
    for half in ({"tls_cert": pki["server_cert"]}, {"tls_key": pki["server_key"]}):
        with pytest.raises(ValueError, match="both"):
            SockftpServer(ServerConfig(root=str(tmp_path / "root"), port=0, **half))


def test_bad_certificate_files_are_clear_startup_errors(tmp_path, pki):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = [
        ({"tls_cert": str(tmp_path / "nope.crt"), "tls_key": pki["server_key"]}, "nope.crt"),
        ({"tls_cert": str(not_pem), "tls_key": pki["server_key"]}, "not.pem"),
        ({"tls_cert": pki["server_cert"], "tls_key": pki["other_key"]}, "does not belong"),
    ]
    for settings, expected in cases:
        with pytest.raises(tls.TlsSetupError, match=expected):
            SockftpServer(ServerConfig(root=str(tmp_path / "root"), port=0, **settings))


def test_looks_like_tls_tells_a_client_hello_from_a_frame():
    assert tls.looks_like_tls(b"\x16\x03")
    assert tls.looks_like_tls(b"\x16")  # only one byte so far
    assert not tls.looks_like_tls(b"\x16\x00")  # a 22-byte frame
    assert not tls.looks_like_tls(b"\x0e\x00")  # {"cmd":"ping"}
    assert not tls.looks_like_tls(b"")


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(deadline - time.monotonic())
        try:
            if not sock.recv(65536):
                return
        except ConnectionResetError:
            return
    raise AssertionError("the server did not close")


def _client_hello(host: str, port: int) -> bytes:
    """The first flight of a real TLS client, captured from a socket pair."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        context = tls.client_context(insecure=True)
        wrapped = context.wrap_socket(ours, server_hostname=host, do_handshake_on_connect=False)
        wrapped.setblocking(False)
        with pytest.raises(ssl.SSLWantReadError):
            wrapped.do_handshake()
        theirs.settimeout(2)
        hello = theirs.recv(65536)
        wrapped.close()
    assert tls.looks_like_tls(hello[:2])
    return hello
