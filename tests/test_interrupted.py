"""Transfers cut short (issue 16, item 6): Ctrl-C or a lost connection says
in one line how far the transfer got and which command resumes it, and
that command, run again at once, resumes rather than being told ``busy``.

The command line runs as real processes against a real ``sockftp serve``
whose ``--session-rate`` keeps a transfer in the middle of its file for
seconds; Ctrl-C is a real SIGINT. The server's side is checked over raw
sockets: an upload whose client reset the connection is taken over at
once by the next upload of its path, while two live uploads still meet
``busy``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import encode_frame, partials_in, recv_frame, round_trip, send_frame, wait_until
from faults import reset

from sockftp.client import partial_path
from sockftp.protocol import checksum
from sockftp.protocol.errors import ConnectionLost
from sockftp.protocol.limits import RESERVED_PREFIX
from sockftp.protocol.wire import Wire
from sockftp.server.uploads import UploadHolders
from sockftp.storage.local import partial_name

MiB = 1024 * 1024

#: The server moves 4 MiB a second per session: an 8 MiB file is mid-way for
#: seconds, and well past what the two kernels' socket buffers hold.
RATE = "4M"
SIZE = 8 * MiB

#: How much must have arrived before the transfer is interrupted.
STARTED = 256 * 1024

RESUME = "; run the same command to resume: "


def sockftp_process(*args: str, cwd: Path, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sockftp", *args],
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def interrupt(proc: subprocess.Popen, started, what: str) -> tuple[str, str]:
    """SIGINT *proc* once ``started()``; its stdout and stderr once it has exited."""
    wait_until(lambda: started() or proc.poll() is not None, timeout=30, what=what)
    assert proc.poll() is None, f"it ended before {what}: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=30)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


#: The line each reconnect prints before the transfer gives up (--retries).
RECONNECT = re.compile(r"^sockftp: .*; reconnecting in [\d.]+ s \(attempt \d+ of \d+\)$")


def the_line(stderr: str) -> str:
    """The one line an interrupted transfer prints, and nothing else but
    the lines of its attempts to reconnect."""
    lines = [line for line in stderr.splitlines() if not RECONNECT.match(line)]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    return lines[0]


def run_again(line: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the command *line* names to resume, as given (``sockftp`` being this one)."""
    words = shlex.split(line.split(RESUME, 1)[1])
    assert words[0] == "sockftp"
    return subprocess.run(
        [sys.executable, "-m", "sockftp", *words[1:]], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def slow_server(spawn_server, tmp_path):
    """A ``sockftp serve`` process whose sessions move RATE each."""
    return spawn_server(tmp_path / "root", "--session-rate", RATE)


@pytest.fixture
def here(tmp_path) -> Path:
    path = tmp_path / "here"
    path.mkdir()
    return path


# -- the command line ---------------------------------------------------------------------------


def test_ctrl_c_during_put_says_how_far_exits_130_and_the_same_command_resumes_at_once(slow_server, here):
    data = os.urandom(SIZE)
    (here / "big.bin").write_bytes(data)
    remote = slow_server.root / "anonymous"
    put = sockftp_process("put", "big.bin", "--port", str(slow_server.port), cwd=here)

    _, stderr = interrupt(put, lambda: sum(map(size_of, partials_in(remote))) >= STARTED, "bytes on the server")

    assert put.returncode == 130
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted: put big\.bin -> /big\.bin at [\d.]+ [KM]iB of 8\.0 MiB \(\d+%\){RESUME}"
        rf"sockftp put --port {slow_server.port} big\.bin",
        line,
    ), line
    # At once: no wait for the server to notice that the first client is gone.
    again = run_again(line, here)
    assert again.returncode == 0, again.stderr
    assert "resumed at" in again.stdout
    assert (remote / "big.bin").read_bytes() == data
    assert not partials_in(remote)


def test_ctrl_c_during_get_says_how_far_exits_130_and_the_same_command_resumes(slow_server, here):
    data = os.urandom(SIZE)
    (slow_server.root / "anonymous" / "big.bin").write_bytes(data)
    get = sockftp_process("get", "big.bin", "copy.bin", "--port", str(slow_server.port), cwd=here)
    partial = Path(partial_path(str(here / "copy.bin")))

    _, stderr = interrupt(get, lambda: size_of(partial) >= STARTED, "bytes in the local partial")

    assert get.returncode == 130
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted: get /big\.bin -> copy\.bin at [\d.]+ [KM]iB of 8\.0 MiB \(\d+%\){RESUME}"
        rf"sockftp get --port {slow_server.port} big\.bin copy\.bin",
        line,
    ), line
    assert not (here / "copy.bin").exists()
    again = run_again(line, here)
    assert again.returncode == 0, again.stderr
    assert "resumed at" in again.stdout
    assert (here / "copy.bin").read_bytes() == data


def make_tree(top: Path) -> dict[str, bytes]:
    """Two small files, then (in the order put -r goes) a large one."""
    contents = {"a.bin": os.urandom(1000), "b.bin": os.urandom(2000), "sub/c.bin": os.urandom(SIZE)}
    for name, data in contents.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(data)
    return contents


def assert_tree(top: Path, contents: dict[str, bytes]) -> None:
    # The server's own hidden files (partials, block lists kept for deltas) are not the tree.
    found = {
        str(p.relative_to(top)): p.read_bytes()
        for p in top.rglob("*")
        if p.is_file() and not p.name.startswith(RESERVED_PREFIX)
    }
    assert found == contents


def test_ctrl_c_during_put_r_counts_the_files_done_and_the_same_command_finishes(slow_server, here):
    contents = make_tree(here / "photos")
    remote = slow_server.root / "anonymous" / "photos"
    put = sockftp_process("put", "-r", "photos", "--port", str(slow_server.port), cwd=here)

    _, stderr = interrupt(put, lambda: sum(map(size_of, partials_in(remote / "sub"))) >= STARTED, "c.bin under way")

    assert put.returncode == 130
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted: put photos -> /photos: 2 of 3 files done, photos/sub/c\.bin at [\d.]+ [KM]iB of 8\.0 MiB"
        rf" \(\d+%\){RESUME}sockftp put -r --port {slow_server.port} photos",
        line,
    ), line
    again = run_again(line, here)
    assert again.returncode == 0, again.stderr
    assert "(1 resumed)" in again.stdout
    assert_tree(remote, contents)


def test_ctrl_c_during_get_r_counts_the_files_done_and_the_same_command_finishes(slow_server, here):
    contents = make_tree(slow_server.root / "anonymous" / "photos")
    get = sockftp_process("get", "-r", "photos", "back", "--port", str(slow_server.port), cwd=here)
    partial = Path(partial_path(str(here / "back" / "sub" / "c.bin")))

    _, stderr = interrupt(get, lambda: size_of(partial) >= STARTED, "c.bin under way")

    assert get.returncode == 130
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted: get /photos -> back: 2 files done, photos/sub/c\.bin at [\d.]+ [KM]iB of 8\.0 MiB"
        rf" \(\d+%\){RESUME}sockftp get -r --port {slow_server.port} photos back",
        line,
    ), line
    again = run_again(line, here)
    assert again.returncode == 0, again.stderr
    assert_tree(here / "back", contents)


def test_a_lost_connection_during_put_says_how_far_exits_3_and_the_command_resumes(spawn_server, tmp_path, here):
    data = os.urandom(SIZE)
    (here / "big.bin").write_bytes(data)
    root = tmp_path / "root"
    first = spawn_server(root, "--session-rate", RATE)
    remote = root / "anonymous"
    put = sockftp_process("put", "big.bin", "--port", str(first.port), cwd=here)
    wait_until(lambda: sum(map(size_of, partials_in(remote))) >= STARTED, timeout=30, what="bytes on the server")

    first.proc.kill()  # the server is gone: the client's reconnects are refused
    _, stderr = put.communicate(timeout=60)

    assert put.returncode == 3
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted \(cannot connect to 127\.0\.0\.1:{first.port}: .+\): put big\.bin -> /big\.bin"
        rf" at [\d.]+ [KM]iB of 8\.0 MiB \(\d+%\){RESUME}sockftp put --port {first.port} big\.bin",
        line,
    ), line
    first.proc.wait()
    spawn_server(root, "--port", str(first.port))  # back where the command looks for it
    again = run_again(line, here)
    assert again.returncode == 0, again.stderr
    assert "resumed at" in again.stdout
    assert (remote / "big.bin").read_bytes() == data


def test_the_shell_survives_ctrl_c_during_a_put_says_how_far_and_resumes(slow_server, here):
    data = os.urandom(SIZE)
    (here / "big.bin").write_bytes(data)
    remote = slow_server.root / "anonymous"
    shell = sockftp_process("shell", "--port", str(slow_server.port), cwd=here, stdin=subprocess.PIPE)
    shell.stdin.write("put big.bin\n")
    shell.stdin.flush()
    wait_until(lambda: sum(map(size_of, partials_in(remote))) >= STARTED, timeout=30, what="bytes on the server")

    shell.send_signal(signal.SIGINT)
    stdout, stderr = shell.communicate("put big.bin\nquit\n", timeout=60)

    assert shell.returncode == 1  # from a pipe, a command that failed makes the status 1
    line = the_line(stderr)
    assert re.fullmatch(
        rf"interrupted: put big\.bin -> /big\.bin at [\d.]+ [KM]iB of 8\.0 MiB \(\d+%\){RESUME}put big\.bin", line
    ), line
    assert "resumed at" in stdout
    assert (remote / "big.bin").read_bytes() == data


def test_a_put_the_library_gives_up_on_lets_go_of_its_path_at_once(server, files):
    # The session reads a KiB a second, so the client's send stalls and it
    # gives up. Were it to close plainly, the server would go on reading the
    # bytes still queued, at that pace, and the path would stay busy.
    srv = server(session_rate=1000)
    local = files("big.bin", os.urandom(SIZE))
    with srv.client(timeout=1.0) as first, pytest.raises(ConnectionLost):
        first.put(local, "big.bin")
    started = time.monotonic()
    with srv.client() as second:
        second.put(files("small.bin", b"small"), "big.bin")
    assert time.monotonic() - started < 0.9
    assert (srv.anon_dir / "big.bin").read_bytes() == b"small"


# -- the server ------------------------------------------------------------------------------


def small_put(srv, path: str, data: bytes) -> dict:
    sock = srv.raw(timeout=10)
    send_frame(sock, {"cmd": "put", "path": path, "size": len(data), "checksum": checksum.of_bytes(data)}, data)
    reply = recv_frame(sock)
    sock.close()
    return reply


def test_an_upload_whose_client_reset_is_taken_over_at_once_not_busy(server):
    srv = server(session_rate=1000)  # each KiB is paced for a second
    first = srv.raw(timeout=10)
    round_trip(first)
    send_frame(first, {"cmd": "put", "path": "t.bin", "size": 64 * 1024, "checksum": "trailer"}, os.urandom(8192))
    wait_until(lambda: sum(map(size_of, partials_in(srv.anon_dir))) > 0, what="the first bytes written")

    reset(first)  # as the kernel does for a process that dies with bytes unsent
    started = time.monotonic()
    reply = small_put(srv, "t.bin", b"second")

    assert reply["ok"] is True, reply
    assert time.monotonic() - started < 0.5  # not once a pacing wait is over
    assert (srv.anon_dir / "t.bin").read_bytes() == b"second"


def locked(path: Path) -> bool:
    """Whether an upload holds the partial at *path* (its flock)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_an_upload_whose_client_is_gone_while_it_hashes_is_waited_for_not_busy(srv):
    # A resume first hashes what the partial holds, without reading the
    # socket: its client may be gone for a while before it notices. The
    # next upload of the path waits for it (briefly) rather than answer busy.
    held = 128 * MiB
    partial = srv.anon_dir / partial_name("big.bin")
    with open(partial, "wb") as f:
        f.truncate(held)  # sparse: no disk, and hashing it takes a moment
    first = srv.raw(timeout=10)
    round_trip(first)
    send_frame(first, {"cmd": "put", "path": "big.bin", "size": held + 1024, "offset": held, "checksum": "trailer"})
    wait_until(lambda: locked(partial), what="the resume to hold the partial")

    reset(first)
    reply = small_put(srv, "big.bin", b"second")

    assert reply["ok"] is True, reply
    assert (srv.anon_dir / "big.bin").read_bytes() == b"second"


def test_two_live_uploads_of_one_path_still_meet_busy_at_once(srv):
    data = os.urandom(4 * MiB)
    first = srv.raw(timeout=10)
    round_trip(first)
    send_frame(first, {"cmd": "put", "path": "both.bin", "size": len(data), "checksum": "trailer"}, data[:65536])
    wait_until(lambda: sum(map(size_of, partials_in(srv.anon_dir))) == 65536, what="the first upload under way")

    started = time.monotonic()
    reply = small_put(srv, "both.bin", b"second")

    assert reply["error"] == "busy", reply
    assert time.monotonic() - started < 1.0  # not after a wait for the first to end
    first.sendall(data[65536:] + encode_frame({"checksum": checksum.of_bytes(data)}))
    assert recv_frame(first)["ok"] is True
    assert (srv.anon_dir / "both.bin").read_bytes() == data


def test_a_resume_counts_what_a_gone_client_had_still_to_write(srv):
    # resume says how much is held: it waits for an upload whose client is
    # gone to write what had already reached the server, and counts it.
    held = 128 * MiB
    partial = srv.anon_dir / partial_name("big.bin")
    with open(partial, "wb") as f:
        f.truncate(held)
    first = srv.raw(timeout=10)
    round_trip(first)
    header = {"cmd": "put", "path": "big.bin", "size": held + MiB, "offset": held, "checksum": "trailer"}
    send_frame(first, header, b"x" * 32768)  # in the server's socket buffer, not read while it hashes
    wait_until(lambda: locked(partial), what="the resume to hold the partial")

    reset(first)
    with srv.client() as second:
        offset = second.request({"cmd": "resume", "path": "big.bin", "size": held + MiB})["offset"]

    assert offset == held + 32768


# -- which session holds which upload -----------------------------------------------------------


def hang_up_test() -> tuple:
    """A real connection's ``peer_hung_up``, and its peer's socket."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname(), timeout=5)
        ours, _ = listener.accept()
    return Wire(ours, idle_timeout=5), peer


def returns_within(call, seconds: float) -> float:
    started = time.monotonic()
    call()
    took = time.monotonic() - started
    assert took < seconds, f"took {took:.2f} s"
    return took


def test_an_upload_waits_for_a_holder_of_the_same_user_whose_client_is_gone_until_it_lets_go():
    holders = UploadHolders()
    wire, peer = hang_up_test()
    holder = holders.hold(("anonymous", "a.bin"), "anonymous", wire.peer_hung_up)
    reset(peer)
    wait_until(wire.peer_hung_up, what="the reset seen")
    threading.Timer(0.3, holders.release, (("anonymous", "a.bin"), holder)).start()

    took = returns_within(lambda: holders.wait_for_abandoned(("anonymous", "a.bin"), "anonymous"), 1.5)

    assert took >= 0.25  # it waited for the release, and no longer
    assert len(holders) == 0
    wire.close()


def test_an_upload_does_not_wait_for_a_live_holder_another_user_or_past_the_limit():
    holders = UploadHolders(wait=0.3)
    live, live_peer = hang_up_test()
    holders.hold(("users", "alice", "live.bin"), "alice", live.peer_hung_up)
    returns_within(lambda: holders.wait_for_abandoned(("users", "alice", "live.bin"), "alice"), 0.1)

    gone, gone_peer = hang_up_test()
    holders.hold(("anonymous", "gone.bin"), "anonymous", gone.peer_hung_up)
    reset(gone_peer)
    wait_until(gone.peer_hung_up, what="the reset seen")
    returns_within(lambda: holders.wait_for_abandoned(("anonymous", "gone.bin"), "mallory"), 0.1)
    # Never released: given up after the limit (the upload is then refused busy).
    took = returns_within(lambda: holders.wait_for_abandoned(("anonymous", "gone.bin"), "anonymous"), 1.0)
    assert took >= 0.25
    returns_within(lambda: holders.wait_for_abandoned(("anonymous", "free.bin"), "anonymous"), 0.1)
    live.close(), live_peer.close(), gone.close()
