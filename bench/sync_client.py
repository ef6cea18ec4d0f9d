"""The client's half of sync, against another version of it: ``python -m bench.sync_client``.

    python -m bench.sync_client --baseline-src /tmp/old/src          # every workload
    python -m bench.sync_client --baseline-src /tmp/old/src --only resync --runs 9

One ``sockftp serve`` (from this tree) holds the remote side. Each run
times one ``Client.sync_up`` over a new connection in a child process,
once with this tree's client and once with the client in
``--baseline-src`` (a ``src`` directory of another checkout, e.g. from
``git archive COMMIT src | tar -x -C /tmp/old``), in alternating order;
the time is taken inside the child, so Python's start-up is not in it.
The table gives the medians (min-max) and their ratio.

Workloads: ``first``, the first sync of 1000 files of 4 KiB (the remote
directory removed, untimed, before each run); ``resync``, a re-sync of
10,000 unchanged files in 100 directories; ``checksum``, a ``--checksum``
re-sync of 1000 unchanged files of 1 MiB. Both clients must have
``Client.sync_up``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from .servers import SockftpServer
from .sync_vs_rsync import make_files

#: Run in the child: one sync, its seconds on stdout.
_CHILD = """
import sys, time
from sockftp.client import Client
port, source, target, checksum = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
started = time.perf_counter()
with Client("127.0.0.1", port, timeout=120) as client:
    summary = client.sync_up(source, target, checksum=checksum)
print(time.perf_counter() - started)
assert summary.failed == 0, summary.failures
"""


def timed_sync(src: str, port: int, source: str, target: str, checksum: bool = False) -> float:
    env = {**os.environ, "PYTHONPATH": src}
    argv = [sys.executable, "-c", _CHILD, str(port), source, target, "1" if checksum else "0"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-src", required=True, help="the src directory of the client to compare with")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--only", choices=["first", "resync", "checksum"], action="append")
    args = parser.parse_args()
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    clients = {"this tree": here, "baseline": os.path.abspath(args.baseline_src)}
    only = set(args.only or ["first", "resync", "checksum"])
    work = tempfile.mkdtemp(prefix="sync-client-bench-")
    server = SockftpServer(os.path.join(work, "root"), anonymous=True)
    remote = server.home(anonymous=True)
    rows = []
    try:
        workloads = []
        if "first" in only:
            source = os.path.join(work, "first")
            make_files(source, 1000, 4096)
            workloads.append(("first sync, 1000 x 4 KiB", source, "/first", False, True))
        if "resync" in only:
            source = os.path.join(work, "tree")
            make_files(source, 10_000, 2048, dirs=100)
            workloads.append(("re-sync, 10,000 files unchanged", source, "/tree", False, False))
        if "checksum" in only:
            source = os.path.join(work, "sums")
            make_files(source, 1000, 1024 * 1024)
            workloads.append(("--checksum re-sync, 1000 x 1 MiB unchanged", source, "/sums", True, False))
        for what, source, target, checksum, fresh in workloads:
            print(what, file=sys.stderr, flush=True)
            if not fresh:
                timed_sync(here, server.port, source, target)  # the remote side, once
            times: dict[str, list[float]] = {name: [] for name in clients}
            names = list(clients)
            for run in range(args.runs):
                for name in names if run % 2 == 0 else names[::-1]:
                    if fresh:
                        shutil.rmtree(os.path.join(remote, target.strip("/")), ignore_errors=True)
                        os.sync()
                    times[name].append(timed_sync(clients[name], server.port, source, target, checksum))
            ours, theirs = (times[name] for name in names)
            ratio = statistics.median(ours) / statistics.median(theirs)
            rows.append((what, _cell(ours), _cell(theirs), f"{ratio:.2f}x"))
            print(f"  this tree {_cell(ours)}, baseline {_cell(theirs)}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| workload | this tree | baseline | this / baseline |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
