"""``sockftp serve --workers N`` (issue 19, item 5): operations per second,
and operations per server CPU-second, at 1 and 2 workers, with the load
generator's own CPU, side by side in one run.

    python -m bench.cluster                          # 3 interleaved runs of 10 s each
    python -m bench.cluster --runs 5 --duration 20 --clients 32

The server is ``sockftp serve --workers N`` on a temporary root (SQLite
accounts, the audit log in a file). The load is ``--processes`` client
processes, each with ``--clients / --processes`` threads, each thread one
session logged in by a re-login token, looping over small verified
operations: put a 4 KiB file of random bytes (the checksum the server
reports must be ours), stat it (the same checksum), get it (the same
bytes). Each of the three counts as one operation; any disagreement is an
error and fails the run.

Server CPU is the sum over the workers' /proc times across the timed
window; the load generator's is its processes' own. On a 2-core machine
the clients need a core too: ops per server CPU-second should stay flat
from 1 to 2 workers, and ops per second should rise as far as the idle core
allows.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time

from .common import cpu_seconds, interleave, own_cpu_seconds
from .servers import PASSWORD, USER, ServerProcess, add_sockftp_user

SMALL = 4096


def _client_process(port: int, token: str, threads: int, start_at: float, stop_at: float, scratch: str, out) -> None:
    """One load process: *threads* sessions until *stop_at*; sends (ops, errors, cpu seconds)."""
    from sockftp.client import Client
    from sockftp.protocol import checksum

    counts = [0] * threads
    errors: list[str] = []

    def session(index: int) -> None:
        local = os.path.join(scratch, f"{os.getpid()}-{index}")
        back = local + ".back"
        with Client("127.0.0.1", port, timeout=30, user=USER, token=token, keep_token=True) as client:
            while time.time() < start_at:
                time.sleep(0.01)
            n = 0
            while time.time() < stop_at:
                data = os.urandom(SMALL)
                with open(local, "wb") as file:
                    file.write(data)
                name = f"p{os.getpid()}-{index}-{n % 50}"
                n += 1
                try:
                    expected = checksum.of_bytes(data)
                    if client.put(local, name).checksum != expected:
                        errors.append("put checksum")
                    if client.checksum(name) != expected:
                        errors.append("stat checksum")
                    client.get(name, back)
                    with open(back, "rb") as file:
                        if file.read() != data:
                            errors.append("get bytes")
                    counts[index] += 3
                except Exception as exc:  # noqa: BLE001 - counted, and fails the run
                    errors.append(repr(exc)[:200])
                    return

    cpu_before = own_cpu_seconds()
    workers = [threading.Thread(target=session, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.send((sum(counts), errors[:5], own_cpu_seconds() - cpu_before))
    out.close()


def _workers_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return [int(p) for p in file.read().split()]
    except OSError:
        return []


def measure(workers: int, root: str, args, token: str) -> dict:
    argv = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root, "--log-level", "warning"]
    argv += ["--max-sessions", "1000", "--max-sessions-per-ip", "1000", "--audit-log", root + ".audit.log"]
    argv += ["--workers", str(workers)]
    with ServerProcess(argv, root + ".log") as server:
        pids = _workers_of(server.proc.pid) if workers > 1 else [server.proc.pid]
        start_at = time.time() + 2.0  # every session connected and logged in first
        stop_at = start_at + args.duration
        pipes, procs = [], []
        per = max(1, args.clients // args.processes)
        for _ in range(args.processes):
            mine, theirs = multiprocessing.Pipe(duplex=False)
            proc = multiprocessing.Process(
                target=_client_process, args=(server.port, token, per, start_at, stop_at, args.scratch, theirs)
            )
            proc.start()
            pipes.append(mine)
            procs.append(proc)
        time.sleep(max(0.0, start_at - time.time()))
        cpu_start = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(max(0.0, stop_at - time.time()))
        cpu_end = sum(cpu_seconds(pid) for pid in pids)
        results = [pipe.recv() for pipe in pipes]
        for proc in procs:
            proc.join()
    ops = sum(r[0] for r in results)
    errors = [e for r in results for e in r[1]]
    if errors:
        raise SystemExit(f"errors with {workers} worker(s): {errors}")
    server_cpu = cpu_end - cpu_start
    return {
        "ops_per_s": ops / args.duration,
        "ops_per_server_cpu_s": ops / server_cpu if server_cpu else float("nan"),
        "server_cpu_per_s": server_cpu / args.duration,
        "client_cpu_per_s": sum(r[2] for r in results) / args.duration,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each timed run")
    parser.add_argument("--clients", type=int, default=32, help="sessions in all")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="sockftp-cluster-bench-") as work:
        args.scratch = os.path.join(work, "local")
        os.makedirs(args.scratch)
        roots = {n: os.path.join(work, f"root-{n}") for n in counts}
        tokens = {}
        for n, root in roots.items():
            os.makedirs(root)
            add_sockftp_user(root)
            tokens[n] = _mint(root)
        measured: dict[int, list[dict]] = {n: [] for n in counts}

        def variant(n):
            def run() -> float:
                measured[n].append(measure(n, roots[n], args, tokens[n]))
                return measured[n][-1]["ops_per_s"]

            return run

        interleave({f"{n} workers": variant(n) for n in counts}, args.runs)
    print(
        f"{args.clients} sessions in {args.processes} load processes, {args.duration:g} s per run, "
        f"medians of {args.runs} interleaved runs (os.cpu_count() = {os.cpu_count()})"
    )
    print(f"{'workers':>8} {'ops/s':>8} {'ops/server-CPU-s':>17} {'server CPU/s':>13} {'load CPU/s':>11}")
    for n in counts:
        med = {key: statistics.median(run[key] for run in measured[n]) for key in measured[n][0]}
        print(
            f"{n:>8} {med['ops_per_s']:>8.0f} {med['ops_per_server_cpu_s']:>17.0f} "
            f"{med['server_cpu_per_s']:>13.2f} {med['client_cpu_per_s']:>11.2f}"
        )
    if len(counts) == 2:
        a, b = counts
        ratio = [y["ops_per_s"] / x["ops_per_s"] for x, y in zip(measured[a], measured[b], strict=True)]
        eff = [
            y["ops_per_server_cpu_s"] / x["ops_per_server_cpu_s"] for x, y in zip(measured[a], measured[b], strict=True)
        ]
        print(
            f"{b} vs {a} workers, run by run: ops/s x{statistics.median(ratio):.2f}, "
            f"ops per server CPU-s x{statistics.median(eff):.2f}"
        )
    return 0


def _mint(root: str) -> str:
    """A re-login token for USER, minted by a short-lived server (one argon2 check)."""
    from sockftp.client import Client

    argv = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root, "--log-level", "warning"]
    with ServerProcess(argv, root + ".mint.log") as server:
        with Client("127.0.0.1", server.port, user=USER, password=PASSWORD, keep_token=True) as client:
            return client.token


if __name__ == "__main__":
    sys.exit(main())
