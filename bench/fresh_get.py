"""A get of a freshly uploaded file, as the server side alone can serve it:
sockftp against pyftpdlib (issue 16, item 8's server-side target).

Each run, for each server, untimed: a fresh name is uploaded (to sockftp
seed-style, that is without a checksum; to pyftpdlib with STOR), and
``sync`` waits until it is on disk, so no writeback runs during the timed
part. Then, timed: one download of that file to a client that only drains
what it receives (``recv_into`` a 4 MiB buffer, nothing written, nothing
hashed), so the figure is the server's and the loopback's alone. The file
is deleted afterwards, untimed.

* sockftp: a seed-style client (:class:`SeedClient`, the format of
  docs/PROTOCOL.md, "Compatibility with the seed protocol"): a 4-byte
  length and a JSON header ``{"cmd": "get", "filename": ...}``, no
  ``hello``, no login (the server runs with ``--anonymous``). Timed from
  the request to the last byte. The server hashes every upload as it
  arrives and keeps the checksum with the file, so the first get sends at
  once (before that, it hashed the whole file before its first reply, and
  this workload measured 0.7x pyftpdlib).
* pyftpdlib: RETR over one ftplib session (``bench.clients.FtpSession``),
  timed from the PASV to the ``226``, like the big-file RETR; its
  ``sendfile`` is on (its default).

Target: sockftp's GB/s >= 1.2 x pyftpdlib's, medians of the interleaved
runs. Before the runs, each server's copy is checked once against the
source, by content.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import time
from itertools import count

from .clients import HOST, FtpSession
from .common import CLIENT_TIMEOUT, Env, MiB, Samples, human_size, interleave, make_file
from .report import Check, Section, ratio_check
from .servers import FtpServer, SockftpServer

SOCKFTP = "sockftp, seed-style get of a fresh seed-style upload"
PYFTPDLIB = "pyftpdlib, RETR of a fresh STOR"
BUFFER_SIZE = 4 * MiB


class SeedClient:
    """A client in the seed's format: ``struct.pack('i', n)`` and a JSON
    header with ``filename`` and ``filesize``; no ``hello``, no login. It
    reads the one reply sockftp sends to every request."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
        self._buffer = memoryview(bytearray(BUFFER_SIZE))

    def _request(self, header: dict) -> None:
        data = json.dumps(header).encode()
        self.sock.sendall(struct.pack("i", len(data)) + data)

    def _exactly(self, n: int) -> memoryview:
        """The next *n* bytes (at most the buffer's size), and not one more:
        raw bytes may follow a reply."""
        view = self._buffer[:n]
        got = 0
        while got < n:
            received = self.sock.recv_into(view[got:])
            if not received:
                raise ConnectionError(f"the server closed the connection ({got} of {n} bytes)")
            got += received
        return view

    def _reply(self) -> dict:
        (length,) = struct.unpack("<I", self._exactly(4))
        reply = json.loads(bytes(self._exactly(length)))
        if not reply.get("ok"):
            raise RuntimeError(f"sockftp refused: {reply}")
        return reply

    def put(self, local: str, remote: str) -> dict:
        """Upload *local* without a checksum, as the seed does."""
        size = os.path.getsize(local)
        self._request({"cmd": "put", "filename": remote, "filesize": size})
        with open(local, "rb", buffering=0) as f:
            while n := f.readinto(self._buffer):
                self.sock.sendall(self._buffer[:n])
        reply = self._reply()
        # The server hashes every upload as it arrives, so even one that
        # sent no checksum is answered the checksum it stored.
        if reply.get("size") != size or not isinstance(reply.get("checksum"), str):
            raise RuntimeError(f"a seed-style upload of {size} bytes was answered {reply}")
        return reply

    def get(self, remote: str, sink=None) -> dict:
        """Download *remote*, dropping its bytes (or feeding them to *sink*)."""
        self._request({"cmd": "get", "filename": remote})
        reply = self._reply()
        left = reply["filesize"]
        while left:
            n = self.sock.recv_into(self._buffer, min(left, BUFFER_SIZE))
            if not n:
                raise ConnectionError(f"the server closed the connection with {left} bytes still to come")
            if sink is not None:
                sink(self._buffer[:n])
            left -= n
        return reply

    def rm(self, remote: str) -> None:
        self._request({"cmd": "rm", "path": remote})
        self._reply()

    def close(self) -> None:
        self.sock.close()


def ftp_drain(session: FtpSession, remote: str, sink=None) -> int:
    """RETR *remote*, dropping its bytes (or feeding them to *sink*); the byte count."""
    view = session._view()
    received = 0
    with session.ftp.transfercmd(f"RETR {remote}") as conn:
        while n := conn.recv_into(view):
            if sink is not None:
                sink(view[:n])
            received += n
    session.ftp.voidresp()
    return received


def run(env: Env, size: int) -> tuple[Section, list[Check]]:
    source = make_file(env.path("fresh-source.bin"), size)
    try:
        with (
            SockftpServer(env.path("fresh-sockftp"), anonymous=True) as ours,
            FtpServer(env.path("fresh-pyftpdlib")) as theirs,
        ):
            seed, ftp = SeedClient(ours.port), FtpSession(theirs.port)
            try:
                _check_content(seed, ftp, source)
                cpu: dict[str, list[float]] = {SOCKFTP: [], PYFTPDLIB: []}
                variants = {
                    SOCKFTP: _variant(env, ours, cpu[SOCKFTP], source, size, seed.put, seed.get, seed.rm),
                    PYFTPDLIB: _variant(
                        env, theirs, cpu[PYFTPDLIB], source, size, ftp.put, lambda name: ftp_drain(ftp, name), ftp.rm
                    ),
                }
                env.say(f"a fresh {human_size(size)} file, got by a draining client: 2 variants x {env.runs} runs")
                seconds = interleave(variants, env.runs)
                ours.check_alive()
                theirs.check_alive()
            finally:
                seed.close()
                ftp.close()
    finally:
        os.unlink(source)

    rates = {name: [size / t / 1e9 for t in times] for name, times in seconds.items()}
    section = Section(f"get of a freshly uploaded {human_size(size)} file, to a client that only drains (GB/s)")
    for name, values in rates.items():
        section.add(name, Samples("GB/s", values), f"server CPU s {statistics.median(cpu[name]):.2f}")
    section.notes.append(
        "each run uploads a fresh name (sockftp: seed-style, no checksum), untimed, syncs, then times one get; "
        "sockftp hashed it as it arrived, so its first get reads nothing to hash it"
    )
    check = ratio_check(
        f"get of a fresh seed-style upload, {human_size(size)}, draining client",
        "sockftp / pyftpdlib RETR",
        rates[SOCKFTP],
        rates[PYFTPDLIB],
        1.2,
        True,
        unit="GB/s",
        reference_name="pyftpdlib RETR of a fresh STOR",
    )
    return section, [check]


def _variant(env: Env, server, cpu: list[float], source: str, size: int, put, get, rm):
    """One run: upload a fresh name and sync (untimed), get it (timed), delete it."""
    names = (f"fresh-{n}.bin" for n in count())

    def variant() -> float:
        name = next(names)
        put(source, name)
        os.sync()
        cpu_before = server.cpu()
        start = time.perf_counter()
        get(name)
        elapsed = time.perf_counter() - start
        cpu.append(server.cpu() - cpu_before)
        rm(name)
        return elapsed

    return variant


def _check_content(seed: SeedClient, ftp: FtpSession, source: str) -> None:
    """Each server returns what it was given (untimed, once), and sockftp's
    checksum of a seed-style upload is the source's."""
    from sockftp.protocol import checksum

    with open(source, "rb") as f:
        expected = checksum.of_file(f)
    seed.put(source, "check.bin")
    hasher = checksum.Hasher()
    reply = seed.get("check.bin", hasher.update)
    if hasher.value() != expected or reply.get("checksum") != expected:
        raise RuntimeError("sockftp returned a different file than it was given (seed-style)")
    seed.rm("check.bin")
    ftp.put(source, "check.bin")
    hasher = checksum.Hasher()
    ftp_drain(ftp, "check.bin", hasher.update)
    if hasher.value() != expected:
        raise RuntimeError("pyftpdlib returned a different file than it was given")
    ftp.rm("check.bin")
