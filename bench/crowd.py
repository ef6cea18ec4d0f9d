"""Many clients at once: N clients each getting one 10 MiB file, then each
putting one, sockftp against pyftpdlib; the wall time from the start of all
of them to the end of the last.

This is a server under load: how it schedules many transfers that compete
for two cores, its per-transfer overhead, and, for sockftp, one thread per
session against pyftpdlib's single-threaded event loop.

The clients are logged in before the clock starts (a login is measured
in its own workload), spread over the worker processes of a
:class:`bench.pool.ClientPool`, and do one untimed round of each phase
first, so their buffers are allocated before any run is timed. All of them get the same server file, each
into a fresh local file, and put the same local file to a fresh name of
their own. After each run the bench checks every copy's size, then deletes
the copies, untimed. Each row also shows the CPU seconds the server and the
clients used in the run (medians), which tells which side was busy.
"""

from __future__ import annotations

import functools
import os
import statistics
from dataclasses import dataclass
from itertools import count

from .clients import CROWD_BUFFER_SIZE, open_session
from .common import Env, Samples, human_size, interleave, make_file
from .pool import ClientPool
from .report import Check, Section, ratio_check
from .servers import FtpServer, SockftpServer

KINDS = ("sockftp", "pyftpdlib")
CORES = os.cpu_count() or 1


@dataclass
class Measurement:
    seconds: float
    client_cpu: float
    server_cpu: float


def run(env: Env, pool: ClientPool, client_counts: list[int], size: int) -> tuple[Section, list[Check]]:
    most = max(client_counts)
    source = make_file(env.path("crowd-source.bin"), size)
    got = env.fresh_dir("crowd-got")
    section = Section(f"many clients, one {human_size(size)} file each (s, wall time of all)")
    checks: list[Check] = []
    with (
        SockftpServer(env.path("crowd-sockftp"), sessions=most) as sockftp,
        FtpServer(env.path("crowd-pyftpdlib"), sessions=most) as ftp,
    ):
        servers = {"sockftp": sockftp, "pyftpdlib": ftp}
        for kind, server in servers.items():
            seed = open_session(kind, server.port)
            seed.put(source, "crowd.bin")
            seed.close()
            env.say(f"many clients: logging in {most} {kind} sessions")
            # sockftp checks two passwords at a time per address (argon2,
            # ~0.1 s each): more parallel connects would only queue.
            options = {"buffer_size": CROWD_BUFFER_SIZE} if kind == "pyftpdlib" else {}
            pool.open(kind, server.port, most, parallel=4 if kind == "sockftp" else 16, **options)
        try:
            # One untimed round first, so that every client has allocated
            # its transfer buffers (sockftp's pool, ftplib's per session)
            # and no timed run pays for fresh memory the others do not.
            env.say(f"many clients: warm-up round of {most} clients, untimed")
            warm_ups = count()
            for kind in KINDS:
                for phase in ("get", "put"):
                    _phase(env, pool, servers[kind], kind, phase, most, size, source, got, warm_ups)
            for clients in client_counts:
                env.say(f"many clients: {clients} clients x {env.runs} runs")
                variants = {
                    f"{clients} clients {phase}, {kind}": functools.partial(
                        _phase, env, pool, servers[kind], kind, phase, clients, size, source, got, count()
                    )
                    for phase in ("get", "put")
                    for kind in KINDS
                }
                results = interleave(variants, env.runs)
                for name, measurements in results.items():
                    section.add(name, Samples("s", [m.seconds for m in measurements]), _cpu_detail(measurements))
                checks += _checks(clients, size, results)
        finally:
            pool.close_sessions()
    os.unlink(source)
    section.notes.append(
        f"clients: {pool.processes} worker processes, one thread per session; logged in before the clock starts"
    )
    section.notes.append(
        "cores busy: the server's and the clients' CPU over the run, not the kernel's writeback threads, which "
        "flush uploads past the dirty-page threshold (10% of RAM) during the larger put runs"
    )
    return section, checks


def _phase(
    env: Env,
    pool: ClientPool,
    server,
    kind: str,
    phase: str,
    clients: int,
    size: int,
    source: str,
    got: str,
    runs,
) -> Measurement:
    """One timed run: *clients* sessions of *kind* all get, or all put, at once."""
    env.prewarm(clients * size)
    cpu_before = server.cpu()
    if phase == "get":
        result = pool.run("get", clients, kind, remote="crowd.bin", local_dir=got)
    else:
        prefix = f"crowd-{next(runs)}"
        result = pool.run("put", clients, kind, local=source, prefix=prefix)
    server_cpu = server.cpu() - cpu_before
    server.check_alive()
    if phase == "get":
        _check_copies(got, "get-", clients, size, delete=True)
    else:
        _check_copies(server.home(), f"{prefix}-", clients, size, delete=False)
        pool.run("rm", clients, kind, prefix=prefix)
    return Measurement(result.seconds, result.client_cpu, server_cpu)


def _check_copies(directory: str, prefix: str, expected: int, size: int, delete: bool) -> None:
    names = [name for name in os.listdir(directory) if name.startswith(prefix)]
    wrong = [name for name in names if os.path.getsize(os.path.join(directory, name)) != size]
    if len(names) != expected or wrong:
        raise RuntimeError(f"{directory}: {len(names)} copies of {expected} expected, {len(wrong)} of the wrong size")
    if delete:
        for name in names:
            os.unlink(os.path.join(directory, name))


def _cpu_detail(measurements: list[Measurement]) -> str:
    """CPU seconds of the server and of the clients (medians), and how much
    of the machine's cores the two used together. Kernel threads (page
    writeback) are not in it, so under 100% does not mean the cores idled."""
    server = statistics.median(m.server_cpu for m in measurements)
    clients = statistics.median(m.client_cpu for m in measurements)
    busy = statistics.median((m.server_cpu + m.client_cpu) / (m.seconds * CORES) for m in measurements)
    return f"CPU s: server {server:.2f}, clients {clients:.2f}; cores {busy:.0%} busy"


def _checks(clients: int, size: int, results: dict[str, list[Measurement]]) -> list[Check]:
    """sockftp's time <= 0.8 x pyftpdlib's, for get and for put."""
    checks = []
    for phase, verb in (("get", "RETR"), ("put", "STOR")):
        ours = [m.seconds for m in results[f"{clients} clients {phase}, sockftp"]]
        theirs = [m.seconds for m in results[f"{clients} clients {phase}, pyftpdlib"]]
        checks.append(
            ratio_check(
                f"{clients} clients x {phase} {human_size(size)} (wall time)",
                "sockftp time / pyftpdlib time",
                ours,
                theirs,
                0.8,
                False,
                unit="s",
                reference_name=f"pyftpdlib {verb}",
            )
        )
    return checks
