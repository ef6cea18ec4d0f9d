"""Every kind of bad input gets its error code, and the server goes on serving.

After each case a second connection makes a round trip, so a case that
crashed or wedged the server would fail here.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from conftest import assert_closed, encode_frame, recv_frame, round_trip, send_frame

pytestmark = pytest.mark.usefixtures("no_server_errors")


def assert_still_serving(srv) -> None:
    """A new connection makes a round trip."""
    with srv.raw() as other:
        round_trip(other)


def assert_error(reply: dict, code: str) -> None:
    assert reply.get("ok") is False, reply
    assert reply.get("error") == code, reply
    assert isinstance(reply.get("message"), str) and reply["message"]


# --- the length prefix: fatal, the connection closes -------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        struct.pack("<I", 65537),
        struct.pack("<I", 1 << 24),
        struct.pack("<I", 0),
        struct.pack("<I", 0xFFFFFFFF),
        struct.pack("i", -1),
        struct.pack("i", -(2**31)),
    ],
    ids=["65537", "16MiB", "zero", "0xFFFFFFFF", "pack-i-minus-1", "pack-i-min"],
)
def test_bad_length_prefix_gets_bad_frame_and_close(srv, prefix):
    with srv.raw() as sock:
        sock.sendall(prefix + b'{"cmd": "ping"}')
        assert_error(recv_frame(sock), "bad_frame")
        assert_closed(sock)
    assert_still_serving(srv)


def test_header_too_large_with_its_bytes_sent_gets_bad_frame(srv):
    payload = json.dumps({"cmd": "ping", "pad": "x" * 70000}).encode()
    with srv.raw() as sock:
        try:
            send_frame(sock, payload)
        except OSError:
            pass  # the server may close before reading it all
        assert_error(recv_frame(sock), "bad_frame")
        assert_closed(sock)
    assert_still_serving(srv)


def test_header_of_exactly_64KiB_is_accepted(srv):
    overhead = len(json.dumps({"cmd": "ping", "pad": ""}).encode())
    payload = json.dumps({"cmd": "ping", "pad": "x" * (65536 - overhead)}).encode()
    assert len(payload) == 65536
    with srv.raw() as sock:
        send_frame(sock, payload)
        assert recv_frame(sock) == {"ok": True}


# --- one bad header: an error, and the connection stays usable ------------------------------


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\xff\xfe\xfd", "bad_json"),
        (b'{"cmd": "ping\xc3"}', "bad_json"),
        (b'{"cmd": "ping"', "bad_json"),
        (b"{cmd: ping}", "bad_json"),
        (b'{"cmd": "ping", "x": NaN}', "bad_json"),
        (b"[]", "bad_request"),
        (b'["cmd", "ping"]', "bad_request"),
        (b'"ping"', "bad_request"),
        (b"42", "bad_request"),
        (b"null", "bad_request"),
        (b"{}", "bad_request"),
        (b'{"path": "/"}', "bad_request"),
        (b'{"cmd": 1}', "bad_request"),
        (b'{"cmd": null}', "bad_request"),
        (b'{"cmd": ["ping"]}', "bad_request"),
        (b'{"cmd": {"name": "ping"}}', "bad_request"),
        (b'{"cmd": true}', "bad_request"),
    ],
    ids=[
        "non-utf8",
        "truncated-utf8",
        "unterminated-json",
        "unquoted-json",
        "nan",
        "empty-array",
        "array",
        "string",
        "number",
        "null",
        "missing-cmd",
        "missing-cmd-with-fields",
        "cmd-number",
        "cmd-null",
        "cmd-list",
        "cmd-object",
        "cmd-bool",
    ],
)
def test_bad_header_gets_its_code_and_connection_stays_usable(srv, payload, code):
    with srv.raw() as sock:
        send_frame(sock, payload)
        assert_error(recv_frame(sock), code)
        round_trip(sock)
    assert_still_serving(srv)


@pytest.mark.parametrize(
    "cmd",
    [
        "handle",
        "__init__",
        "finish",
        "setup",
        "_anything",
        "_serve_one",
        "_run",
        "__class__",
        "__dict__",
        "request",
        "server",
        "wire",
        "dispatch",
        "PING",
        "ping ",
        "",
        "x" * 10000,
    ],
    ids=lambda c: c[:20] or "empty",
)
def test_unknown_and_getattr_attack_commands_are_unknown_command(srv, cmd):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": cmd})
        assert_error(recv_frame(sock), "unknown_command")
        round_trip(sock)
    assert_still_serving(srv)


@pytest.mark.parametrize(
    "request_",
    [
        {"cmd": "stat", "path": 5},
        {"cmd": "stat", "path": ["a"]},
        {"cmd": "stat"},
        {"cmd": "ls", "path": 1.5},
        {"cmd": "cd", "path": {"p": 1}},
        {"cmd": "get", "path": 7},
        {"cmd": "get", "path": "f", "offset": -1},
        {"cmd": "get", "path": "f", "offset": "0"},
        {"cmd": "get", "path": "f", "offset": True},
        {"cmd": "get", "path": "f", "offset": 1.0},
        {"cmd": "get", "path": "f", "offset": 2**70},
        {"cmd": "mkdir", "path": False},
        {"cmd": "mkdir", "path": "d", "parents": "yes"},
        {"cmd": "mv", "source": "f"},
        {"cmd": "mv", "source": "f", "target": 3},
        {"cmd": "resume", "path": "f", "size": "10"},
        {"cmd": "resume", "path": "f", "size": True},
        {"cmd": "resume", "path": "f", "size": -5},
        {"cmd": "resume", "path": "f"},
        {"cmd": "stat", "path": "f", "checksum": "yes"},
        {"cmd": "hello", "versions": "1"},
        {"cmd": "hello", "versions": [True]},
        {"cmd": "hello", "versions": [1.0]},
    ],
    ids=lambda r: json.dumps(r)[:60],
)
def test_wrong_field_types_get_bad_request_and_connection_stays_usable(srv, request_):
    (srv.anon_dir / "f").write_bytes(b"0123456789")
    with srv.raw() as sock:
        send_frame(sock, request_)
        assert_error(recv_frame(sock), "bad_request")
        round_trip(sock)
    assert_still_serving(srv)


def test_hello_with_no_common_version_is_unsupported_version(srv):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "hello", "versions": [99, 100]})
        reply = recv_frame(sock)
        assert_error(reply, "unsupported_version")
        assert reply["versions"] == [1]
        round_trip(sock)


@pytest.mark.parametrize(
    "header",
    [
        {"cmd": "put", "path": "x", "size": "10"},
        {"cmd": "put", "path": "x", "size": True},
        {"cmd": "put", "path": "x", "size": -1},
        {"cmd": "put", "path": "x", "size": 1.5},
        {"cmd": "put", "path": "x"},
        {"cmd": "put", "path": "x", "size": 10, "offset": -1},
        {"cmd": "put", "path": "x", "size": 10, "offset": 11},
        {"cmd": "put", "path": "x", "size": 10, "offset": "0"},
    ],
    ids=lambda h: json.dumps(h)[14:60],
)
def test_put_with_untrustworthy_size_gets_bad_request_and_close(srv, header):
    # Without a size it can trust, the server cannot find the next header:
    # it answers and closes.
    with srv.raw() as sock:
        send_frame(sock, header, b"0123456789")
        assert_error(recv_frame(sock), "bad_request")
        assert_closed(sock)
    assert not (srv.anon_dir / "x").exists()
    assert_still_serving(srv)


# --- refused uploads drain their bytes ---------------------------------------------------------

#: Bytes that are themselves a valid frame: if the server did not drain a
#: refused upload, it would read them as the next request and run it.
SMUGGLED = encode_frame({"cmd": "mkdir", "path": "smuggled"})


@pytest.mark.parametrize(
    "path, code",
    [
        ("../escape", "path_refused"),
        ("a/../../escape", "path_refused"),
        ("back\\slash", "path_refused"),
        ("nul\x00byte", "path_refused"),
        (".sockftp-part-0000", "path_refused"),
        ("/", "path_refused"),
        ("missing-dir/file", "not_found"),
        ("adir", "is_a_directory"),
        ("afile/child", "not_a_directory"),
    ],
)
def test_refused_put_drains_its_bytes_and_next_request_works(srv, path, code):
    (srv.anon_dir / "adir").mkdir()
    (srv.anon_dir / "afile").write_bytes(b"x")
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": path, "size": len(SMUGGLED)}, SMUGGLED)
        assert_error(recv_frame(sock), code)
        round_trip(sock)
    assert not (srv.anon_dir / "smuggled").exists()
    assert not (srv.anon_dir.parent / "escape").exists()
    assert (srv.anon_dir / "afile").read_bytes() == b"x"
    assert_still_serving(srv)


def test_refused_put_with_trailer_drains_bytes_and_trailer(srv):
    with srv.raw() as sock:
        header = {"cmd": "put", "path": "../escape", "size": len(SMUGGLED), "checksum": "trailer"}
        send_frame(sock, header, SMUGGLED + encode_frame({"checksum": "xxh3-128:" + "0" * 32}))
        assert_error(recv_frame(sock), "path_refused")
        round_trip(sock)
    assert not (srv.anon_dir / "smuggled").exists()


@pytest.mark.parametrize("checksum", ["md5:abc", "xxh3-128:XYZ", "xxh3-128:" + "0" * 31, 5, "", "TRAILER"])
def test_put_with_malformed_checksum_gets_bad_request_and_drains(srv, checksum):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": "c.bin", "size": len(SMUGGLED), "checksum": checksum}, SMUGGLED)
        assert_error(recv_frame(sock), "bad_request")
        round_trip(sock)
    assert not (srv.anon_dir / "c.bin").exists()
    assert not (srv.anon_dir / "smuggled").exists()


def test_refused_put_too_large_to_drain_is_answered_and_closed(srv):
    from sockftp.protocol.limits import MAX_DRAIN

    with srv.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": "../escape", "size": MAX_DRAIN + 1})
        assert_error(recv_frame(sock), "path_refused")
        assert_closed(sock)  # it did not wait for 64 MiB that will never come
    assert_still_serving(srv)


def test_put_path_of_wrong_type_gets_bad_request_and_drains(srv):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": 12, "size": len(SMUGGLED)}, SMUGGLED)
        assert_error(recv_frame(sock), "bad_request")
        round_trip(sock)
    assert not (srv.anon_dir / "smuggled").exists()


def test_bad_trailer_is_bad_request_and_nothing_is_stored(srv):
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": "t.bin", "size": 5, "checksum": "trailer"}, b"hello")
        send_frame(sock, {"checksum": "nope"})
        assert_error(recv_frame(sock), "bad_request")
        round_trip(sock)
    assert not (srv.anon_dir / "t.bin").exists()
    assert [p.name for p in srv.anon_dir.iterdir() if not p.name.startswith(".sockftp-part-")] == []


# --- disconnects ------------------------------------------------------------------------------


@pytest.mark.parametrize("after_a_request", [False, True], ids=["fresh-connection", "after-a-ping"])
def test_client_disconnecting_at_every_byte_of_a_header_does_not_disturb_the_server(srv, after_a_request):
    frame = encode_frame({"cmd": "put", "path": "cut.bin", "size": 3})
    with srv.raw() as watcher:  # a session that lives through all of it
        round_trip(watcher)
        for cut in range(len(frame) + 1):
            with srv.raw() as sock:
                if after_a_request:
                    round_trip(sock)  # the session is surely running when we cut
                sock.sendall(frame[:cut])
        srv.wait_idle(sessions=1)
        round_trip(watcher)
    assert_still_serving(srv)
    assert not (srv.anon_dir / "cut.bin").exists()


def test_client_disconnecting_with_a_reset_mid_header_does_not_disturb_the_server(srv):
    frame = encode_frame({"cmd": "ls", "path": "/"})
    for cut in (1, 4, 7, len(frame) - 1):
        sock = srv.raw()
        round_trip(sock)
        sock.sendall(frame[:cut])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST instead of FIN
    srv.wait_idle()
    assert_still_serving(srv)


def test_client_disconnecting_mid_upload_leaves_nothing_visible(srv):
    data = b"z" * 10_000
    for cut in (0, 1, 5000, 9999):
        with srv.raw() as sock:
            round_trip(sock)
            send_frame(sock, {"cmd": "put", "path": "half.bin", "size": len(data)}, data[:cut])
        srv.wait_idle()
        assert not (srv.anon_dir / "half.bin").exists()
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "ls", "path": "/"})
        assert recv_frame(sock)["entries"] == []
    assert_still_serving(srv)


def test_pipelined_requests_are_answered_in_order(srv):
    with srv.raw() as sock:
        sock.sendall(
            encode_frame({"cmd": "ping"})
            + encode_frame(b"[]")
            + encode_frame({"cmd": "nope"})
            + encode_frame({"cmd": "pwd"})
        )
        assert recv_frame(sock) == {"ok": True}
        assert recv_frame(sock)["error"] == "bad_request"
        assert recv_frame(sock)["error"] == "unknown_command"
        assert recv_frame(sock)["path"] == "/"
