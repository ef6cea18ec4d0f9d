"""Logins against a big home (issue 16): CLIENTS clients at once, each
connecting, logging in and getting a 1 KiB file, again and again, against
a home that holds N files; the latency of each round trip, p50 and p99.

Before issue 16 the server walked a user's home at every login that found
no other session of theirs open, and the anonymous area is one user: with
100,000 files in it one seed-style get took 0.16 s instead of 2 ms, and a
crowd of them timed out. Now usage is kept in the account store and a
login walks nothing, so the latency must not depend on N. The target: a
p99 under 50 ms with 1,000,000 files.

Two ways in, each on a server of its own (``sockftp serve`` in a child
process):

* anonymous: a client with no login, as the seed's clients; the files
  are in the anonymous area;
* the bench user, given a quota (so the server must know their usage), by
  re-login token (no argon2: what is left of the login is a database
  lookup). Their first login ever is made untimed before the runs: it
  measures the home, which was never measured.

The clients run in worker processes (one per core, one thread per client),
in a closed loop with a random pause between round trips (``THINK`` on
average), so that the server is busy but not saturated and the figure is
a round trip's, not a queue's. A round trip is a new connection, hello,
login, a verified get of the 1 KiB file, and quit.

How the files are made, and what it costs (this VM, ext4 without a
journal): one empty file per directory of ``PER_DIRECTORY`` names, and
hard links to it for the rest. A walk reads every name and stats every
entry, which is all the server's measure ever did with them; the links
cost no data blocks and a thousand inodes instead of a million (ext4 caps
a file at 65,000 links, hence one per directory), and allocate no inode
that ext4 would check against recent deletes (1 ms each after many, see
``describe_filesystem``). About 16 us a name here: 1,000,000 in 16-20 s,
and about 10 s to delete. The tree is made once per N and moved (a
rename) from the anonymous server's root to the user's home.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import statistics
import time
import traceback

from .clients import HOST, mint_token
from .common import CLIENT_TIMEOUT, Env, Samples
from .report import Check, Section
from .servers import USER, SockftpServer

#: Mean pause between a client's round trips (s): 50 clients make about
#: 500 round trips a second, about half of what this VM's two cores serve.
THINK = 0.1
#: Names per directory of the big tree.
PER_DIRECTORY = 1000
#: The target of issue 16: p99 of a round trip, with the most files (ms).
TARGET_P99_MS = 50.0
SMALL = b"x" * 1024

VARIANTS = ("anonymous", "user with a quota, by token")


def run(env: Env, counts: list[int], clients: int, seconds: float) -> tuple[Section, list[Check]]:
    """Each N of *counts* against both servers, *env.runs* timed runs of
    *seconds* each."""
    section = Section(f"{clients} clients, each connect + login + get of 1 KiB, against a home of N files (ms)")
    checks: list[Check] = []
    results: dict[tuple[str, int], list[list[float]]] = {}
    for files in counts:
        tree = env.path(f"home-tree-{files}")
        made = make_tree(tree, files)
        env.say(f"big home: {files:,} files made in {made:.1f} s")
        for variant in VARIANTS:
            results[variant, files] = _runs(env, variant, tree, files, clients, seconds)
        started = time.perf_counter()
        shutil.rmtree(tree, ignore_errors=True)
        env.say(f"big home: {files:,} files deleted in {time.perf_counter() - started:.1f} s")
        section.notes.append(f"{files:,} files: made in {made:.1f} s (hard links, {PER_DIRECTORY} to a directory)")
    for (variant, files), runs in results.items():
        section.add(f"{variant}, {files:,} files: p50", Samples("ms", [_percentile(r, 50) for r in runs]))
        section.add(f"{variant}, {files:,} files: p99", Samples("ms", [_percentile(r, 99) for r in runs]))
        round_trips = statistics.median(len(r) for r in runs)
        section.notes.append(f"{variant}, {files:,} files: {round_trips:.0f} round trips a run (median)")
    most = max(counts)
    for variant in VARIANTS:
        per_run = [_percentile(r, 99) for r in results[variant, most]]
        checks.append(
            Check(
                f"{clients} logins + gets, a home of {most:,} files",
                f"p99, {variant}",
                statistics.median(per_run),
                TARGET_P99_MS,
                False,
                per_run,
                unit="ms",
            )
        )
    return section, checks


def make_tree(path: str, files: int) -> float:
    """*files* names under *path* (directories of PER_DIRECTORY): one empty
    file per directory, hard links to it for the rest. Seconds it took."""
    started = time.perf_counter()
    os.makedirs(path)
    for first in range(0, files, PER_DIRECTORY):
        directory = os.path.join(path, f"d{first // PER_DIRECTORY:05d}")
        os.mkdir(directory)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.close(os.open("f0", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd))
            for number in range(1, min(PER_DIRECTORY, files - first)):
                os.link("f0", f"f{number}", src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def _runs(env: Env, variant: str, tree: str, files: int, clients: int, seconds: float) -> list[list[float]]:
    """The latencies (ms) of every round trip, one list per run."""
    anonymous = variant == "anonymous"
    root = env.path(f"home-{'anonymous' if anonymous else 'user'}-{files}")
    with SockftpServer(root, anonymous=anonymous, sessions=clients + 16) as server:
        home = server.home(anonymous=anonymous)
        os.makedirs(home, exist_ok=True)
        with open(os.path.join(home, "small.bin"), "wb") as f:
            f.write(SMALL)
        os.rename(tree, os.path.join(home, "many"))
        try:
            token = None
            if not anonymous:
                _give_a_quota(root)
                token = mint_token(server.port)  # the first login ever: it measures the home, untimed
            env.say(f"big home: {variant}, {files:,} files: {env.runs} runs of {seconds:g} s")
            runs = []
            for _ in range(env.runs):
                runs.append(_one_run(env, server.port, token, clients, seconds))
                server.check_alive()
                time.sleep(0.5)
            return runs
        finally:
            os.rename(os.path.join(home, "many"), tree)


def _give_a_quota(root: str) -> None:
    from sockftp.accounts import SqliteUserStore
    from sockftp.server.config import users_db

    with SqliteUserStore(users_db(root)) as store:
        store.update(USER, quota_bytes=1 << 40)


def _one_run(env: Env, port: int, token: str | None, clients: int, seconds: float) -> list[float]:
    processes = max(1, min(os.cpu_count() or 1, clients))
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    workers = [
        context.Process(
            target=_worker,
            args=(index, port, token, share, seconds, go, results, env.fresh_dir(f"home-got-{index}")),
            daemon=True,
        )
        for index, share in enumerate(shares)
    ]
    for worker in workers:
        worker.start()
    ready = [results.get(timeout=120) for _ in workers]
    if any(kind != "ready" for kind, _ in ready):
        raise RuntimeError(f"a client worker failed to start: {ready}")
    go.set()
    latencies: list[float] = []
    errors: list[str] = []
    for _ in workers:
        kind, value = results.get(timeout=seconds + CLIENT_TIMEOUT)
        if kind == "done":
            latencies += value
        else:
            errors.append(value)
    for worker in workers:
        worker.join(30)
    if errors:
        raise RuntimeError(f"{len(errors)} client workers failed; the first:\n{errors[0]}")
    if not latencies:
        raise RuntimeError("no round trip completed")
    return latencies


def _worker(index: int, port: int, token: str | None, clients: int, seconds: float, go, results, local: str):
    """A worker process: *clients* threads, each in a closed loop of round
    trips for *seconds* once *go* is set. Puts ("done", latencies in ms)."""
    import threading

    from sockftp import Client

    latencies: list[float] = []
    errors: list[str] = []

    def client(number: int) -> None:
        rng = random.Random(index * 1000 + number)
        target = os.path.join(local, f"small-{number}.bin")
        go.wait()
        deadline = time.monotonic() + seconds
        while True:
            pause = rng.uniform(0, 2 * THINK)
            if time.monotonic() + pause >= deadline:
                return
            time.sleep(pause)
            started = time.perf_counter()
            try:
                login = {"user": USER, "token": token} if token else {}
                with Client(HOST, port, timeout=CLIENT_TIMEOUT, **login) as session:
                    session.get("small.bin", target, resume=False)
            except Exception:  # noqa: BLE001 - reported to the coordinator
                errors.append(traceback.format_exc())
                return
            latencies.append((time.perf_counter() - started) * 1000)

    try:
        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
        for thread in threads:
            thread.start()
        results.put(("ready", None))
        for thread in threads:
            thread.join(seconds + CLIENT_TIMEOUT)
        results.put(("error", errors[0]) if errors else ("done", latencies))
    except Exception:  # noqa: BLE001 - reported to the coordinator
        results.put(("error", traceback.format_exc()))


def _percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]
