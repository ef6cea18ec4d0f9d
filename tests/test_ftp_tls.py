"""Explicit FTPS (RFC 4217) with Python's ftplib.FTP_TLS: AUTH TLS on the
control connection, PBSZ 0 and PROT P for TLS data connections, with the
certificate and key the native protocol uses (a throwaway trustme CA)."""

from __future__ import annotations

import ftplib
import io
import os
import socket
import ssl

import pytest
from ftp_support import PASSWORD, ftp_command, ftp_server_fixture, pki_fixture, read_reply  # noqa: F401 - fixtures

from sockftp.server.config import ConfigError, ServerConfig

pytestmark = pytest.mark.usefixtures("no_server_errors")


@pytest.fixture
def context(pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=pki["ca"])


@pytest.fixture
def tls_server(ftp_server, pki):
    def start(**overrides):
        running = ftp_server(tls_cert=pki["cert"], tls_key=pki["key"], **overrides)
        running.add_user("alice")
        return running

    return start


def tls_login(srv, context) -> ftplib.FTP_TLS:
    client = srv.connect(tls_context=context)
    client.login("alice", PASSWORD)  # AUTH TLS first, then USER and PASS inside TLS
    client.prot_p()
    client.voidcmd("TYPE I")
    return client


def test_ftp_tls_with_prot_p_moves_files_and_listings_over_tls(tls_server, context):
    srv = tls_server()
    client = tls_login(srv, context)
    assert isinstance(client.sock, ssl.SSLSocket) and client.sock.version() in ("TLSv1.2", "TLSv1.3")
    data = os.urandom(2 * 1024 * 1024 + 9)
    client.storbinary("STOR f.bin", io.BytesIO(data))
    out = io.BytesIO()
    client.retrbinary("RETR f.bin", out.write)
    assert out.getvalue() == data == (srv.home("alice") / "f.bin").read_bytes()
    assert client.nlst() == ["f.bin"]
    assert dict(client.mlsd())["f.bin"]["size"] == str(len(data))
    conn = client.transfercmd("LIST")
    assert isinstance(conn, ssl.SSLSocket)  # the data connection is TLS too
    assert conn.recv(4096).endswith(b" f.bin\r\n")
    assert conn.recv(4096) == b""  # the server's close_notify
    conn.unwrap()
    conn.close()
    client.voidresp()
    assert client.quit().startswith("221")


def test_a_resumed_store_over_tls(tls_server, context):
    srv = tls_server()
    client = tls_login(srv, context)
    data = os.urandom(500_000)
    client.storbinary("STOR f", io.BytesIO(data[:200_000]))
    client.storbinary("APPE f", io.BytesIO(data[200_000:]))
    assert (srv.home("alice") / "f").read_bytes() == data


def test_with_a_certificate_ftp_requires_tls_for_logins_and_data_by_default(tls_server, context):
    srv = tls_server()
    plain = srv.connect()
    with pytest.raises(ftplib.error_perm, match="^534 "):
        plain.login("alice", PASSWORD)
    client = srv.connect(tls_context=context)
    client.login("alice", PASSWORD)
    with pytest.raises(ftplib.error_perm, match="^534 "):
        client.prot_c()
    client.sendcmd("PASV")
    with pytest.raises(ftplib.error_perm, match="^534 .*PROT P"):
        client.sendcmd("LIST")  # still PROT C: no clear data connection


def test_plaintext_can_be_allowed_next_to_tls(tls_server, context):
    srv = tls_server(ftp_require_tls=False)
    plain = srv.login()
    plain.storbinary("STOR clear.txt", io.BytesIO(b"in clear"))
    client = srv.connect(tls_context=context)
    client.login("alice", PASSWORD)
    client.prot_c()  # TLS control, clear data: allowed here
    assert client.nlst() == ["clear.txt"]


def test_auth_without_a_certificate_is_refused_and_feat_does_not_offer_it(ftp_server):
    srv = ftp_server()
    sock = srv.raw()
    read_reply(sock)
    assert ftp_command(sock, "AUTH TLS").startswith("502 ")
    assert "AUTH TLS" not in ftp_command(sock, "FEAT")
    assert ftp_command(sock, "PBSZ 0").startswith("503 ")
    assert ftp_command(sock, "PROT P").startswith("503 ")


def test_feat_offers_auth_tls_pbsz_and_prot_with_a_certificate(tls_server):
    sock = tls_server().raw()
    read_reply(sock)
    features = ftp_command(sock, "FEAT")
    for feature in (" AUTH TLS\r\n", " PBSZ\r\n", " PROT\r\n"):
        assert feature in features


def test_commands_sent_before_the_handshake_are_dropped(tls_server, context):
    """No command can be smuggled in clear into the TLS session (as in the
    STARTTLS injection attacks): what follows AUTH TLS in the same write
    is dropped with the clear connection's buffer."""
    srv = tls_server()
    sock = srv.raw()
    read_reply(sock)
    sock.sendall(b"AUTH TLS\r\nUSER mallory\r\nPASS injected\r\n")
    assert read_reply(sock).startswith("234 ")
    tls = context.wrap_socket(sock, server_hostname="127.0.0.1")
    assert ftp_command(tls, "NOOP") == "200 OK\r\n"  # not a 331 or 530 for the smuggled lines
    assert ftp_command(tls, "PASS x").startswith("503 ")  # no USER was taken


def test_a_broken_handshake_ends_that_session_only(tls_server, context):
    srv = tls_server()
    sock = srv.raw()
    read_reply(sock)
    assert ftp_command(sock, "AUTH TLS").startswith("234 ")
    sock.sendall(b"this is not a TLS client hello\r\n" * 10)
    sock.settimeout(5)
    try:
        leftover = sock.recv(100)
    except ConnectionResetError:
        leftover = b""
    assert not leftover.startswith(b"2")  # no FTP reply: the session is over
    tls_login(srv, context).voidcmd("NOOP")  # others are served


def test_a_data_connection_that_never_does_its_handshake_times_out(tls_server, context):
    srv = tls_server(ftp_data_timeout=0.3)
    client = tls_login(srv, context)
    client.storbinary("STOR f", io.BytesIO(b"x"))
    host, port = client.makepasv()
    with socket.create_connection((host, port)):  # connect, never say hello
        with pytest.raises(ftplib.error_temp, match="^425 .*TLS"):
            client.sendcmd("RETR f")
            client.voidresp()


def test_stopping_tells_idle_ftps_sessions_over_tls(tls_server, context):
    srv = tls_server()
    client = tls_login(srv, context)
    srv.stop(2)
    assert client.getline().startswith("421")


def test_requiring_tls_without_a_certificate_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ftp_require_tls"):
        ServerConfig(root=str(tmp_path), ftp_port=0, ftp_require_tls=True)


def test_ftp_tls_mkdir_rename_delete_and_an_aborted_store_resumed(tls_server, context):
    from conftest import partials_in

    srv = tls_server()
    home = srv.home("alice")
    client = tls_login(srv, context)
    assert client.mkd("dir") == "/dir"
    data = os.urandom(1024 * 1024)
    conn = client.transfercmd("STOR dir/f.bin")
    conn.sendall(data[:300_000])
    assert client.abort().startswith("426")  # over TLS: no urgent data, ABOR is a plain line
    assert client.getresp().startswith("226")
    conn.close()
    held = client.size("dir/f.bin")
    assert 0 < held <= 300_000 and not (home / "dir" / "f.bin").exists()
    source = io.BytesIO(data)
    source.seek(held)
    client.storbinary("STOR dir/f.bin", source, rest=held)
    out = io.BytesIO()
    client.retrbinary("RETR dir/f.bin", out.write, rest=1000)
    assert out.getvalue() == data[1000:]
    client.rename("dir/f.bin", "g.bin")
    assert client.nlst() == ["dir", "g.bin"] and (home / "g.bin").read_bytes() == data
    client.delete("g.bin")
    client.rmd("dir")
    assert os.listdir(home) == [] and partials_in(home) == []


def test_a_tls_upload_that_ends_without_close_notify_is_not_committed(tls_server, context):
    """Over PROT P the end of a file is TLS's close_notify, not just the end
    of the TCP stream: a truncated upload stays a resumable partial."""
    srv = tls_server()
    client = tls_login(srv, context)
    conn = client.transfercmd("STOR cut.bin")
    conn.sendall(b"x" * 100_000)
    conn.close()  # no unwrap(): the TCP stream ends, TLS does not
    with pytest.raises(ftplib.error_temp, match="^426 "):
        client.voidresp()
    assert not (srv.home("alice") / "cut.bin").exists()
    assert client.size("cut.bin") == 100_000
    client.storbinary("APPE cut.bin", io.BytesIO(b"y"))  # ftplib ends with close_notify
    assert (srv.home("alice") / "cut.bin").read_bytes() == b"x" * 100_000 + b"y"


def test_data_connections_get_no_tls_session_tickets(tls_server, context):
    """A TLS 1.3 server sends session tickets after the handshake; an
    uploading client never reads them, and lftp loses the end of its file
    when it closes with them unread. Data connections send none."""
    srv = tls_server()
    assert srv.front.data_tls_context.num_tickets == 0
    assert srv.main.tls_context.num_tickets != 0  # the control connection's context is the native one
