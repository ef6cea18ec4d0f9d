"""The PROXY protocol v2: the sans-IO decoder (protocol/proxy.py), and the
doors that read it (server/proxied.py): split headers, LOCAL health checks,
refusals, the header timeout, and every per-address feature going by the
real client's address."""

from __future__ import annotations

import ftplib
import logging
import socket
import struct
import time

import pytest
from cluster_support import Forwarder
from conftest import assert_closed, encode_frame, recv_frame
from ftp_support import ftp_server_fixture  # noqa: F401 - the ftp_server fixture
from hypothesis import given, settings
from hypothesis import strategies as st
from test_audit import PASSWORD, audit_lines, fields

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.client import Client
from sockftp.protocol import proxy
from sockftp.protocol.errors import AuthFailed, Banned, TooManySessions
from sockftp.protocol.proxy import SIGNATURE, ProxyDecoder, ProxyError
from sockftp.server.config import ConfigError, ServerConfig, load_config, users_db

REAL = ("203.0.113.7", 40001)

# -- the decoder ----------------------------------------------------------------------


def test_an_ipv4_header_gives_both_addresses_and_its_size():
    data = proxy.encode(REAL, ("10.0.0.1", 7000))
    header = proxy.parse(data + b"after")
    assert (header.local, header.source, header.destination, header.size) == (False, REAL, ("10.0.0.1", 7000), 28)


def test_an_ipv6_header_and_an_ipv4_client_mapped_into_ipv6():
    header = proxy.parse(proxy.encode(("2001:db8::5", 1), ("2001:db8::1", 2)))
    assert header.source == ("2001:db8::5", 1)
    mapped = proxy.parse(proxy.encode(("::ffff:198.51.100.3", 9), ("::1", 2)))
    assert mapped.source == ("198.51.100.3", 9)


def test_local_has_no_addresses():
    header = proxy.parse(proxy.encode(None))
    assert header.local and header.source is None


def test_a_header_split_into_single_bytes_decodes_the_same_and_never_reads_past_itself():
    data = proxy.encode(REAL, ("10.0.0.1", 7000))
    decoder = ProxyDecoder()
    result = None
    while decoder.wanted():
        assert decoder.wanted() <= len(data)
        result = decoder.feed(data[:1])
        data = data[1:]
    assert data == b"" and result.source == REAL


def test_tlvs_after_the_addresses_are_skipped():
    base = proxy.encode(REAL, ("10.0.0.1", 7000))
    tlv = b"\x05\x00\x03abc"  # PP2_TYPE_UNIQUE_ID
    data = base[:14] + struct.pack("!H", 12 + len(tlv)) + base[16:] + tlv
    header = proxy.parse(data)
    assert header.source == REAL and header.size == len(data)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "version 1"),
        (b"\x10\x00\x00\x00{", "no PROXY protocol header"),
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (SIGNATURE + b"\x11\x11\x00\x0c", "version 1 is not supported"),
        (SIGNATURE + b"\x22\x11\x00\x0c", "unknown PROXY protocol command"),
        (SIGNATURE + b"\x21\x12\x00\x0c", "not TCP"),  # UDP over IPv4
        (SIGNATURE + b"\x21\x31\x00\xd8", "not TCP"),  # a UNIX socket
        (SIGNATURE + b"\x21\x11\xff\xff", "over the limit"),
        (SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "too short"),
    ],
)
def test_what_is_refused_is_refused_as_soon_as_it_shows(data, why):
    with pytest.raises(ProxyError, match=why):
        ProxyDecoder().feed(data + b"\x00" * 64)
    # Byte by byte: the refusal must come without waiting for more bytes
    # than the header would hold, so garbage never waits for a timeout.
    decoder = ProxyDecoder()
    with pytest.raises(ProxyError):
        for i in range(len(data)):
            decoder.feed(data[i : i + 1])
        decoder.feed(b"\x00" * decoder.wanted())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.lists(st.integers(1, 40), max_size=10))
def test_any_bytes_split_anyhow_give_a_header_none_or_a_proxy_error(data, cuts):
    whole = _decide(data, [len(data)])
    assert _decide(data, cuts) == whole


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str)),
    st.integers(0, 65535),
    st.lists(st.integers(1, 40), max_size=10),
)
def test_any_header_round_trips_however_split(host, port, cuts):
    destination = ("0.0.0.0", 1) if ":" not in host else ("::", 1)
    data = proxy.encode((host, port), destination) + b"rest"
    kind, value = _decide(data, cuts)
    assert kind == "header" and value.size == len(data) - 4
    assert value.source[1] == port


def _decide(data: bytes, cuts: list[int]):
    decoder = ProxyDecoder()
    position = 0
    try:
        for cut in [*cuts, len(data)]:
            header = decoder.feed(data[position : position + cut])
            position += cut
            if header is not None:
                return "header", header
            if position >= len(data):
                return "more", decoder.wanted()
    except ProxyError:
        return "error", None
    return "more", decoder.wanted()


# -- settings -------------------------------------------------------------------------


def test_the_protocol_needs_trusted_balancers(tmp_path):
    with pytest.raises(ConfigError, match="proxy_trusted is empty"):
        ServerConfig(root=str(tmp_path), proxy_protocol=True)
    with pytest.raises(ConfigError, match="--proxy-trusted: not an address"):
        load_config(None, {"root": str(tmp_path), "proxy_trusted": "10.0.0.0/8,nonsense"})
    config = load_config(None, {"root": str(tmp_path), "proxy_protocol": True, "proxy_trusted": "10.1.2.3/8, ::1"})
    assert config.proxy_trusted == ("10.0.0.0/8", "::1/128")


def test_drain_grace_is_the_file_key_an_operator_looks_for(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('drain_grace = 12\nproxy_protocol = true\nproxy_trusted = ["127.0.0.1"]\n')
    config = load_config(str(path), {"root": str(tmp_path)})
    assert config.shutdown_grace == 12.0 and config.proxy_trusted == ("127.0.0.1/32",)


# -- the native door --------------------------------------------------------------------


@pytest.fixture
def proxied(server):
    """A server behind a balancer at 127.0.0.1, where alice may log in."""

    def start(**overrides):
        settings = {"proxy_protocol": True, "proxy_trusted": ("127.0.0.1/32",), "anonymous": False}
        srv = server(**{**settings, **overrides})
        store = SqliteUserStore(users_db(str(srv.root)))
        store.add(Account("alice", hash_password(PASSWORD)))
        store.close()
        return srv

    return start


def test_a_header_split_across_reads_is_waited_for_and_the_session_goes_on(proxied, audit_file):
    srv = proxied()
    sock = srv.raw()
    data = proxy.encode(REAL, ("127.0.0.1", srv.port))
    for piece in (data[:5], data[5:15], data[15:]):
        sock.sendall(piece)
        time.sleep(0.05)
    sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": PASSWORD}))
    assert recv_frame(sock)["ok"] is True
    [login] = [fields(line) for line in audit_lines(audit_file)]
    assert (login["event"], login["ip"]) == ("login", REAL[0])


def test_a_connection_without_the_header_is_closed_unanswered(proxied):
    srv = proxied()
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "hello", "versions": [1]}))
    assert_closed(sock)
    sock = srv.raw()
    sock.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 7000\r\n")
    assert_closed(sock)
    sock = srv.raw()
    sock.sendall(SIGNATURE + b"\x21\x11\x7f\xff")  # oversize
    assert_closed(sock)
    srv.wait_idle()


def test_a_silent_or_slow_balancer_is_cut_at_the_header_timeout(proxied):
    srv = proxied(header_timeout=0.3)
    sock = srv.raw()
    sock.sendall(proxy.encode(REAL, ("127.0.0.1", 1))[:10])
    started = time.monotonic()
    assert_closed(sock)
    assert time.monotonic() - started < 3


def test_a_header_from_an_untrusted_address_is_refused(proxied):
    srv = proxied(proxy_trusted=("10.0.0.0/8",))
    sock = srv.raw()
    sock.sendall(proxy.encode(REAL, ("127.0.0.1", 1)) + encode_frame({"cmd": "ping"}))
    assert_closed(sock)


def test_local_health_checks_are_answered_and_not_logged_as_sessions(proxied, caplog):
    srv = proxied()
    caplog.set_level(logging.INFO, logger="sockftp")
    sock = srv.raw()
    sock.sendall(proxy.encode(None) + encode_frame({"cmd": "ping"}))
    assert recv_frame(sock) == {"ok": True}
    sock.close()
    srv.wait_idle()
    assert "session start" not in caplog.text and "ping" not in caplog.text


def via(forwarder: Forwarder, **kwargs) -> Client:
    return Client("127.0.0.1", forwarder.port, timeout=10, **kwargs)


def test_a_ban_goes_by_the_real_address(proxied):
    srv = proxied(login_failure_delay=0.01, ban_failures=2)
    mallory = Forwarder([(srv.host, srv.port)], source=REAL)
    other = Forwarder([(srv.host, srv.port)], source=("198.51.100.2", 5))
    try:
        with via(mallory) as client:
            with pytest.raises(AuthFailed):
                client.auth("alice", "guess")
            with pytest.raises(Banned):
                client.auth("alice", "guess")
        with pytest.raises(Banned):
            via(mallory)  # refused at its arrival, by the address in its header
        # Behind the same balancer, another client still gets in.
        with via(other, user="alice", password=PASSWORD) as client:
            client.ping()
    finally:
        mallory.close()
        other.close()


def test_session_caps_go_by_the_real_address(proxied):
    srv = proxied(max_sessions_per_ip=1)
    one = Forwarder([(srv.host, srv.port)], source=REAL)
    two = Forwarder([(srv.host, srv.port)], source=("198.51.100.2", 5))
    try:
        with via(one, user="alice", password=PASSWORD) as first:
            first.ping()
            with pytest.raises(TooManySessions):
                via(one, user="alice", password=PASSWORD)
            with via(two, user="alice", password=PASSWORD) as client:
                client.ping()
    finally:
        one.close()
        two.close()


# -- the FTP door ---------------------------------------------------------------------------


def test_ftp_reads_the_header_and_checks_data_addresses_against_the_real_client(ftp_server):
    srv = ftp_server(proxy_protocol=True, proxy_trusted=("127.0.0.1",), anonymous=False)
    srv.add_user("alice")
    seen_as_local = Forwarder([(srv.host, srv.port)])
    seen_far = Forwarder([(srv.host, srv.port)], source=REAL)
    try:
        # Through the balancer, as itself: a whole transfer, passive data
        # straight to the node.
        client = ftplib.FTP(timeout=10)
        client.connect("127.0.0.1", seen_as_local.port)
        client.login("alice", "secret")
        client.storbinary("STOR a.txt", _reader(b"through a balancer"))
        assert (srv.home("alice") / "a.txt").read_bytes() == b"through a balancer"
        client.quit()
        # Seen as 203.0.113.7: a PORT to 127.0.0.1 is someone else's address.
        far = ftplib.FTP(timeout=10)
        far.connect("127.0.0.1", seen_far.port)
        far.login("alice", "secret")
        with pytest.raises(ftplib.error_perm, match="^5"):
            far.sendcmd("PORT 127,0,0,1,200,10")
        far.quit()
        # No header: closed before the greeting.
        raw = socket.create_connection((srv.host, srv.port), timeout=5)
        raw.sendall(b"USER alice\r\n")
        assert_closed(raw)
    finally:
        seen_as_local.close()
        seen_far.close()


def _reader(data: bytes):
    import io

    return io.BytesIO(data)


def test_ftp_local_health_checks_are_greeted_and_not_logged_as_sessions(ftp_server, caplog):
    srv = ftp_server(proxy_protocol=True, proxy_trusted=("127.0.0.1",))
    caplog.set_level(logging.INFO, logger="sockftp")
    with socket.create_connection((srv.host, srv.port), timeout=5) as sock:
        sock.sendall(proxy.encode(None))
        assert sock.recv(100).startswith(b"220 ")
    srv.main.sessions.wait_empty(5)
    assert "FTP session" not in caplog.text
