"""Single-file throughput: sockftp put/get against the raw loopback limit.

    python -m bench.transfer --size 1G --runs 5

(The figures of docs/bench-notes.md's first table. ``python -m bench`` runs
this comparison too, with TLS, pyftpdlib and a page-cache prewarm.)

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
import os
import shutil
import statistics
import tempfile
import time

from .common import MiB, interleave, make_file, parse_size
from .raw import raw_transfer
from .servers import SockftpServer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="working directory (default: a new temporary one)")
    args = parser.parse_args(argv)

    from sockftp import Client

    work = tempfile.mkdtemp(prefix="sockftp-bench-", dir=args.dir)
    try:
        source = make_file(os.path.join(work, "source.bin"), args.size)
        size = os.path.getsize(source)
        server = SockftpServer(os.path.join(work, "root"), anonymous=True)
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
        times = interleave(variants, args.runs)
        names = list(variants)
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
