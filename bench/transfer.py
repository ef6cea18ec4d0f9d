"""Single-file throughput: sockftp put/get against the raw loopback limit.

    python -m bench.transfer --size 1G --runs 5

Everything runs on 127.0.0.1. The server is a real ``sockftp serve``
process; the client is this process. The raw limits are minimal socket
pairs between two processes moving the same file:

* download limit: the faster of ``socket.sendfile()`` and a ``readinto`` +
  ``sendall`` loop with 4 MiB buffers, each into ``recv_into``;
* upload limit: ``sendall`` into ``recv_into`` plus a file write, the faster
  of 1 MiB and 4 MiB buffers.

Variants are interleaved (A/B, then B/A) so drift hits all of them alike,
and the report gives medians with the spread. Speed is measured here, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1024 * 1024


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(match.group(1)) * {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB}[match.group(2)]


# -- raw limits: a sender process and a receiving process --------------------------


def _raw_sender(port: int, path: str, mode: str, buffer_size: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock, open(path, "rb", buffering=0) as f:
        if mode == "sendfile":
            sock.sendfile(f)
        else:
            view = memoryview(bytearray(buffer_size))
            while n := f.readinto(view):
                sock.sendall(view[:n])


def raw_transfer(path: str, size: int, mode: str, buffer_size: int, write_to: str | None) -> float:
    """Seconds to move *path* from a child process to this one."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    child = multiprocessing.Process(target=_raw_sender, args=(port, path, mode, buffer_size))
    child.start()
    conn, _ = listener.accept()
    # Timed from the connection, so the child's start-up is not counted.
    start = time.perf_counter()
    view = memoryview(bytearray(buffer_size))
    out = os.open(write_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if write_to else None
    received = 0
    while received < size:
        n = conn.recv_into(view)
        if not n:
            break
        if out is not None:
            os.write(out, view[:n])
        received += n
    elapsed = time.perf_counter() - start
    if out is not None:
        os.close(out)
        os.unlink(write_to)
    conn.close()
    listener.close()
    child.join()
    assert received == size, f"raw transfer moved {received} of {size} bytes"
    return elapsed


# -- sockftp -----------------------------------------------------------------------------


class ServerProcess:
    """``sockftp serve`` in a child process, on a port of its choosing."""

    def __init__(self, root: str, *extra: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sockftp",
                "serve",
                "--port",
                "0",
                "--root",
                root,
                "--anonymous",
                "--log-level",
                "warning",
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("sockftp listening on"):
                self.port = int(line.rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="working directory (default: a new temporary one)")
    args = parser.parse_args(argv)

    from sockftp import Client

    work = tempfile.mkdtemp(prefix="sockftp-bench-", dir=args.dir)
    try:
        source = os.path.join(work, "source.bin")
        with open(source, "wb") as f:
            for _ in range(0, args.size, 4 * MiB):
                f.write(os.urandom(min(4 * MiB, args.size)))
            f.truncate(args.size)
        size = os.path.getsize(source)
        server = ServerProcess(os.path.join(work, "root"))
        client = Client(port=server.port, timeout=120)
        target = os.path.join(work, "copy.bin")

        def sockftp_put():
            # A fresh name each time, like a STOR of a new file: replacing a
            # large file makes ext4 allocate its blocks synchronously
            # (auto_da_alloc), a cost of the filesystem, not of the protocol.
            start = time.perf_counter()
            client.put(source, "upload.bin", resume=False)
            elapsed = time.perf_counter() - start
            client.rm("upload.bin")
            return elapsed

        def sockftp_get():
            start = time.perf_counter()
            client.get("bench.bin", target, resume=False)
            elapsed = time.perf_counter() - start
            os.unlink(target)
            return elapsed

        sink = os.path.join(work, "sink.bin")
        variants = {
            "raw download, sendfile": lambda: raw_transfer(source, size, "sendfile", 4 * MiB, None),
            "raw download, readinto+sendall 4M": lambda: raw_transfer(source, size, "copy", 4 * MiB, None),
            "raw upload, 1M + file write": lambda: raw_transfer(source, size, "copy", MiB, sink),
            "raw upload, 4M + file write": lambda: raw_transfer(source, size, "copy", 4 * MiB, sink),
            "sockftp put (verified)": sockftp_put,
            "sockftp get (verified)": sockftp_get,
        }
        client.put(source, "bench.bin")  # warm up, and something to get
        times: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for run in range(args.runs):
            order = names if run % 2 == 0 else names[::-1]
            for name in order:
                times[name].append(variants[name]())
        client.close()
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(name):
        return size / statistics.median(times[name]) / 1e9

    print(f"\n{size / MiB:.0f} MiB, {args.runs} runs, medians (min-max) in GB/s")
    for name in names:
        speeds = sorted(size / t / 1e9 for t in times[name])
        print(f"  {name:38s} {rate(name):5.2f}  ({speeds[0]:.2f}-{speeds[-1]:.2f})")
    download_limit = max(rate("raw download, sendfile"), rate("raw download, readinto+sendall 4M"))
    upload_limit = max(rate("raw upload, 1M + file write"), rate("raw upload, 4M + file write"))
    print(f"  get / raw download limit: {rate('sockftp get (verified)') / download_limit:.2f}")
    print(f"  put / raw upload limit:   {rate('sockftp put (verified)') / upload_limit:.2f}")


if __name__ == "__main__":
    main()
