"""Hostile clients, one test each, while the server goes on serving a well-behaved one.

Every test runs an attack and, during it or while it still holds what it
took, a well-behaved client makes a verified round trip (put, get, rm) in a
new session, which must take less than 2 seconds. Cases that other files
already cover are named in SECURITY.md next to these.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
import time

import pytest
from conftest import (
    add_user,
    assert_closed,
    encode_frame,
    recv_frame,
    recv_frame_raw,
    round_trip,
    send_frame,
    wait_until,
)
from faults import (
    MiB,
    assert_served_promptly,
    assert_usage_matches_disk,
    partial_sizes,
    started_session,
    visible,
)

import sockftp
from sockftp.disk import prealloc
from sockftp.protocol import checksum
from sockftp.protocol.limits import LIST_BATCH_ENTRIES, MAX_DRAIN, MAX_HEADER_SIZE
from sockftp.server.auth import BanList

pytestmark = pytest.mark.usefixtures("no_server_errors")


def error_of(reply: dict) -> str | None:
    return None if reply.get("ok") else reply.get("error")


# --- slow and greedy clients --------------------------------------------------------------------


def test_slowloris_connections_trickling_a_byte_at_a_time_are_cut_while_others_are_served(server):
    header_timeout = 1.5
    srv = server(header_timeout=header_timeout, max_sessions_per_ip=400)
    frame = encode_frame({"cmd": "ls", "path": "/", "pad": "x" * 64})
    socks = [srv.raw() for _ in range(150)]
    answered: dict[socket.socket, float] = {}
    started = time.monotonic()
    stop = threading.Event()

    def trickle():
        selector = selectors.DefaultSelector()
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        position = 0
        while not stop.is_set() and len(answered) < len(socks):
            for key, _ in selector.select(0):
                answered[key.fileobj] = time.monotonic() - started
                selector.unregister(key.fileobj)
            for sock in socks:
                if sock not in answered:
                    sock.send(frame[position : position + 1])
            position += 1
            time.sleep(0.1)
        selector.close()

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        for _ in range(3):
            assert_served_promptly(srv)
            time.sleep(0.2)
        trickler.join(header_timeout + 10)
    finally:
        stop.set()
        trickler.join()
    assert len(answered) == len(socks)
    for sock in socks:
        assert error_of(recv_frame(sock)) == "timeout"
        assert_closed(sock)
    # Cut by the header timeout, not the idle timeout, however they trickle.
    assert max(answered.values()) < header_timeout + 3
    srv.wait_idle(timeout=10)
    assert_served_promptly(srv)


def test_clients_that_request_a_download_and_never_read_it_are_cut_while_others_are_served(server):
    srv = server(idle_timeout=1.0)
    (srv.anon_dir / "big.bin").write_bytes(os.urandom(16 * MiB))
    hogs = []
    for _ in range(8):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        send_frame(sock, {"cmd": "get", "path": "big.bin"})
        hogs.append(sock)
    try:
        assert_served_promptly(srv)
        time.sleep(0.3)
        assert_served_promptly(srv)
        # The server gives up on each of them after the idle timeout.
        srv.wait_idle(timeout=10)
    finally:
        for sock in hogs:
            sock.close()
    assert_served_promptly(srv)


def test_a_petabyte_upload_announcement_costs_nothing_and_is_refused_at_once(server):
    srv = server(idle_timeout=1.0, login_failure_delay=0.01)
    add_user(srv.root, "alice", quota_bytes=10 * MiB)
    petabyte = 2**50
    chunk = os.urandom(MiB)

    # A user with a quota: refused as announced, before a byte is read.
    sock = started_session(srv, "alice")
    started = time.monotonic()
    send_frame(sock, {"cmd": "put", "path": "huge.bin", "size": petabyte}, chunk)
    assert error_of(recv_frame(sock)) == "quota_exceeded"
    assert_closed(sock)  # it does not wait for, or drain, a petabyte
    assert time.monotonic() - started < 1.5
    home = srv.root / "users" / "alice"
    assert visible(home) == {} and partial_sizes(home) == []
    with srv.client(user="alice", password="secret") as alice:
        assert_usage_matches_disk(alice, home)

    # No quota: the disk has no room for a petabyte, which is refused as
    # announced too (insufficient_storage), and nothing is kept.
    sock = started_session(srv)
    started = time.monotonic()
    send_frame(sock, {"cmd": "put", "path": "huge.bin", "size": petabyte}, chunk)
    assert error_of(recv_frame(sock)) == "insufficient_storage"
    assert_closed(sock)
    assert time.monotonic() - started < 1.5
    assert visible(srv.anon_dir) == {} and partial_sizes(srv.anon_dir) == []

    # A size the disk can hold is accepted, but only bytes that arrive take room.
    big = 64 * MiB
    sock = started_session(srv)
    send_frame(sock, {"cmd": "put", "path": "huge.bin", "size": big}, chunk)
    wait_until(lambda: partial_sizes(srv.anon_dir) == [MiB], what="the megabyte that came")
    (held,) = srv.anon_dir.glob(".sockftp-part-*")
    # Disk is reserved at most one window ahead of the bytes (sockftp.disk.prealloc), never for the petabyte.
    assert held.stat().st_blocks * 512 <= MiB + prealloc.WINDOW + 256 * 1024
    assert_served_promptly(srv)
    # It then stalls, and the idle timeout ends it; its partial stays hidden,
    # and gives back the disk reserved past its bytes.
    assert error_of(recv_frame(sock)) == "timeout"
    sock.close()
    srv.wait_idle()
    assert visible(srv.anon_dir) == {} and partial_sizes(srv.anon_dir) == [MiB]
    assert held.stat().st_blocks * 512 <= MiB + 256 * 1024
    with srv.client() as anonymous:
        assert_usage_matches_disk(anonymous, srv.anon_dir)
        assert anonymous.request({"cmd": "resume", "path": "huge.bin", "size": big})["offset"] == MiB


# --- limits ---------------------------------------------------------------------------------------


def _path_of(total: int) -> str:
    """A relative path of exactly *total* UTF-8 bytes, in names of 240 bytes at most."""
    names = []
    while total > 0:
        size = min(240, total)
        names.append("n" * size)
        total -= size + 1
    return "/".join(names)


def limit_header(srv, limits):
    # At the limit: test_bad_input.py::test_header_of_exactly_64KiB_is_accepted.
    size = limits["max_header_size"] + 1
    overhead = len(json.dumps({"cmd": "ping", "pad": ""}).encode())
    payload = json.dumps({"cmd": "ping", "pad": "x" * (size - overhead)}).encode()
    assert len(payload) == size
    with srv.raw() as sock:
        send_frame(sock, payload)
        assert error_of(recv_frame(sock)) == "bad_frame"
        assert_closed(sock)


def limit_path_length(srv, limits):
    at = _path_of(limits["max_path_length"])
    assert len(at.encode()) == limits["max_path_length"]
    parent, name = at.rsplit("/", 1)
    with srv.client() as c:
        c.mkdir(parent, parents=True)
        c.request({"cmd": "put", "path": at, "size": 0})
        assert c.stat(at).type == "file"
        for past in (at + "x", "/" + at, at.replace("/", "//", 1)):
            with pytest.raises(sockftp.PathRefused):
                c.stat(past)
        # Also when a short relative path is joined to a deep cwd.
        c.cd(parent)
        assert c.stat(name).type == "file"
        with pytest.raises(sockftp.PathRefused):
            c.stat(name + "x")


def limit_name_length(srv, limits):
    at = "é" * 127 + "x"
    assert len(at.encode()) == limits["max_name_length"]
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "mkdir", "path": at})
        assert recv_frame(sock)["ok"] is True
        send_frame(sock, {"cmd": "mkdir", "path": "é" * 128})
        assert error_of(recv_frame(sock)) == "path_refused"
        send_frame(sock, {"cmd": "put", "path": "é" * 128, "size": 3}, b"abc")
        assert error_of(recv_frame(sock)) == "path_refused"
        round_trip(sock)
    assert [p.name for p in srv.anon_dir.iterdir()] == [at]


def limit_path_depth(srv, limits):
    at = "/".join(["d"] * limits["max_path_depth"])
    with srv.client() as c:
        c.mkdir(at, parents=True)
        assert c.stat(at).type == "dir"
        with pytest.raises(sockftp.PathRefused):
            c.mkdir(at + "/d")
        c.cd(at + "/d/..")  # too deep as written, at the limit once resolved
        with pytest.raises(sockftp.PathRefused):
            c.mkdir("d")  # one level below a cwd at the limit


def limit_file_size(srv, limits):
    at = limits["max_file_size"]
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "resume", "path": "f", "size": at})
        assert recv_frame(sock)["offset"] == 0
        send_frame(sock, {"cmd": "resume", "path": "f", "size": at + 1})
        assert error_of(recv_frame(sock)) == "bad_request"
        (srv.anon_dir / "small").write_bytes(b"abc")
        send_frame(sock, {"cmd": "get", "path": "small", "offset": at})
        assert error_of(recv_frame(sock)) == "offset_mismatch"
        send_frame(sock, {"cmd": "get", "path": "small", "offset": at + 1})
        assert error_of(recv_frame(sock)) == "bad_request"
        send_frame(sock, {"cmd": "put", "path": "f", "size": at + 1})
        assert error_of(recv_frame(sock)) == "bad_request"
        assert_closed(sock)  # without a size it can trust, it cannot find the next header


def limit_listing_batch(srv, limits):
    batch = LIST_BATCH_ENTRIES
    for count, frames in ((batch, [batch]), (batch + 1, [batch, 1])):
        directory = srv.anon_dir / str(count)
        directory.mkdir()
        for i in range(count):
            (directory / str(i)).write_bytes(b"")
        with srv.raw() as sock:
            send_frame(sock, {"cmd": "ls", "path": str(count)})
            assert [len(frame["entries"]) for frame in read_listing(sock)] == frames


def limit_drain(srv, limits):
    # Just past it: test_bad_input.py::test_refused_put_too_large_to_drain_is_answered_and_closed.
    with srv.raw(timeout=30) as sock:
        send_frame(sock, {"cmd": "put", "path": "../escape", "size": MAX_DRAIN}, bytes(MAX_DRAIN))
        assert error_of(recv_frame(sock)) == "path_refused"
        round_trip(sock)  # all of it was read and dropped: still in step


LIMITS = {
    "max_header_size": limit_header,
    "max_path_length": limit_path_length,
    "max_name_length": limit_name_length,
    "max_path_depth": limit_path_depth,
    "max_file_size": limit_file_size,
    "list_batch_entries": limit_listing_batch,
    "max_drain": limit_drain,
}


@pytest.mark.parametrize("limit", LIMITS)
def test_each_documented_limit_is_accepted_at_and_refused_just_past(srv, limit):
    with srv.client() as c:
        limits = c.server_info["limits"]  # what hello announces is what is enforced
    LIMITS[limit](srv, limits)
    assert_served_promptly(srv)


def read_listing(sock) -> list[dict]:
    """The frames of one ``ls`` reply, each checked to be under the header limit."""
    frames = []
    while True:
        raw = recv_frame_raw(sock)
        assert len(raw) <= MAX_HEADER_SIZE
        frames.append(json.loads(raw))
        assert frames[-1]["ok"] is True, frames[-1]
        if not frames[-1]["more"]:
            return frames


# --- trees and names --------------------------------------------------------------------------------


def test_the_deepest_tree_and_the_longest_names_work_end_to_end(server, files, tmp_path):
    srv = server(login_failure_delay=0.01)
    add_user(srv.root, "alice")
    home = srv.root / "users" / "alice"
    longest = "é" * 127 + "x"  # 255 bytes, the name limit
    data = os.urandom(100_000)
    with srv.client(user="alice", password="secret") as c:
        deep = "/".join(f"{i:03d}" for i in range(255))
        c.mkdir(deep, parents=True)
        c.put(files("leaf", data), deep + "/leaf.bin")  # a file at the depth limit
        c.mkdir(f"{longest}/{longest}", parents=True)
        c.put(files("long", data), f"{longest}/{longest}/{longest}")
        assert [e.name for e in c.ls(f"{longest}/{longest}")] == [longest]
        assert_served_promptly(srv)
        for remote in (deep + "/leaf.bin", f"{longest}/{longest}/{longest}"):
            local = tmp_path / longest
            result = c.get(remote, local)
            assert result.checksum == checksum.of_bytes(data) and local.read_bytes() == data
            local.unlink()
        assert sum(len(files) for _, _, files in c.walk("/")) == 2
    with srv.client(user="alice", password="secret") as again:
        assert_usage_matches_disk(again, home)  # measured afresh: the whole tree counts


def test_a_home_with_more_directories_than_free_descriptors_is_measured_whole(spawn_server, tmp_path):
    # Usage is measured from disk at login. Were every directory waiting to be
    # measured held open, a user with many directories would exhaust the
    # server's descriptors, and those it could not open would go uncounted:
    # a way past the quota.
    root = tmp_path / "data"
    add_user(root, "alice", quota_bytes=10 * MiB)
    home = root / "users" / "alice"
    for i in range(600):
        (home / f"d{i}").mkdir(parents=True)
        (home / f"d{i}" / "f").write_bytes(b"x")
    handle = spawn_server(root, max_files=128)
    with sockftp.Client("127.0.0.1", handle.port, user="alice", password="secret", timeout=10) as alice:
        assert_usage_matches_disk(alice, home)
        alice.ping()
    assert "Traceback" not in handle.stderr()


def test_a_listing_of_100000_files_is_streamed_in_bounded_frames(srv):
    many = srv.anon_dir / "many"
    many.mkdir()
    # A listing costs per name: a few empty files under 100,000 names (ext4
    # allows 65,000 links to one) are made ten times faster than 100,000
    # files, and list the same.
    fd = os.open(many, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(100_000):
            source = f"file-{i - i % 50_000:06d}.dat"
            if i % 50_000:
                os.link(source, f"file-{i:06d}.dat", src_dir_fd=fd, dst_dir_fd=fd)
            else:
                os.close(os.open(source, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    names = set()
    with srv.raw(timeout=30) as sock:
        send_frame(sock, {"cmd": "ls", "path": "many"})
        first = recv_frame_raw(sock)
        # The server is blocked on the rest of the stream: others are served meanwhile.
        assert_served_promptly(srv)
        names.update(e["name"] for e in json.loads(first)["entries"])
        frames = read_listing(sock)
        round_trip(sock)  # in step after the stream
    names.update(e["name"] for frame in frames for e in frame["entries"])
    assert len(names) == 100_000 and "file-099999.dat" in names
    assert len(frames) + 1 >= 100_000 // LIST_BATCH_ENTRIES
    with srv.client(timeout=30) as c:
        assert sum(1 for _ in c.iter_ls("many")) == 100_000


#: Names made on disk, and how a listing shows them.
NAMES_ON_DISK = {
    b"with space.txt": "with space.txt",
    b" leading and trailing ": " leading and trailing ",
    "caf\u00e9-\u2713-\U0001f642.txt".encode(): "caf\u00e9-\u2713-\U0001f642.txt",
    "cafe\u0301-decomposed.txt".encode(): "cafe\u0301-decomposed.txt",
    "\u202eright-to-left.txt".encode(): "\u202eright-to-left.txt",
    b"new\nline.txt": "new\nline.txt",
    b"tab\tname": "tab\tname",
    b"bad\xff\xfe.bin": "bad\\xff\\xfe.bin",
    b"latin1-caf\xe9.txt": "latin1-caf\\xe9.txt",
    b"\xed\xa0\x80-encoded-surrogate": "\\xed\\xa0\\x80-encoded-surrogate",
    b"back\\slash": "back\\slash",
}


def test_names_with_spaces_newlines_unicode_and_undecodable_bytes(srv, files, tmp_path):
    anon = os.fsencode(srv.anon_dir)
    for name in NAMES_ON_DISK:
        fd = os.open(os.path.join(anon, name), os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, name)
        os.close(fd)
    with srv.client() as c:
        listed = {e.name for e in c.ls("/")}
        assert listed == set(NAMES_ON_DISK.values())
        for on_disk, shown in NAMES_ON_DISK.items():
            try:
                c.get(shown, tmp_path / "copy")
            except sockftp.PathRefused:
                # Not valid as a path (a control character, a backslash or an
                # escape): refused, never mistaken for another file.
                assert any(ch in shown for ch in "\n\t\\")
                continue
            assert (tmp_path / "copy").read_bytes() == on_disk
            (tmp_path / "copy").unlink()
        # Names with spaces and Unicode can be written too; controls cannot.
        for name in ("with space.txt", "caf\u00e9-\u2713-\U0001f642.txt", "\u202eright-to-left.txt"):
            c.put(files("new", b"replaced"), name)
            assert c.stat(name).size == len(b"replaced")
        for name in ("new\nline.txt", "tab\tname", "back\\slash"):
            with pytest.raises(sockftp.PathRefused):
                c.put(files("new", b"x"), name)
        with pytest.raises(sockftp.PathRefused):
            list(c.walk("/"))  # the reference client refuses to act on a backslash
        assert_usage_matches_disk(c, srv.anon_dir)
    # Undecodable names are left as they are; bytes that are not UTF-8 in a header are bad_json.
    assert b"bad\xff\xfe.bin" in os.listdir(anon)
    with srv.raw() as sock:
        send_frame(sock, b'{"cmd": "stat", "path": "bad\xff\xfe.bin"}')
        assert error_of(recv_frame(sock)) == "bad_json"
        send_frame(sock, {"cmd": "put", "path": "bad\udcff", "size": 1}, b"x")  # JSON can carry a lone surrogate
        assert error_of(recv_frame(sock)) == "path_refused"
        round_trip(sock)
    assert_served_promptly(srv)


# --- races and guessing ---------------------------------------------------------------------------

SECRET = b"outside the root: must never be read\n"


def test_a_directory_swapped_for_a_symlink_during_requests_never_leads_outside(server, tmp_path):
    srv = server(login_failure_delay=0.01)
    add_user(srv.root, "alice")
    home = srv.root / "users" / "alice"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file.txt").write_bytes(SECRET)
    (outside / "only-outside.txt").write_bytes(SECRET)
    (home / "d").mkdir(parents=True)
    (home / "d" / "file.txt").write_bytes(b"inside")
    os.symlink(outside, home / "link")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    stop = threading.Event()
    swaps = 0

    def swap():
        # d is a directory, then a symbolic link to outside the root, and back.
        nonlocal swaps
        while not stop.is_set():
            os.rename(home / "d", home / "d.real")
            os.rename(home / "link", home / "d")
            os.rename(home / "d", home / "link")
            os.rename(home / "d.real", home / "d")
            swaps += 1

    outcomes: dict[str, list] = {"get": [], "put": [], "ls": [], "stat": []}
    allowed = {"not_found", "path_refused", "not_a_directory", "busy", "exists", "not_empty"}

    def attack(kind: str, client, number: int):
        for i in range(10_000):
            if stop.is_set():
                return
            try:
                if kind == "get":
                    local = tmp_path / f"got-{number}"
                    client.get("d/file.txt", local)
                    outcomes[kind].append(local.read_bytes())
                    local.unlink()
                elif kind == "put":
                    client.put(pwned, f"d/new-{i}.txt")
                    outcomes[kind].append("ok")
                elif kind == "ls":
                    outcomes[kind].append({e.name for e in client.ls("d")})
                else:
                    client.stat("d/only-outside.txt")
                    outcomes[kind].append("ok")
            except sockftp.SockftpError as exc:
                outcomes[kind].append(exc.code if exc.code in allowed else exc)

    pwned = tmp_path / "pwned"
    pwned.write_bytes(b"PWNED")
    clients = [srv.client(user="alice", password="secret") for _ in range(4)]
    swapper = threading.Thread(target=swap)
    attackers = [
        threading.Thread(target=attack, args=(k, c, n)) for n, (k, c) in enumerate(zip(outcomes, clients, strict=True))
    ]
    swapper.start()
    for t in attackers:
        t.start()
    time.sleep(1.5)
    assert_served_promptly(srv)
    stop.set()
    for t in (swapper, *attackers):
        t.join(10)
    assert swaps > 10
    unexpected = [o for kind in outcomes.values() for o in kind if isinstance(o, Exception)]
    assert not unexpected, unexpected[:5]
    assert all(data == b"inside" for data in outcomes["get"] if isinstance(data, bytes))
    assert any(data == b"inside" for data in outcomes["get"]), "no get ever succeeded: the race was not run"
    assert "path_refused" in outcomes["get"], "no get ever met the link: the race was not run"
    assert all("only-outside.txt" not in names for names in outcomes["ls"] if isinstance(names, set))
    assert "ok" not in outcomes["stat"]
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


def test_many_failed_logins_from_one_address_ban_it_while_others_are_served(server):
    srv = server(anonymous=False, login_failure_delay=0.05, ban_failures=5, ban_window=60, ban_time=60)
    add_user(srv.root, "alice")
    # A round trip here includes a login, whose argon2 work takes a while on
    # a busy machine. The guesser has at most ATTEMPTS_PER_ADDRESS checks
    # running beside it, so "within normal time" is within 2 s, or within
    # that many times more than it takes unattacked, and a little.
    normal = assert_served_promptly(srv, within=10, source="127.0.0.2", user="alice")
    within = max(2.0, (BanList.ATTEMPTS_PER_ADDRESS + 2) * normal)
    guesses = [srv.raw(timeout=30, source="127.0.0.1") for _ in range(20)]
    for n, sock in enumerate(guesses):
        frames = [encode_frame({"cmd": "auth", "user": "alice", "password": f"guess-{n}-{i}"}) for i in range(5)]
        sock.sendall(b"".join(frames))
    # While the guesses are checked, a user from another address is served.
    assert_served_promptly(srv, within, source="127.0.0.2", user="alice")
    codes = []
    for sock in guesses:
        try:
            while True:
                reply = recv_frame(sock)
                codes.append(error_of(reply))
                if codes[-1] == "banned":
                    break
        except (EOFError, ConnectionResetError):
            pass
    assert codes.count("auth_failed") <= 5 + BanList.ATTEMPTS_PER_ADDRESS - 1
    assert "banned" in codes and set(codes) <= {"auth_failed", "banned"}
    # From now on the address is refused at connect, without any password work.
    started = time.monotonic()
    for _ in range(50):
        with srv.raw(source="127.0.0.1") as sock:
            assert error_of(recv_frame(sock)) == "banned"
    assert time.monotonic() - started < 2
    assert_served_promptly(srv, within, source="127.0.0.2", user="alice")
