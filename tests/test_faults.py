"""Fault injection: clients killed at random bytes, a server killed mid-upload, a full disk.

After every fault the same things must hold: nothing half-written is
visible under a name, the server (restarted where it was killed) serves
everyone else, the transfer resumes to a checksum-verified copy, and the
``quota`` command reports exactly what is on disk. The harness is in
``tests/faults.py``. The random cuts are seeded: a failure names its seed
and cut, and ``SOCKFTP_FAULT_SEED=N`` replays it.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from contextlib import ExitStack

import pytest
from conftest import add_user, encode_frame, partials_in, recv_frame_raw, round_trip, wait_until
from faults import (
    MiB,
    assert_served_promptly,
    assert_usage_matches_disk,
    can_mount,
    cut_download,
    cut_upload,
    fault_seed,
    kill9,
    log_in,
    noted,
    partial_sizes,
    plan_cuts,
    run_in_user_namespace,
    small_disk,
    stalled_client,
    upload_stream,
    visible,
)

import sockftp
from sockftp.client import RESUME_THRESHOLD, partial_path
from sockftp.protocol import checksum

pytestmark = pytest.mark.usefixtures("no_server_errors")

#: Large enough that the library asks the server what it holds and resumes.
SIZE = RESUME_THRESHOLD + RESUME_THRESHOLD // 2


@pytest.fixture
def seed():
    return fault_seed()


@pytest.fixture
def fault_server(server):
    """One server for all the cuts of a test: anonymous sessions, and alice,
    who has a quota."""
    srv = server(login_failure_delay=0.01)
    add_user(srv.root, "alice", quota_bytes=16 * MiB)
    srv.home = srv.root / "users" / "alice"
    return srv


# --- clients killed at random bytes ----------------------------------------------------------


@pytest.mark.parametrize(
    "user, counts",
    [(None, {"header": 8, "body": 36, "trailer": 6}), ("alice", {"header": 1, "body": 3, "trailer": 1})],
    # Each login costs an argon2 verification (0.2 s or more), so most cuts
    # are made by anonymous sessions, whose usage the same ledger keeps, and
    # a few by a user with a quota.
    ids=["anonymous", "user-with-a-quota"],
)
def test_uploads_cut_at_random_bytes_leave_nothing_visible_and_resume_to_a_verified_copy(
    fault_server, seed, files, user, counts
):
    srv = fault_server
    rng = random.Random(seed)
    home = srv.home if user else srv.anon_dir
    checker = srv.client(user=user, password="secret" if user else None)  # checks and resumes
    _, regions = upload_stream("victim.bin", bytes(SIZE))
    cuts = plan_cuts(rng, regions, counts)
    assert len(cuts) >= (50 if user is None else 8)
    complete = None  # what a reader may see under the name: the last complete upload
    for number, (region, cut) in enumerate(cuts):
        data = rng.randbytes(SIZE)
        stream, regions = upload_stream("victim.bin", data)
        with noted(f"seed {seed}, cut {number}: client killed after {cut} bytes ({region})"):
            cut_upload(srv, stream, cut, user=user)
            srv.wait_idle(sessions=1)
            # Nothing half-written is visible, on disk or in a listing.
            assert visible(home) == ({} if complete is None else {"victim.bin": complete})
            assert [e.name for e in checker.ls("/")] == ([] if complete is None else ["victim.bin"])
            held = partial_sizes(home)
            if region == "header":
                assert held == []  # an upload starts only with its whole header
            assert len(held) <= 1 and sum(held) <= max(0, cut - regions["body"][0])
            assert_usage_matches_disk(checker, home)
            with srv.raw() as other:
                round_trip(other)  # someone else is served
            result = checker.put(files("victim.bin", data), "victim.bin")
            assert result.resumed_from == sum(held)
            assert checker.checksum("victim.bin") == checksum.of_bytes(data) == result.checksum
            assert visible(home) == {"victim.bin": data}
            assert partials_in(home) == []
            assert_usage_matches_disk(checker, home)
            complete = data


def test_downloads_cut_at_random_bytes_resume_to_a_verified_copy(fault_server, seed, tmp_path):
    srv = fault_server
    rng = random.Random(seed)
    data = rng.randbytes(SIZE)
    (srv.anon_dir / "source.bin").write_bytes(data)
    request = encode_frame({"cmd": "get", "path": "source.bin"})
    with srv.raw() as probe:  # how long the reply's header is
        probe.sendall(request)
        reply_header = 4 + len(recv_frame_raw(probe))
    start = len(request) + reply_header
    regions = {"request": (0, len(request)), "reply": (len(request), start), "body": (start, start + SIZE)}
    cuts = plan_cuts(rng, regions, {"request": 6, "reply": 8, "body": 36})
    assert len(cuts) >= 50
    anonymous = srv.client()
    local = tmp_path / "copy.bin"
    for number, (region, cut) in enumerate(cuts):
        with noted(f"seed {seed}, cut {number}: client killed after {cut} bytes ({region})"):
            read = cut_download(srv, request, cut)
            # A real client keeps what it received in its partial file.
            partial = partial_path(str(local))
            with open(partial, "wb") as f:
                f.write(read[reply_header:])
            srv.wait_idle(sessions=1)
            assert not local.exists()
            assert visible(srv.anon_dir) == {"source.bin": data}
            assert_usage_matches_disk(anonymous, srv.anon_dir)
            with srv.raw() as other:
                round_trip(other)
            result = anonymous.get("source.bin", local)
            assert result.resumed_from == max(0, cut - start)
            assert result.checksum == checksum.of_bytes(data) and local.read_bytes() == data
            assert not os.path.exists(partial)
            local.unlink()


def test_client_processes_killed_mid_transfer_leave_transfers_that_resume(fault_server, files, tmp_path):
    srv = fault_server
    data = random.Random(0).randbytes(10 * MiB)
    source = files("big.bin", data)
    alice = srv.client(user="alice", password="secret")
    # Upload: the client stops before sending its second 4 MiB chunk, and is killed.
    proc = stalled_client("put", srv.port, "alice", "big.bin", source, stall_at=5 * MiB)
    wait_until(lambda: partial_sizes(srv.home) and partial_sizes(srv.home)[0] > 0, what="part of the upload")
    kill9(proc)
    srv.wait_idle(sessions=1)
    held = partial_sizes(srv.home)
    assert visible(srv.home) == {} and len(held) == 1 and 0 < held[0] < len(data)
    assert_usage_matches_disk(alice, srv.home)
    assert_served_promptly(srv)
    result = alice.put(source, "big.bin")
    assert result.resumed_from == held[0]
    assert alice.checksum("big.bin") == checksum.of_bytes(data)
    assert visible(srv.home) == {"big.bin": data}
    assert_usage_matches_disk(alice, srv.home)

    # Download: the client stops after its first chunk reaches its disk, and is killed.
    local = tmp_path / "copy.bin"
    proc = stalled_client("get", srv.port, "alice", "big.bin", local, stall_at=1)
    kill9(proc)
    srv.wait_idle(sessions=1)
    kept = os.stat(partial_path(str(local))).st_size
    assert not local.exists() and 0 < kept < len(data)
    assert_served_promptly(srv)
    result = alice.get("big.bin", local)
    assert result.resumed_from == kept
    assert result.checksum == checksum.of_bytes(data) and local.read_bytes() == data
    assert_usage_matches_disk(alice, srv.home)


# --- the server killed ---------------------------------------------------------------------


def test_server_killed_mid_upload_restarts_serving_and_the_upload_resumes(spawn_server, tmp_path, files):
    root = tmp_path / "data"
    add_user(root, "alice", quota_bytes=16 * MiB)
    home = root / "users" / "alice"
    first = spawn_server(root)
    data = random.Random(1).randbytes(4 * MiB)
    half = len(data) // 2
    stream, regions = upload_stream("big.bin", data)
    with socket.create_connection(("127.0.0.1", first.port), timeout=10) as sock:
        log_in(sock, "alice")
        sock.sendall(stream[: regions["body"][0] + half])
        wait_until(lambda: partial_sizes(home) == [half], what="half the upload on disk")
        kill9(first.proc)
    assert "Traceback" not in first.stderr()
    assert visible(home) == {} and partial_sizes(home) == [half]

    second = spawn_server(root)
    with sockftp.Client("127.0.0.1", second.port, timeout=10) as other:  # everyone else is served
        other.put(files("other.bin", b"another client"), "other.bin")
        assert other.checksum("other.bin") == checksum.of_bytes(b"another client")
    with sockftp.Client("127.0.0.1", second.port, user="alice", password="secret", timeout=10) as alice:
        assert_usage_matches_disk(alice, home)  # measured again at start: the partial counts
        result = alice.put(files("big.bin", data), "big.bin")
        assert result.resumed_from == half
        assert alice.checksum("big.bin") == checksum.of_bytes(data)
        assert_usage_matches_disk(alice, home)
    assert visible(home) == {"big.bin": data} and partials_in(home) == []
    assert "Traceback" not in second.stderr()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def full_disk_server(server, tmp_path, request):
    """Factory: a server whose root is on a filesystem of *size* bytes; alice's
    quota is far larger, so the disk is what runs out. None if the test has
    just run, and passed, as root of a user namespace (we are not root)."""
    if not can_mount():
        run_in_user_namespace(request, tmp_path / "in-user-namespace")
        yield lambda size: None
        return
    with ExitStack() as stack:

        def start(size: int):
            root = stack.enter_context(small_disk(tmp_path / "disk", size)) / "root"
            srv = server(root=root, login_failure_delay=0.01)
            stack.callback(srv.stop)  # before the disk goes
            add_user(srv.root, "alice", quota_bytes=1024 * MiB)
            srv.home = srv.root / "users" / "alice"
            return srv

        yield start


@pytest.mark.parametrize(
    "size",
    [6 * MiB, 72 * MiB],
    ids=["the-rest-is-drained", "too-much-to-drain-closes"],
)
def test_disk_full_mid_upload_is_no_space_and_resumes_once_space_is_freed(full_disk_server, files, size):
    srv = full_disk_server(size + 2 * MiB)
    if srv is None:
        return
    srv.home.mkdir(parents=True)
    (srv.home / "ballast.bin").write_bytes(bytes(size - MiB))
    # The server now refuses an upload the free space cannot hold before it
    # starts (tests/test_space.py). The disk can still fill mid-upload when
    # another process writes to it after the upload was admitted: a reserve
    # far below zero makes the admission see the room the disk had then.
    srv.server.storage.space.min_free = -(1 << 40)
    alice = srv.client(user="alice", password="secret")
    data = random.Random(2).randbytes(size)
    source = files("big.bin", data)
    with pytest.raises(sockftp.NoSpace) as info:
        alice.put(source, "big.bin")
    assert "no space" in info.value.message
    srv.wait_idle(sessions=1)
    held = partial_sizes(srv.home)
    assert visible(srv.home).keys() == {"ballast.bin"}
    assert len(held) == 1 and 0 < held[0] < size
    # The same client goes on (over a new connection if the server hung up).
    assert_usage_matches_disk(alice, srv.home)
    # Everyone else is served: reads work, and writes are refused cleanly.
    with srv.client() as other:
        other.ping()
        with pytest.raises(sockftp.NoSpace):
            other.put(files("small.bin", bytes(256 * 1024)), "small.bin")
        assert other.ls("/") == []
    alice.rm("ballast.bin")
    result = alice.put(source, "big.bin")
    assert result.resumed_from == held[0]
    assert alice.checksum("big.bin") == checksum.of_bytes(data)
    assert visible(srv.home) == {"big.bin": data} and partials_in(srv.home) == []
    assert_usage_matches_disk(alice, srv.home)


def fill(directory, name: str = "ballast.bin") -> None:
    """Write until the filesystem under *directory* is full."""
    with open(directory / name, "wb") as f:
        try:
            while True:
                f.write(bytes(64 * 1024))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_logins_go_on_when_the_disk_is_full(full_disk_server):
    srv = full_disk_server(8 * MiB)
    if srv is None:
        return
    with srv.client(user="alice", password="secret", keep_token=True) as first:
        token = first.token
    assert token is not None
    fill(srv.home)
    # The token's last use cannot be written, the login goes on without it.
    with srv.client(user="alice", token=token) as by_token:
        assert by_token.pwd() == "/"
    # A password login asking for a token gets none, but gets in.
    with srv.client(user="alice", password="secret") as by_password:
        assert by_password.pwd() == "/"
        assert by_password.token is None
