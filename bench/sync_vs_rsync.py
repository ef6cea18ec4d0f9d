"""sockftp sync against rsync, side by side on 127.0.0.1 (issue 21's targets).

    python -m bench.sync_vs_rsync                 # every workload, 5 runs each
    python -m bench.sync_vs_rsync --quick         # small sizes, 3 runs
    python -m bench.sync_vs_rsync --only big --runs 7

rsync runs as a daemon (``rsync --daemon`` on a TCP port, ``-rt``, as a
sync that keeps times and nothing else), the closest thing to sockftp's
plain TCP; sockftp is a ``sockftp serve`` process, and the client is the
library (``Client.sync_up``/``sync_down``, a new connection per run, its
connect timed) and, for the first workload, also the command line, whose
Python start-up is then part of the time. Variants alternate order run by
run; the table gives medians (min-max) and the ratio of the medians.

Workloads: the first sync of 1000 files of 4 KiB; a re-sync of 10,000
unchanged files; the same with 10% of them changed; a 1 GiB file with
1 MiB changed in the middle, re-synced up and down (bytes moved too); and
a ``--checksum`` re-sync of 1 GiB in 1000 files with nothing changed.
Needs ``rsync`` on the PATH. Not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from sockftp.client import Client

from .common import MiB
from .servers import SockftpServer


class RsyncDaemon:
    """``rsync --daemon`` serving module ``m`` (read-write) from *path*."""

    def __init__(self, path: str, workdir: str):
        self.path = path
        os.makedirs(path, exist_ok=True)
        config = os.path.join(workdir, "rsyncd.conf")
        with open(config, "w") as f:
            f.write(f"use chroot = false\nuid = {os.getuid()}\ngid = {os.getgid()}\n")
            f.write(f"[m]\npath = {path}\nread only = false\n")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--port={self.port}", f"--config={config}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(["rsync", f"rsync://127.0.0.1:{self.port}/"], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("rsync --daemon did not start")
            time.sleep(0.05)

    def url(self, sub: str) -> str:
        return f"rsync://127.0.0.1:{self.port}/m/{sub}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rsync(*args: str) -> tuple[float, int, int]:
    """Run rsync; (seconds, bytes sent, bytes received) by its --stats."""
    started = time.perf_counter()
    done = subprocess.run(["rsync", "-rt", "--stats", *args], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", done.stdout).group(1).replace(",", ""))
    received = int(re.search(r"Total bytes received: ([\d,]+)", done.stdout).group(1).replace(",", ""))
    return seconds, sent, received


def sockftp_sync(port: int, direction: str, source: str, target: str, **options) -> tuple[float, int]:
    """One sync over a new connection; (seconds, file bytes moved)."""
    started = time.perf_counter()
    with Client("127.0.0.1", port, timeout=120) as client:
        method = client.sync_up if direction == "up" else client.sync_down
        summary = method(source, target, **options)
    seconds = time.perf_counter() - started
    assert summary.failed == 0, summary.failures
    return seconds, summary.wire_bytes


def sockftp_cli(port: int, source: str, target: str) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "sockftp", "sync", "up", source, target, "--port", str(port), "-q"]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def make_files(root: str, count: int, size: int, dirs: int = 10) -> list[str]:
    paths = []
    for i in range(count):
        path = os.path.join(root, f"d{i % dirs:02}", f"f{i:05}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        paths.append(path)
    return paths


def change(path: str, at: int, count: int) -> None:
    """Overwrite *count* bytes of *path* at *at*, and move its time on."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(os.urandom(count))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, what: str, ours: list[float], theirs: list[float], unit: str = "s") -> None:
        a, b = statistics.median(ours), statistics.median(theirs)
        self.rows.append((what, _cell(ours, unit), _cell(theirs, unit), f"{a / b:.2f}x" if b else "-"))
        print(f"  {what}: sockftp {_cell(ours, unit)}, rsync {_cell(theirs, unit)}", file=sys.stderr, flush=True)

    def show(self) -> None:
        print("| workload | sockftp | rsync | sockftp / rsync |")
        print("| --- | --- | --- | --- |")
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


def _cell(values: list[float], unit: str) -> str:
    digits = 0 if unit == "B" else 3
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def alternate(runs: int, first, second, before=None) -> tuple[list, list]:
    """Run *first* and *second* *runs* times each, swapping their order
    every other run; *before()* (untimed) ahead of each pair."""
    a, b = [], []
    for run in range(runs):
        if before is not None:
            before(run)
        order = [(first, a), (second, b)] if run % 2 == 0 else [(second, b), (first, a)]
        for action, out in order:
            out.append(action())
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 runs")
    parser.add_argument("--only", choices=["first", "resync", "big", "checksum"], action="append")
    parser.add_argument("--dir", help="where the trees go (default: a temporary directory)")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    scale = 10 if args.quick else 1
    only = set(args.only or ["first", "resync", "big", "checksum"])
    work = tempfile.mkdtemp(prefix="sync-bench-", dir=args.dir)
    table = Table()
    server = SockftpServer(os.path.join(work, "sockftp-root"), anonymous=True)
    daemon = RsyncDaemon(os.path.join(work, "rsync-root"), work)
    remote = server.home(anonymous=True)
    try:
        port = server.port if hasattr(server, "port") else server.ports[0]
        if "first" in only:
            print("first sync of 1000 x 4 KiB", file=sys.stderr)
            source = os.path.join(work, "first")
            make_files(source, 1000 // scale, 4096)
            counter = iter(range(10**6))

            def fresh(_run):
                for path in (os.path.join(remote, "first"), os.path.join(daemon.path, "first")):
                    shutil.rmtree(path, ignore_errors=True)
                os.sync()

            ours, theirs = alternate(
                runs,
                lambda: sockftp_sync(port, "up", source, "/first")[0],
                lambda: rsync(source + "/", daemon.url("first/"))[0],
                fresh,
            )
            table.add(f"first sync, {1000 // scale} x 4 KiB, library", ours, theirs)
            ours, theirs = alternate(
                runs,
                lambda: sockftp_cli(port, source, f"/first-cli{next(counter)}"),
                lambda: rsync(source + "/", daemon.url(f"first-cli{next(counter)}/"))[0],
            )
            table.add(f"first sync, {1000 // scale} x 4 KiB, command line", ours, theirs)
        if "resync" in only:
            print("re-sync of 10,000 files", file=sys.stderr)
            source = os.path.join(work, "tree")
            paths = make_files(source, 10_000 // scale, 2048, dirs=100)
            sockftp_sync(port, "up", source, "/tree")
            rsync(source + "/", daemon.url("tree/"))
            ours, theirs = alternate(
                runs,
                lambda: sockftp_sync(port, "up", source, "/tree")[0],
                lambda: rsync(source + "/", daemon.url("tree/"))[0],
            )
            table.add(f"re-sync, {len(paths)} files unchanged", ours, theirs)

            def change_tenth(run):
                for path in paths[run % 10 :: 10]:
                    change(path, 0, 100)

            ours, theirs = alternate(
                runs,
                lambda: sockftp_sync(port, "up", source, "/tree")[0],
                lambda: rsync(source + "/", daemon.url("tree/"))[0],
                change_tenth,
            )
            table.add(f"re-sync, {len(paths)} files, 10% changed", ours, theirs)
        if "big" in only:
            size = 1024 * MiB // scale
            print(f"{size // MiB} MiB file, 1 MiB changed in the middle", file=sys.stderr)
            source = os.path.join(work, "big")
            make_files(source, 1, size, dirs=1)
            (big,) = [os.path.join(root, name) for root, _, names in os.walk(source) for name in names]
            sockftp_sync(port, "up", source, "/big")
            rsync(source + "/", daemon.url("big/"))
            up_bytes: tuple[list, list] = ([], [])

            def up_ours():
                seconds, moved = sockftp_sync(port, "up", source, "/big")
                up_bytes[0].append(moved)
                return seconds

            def up_theirs():
                seconds, sent, _ = rsync(source + "/", daemon.url("big/"))
                up_bytes[1].append(sent)
                return seconds

            ours, theirs = alternate(runs, up_ours, up_theirs, lambda run: change(big, size // 2 + run * 4099, MiB))
            table.add(f"{size // MiB} MiB, 1 MiB changed, up", ours, theirs)
            table.add(f"{size // MiB} MiB, 1 MiB changed, up: bytes sent", *up_bytes, unit="B")
            down_ours, down_theirs = os.path.join(work, "down-ours"), os.path.join(work, "down-theirs")
            sockftp_sync(port, "down", "/big", down_ours)
            rsync(daemon.url("big/"), down_theirs + "/")
            down_bytes: tuple[list, list] = ([], [])

            def down_a():
                seconds, moved = sockftp_sync(port, "down", "/big", down_ours)
                down_bytes[0].append(moved)
                return seconds

            def down_b():
                seconds, _, received = rsync(daemon.url("big/"), down_theirs + "/")
                down_bytes[1].append(received)
                return seconds

            def change_remote(run):
                change(big, size // 3 + run * 4099, MiB)
                sockftp_sync(port, "up", source, "/big")
                rsync(source + "/", daemon.url("big/"))

            ours, theirs = alternate(runs, down_a, down_b, change_remote)
            table.add(f"{size // MiB} MiB, 1 MiB changed, down", ours, theirs)
            table.add(f"{size // MiB} MiB, 1 MiB changed, down: bytes received", *down_bytes, unit="B")
        if "checksum" in only:
            print("--checksum re-sync of 1 GiB in 1000 files", file=sys.stderr)
            source = os.path.join(work, "sums")
            make_files(source, 1000 // scale, MiB)
            sockftp_sync(port, "up", source, "/sums")
            rsync(source + "/", daemon.url("sums/"))
            ours, theirs = alternate(
                runs,
                lambda: sockftp_sync(port, "up", source, "/sums", checksum=True)[0],
                lambda: rsync("-c", source + "/", daemon.url("sums/"))[0],
            )
            table.add(f"--checksum re-sync, {1000 // scale} x 1 MiB unchanged", ours, theirs)
    finally:
        server.stop()
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    table.show()


if __name__ == "__main__":
    main()
