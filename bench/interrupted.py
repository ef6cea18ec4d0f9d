"""How long an interrupted upload keeps its path locked (issue 16, item 6).

    python -m bench.interrupted                          # this checkout
    python -m bench.interrupted --rate 5M --rate 20M --rate none --runs 7 \\
        --variant before=/work/main/src --variant after=src

A ``sockftp put`` of a large file to a ``sockftp serve`` child process on
127.0.0.1 is sent SIGINT once the server holds an eighth of the file; from
then on, the bench tries every millisecond to take the partial's lock
(``flock``, as a second upload does). The time until it can is how long a
second upload of the path, the same command run again, is told ``busy``.
Also shown: how much the server wrote after the SIGINT (bytes that were
queued in the two kernels' socket buffers), and how long the client took
to exit.

With ``--session-rate`` the server reads at a set pace, as a slow link
would make it: a client's plain close then reaches it only behind the
megabytes still queued, which it reads at that pace.

A variant is a source directory put first on ``PYTHONPATH`` of both the
server and the client (``NAME=DIR``; or ``NAME=SERVER_DIR,CLIENT_DIR``), so
that two checkouts can be compared side by side in one run. Variants are
interleaved (A B, then B A) at every rate; the table gives medians with
the min-max spread.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from .common import MiB, parse_size

#: The server holds this fraction of the file when the client is interrupted.
CUT_AT = 1 / 8


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.interrupted", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"), help="file size (default 256M)")
    parser.add_argument(
        "--rate", action="append", help="server --session-rate, or 'none' (repeatable; default: none, 20M, 5M)"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of each variant at each rate (default 5)")
    parser.add_argument(
        "--variant", action="append", help="NAME=SRC or NAME=SERVER_SRC,CLIENT_SRC (default: this checkout)"
    )
    parser.add_argument("--dir", help="where the files go (default: a temporary directory)")
    return parser.parse_args(argv)


def parse_variant(text: str) -> tuple[str, str, str]:
    name, _, dirs = text.partition("=")
    if not name or not dirs:
        raise SystemExit(f"bad --variant {text!r}: NAME=SRC or NAME=SERVER_SRC,CLIENT_SRC")
    server, _, client = dirs.partition(",")
    return name, os.path.abspath(server), os.path.abspath(client or server)


def environment(src: str) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def start_server(root: str, rate: str | None, src: str) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root, "--anonymous"]
    if rate:
        command += ["--session-rate", rate]
    with open(root + ".log", "ab") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=environment(src), text=True)
    for line in proc.stdout:
        match = re.search(r"listening on .*:(\d+)\s*$", line)
        if match:
            return proc, int(match.group(1))
    raise RuntimeError(f"the server exited ({proc.wait()}); see {root}.log")


def one_cut(big: str, size: int, port: int, anonymous: str, src: str) -> dict:
    """Interrupt one put; what it measured."""
    for path in glob.glob(os.path.join(anonymous, ".sockftp-part-*")) + glob.glob(os.path.join(anonymous, "*")):
        os.unlink(path)
    put = subprocess.Popen(
        [sys.executable, "-m", "sockftp", "put", "-q", big, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=environment(src),
        text=True,
    )
    deadline = time.monotonic() + 120
    while True:
        parts = glob.glob(os.path.join(anonymous, ".sockftp-part-*"))
        if parts and os.path.getsize(parts[0]) > size * CUT_AT:
            break
        if time.monotonic() > deadline or put.poll() is not None:
            put.kill()
            raise RuntimeError(f"the upload never got an eighth of the way: {put.communicate()[1]!r}")
        time.sleep(0.002)
    fd = os.open(parts[0], os.O_RDONLY)
    try:
        at_signal = os.fstat(fd).st_size
        put.send_signal(signal.SIGINT)
        cut = time.monotonic()
        free = exited = None
        while free is None or exited is None:
            if free is None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    free = time.monotonic() - cut
                    fcntl.flock(fd, fcntl.LOCK_UN)
            if exited is None and put.poll() is not None:
                exited = time.monotonic() - cut
            if time.monotonic() - cut > 60:
                put.kill()
                raise RuntimeError("the lock was not released within 60 s")
            time.sleep(0.001)
        drained = os.fstat(fd).st_size - at_signal
    finally:
        os.close(fd)
    put.communicate()
    return {"free": free * 1000, "exit": exited * 1000, "drained": drained / MiB, "status": put.returncode}


def spread(values: list[float], unit: str, digits: int = 0) -> str:
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv=None) -> int:
    args = parse_args(argv)
    rates = [None if r.lower() == "none" else r for r in (args.rate or ["none", "20M", "5M"])]
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    variants = [parse_variant(v) for v in args.variant] if args.variant else [("this", here, here)]
    with tempfile.TemporaryDirectory(prefix="bench-interrupted-", dir=args.dir) as work:
        big = os.path.join(work, "big.bin")
        with open(big, "wb") as f:
            block = os.urandom(MiB)
            for _ in range(args.size // MiB):
                f.write(block)
        print(f"python -m bench.interrupted {' '.join(sys.argv[1:])}", file=sys.stderr)
        print("| session rate | variant | lock held after SIGINT | written after SIGINT | client exit |")
        print("|---|---|---|---|---|")
        for rate in rates:
            results: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
            servers = {}
            try:
                for name, server_src, _ in variants:
                    root = os.path.join(work, f"root-{name}-{rate}")
                    servers[name] = (*start_server(root, rate, server_src), os.path.join(root, "anonymous"))
                for run in range(args.runs):
                    order = variants if run % 2 == 0 else variants[::-1]
                    for name, _, client_src in order:
                        _, port, anonymous = servers[name]
                        result = one_cut(big, args.size, port, anonymous, client_src)
                        results[name].append(result)
                        print(f"{rate or 'none'} {name} run {run}: {result}", file=sys.stderr)
            finally:
                for proc, _, _ in servers.values():
                    proc.send_signal(signal.SIGTERM)
                    proc.wait()
            for name, _, _ in variants:
                rows = results[name]
                print(
                    f"| {rate or 'none'} | {name} | {spread([r['free'] for r in rows], 'ms')}"
                    f" | {spread([r['drained'] for r in rows], 'MiB', 1)} | {spread([r['exit'] for r in rows], 'ms')} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
