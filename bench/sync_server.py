"""The server's half of sync, measured: ``python -m bench.sync_server``.

* ``tree``: one ``tree`` request for a tree of N files (default 10,000 in
  100 directories, all uploaded, so each keeps its checksum), with and
  without checksums, against walking it with one ``ls`` per directory
  (what a client does without ``tree``); milliseconds per listing.
* ``delta``: a file of SIZE (default 256 MiB) with 1 MiB changed in the
  middle, uploaded as a delta (``blocks``, then ``put_delta`` with the
  local blocks known) against a whole ``put`` of it; and the changed
  range downloaded (``blocks``, then ``get_ranges``) against a whole
  ``get``. Seconds, and bytes sent.
* ``small`` (with ``--baseline-src DIR``): 1000 files of 4 KiB put with
  ``put_many``, to a server run from this tree and to one run from the
  source tree DIR (``/work/main/src``, say), side by side: what keeping
  every small file's checksum costs.
* ``keep``: the storage alone, in this process: 1000 small uploads (4 KiB,
  all in hand, as a pipelined put's) committed with their checksum kept in
  an extended attribute, against the same with attributes turned off;
  microseconds per file. What the ``small`` comparison measures, without
  the network and the other processes' noise.
* ``big`` (with ``--baseline-src DIR``): a whole ``put`` of SIZE, to both
  servers side by side: what hashing an upload's blocks as it arrives costs.

Every variant runs ``--runs`` times, interleaved (bench.common.interleave);
the medians are printed, with the range. Servers run as child processes
(``python -m sockftp serve``) on 127.0.0.1, anonymous.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from itertools import count

from sockftp.client import Client
from sockftp.protocol.blocks import file_blocks

from .common import MiB, interleave, make_file, parse_size, timed
from .servers import SockftpServer

HERE_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _server(root: str, src: str) -> SockftpServer:
    """A server run from the sockftp in source tree *src*."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = src
    try:
        return SockftpServer(root, anonymous=True)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _say(name: str, values: list[float], unit: str, scale: float = 1.0) -> float:
    median = statistics.median(values) * scale
    print(f"  {name:<44} {median:10.1f} {unit}  ({min(values) * scale:.1f}-{max(values) * scale:.1f})")
    return median


def bench_tree(work: str, files: int, runs: int) -> None:
    with _server(os.path.join(work, "tree-server"), HERE_SRC) as server:
        source = os.path.join(work, "tree-source")
        os.makedirs(source)
        pairs = []
        for i in range(files):
            path = os.path.join(source, f"f{i:06d}")
            with open(path, "wb") as f:
                f.write(os.urandom(100))
            pairs.append((path, f"t/d{i % 100:03d}/f{i:06d}"))
        with Client("127.0.0.1", server.port, timeout=600) as client:
            for d in range(100):
                client.mkdir(f"t/d{d:03d}", parents=True)
            client.put_many(pairs)

            def listing(checksums: bool):
                return lambda: timed(lambda: sum(1 for _ in client.tree("t", checksums=checksums)))

            def walk():
                return timed(lambda: sum(len(files) for _, _, files in client.walk("t")))

            print(f"tree of {files} files in 100 directories ({runs} interleaved runs; ms)")
            results = interleave(
                {"tree, checksums": listing(True), "tree, no checksums": listing(False), "ls per directory": walk},
                runs,
            )
        for name, values in results.items():
            _say(name, values, "ms", 1000)


def bench_delta(work: str, size: int, runs: int) -> None:
    old = make_file(os.path.join(work, "old.bin"), size)
    new = os.path.join(work, "new.bin")
    shutil.copyfile(old, new)
    with open(new, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(MiB))
    blocks = {}
    for path in (old, new):
        fd = os.open(path, os.O_RDONLY)
        try:
            blocks[path] = file_blocks(fd)
        finally:
            os.close(fd)
    with _server(os.path.join(work, "delta-server"), HERE_SRC) as server:
        with Client("127.0.0.1", server.port, timeout=600) as client:
            client.put(old, "delta.bin")
            client.put(old, "whole.bin")
            client.put(new, "down.bin")
            turn = count()
            sent: list[int] = []

            def delta_put() -> float:
                local = new if next(turn) % 2 == 0 else old  # the other version each run

                def send():
                    sent.append(
                        client.put_delta(
                            local, "delta.bin", client.blocks("delta.bin"), local_blocks=blocks[local], fallback=False
                        ).sent
                    )

                return timed(send)

            def whole_put() -> float:
                return timed(lambda: client.put(new, "whole.bin"))

            local_copy = os.path.join(work, "down-local.bin")
            shutil.copyfile(old, local_copy)

            def ranged_get() -> float:
                fd = os.open(local_copy, os.O_WRONLY)
                try:

                    def fetch():
                        remote = client.blocks("down.bin")
                        mine = blocks[old][0]
                        ranges = [
                            (i * remote.block_size, remote.block_size)
                            for i in range(remote.count)
                            if remote.digests[i * 8 : i * 8 + 8] != mine[i * 8 : i * 8 + 8]
                        ]
                        client.get_ranges("down.bin", ranges, lambda at, chunk: os.pwrite(fd, chunk, at))

                    return timed(fetch)
                finally:
                    os.close(fd)

            def whole_get() -> float:
                return timed(lambda: client.get("down.bin", os.path.join(work, "down-whole.bin")))

            print(f"a file of {size // MiB} MiB with 1 MiB changed in the middle ({runs} interleaved runs; s)")
            results = interleave(
                {
                    "delta put (blocks + put_delta)": delta_put,
                    "whole put": whole_put,
                    "delta get (blocks + get_ranges)": ranged_get,
                    "whole get": whole_get,
                },
                runs,
            )
    for name, values in results.items():
        _say(name, values, "ms", 1000)
    print(f"  bytes sent by each delta put: {sorted(set(sent))} of {size}")
    ratio = statistics.median(results["delta put (blocks + put_delta)"]) / statistics.median(results["whole put"])
    print(f"  delta put / whole put, medians: {ratio:.3f}")


def bench_small(work: str, baseline_src: str, runs: int, files: int = 1000, size: int = 4096) -> None:
    source = os.path.join(work, "small-source")
    os.makedirs(source)
    paths = []
    for i in range(files):
        path = os.path.join(source, f"s{i:04d}")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        paths.append(path)
    servers = {
        "this tree": _server(os.path.join(work, "small-this"), HERE_SRC),
        "baseline": _server(os.path.join(work, "small-baseline"), baseline_src),
    }
    try:
        clients = {name: Client("127.0.0.1", s.port, timeout=600) for name, s in servers.items()}
        runs_done = count()

        def put_many(client: Client):
            def run() -> float:
                directory = f"run{next(runs_done)}"
                client.mkdir(directory)
                return timed(lambda: client.put_many([(p, f"{directory}/{os.path.basename(p)}") for p in paths]))

            return run

        print(f"{files} files of {size} bytes, put_many, this tree against {baseline_src} ({runs} interleaved runs)")
        results = interleave({name: put_many(c) for name, c in clients.items()}, runs)
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    rates = {name: [files / t for t in times] for name, times in results.items()}
    for name, values in rates.items():
        _say(name, values, "files/s")
    ratio = statistics.median(rates["this tree"]) / statistics.median(rates["baseline"])
    print(f"  this tree / baseline, medians of files/s: {ratio:.3f}")


def bench_big(work: str, baseline_src: str, size: int, runs: int) -> None:
    local = make_file(os.path.join(work, "big.bin"), size)
    servers = {
        "this tree": _server(os.path.join(work, "big-this"), HERE_SRC),
        "baseline": _server(os.path.join(work, "big-baseline"), baseline_src),
    }
    try:
        clients = {name: Client("127.0.0.1", s.port, timeout=600) for name, s in servers.items()}

        def put(client: Client):
            return lambda: timed(lambda: client.put(local, "big.bin"))

        print(f"a whole put of {size // MiB} MiB, this tree against {baseline_src} ({runs} interleaved runs)")
        results = interleave({name: put(c) for name, c in clients.items()}, runs)
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    rates = {name: [size / t / 1e9 for t in times] for name, times in results.items()}
    for name, values in rates.items():
        _say(name, values, "GB/s")
    ratio = statistics.median(rates["this tree"]) / statistics.median(rates["baseline"])
    print(f"  this tree / baseline, medians of GB/s: {ratio:.3f}")


def bench_keep(work: str, runs: int, files: int = 1000, size: int = 4096) -> None:
    from sockftp.protocol import checksum
    from sockftp.storage import LocalStorage

    storage = LocalStorage(os.path.join(work, "keep-root"))
    data = os.urandom(size)
    value = checksum.of_bytes(data)
    runs_done = count()

    def commits(xattrs: bool):
        def run() -> float:
            directory = (f"run{next(runs_done)}",)
            storage.mkdir(directory)
            storage.xattrs = xattrs

            def all_files():
                for i in range(files):
                    upload = storage.open_upload((*directory, f"f{i:04d}"), size, at_once=True)
                    upload.write(data)
                    upload.commit(value)

            try:
                return timed(all_files)
            finally:
                storage.xattrs = True

        return run

    print(f"{files} small commits ({size} bytes) in the storage alone ({runs} interleaved runs; us per file)")
    results = interleave({"checksum kept (xattr)": commits(True), "no attribute": commits(False)}, runs)
    for name, values in results.items():
        _say(name, [v / files for v in values], "us", 1e6)
    kept, bare = (statistics.median(results[n]) / files * 1e6 for n in results)
    print(f"  the attribute costs {kept - bare:.1f} us per file, medians ({(kept - bare) / bare:+.1%})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_server", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="tree,delta", help="some of tree,delta,keep,small,big")
    parser.add_argument("--files", type=int, default=10_000, help="files in the tree (default 10000)")
    parser.add_argument("--size", type=parse_size, default=256 * MiB, help="the delta's file (default 256M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-src", help="a source tree to run the baseline server of 'small' from")
    parser.add_argument("--dir", help="where the work directory goes (default: the temp dir)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-sync-server-", dir=args.dir)
    try:
        for name in args.only.split(","):
            if name == "tree":
                bench_tree(work, args.files, args.runs)
            elif name == "delta":
                bench_delta(work, args.size, args.runs)
            elif name == "keep":
                bench_keep(work, args.runs)
            elif name in ("small", "big"):
                if not args.baseline_src:
                    parser.error(f"{name} needs --baseline-src")
                if name == "small":
                    bench_small(work, args.baseline_src, args.runs)
                else:
                    bench_big(work, args.baseline_src, args.size, args.runs)
            else:
                parser.error(f"unknown workload {name!r}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
