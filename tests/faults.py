"""Fault injection for the tests: cut connections, killed processes, a full disk.

Faults are made the way they happen outside a test, never by reaching into
the server: a socket closed with a reset at an exact byte (what the kernel
does when a client process dies), a client process killed with SIGKILL in
the middle of a transfer, a filesystem that really runs out of space. What a
fault did is judged the same way: by what is on disk and by what the
protocol answers.

* :func:`reset`, :func:`cut_upload`, :func:`cut_download` and
  :func:`plan_cuts` cut raw sessions at seeded random offsets;
* :func:`stalled_client` runs the client library in a subprocess that stops
  mid-transfer, ready to be killed;
* :func:`small_disk` is a size-limited tmpfs (also for a user who is not
  root, with :func:`run_in_user_namespace`);
* :func:`assert_served_promptly` and :func:`assert_usage_matches_disk` are
  the checks that follow a fault or go along with an attack.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import encode_frame, recv_exact, recv_frame, send_frame

from sockftp.protocol import checksum
from sockftp.protocol.limits import RESERVED_PREFIX
from sockftp.storage.blocks import BLOCKS_PREFIX

MiB = 1024 * 1024

# --- seeds --------------------------------------------------------------------------------


def fault_seed() -> int:
    """The seed of this run's random cuts: ``SOCKFTP_FAULT_SEED`` to replay one."""
    seed = int(os.environ.get("SOCKFTP_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed {seed} (replay with SOCKFTP_FAULT_SEED={seed})")
    return seed


@contextmanager
def noted(what: str):
    """Name the fault in any failure raised inside, so it can be replayed."""
    try:
        yield
    except BaseException as exc:
        exc.add_note(what)
        raise


def plan_cuts(rng: random.Random, regions: dict[str, tuple[int, int]], counts: dict[str, int]) -> list:
    """``(region, offset)`` pairs: both ends of every region, and *counts[region]*
    offsets drawn at random inside it (a region is ``[start, end)``)."""
    cuts = set()
    for name, (start, end) in regions.items():
        inside = range(start, end)
        cuts.update((name, offset) for offset in {start, end - 1})
        cuts.update((name, offset) for offset in rng.sample(inside, min(counts[name], len(inside))))
    return sorted(cuts, key=lambda cut: cut[1])


# --- cut connections ----------------------------------------------------------------------


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST and drops what is unsent
    or unread, as it does for a process that dies mid-stream."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def log_in(sock: socket.socket, user: str, password: str = "secret") -> None:
    send_frame(sock, {"cmd": "auth", "user": user, "password": password})
    reply = recv_frame(sock)
    assert reply["ok"] is True, reply


def upload_stream(path: str, data: bytes) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The bytes a client sends for a verified put of *data*, as the library
    sends them (header, raw bytes, checksum trailer), and where each part lies.
    A cut at the start of ``body`` falls right after a complete header."""
    header = encode_frame({"cmd": "put", "path": path, "size": len(data), "checksum": "trailer"})
    trailer = encode_frame({"checksum": checksum.of_bytes(data)})
    body_end = len(header) + len(data)
    regions = {
        "header": (0, len(header)),
        "body": (len(header), body_end),
        "trailer": (body_end, body_end + len(trailer)),
    }
    return header + data + trailer, regions


def started_session(srv, user: str | None = None) -> socket.socket:
    """A raw session that surely runs on the server: it has had a reply (to
    its login as *user*, or to a ping)."""
    sock = srv.raw(timeout=10)
    if user is not None:
        log_in(sock, user)
    else:
        send_frame(sock, {"cmd": "ping"})
        assert recv_frame(sock) == {"ok": True}
    return sock


def cut_upload(srv, stream: bytes, cut: int, user: str | None = None) -> None:
    """A session (logged in as *user*) that sends *cut* bytes of *stream*, then dies."""
    sock = started_session(srv, user)
    sock.sendall(stream[:cut])
    reset(sock)


def cut_download(srv, request: bytes, cut: int) -> bytes:
    """A session that sends the first *cut* bytes of *request*, or all of it
    and then reads *cut* - len(request) bytes of the answer, then dies.
    Returns what it read."""
    sock = started_session(srv)
    sock.sendall(request[:cut])
    read = recv_exact(sock, cut - len(request)) if cut > len(request) else b""
    reset(sock)
    return read


# --- killed client processes --------------------------------------------------------------

_STALLING_CLIENT = """
import sys, time
from sockftp import Client
verb, port, user, remote, local, stall_at = sys.argv[1:]

def progress(done, total):
    if done >= int(stall_at):
        print("stalled", flush=True)
        time.sleep(3600)

with Client("127.0.0.1", int(port), user=user, password="secret", timeout=30) as client:
    if verb == "put":
        client.put(local, remote, progress=progress)
    else:
        client.get(remote, local, progress=progress)
print("finished", flush=True)
"""


def stalled_client(verb: str, port: int, user: str, remote: str, local, stall_at: int) -> subprocess.Popen:
    """A client process, logged in as *user*, whose ``put`` or ``get`` stops
    for good once its progress reaches *stall_at* bytes (a put reports a
    chunk just before sending it). Returns once it has stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLING_CLIENT, verb, str(port), user, remote, str(local), str(stall_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    line = proc.stdout.readline()
    if line != b"stalled\n":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"the client did not stall: {line!r} {err.decode(errors='replace')}")
    return proc


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


# --- a full disk --------------------------------------------------------------------------


@contextmanager
def small_disk(path: Path, size: int):
    """A tmpfs of *size* bytes mounted at *path*, unmounted afterwards.

    Mounting needs root, or root of a user namespace (see
    :func:`run_in_user_namespace`); skips the test, saying why, otherwise.
    """
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs: {mount.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


@contextmanager
def small_ext4(path: Path, size: int):
    """An ext4 filesystem of *size* bytes in an image file, loop-mounted at
    *path*, unmounted afterwards (for what tmpfs does differently, such as
    keeping part of a refused ``fallocate``). Skips the test, saying why,
    without root, ``mkfs.ext4`` or a loop device."""
    if not can_mount():
        pytest.skip("loop-mounting an ext4 image needs root")
    image = path.with_suffix(".img")
    with open(image, "wb") as f:
        f.truncate(size)
    path.mkdir(parents=True, exist_ok=True)
    for command in (["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(path)]):
        try:
            done = subprocess.run(command, capture_output=True)
        except FileNotFoundError:
            pytest.skip(f"cannot make a small ext4: no {command[0]}")
        if done.returncode != 0:
            pytest.skip(f"cannot make a small ext4: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
        image.unlink()


#: Set in a test process that runs as root of a user namespace of its own.
IN_USER_NAMESPACE = "SOCKFTP_TEST_IN_USER_NAMESPACE"


def can_mount() -> bool:
    return os.geteuid() == 0


def run_in_user_namespace(request, basetemp: Path) -> None:
    """Run the current test again in a process that is root of a user and
    mount namespace of its own (``unshare --user --map-root-user --mount``),
    where it may mount: what :func:`small_disk` needs, for a user who is not
    root. Returns if that run passed, fails with its output if it failed,
    and skips, saying why, if no such namespace can be had."""
    if os.environ.get(IN_USER_NAMESPACE):
        pytest.skip("cannot mount a size-limited tmpfs, even as root of a user namespace")
    unshare = ["unshare", "--user", "--map-root-user", "--mount"]
    try:
        probe = subprocess.run([*unshare, "true"], capture_output=True)
    except FileNotFoundError:
        pytest.skip("cannot mount a size-limited tmpfs: not root, and no unshare command")
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs: not root, and {probe.stderr.decode(errors='replace').strip()}")
    run = subprocess.run(
        [*unshare, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(basetemp)]
        + [request.node.nodeid],
        cwd=request.config.rootpath,
        env={**os.environ, IN_USER_NAMESPACE: "1"},
        capture_output=True,
        timeout=300,
    )
    if run.returncode != 0:
        output = (run.stdout + run.stderr).decode(errors="replace")
        pytest.fail(f"as root of a user namespace:\n{output}")


# --- checks -------------------------------------------------------------------------------


def visible(directory: Path) -> dict[str, bytes]:
    """The files a reader can see in *directory* (never the partial uploads), with their bytes."""
    found = [p for p in directory.iterdir() if p.is_file() and not p.name.startswith(RESERVED_PREFIX)]
    return {p.name: p.read_bytes() for p in found}


def partial_sizes(directory: Path) -> list[int]:
    return sorted(p.stat().st_size for p in directory.glob(RESERVED_PREFIX + "-part-*"))


def disk_usage(home: Path) -> tuple[int, int]:
    """What *home* holds on disk: bytes (partials included, the block lists
    kept for deltas not) and complete files."""
    found = [p for p in home.rglob("*") if p.is_file() and not p.is_symlink() and not p.name.startswith(BLOCKS_PREFIX)]
    return sum(p.stat().st_size for p in found), sum(not p.name.startswith(RESERVED_PREFIX) for p in found)


def assert_usage_matches_disk(client, home: Path) -> None:
    """The ``quota`` command reports exactly what *home* holds, nothing reserved."""
    reply = client.quota()
    assert (reply["used_bytes"], reply["used_files"]) == disk_usage(home), reply
    assert reply["reserved_bytes"] == 0, reply


def assert_served_promptly(srv, within: float = 2.0, source: str | None = None, user: str | None = None) -> float:
    """A well-behaved client (from *source*, logged in as *user*) makes a
    round trip in a new session: a verified put of a small file, a get of it
    and its removal, all within *within* seconds. Returns the time taken."""
    data = os.urandom(64 * 1024)
    name = f"well-behaved-{os.getpid()}-{time.monotonic_ns()}.bin"
    started = time.monotonic()
    with srv.raw(timeout=within + 5, source=source) as sock:
        if user is not None:
            log_in(sock, user)
        send_frame(sock, {"cmd": "put", "path": name, "size": len(data), "checksum": checksum.of_bytes(data)}, data)
        assert recv_frame(sock)["ok"] is True
        send_frame(sock, {"cmd": "get", "path": name})
        reply = recv_frame(sock)
        assert recv_exact(sock, reply["filesize"]) == data
        assert reply["checksum"] == checksum.of_bytes(data)
        send_frame(sock, {"cmd": "rm", "path": name})
        assert recv_frame(sock)["ok"] is True
    took = time.monotonic() - started
    assert took < within, f"a well-behaved round trip took {took:.2f} s"
    return took
