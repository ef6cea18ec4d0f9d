"""The FTP front door over real sockets, with Python's ftplib as the client.

Servers are SockftpServers with ``ftp_port=0`` on 127.0.0.1 (or ::1), their
files in a tmp dir; every test logs in through the real authenticator.
"""

from __future__ import annotations

import ftplib
import io
import logging
import os
import re
import socket
import time

import pytest
from conftest import have_ipv6_loopback, partials_in, wait_until
from ftp_support import PASSWORD, free_port_run, ftp_command, ftp_server_fixture, read_reply  # noqa: F401 - a fixture

import sockftp
from sockftp.ftp.commands import transfers
from sockftp.protocol import checksum

pytestmark = pytest.mark.usefixtures("no_server_errors")

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
def srv(ftp_server):
    running = ftp_server()
    running.add_user("alice")
    return running


def put(client: ftplib.FTP, name: str, data: bytes) -> str:
    return client.storbinary(f"STOR {name}", io.BytesIO(data))


def get(client: ftplib.FTP, name: str, rest: int | None = None) -> bytes:
    out = io.BytesIO()
    client.retrbinary(f"RETR {name}", out.write, rest=rest)
    return out.getvalue()


# --- logging in ------------------------------------------------------------------------------------------


def test_greeting_login_and_quit(srv):
    client = srv.connect()
    assert client.getwelcome() == "220 sockftp FTP server ready"
    assert client.login("alice", PASSWORD).startswith("230")
    assert client.pwd() == "/"
    assert client.quit().startswith("221")


def test_every_user_name_gets_the_same_331_and_a_wrong_password_530(srv):
    sock = srv.raw()
    read_reply(sock)
    known = ftp_command(sock, "USER alice")
    unknown = ftp_command(sock, "USER nobody-here")
    assert known == unknown == "331 Password required\r\n"
    assert ftp_command(sock, "PASS whatever").startswith("530 ")
    client = srv.connect()
    with pytest.raises(ftplib.error_perm, match="530"):
        client.login("alice", "wrong")


def test_a_re_login_token_works_as_the_password(srv):
    with srv.native(keep_token=True) as native:
        token = native.token
    assert token.startswith("sockftp_")
    client = srv.connect()
    assert client.login("alice", token).startswith("230")
    assert client.pwd() == "/"
    with srv.native() as native:
        native.request({"cmd": "revoke", "token": token})
    with pytest.raises(ftplib.error_perm, match="530"):
        srv.connect().login("alice", token)


def test_commands_before_login_are_refused_with_530(srv):
    sock = srv.raw()
    read_reply(sock)
    for line in ("LIST", "RETR x", "STOR x", "CWD /", "PWD", "MKD d", "DELE x", "SIZE x", "PASV", "HASH x", "STAT"):
        assert ftp_command(sock, line).startswith("530 "), line
    assert ftp_command(sock, "PASS x").startswith("503 ")  # no USER yet
    for line in ("SYST", "NOOP", "FEAT", "HELP"):
        assert ftp_command(sock, line)[0] == "2", line


def test_anonymous_login_shares_the_anonymous_area_only_when_enabled(ftp_server):
    srv = ftp_server(anonymous=True)
    client = srv.login("anonymous", "guest@example.org")
    put(client, "shared.txt", b"for everyone")
    assert (srv.root / "anonymous" / "shared.txt").read_bytes() == b"for everyone"

    closed = ftp_server(anonymous=False)
    with pytest.raises(ftplib.error_perm, match="530"):
        closed.login("anonymous", "guest@example.org")


def test_not_logging_in_within_the_header_timeout_closes_the_connection(ftp_server):
    srv = ftp_server(header_timeout=0.3)
    sock = srv.raw()
    read_reply(sock)
    assert ftp_command(sock, "NOOP").startswith("200")
    time.sleep(0.4)
    assert read_reply(sock).startswith("421 Timeout")


def test_an_idle_logged_in_session_is_closed_after_the_idle_timeout(ftp_server):
    srv = ftp_server(idle_timeout=0.3)
    srv.add_user("alice")
    client = srv.login()
    time.sleep(0.5)
    with pytest.raises((ftplib.error_temp, EOFError, OSError)):
        client.voidcmd("NOOP")


def test_a_client_that_stops_reading_its_replies_is_let_go_after_the_idle_timeout(ftp_server):
    # Waits on the control connection are the kernel's (SO_SNDTIMEO and
    # SO_RCVTIMEO): a send blocked on a client that reads nothing must end too.
    srv = ftp_server(idle_timeout=0.3)
    srv.add_user("alice")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", srv.port))
    sock.sendall(b"USER alice\r\nPASS " + PASSWORD.encode() + b"\r\n")
    wait_until(lambda: srv.main.sessions.__len__() == 1, what="the session")
    try:
        for _ in range(100):  # HELP, never read: the replies fill the buffers
            sock.sendall(b"HELP\r\n" * 100)
        sock.shutdown(socket.SHUT_WR)  # no more commands: only the blocked reply keeps it
    except OSError:
        pass  # the server gave up on us already
    wait_until(lambda: srv.main.sessions.__len__() == 0, what="the session to end")
    sock.close()


# --- the tree -------------------------------------------------------------------------------------------


def test_mkdir_cwd_pwd_rename_delete_rmdir(srv):
    client = srv.login()
    home = srv.home("alice")
    assert client.mkd("docs") == "/docs"
    client.cwd("docs")
    assert client.pwd() == "/docs"
    put(client, "a.txt", b"A")
    client.rename("a.txt", "/b.txt")
    assert (home / "b.txt").read_bytes() == b"A"
    client.sendcmd("CDUP")
    assert client.pwd() == "/"
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.sendcmd("CDUP")  # nothing above the home
    client.delete("b.txt")
    client.rmd("docs")
    assert sorted(os.listdir(home)) == []


def test_refusals_name_the_path_as_the_client_sees_it(srv):
    client = srv.login()
    with pytest.raises(ftplib.error_perm, match="^550 .*/nothing"):
        client.cwd("nothing")
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.rmd("/")
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.delete("nothing")
    with pytest.raises(ftplib.error_perm, match="^503 "):
        client.sendcmd("RNTO x")
    with pytest.raises(ftplib.error_perm, match="^553 "):
        client.mkd("bad\\name")
    with pytest.raises(ftplib.error_perm, match="^553 "):
        client.mkd(".sockftp-mine")


def test_the_home_is_a_jail(srv):
    srv.add_user("bob")
    put(srv.login("bob"), "secret.txt", b"bob's")
    client = srv.login()
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.cwd("..")
    for path in ("../bob/secret.txt", "/users/bob/secret.txt", "../../users/bob/secret.txt"):
        with pytest.raises(ftplib.error_perm, match="^550 "):
            get(client, path)
    assert client.nlst("/") == []


def test_a_rename_needs_rnto_right_after_rnfr(srv):
    client = srv.login()
    put(client, "a", b"a")
    client.sendcmd("RNFR a")
    client.voidcmd("NOOP")
    with pytest.raises(ftplib.error_perm, match="^503 "):
        client.sendcmd("RNTO b")
    assert client.nlst() == ["a"]


# --- listings -------------------------------------------------------------------------------------------


def test_list_nlst_and_mlsd_show_the_same_entries(srv):
    client = srv.login()
    client.mkd("sub")
    put(client, "one.txt", b"1" * 10)
    put(client, "two.bin", b"2" * 2000)
    assert client.nlst() == ["one.txt", "sub", "two.bin"]
    lines: list[str] = []
    client.retrlines("LIST", lines.append)
    assert [line.split()[-1] for line in lines] == ["one.txt", "sub", "two.bin"]
    assert lines[1].startswith("drwxr-xr-x") and lines[2].startswith("-rw-r--r--")
    assert lines[2].split()[4] == "2000"
    facts = dict(client.mlsd(facts=["type", "size", "perm"]))
    assert facts["one.txt"] == {"type": "file", "size": "10", "perm": "adfrw"}
    assert facts["sub"]["type"] == "dir"


def test_listing_options_a_single_file_and_a_pattern(srv):
    client = srv.login()
    client.mkd("d")
    for name in ("d/a.txt", "d/b.txt", "d/c.bin"):
        put(client, name, b"x")
    lines: list[str] = []
    client.retrlines("LIST -la d", lines.append)
    assert len(lines) == 3
    assert client.nlst("d") == ["a.txt", "b.txt", "c.bin"]
    assert client.nlst("d/*.txt") == ["d/a.txt", "d/b.txt"]
    assert client.nlst("d/a.txt") == ["d/a.txt"]
    assert client.nlst("d/*.none") == []
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.nlst("missing")


def test_size_mdtm_mlst_and_stat(srv):
    client = srv.login()
    put(client, "f.bin", b"x" * 1234)
    assert client.size("f.bin") == 1234
    mtime = os.stat(srv.home("alice") / "f.bin").st_mtime
    assert client.voidcmd("MDTM f.bin") == "213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))
    reply = client.sendcmd("MLST f.bin")
    assert reply.startswith("250-") and " type=file;size=1234;modify=" in reply and reply.endswith("250 End")
    assert "; /f.bin\n" in reply
    status = client.sendcmd("STAT f.bin")
    assert status.startswith("213-") and "f.bin" in status
    assert "Logged in as alice" in client.sendcmd("STAT")
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.size("/")


def test_utf8_names_round_trip(srv):
    client = srv.login()
    client.encoding = "utf-8"
    name = "héllo wörld ✓ 日本.txt"
    put(client, name, b"utf-8")
    assert client.nlst() == [name]
    assert get(client, name) == b"utf-8"
    assert (srv.home("alice") / name).read_bytes() == b"utf-8"
    assert client.sendcmd("OPTS UTF8 ON").startswith("200")


# --- transfers ------------------------------------------------------------------------------------------


def test_store_and_retrieve_byte_for_byte_in_passive_and_active_mode(srv):
    client = srv.login()
    data = os.urandom(3 * MiB + 11)
    put(client, "big.bin", data)
    assert (srv.home("alice") / "big.bin").read_bytes() == data
    assert get(client, "big.bin") == data
    client.set_pasv(False)  # PORT: the server connects to us
    put(client, "active.bin", data[:1000])
    assert get(client, "active.bin") == data[:1000]
    assert partials_in(srv.home("alice")) == []


def test_an_empty_file_can_be_stored_and_retrieved(srv):
    client = srv.login()
    put(client, "empty", b"")
    assert (srv.home("alice") / "empty").read_bytes() == b""
    assert get(client, "empty") == b""


def test_store_replaces_a_file_atomically(srv):
    client = srv.login()
    put(client, "f", b"old")
    conn = client.transfercmd("STOR f")
    conn.sendall(b"new content, half sent")
    assert (srv.home("alice") / "f").read_bytes() == b"old"  # not visible yet
    conn.close()
    client.voidresp()
    assert (srv.home("alice") / "f").read_bytes() == b"new content, half sent"


def test_a_small_stor_that_arrives_at_once_is_stored_without_a_partial(srv, monkeypatch):
    # Created when the bytes are all in, in one go (no partial to create,
    # lock and rename, which held the directory locked): parallel small
    # uploads into one directory no longer queue behind each other.
    monkeypatch.setattr(transfers, "AT_ONCE_WITHIN", 10.0)  # however slow the machine
    client = srv.login()
    home = srv.home("alice")
    put(client, "f", b"old")
    conn = client.transfercmd("STOR f")
    time.sleep(0.05)
    assert partials_in(home) == []  # nothing on disk before the bytes
    conn.sendall(os.urandom(1000))
    assert partials_in(home) == []
    conn.sendall(b"end")
    conn.close()
    assert client.voidresp().startswith("226 ")
    assert (home / "f").stat().st_size == 1003 and partials_in(home) == []
    data = os.urandom(64 * KiB)  # SMALL_FILE: still at once
    put(client, "g", data)
    assert get(client, "g") == data and client.sendcmd("HASH g").split()[3] == checksum.of_bytes(data).split(":")[1]


def test_a_stor_that_takes_its_time_gets_a_partial_that_others_see(srv, monkeypatch):
    monkeypatch.setattr(transfers, "AT_ONCE_WITHIN", 0.05)
    client = srv.login()
    home = srv.home("alice")
    conn = client.transfercmd("STOR slow")
    conn.sendall(b"x" * 1000)
    wait_until(lambda: [p.stat().st_size for p in partials_in(home)] == [1000], what="the partial")
    other = srv.login()
    assert other.size("slow") == 1000  # the upload in progress, as for any upload
    with pytest.raises(ftplib.error_temp, match="^450 "):
        put(other, "slow", b"mine")  # busy: after its 150, as a failed transfer
    conn.sendall(b"y" * 100)
    conn.close()
    assert client.voidresp().startswith("226 ")
    assert (home / "slow").read_bytes() == b"x" * 1000 + b"y" * 100 and partials_in(home) == []


def test_a_stor_cut_short_before_the_storage_was_opened_stays_resumable(srv, monkeypatch):
    monkeypatch.setattr(transfers, "AT_ONCE_WITHIN", 10.0)
    client = srv.login()
    home = srv.home("alice")
    conn = client.transfercmd("STOR f")
    conn.sendall(b"0123456789")
    time.sleep(0.05)
    assert client.abort().startswith("426")
    assert client.getresp().startswith("226")
    conn.close()
    assert not (home / "f").exists()
    assert client.size("f") == 10  # the bytes that came, kept as the partial
    client.storbinary("STOR f", io.BytesIO(b"abc"), rest=10)
    assert (home / "f").read_bytes() == b"0123456789abc" and partials_in(home) == []


def test_a_large_stor_goes_on_past_the_small_size(srv, monkeypatch):
    monkeypatch.setattr(transfers, "AT_ONCE_WITHIN", 10.0)
    client = srv.login()
    data = os.urandom(64 * KiB + 1)
    put(client, "big", data)
    assert get(client, "big") == data and partials_in(srv.home("alice")) == []


def test_append_adds_to_the_file(srv):
    client = srv.login()
    put(client, "log.txt", b"line 1\n")
    client.storbinary("APPE log.txt", io.BytesIO(b"line 2\n"))
    client.storbinary("APPE new.txt", io.BytesIO(b"fresh"))
    assert (srv.home("alice") / "log.txt").read_bytes() == b"line 1\nline 2\n"
    assert (srv.home("alice") / "new.txt").read_bytes() == b"fresh"


def test_rest_retr_resumes_a_download(srv):
    client = srv.login()
    data = os.urandom(100 * KiB)
    put(client, "f", data)
    assert get(client, "f", rest=40000) == data[40000:]
    assert get(client, "f", rest=len(data)) == b""
    with pytest.raises(ftplib.error_perm, match="^554 "):
        get(client, "f", rest=len(data) + 1)


def test_an_aborted_store_leaves_a_hidden_partial_that_rest_stor_resumes(srv):
    client = srv.login()
    home = srv.home("alice")
    data = os.urandom(2 * MiB)
    conn = client.transfercmd("STOR big.bin")
    conn.sendall(data[: 300 * KiB])
    assert client.abort().startswith("426")
    assert client.getresp().startswith("226")
    conn.close()
    assert "big.bin" not in client.nlst()
    with pytest.raises(ftplib.error_perm, match="^550 "):
        get(client, "big.bin")
    held = client.size("big.bin")  # what the interrupted upload holds
    assert 0 < held <= 300 * KiB
    assert [p.stat().st_size for p in partials_in(home)] == [held]

    source = io.BytesIO(data)
    source.seek(held)
    client.storbinary("STOR big.bin", source, rest=held)
    assert (home / "big.bin").read_bytes() == data
    assert partials_in(home) == []


def test_a_client_that_goes_away_mid_store_leaves_a_partial_that_appe_resumes(srv):
    client = srv.login()
    home = srv.home("alice")
    data = os.urandom(1 * MiB)
    conn = client.transfercmd("STOR f.bin")
    conn.sendall(data[: 200 * KiB])
    time.sleep(0.1)
    client.close()  # the control connection first, as a killed process's would
    conn.close()
    wait_until(lambda: srv.main.sessions.__len__() == 0, what="the session to end")
    assert not (home / "f.bin").exists()
    assert [p.stat().st_size for p in partials_in(home)] == [200 * KiB]

    again = srv.login()
    held = again.size("f.bin")
    assert held == 200 * KiB
    again.storbinary("APPE f.bin", io.BytesIO(data[held:]))  # as curl -C - resumes
    assert (home / "f.bin").read_bytes() == data


def test_rest_stor_past_what_is_held_is_refused(srv):
    client = srv.login()
    with pytest.raises(ftplib.error_perm, match="^554 "):
        client.storbinary("STOR x", io.BytesIO(b"data"), rest=10)
    put(client, "f", b"0123456789")
    client.storbinary("STOR f", io.BytesIO(b"AB"), rest=4)  # over a complete file: keeps its first 4 bytes
    assert (srv.home("alice") / "f").read_bytes() == b"0123AB"
    assert partials_in(srv.home("alice")) == []


def test_a_store_whose_data_connection_never_comes_leaves_no_empty_partial(ftp_server):
    srv = ftp_server(ftp_data_timeout=0.3)
    home = srv.add_user("alice")
    client = srv.login()
    client.sendcmd("PASV")  # a listener the client never connects to
    reply = ftp_command(client.sock, "STOR x")
    if "425 " not in reply:
        reply += read_reply(client.sock)
    assert reply.startswith("150 ") and "425 " in reply
    assert partials_in(home) == []
    assert ftp_command(client.sock, "NOOP").startswith("200")


def test_a_transfer_without_pasv_or_port_is_refused_before_150(srv):
    client = srv.login()
    put(client, "f", b"x")
    with pytest.raises(ftplib.error_temp, match="^425 Use PASV"):
        client.sendcmd("RETR f")
    with pytest.raises(ftplib.error_perm, match="^550 "):
        client.sendcmd("RETR missing")  # refused before it needs a data connection


def test_hash_gives_the_checksum_the_native_protocol_keeps(srv):
    client = srv.login()
    data = os.urandom(5000)
    put(client, "f", data)
    xxh = checksum.of_bytes(data).split(":")[1]
    assert client.sendcmd("HASH f") == f"213 XXH3-128 0-4999 {xxh} f"
    assert client.sendcmd("OPTS HASH SHA-256") == "200 SHA-256"
    import hashlib

    assert client.sendcmd("HASH f") == f"213 SHA-256 0-4999 {hashlib.sha256(data).hexdigest()} f"
    with pytest.raises(ftplib.error_perm, match="^501 "):
        client.sendcmd("OPTS HASH CRC-37")
    with pytest.raises(ftplib.error_perm, match="^553 "):
        client.sendcmd("HASH /")
    assert "HASH XXH3-128;SHA-256*" in client.sendcmd("FEAT")


# --- one server, two protocols --------------------------------------------------------------------------


def test_a_file_stored_over_ftp_is_verified_by_a_native_download(srv, tmp_path):
    client = srv.login()
    data = os.urandom(2 * MiB + 5)
    put(client, "from-ftp.bin", data)
    with srv.native() as native:
        result = native.get("from-ftp.bin", tmp_path / "copy.bin")
        assert result.checksum == checksum.of_bytes(data)
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_a_file_put_natively_is_retrieved_over_ftp_with_the_same_hash(srv, tmp_path):
    data = os.urandom(MiB + 3)
    source = tmp_path / "src.bin"
    source.write_bytes(data)
    with srv.native() as native:
        native.put(source, "from-native.bin")
    client = srv.login()
    assert get(client, "from-native.bin") == data
    assert client.sendcmd("HASH from-native.bin").split()[3] == checksum.of_bytes(data).split(":")[1]


def test_ftp_uploads_count_against_the_same_quota(ftp_server, tmp_path):
    srv = ftp_server()
    home = srv.add_user("alice", quota_bytes=100 * KiB, max_files=10)
    client = srv.login()
    put(client, "a.bin", os.urandom(60 * KiB))
    with pytest.raises(ftplib.error_perm, match="^552 "):
        put(client, "b.bin", os.urandom(60 * KiB))
    assert sorted(os.listdir(home)) == ["a.bin"]  # nothing half-stored, no partial
    with srv.native() as native:
        assert native.quota()["used_bytes"] == 60 * KiB
        source = tmp_path / "c.bin"
        source.write_bytes(os.urandom(50 * KiB))
        with pytest.raises(sockftp.QuotaExceeded):
            native.put(source, "c.bin")
    put(client, "a.bin", os.urandom(100 * KiB))  # replacing within the quota is fine
    with srv.native() as native:
        assert native.quota()["used_bytes"] == 100 * KiB


def test_a_read_only_account_reads_but_changes_nothing(ftp_server):
    srv = ftp_server()
    home = srv.add_user("reader", read_only=True)
    home.mkdir(parents=True, exist_ok=True)
    (home / "f").write_bytes(b"readable")
    client = srv.login("reader")
    assert get(client, "f") == b"readable"
    for line in ("STOR g", "APPE f", "DELE f", "MKD d", "RMD d", "RNFR f"):
        with pytest.raises(ftplib.error_perm, match="^550 .*read-only"):
            client.sendcmd(line)
    assert sorted(os.listdir(home)) == ["f"]


def test_both_front_doors_share_the_session_caps(ftp_server):
    srv = ftp_server(max_sessions_per_ip=2)
    srv.add_user("alice")
    srv.native(user=None).ping()
    srv.login()
    sock = srv.raw()
    assert read_reply(sock).startswith("421 ")


def test_stopping_the_server_ends_ftp_sessions_with_421(srv):
    client = srv.login()
    srv.stop(2)
    assert client.getline().startswith("421")
    with pytest.raises(OSError):
        srv.raw(timeout=1)


# --- data connections -----------------------------------------------------------------------------------


def test_pasv_ports_come_from_the_configured_range(ftp_server):
    first = free_port_run(4)
    srv = ftp_server(ftp_passive_ports=(first, first + 3))
    srv.add_user("alice")
    client = srv.login()
    for _ in range(5):
        _host, port = client.makepasv()
        assert first <= port <= first + 3
    put(client, "f", b"in range")


def test_a_burst_five_times_the_passive_range_never_runs_out_of_ports(ftp_server):
    # The server closes a download's data connection first, so each one
    # leaves its passive port in TIME_WAIT for a minute. Without
    # SO_REUSEADDR the fifth transfer on a range of four found no port.
    first = free_port_run(4)
    srv = ftp_server(ftp_passive_ports=(first, first + 3))
    srv.add_user("alice")
    client = srv.login()
    put(client, "f", b"burst")
    for _ in range(20):
        assert get(client, "f") == b"burst"
        assert client.nlst() == ["f"]


def test_a_passive_port_in_use_by_a_live_listener_is_still_skipped(ftp_server):
    # SO_REUSEADDR lets a port in TIME_WAIT be bound again; on Linux it
    # never lets two sockets listen on one port, so a busy port is skipped.
    first = free_port_run(2)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", first))
    holder.listen(1)
    try:
        srv = ftp_server(ftp_passive_ports=(first, first + 1))
        srv.add_user("alice")
        client = srv.login()
        for _ in range(3):
            _host, port = client.makepasv()
            assert port == first + 1
    finally:
        holder.close()


def test_pasv_announces_the_masquerade_address_and_epsv_only_a_port(ftp_server):
    srv = ftp_server(ftp_masquerade="203.0.113.7")
    srv.add_user("alice")
    client = srv.login()
    assert "(203,0,113,7," in client.sendcmd("PASV")
    assert client.sendcmd("EPSV").startswith("229 Entering Extended Passive Mode (|||")


def test_a_passive_connection_from_another_address_is_dropped(srv):
    client = srv.login()
    put(client, "f", b"mine")
    _host, port = client.makepasv()
    thief = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
    client.sock.sendall(b"RETR f\r\n")
    assert thief.recv(100) == b""  # dropped, never served
    thief.close()
    conn = socket.create_connection(("127.0.0.1", port))
    assert read_reply(client.sock).startswith("150")
    assert conn.recv(100) == b"mine"
    conn.close()
    assert read_reply(client.sock).startswith("226")


def test_a_stalled_transfer_times_out_and_the_upload_stays_resumable(ftp_server):
    srv = ftp_server(ftp_data_timeout=0.3)
    srv.add_user("alice")
    client = srv.login()
    conn = client.transfercmd("STOR slow.bin")
    conn.sendall(b"x" * 1000)
    with pytest.raises(ftplib.error_temp, match="^426 "):
        client.voidresp()
    conn.close()
    assert client.size("slow.bin") == 1000
    assert not (srv.home("alice") / "slow.bin").exists()


@pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_with_epsv_and_eprt(ftp_server):
    srv = ftp_server(host="::1")
    srv.add_user("alice")
    client = srv.login()
    data = os.urandom(200 * KiB)
    put(client, "six.bin", data)  # ftplib uses EPSV on IPv6
    assert get(client, "six.bin") == data
    client.set_pasv(False)  # EPRT |2|::1|port|
    assert get(client, "six.bin") == data
    with pytest.raises(ftplib.error_perm, match="^501 "):
        client.sendcmd("PASV")
    with pytest.raises(ftplib.error_perm, match="^522 "):
        client.sendcmd("EPRT |1|127.0.0.1|5000|")


# --- the control connection -----------------------------------------------------------------------------


def test_telnet_commands_and_urgent_data_are_ignored(srv):
    sock = srv.raw()
    read_reply(sock)
    sock.sendall(b"\xff\xf4\xff\xf2NO")  # IAC IP IAC DM, as clients send before ABOR
    sock.sendall(b"OP\r\n")
    assert read_reply(sock).startswith("200")
    sock.sendall(b"NOOP\r", socket.MSG_OOB)
    sock.sendall(b"\n")
    assert read_reply(sock).startswith("200")


def test_a_line_too_long_is_refused_and_the_connection_goes_on(srv):
    sock = srv.raw()
    read_reply(sock)
    sock.sendall(b"NOOP " + b"x" * 10000 + b"\r\n")
    assert read_reply(sock).startswith("500 ")
    assert ftp_command(sock, "NOOP").startswith("200")


def test_unknown_and_malformed_commands(srv):
    client = srv.login()
    for line, code in (("FOO", "502"), ("X", "500"), ("MODE B", "504"), ("STRU R", "504"), ("TYPE E", "501")):
        with pytest.raises(ftplib.error_perm, match=f"^{code} "):
            client.sendcmd(line)
    assert client.sendcmd("TYPE A").startswith("200")
    assert client.sendcmd("MODE S").startswith("200")
    assert client.sendcmd("HELP RETR") == "214 Syntax: RETR path"
    assert "RETR" in client.sendcmd("HELP")
    assert client.sendcmd("SYST") == "215 UNIX Type: L8"
    assert client.sendcmd("ABOR").startswith("225")


# --- sockftp serve ----------------------------------------------------------------------------------------


def test_serve_opens_the_ftp_port_from_the_config_file_and_stops_both(tmp_path):
    import signal
    import subprocess
    import sys

    (tmp_path / "sockftp.toml").write_text('ftp_port = 0\nftp_passive_ports = "40000-40100"\nanonymous = true\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "sockftp", "serve", "--config", "sockftp.toml", "--port", "0", "--root", "data"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("sockftp FTP listening on "):
            line = proc.stdout.readline()
            assert line, f"serve ended before its FTP line: {lines}"
            lines.append(line.rstrip("\n"))
        assert lines[-2].startswith("sockftp listening on 127.0.0.1:")
        port = int(lines[-1].rsplit(":", 1)[1])
        client = ftplib.FTP()
        client.connect("127.0.0.1", port, timeout=10)
        client.login("anonymous", "guest")
        put(client, "via-serve.txt", b"served")
        assert (tmp_path / "data" / "anonymous" / "via-serve.txt").read_bytes() == b"served"
        assert 40000 <= client.makepasv()[1] <= 40100
        proc.send_signal(signal.SIGTERM)
        assert client.getline().startswith("421")
        assert proc.wait(15) == 0
        assert proc.stdout.read().endswith("sockftp stopped\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# --- during a transfer, and stopping one ------------------------------------------------------------------


def test_stat_during_a_transfer_says_how_far_it_is(ftp_server):
    srv = ftp_server(session_rate=256 * KiB)
    srv.add_user("alice")
    client = srv.login()
    put(client, "f", os.urandom(2 * MiB))
    conn = client.transfercmd("RETR f")
    conn.recv(64 * KiB)
    client.sock.sendall(b"STAT\r\n")
    reply = read_reply(client.sock)
    assert re.match(r"213 Transfer in progress: \d+ bytes moved\r\n", reply), reply
    conn.close()
    assert read_reply(client.sock)[:3] in ("226", "426")


def test_a_stop_cuts_an_upload_after_the_grace_and_keeps_it_resumable(ftp_server):
    srv = ftp_server(session_rate=256 * KiB)
    home = srv.add_user("alice")
    client = srv.login()
    conn = client.transfercmd("STOR cut.bin")
    conn.sendall(os.urandom(200 * KiB))
    wait_until(lambda: any(p.stat().st_size for p in partials_in(home)), what="some bytes stored")
    srv.stop(0.2)
    conn.close()
    assert not (home / "cut.bin").exists()
    assert partials_in(home) and partials_in(home)[0].stat().st_size > 0


def test_a_banned_address_is_refused_at_connect_with_421(ftp_server):
    srv = ftp_server(ban_failures=1, ban_time=60)
    srv.add_user("alice")
    with pytest.raises(ftplib.error_temp, match="^421 too many failed logins"):
        srv.login("alice", "wrong")  # the failure that bans
    sock = srv.raw()
    assert read_reply(sock).startswith("421 too many failed logins")


def test_passwords_never_reach_the_logs(srv, caplog):
    caplog.set_level(logging.DEBUG)
    srv.login("alice", PASSWORD).quit()
    with pytest.raises(ftplib.error_perm):
        srv.login("alice", "Wr0ng-but-secret-too")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "PASS" in text  # the command is logged...
    assert PASSWORD not in text and "Wr0ng-but-secret-too" not in text  # ...never its argument


def test_downloads_with_sendfile_and_without(ftp_server):
    data = os.urandom(3 * MiB + 1)
    for sendfile in (True, False):
        srv = ftp_server(sendfile=sendfile)
        srv.add_user("alice")
        client = srv.login()
        put(client, "f", data)
        assert get(client, "f") == data
        assert get(client, "f", rest=MiB) == data[MiB:]


def test_commands_sent_during_a_transfer_are_run_after_it_in_order(ftp_server):
    srv = ftp_server(session_rate=512 * KiB)
    srv.add_user("alice")
    client = srv.login()
    put(client, "f", os.urandom(MiB))
    conn = client.transfercmd("RETR f")
    client.sock.sendall(b"".join(f"MDTM f{i}\r\n".encode() for i in range(200)))  # more than the server queues
    received = 0
    while chunk := conn.recv(65536):
        received += len(chunk)
    conn.close()
    assert received == MiB
    replies = b""
    client.sock.settimeout(10)
    while replies.count(b"\r\n") < 201:
        replies += client.sock.recv(65536)
    lines = replies.decode().splitlines()
    assert lines[0].startswith("226")
    assert [line.split(": ")[-1] for line in lines[1:]] == [f"/f{i}" for i in range(200)]
