"""Memory with many idle logged-in sessions, and how fast a new client is
served while they are held: sockftp against pyftpdlib.

For each count, a fresh server: its RSS (VmRSS in /proc) once a first
client has logged in and got a small file (the baseline: one-off
allocations are in it), then again with *count* idle sessions held; the
difference over *count* is the memory of one session. While they are held,
new clients connect, log in and get a 4 KiB file, one after another; each
is timed (the median and spread of those probes is reported).

Every session logs in as the bench user. sockftp's held sessions log in
with a re-login token minted once (untimed) by a password login: a
password login costs an argon2 check (~0.1 s of CPU, two at a time per
address), so 10,000 of them would take ~1000 s to set up, and the token is
how the library logs in again anyway. The session a token login makes is
the same as a password login's. pyftpdlib's sessions log in with a
plaintext compare.

sockftp probes are timed twice: connect + login by password + get (the
login alone is one argon2 check), and connect + login by token + get.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from .clients import mint_token, open_session
from .common import Env, Samples, timed
from .pool import ClientPool
from .report import Check, Figure, Section
from .servers import FtpServer, SockftpServer

#: Seconds to let a server settle before its RSS is read (less for --quick).
SETTLE = 1.0
PROBE_FILE = "probe.bin"
PROBE_SIZE = 4096


@dataclass
class Case:
    kind: str  # "sockftp" or "pyftpdlib"
    sessions: int

    @property
    def label(self) -> str:
        how = " by token" if self.kind == "sockftp" else ""
        return f"{self.kind}, {self.sessions:,} sessions logged in{how}"


def cases(counts: list[int]) -> list[Case]:
    return [Case(kind, sessions) for sessions in counts for kind in ("sockftp", "pyftpdlib")]


def run(
    env: Env, pool: ClientPool, counts: list[int], probes: int, settle: float = SETTLE
) -> tuple[Section, list[Check]]:
    section = Section("idle sessions: server memory, and a new client served meanwhile")
    checks: list[Check] = []
    probe_source = env.path("probe-source.bin")
    with open(probe_source, "wb") as f:
        f.write(b"p" * PROBE_SIZE)
    measured: dict[tuple[str, int], tuple[float, dict[str, list[float]]]] = {}
    for case in cases(counts):
        env.say(f"idle sessions: {case.label}")
        per_session, total, probe_times = _measure(env, pool, case, probe_source, probes, settle)
        measured[case.kind, case.sessions] = per_session, probe_times
        section.add(
            f"{case.label}: RSS per session", Samples("KB", [per_session / 1000]), f"server RSS {total / 1e6:.1f} MB"
        )
        for what, values in probe_times.items():
            section.add(f"{case.label}: new client, {what}", Samples("ms", [v * 1000 for v in values]))
    for sessions in counts:
        checks += _checks(Case("sockftp", sessions), measured["sockftp", sessions], measured["pyftpdlib", sessions])
    section.notes.append(
        "sockftp's held sessions logged in with one re-login token: by password, 2 at a time per address at "
        "~0.1 s of argon2 each, 10,000 logins would take ~1000 s"
    )
    section.notes.append(
        f"memory: one server and one holding per case; new client: {probes} probe{'s' if probes != 1 else ''}, "
        "one at a time, while the sessions are held"
    )
    return section, checks


def _measure(env: Env, pool: ClientPool, case: Case, probe_source: str, probes: int, settle: float):
    """(bytes per session, server RSS with them held, probe seconds by what was probed)."""
    directory = env.path(f"idle-{case.kind}-{case.sessions}")
    if case.kind == "sockftp":
        server = SockftpServer(directory, sessions=case.sessions, idle_timeout=3600)
    else:
        server = FtpServer(directory, sessions=case.sessions, idle_timeout=3600)
    try:
        logins = _logins(case.kind, server.port)
        _seed(case.kind, server.port, probe_source)
        for options in logins.values():  # one-off allocations go in the baseline
            _probe(case.kind, server.port, options)
        time.sleep(settle)
        baseline = server.rss()
        # 16 connects at a time per worker keep the server's accept queue busy.
        pool.open(case.kind, server.port, case.sessions, parallel=16, **logins.get(BY_TOKEN, {}))
        time.sleep(settle)
        held = server.rss()
        probe_times: dict[str, list[float]] = {what: [] for what in logins}
        for _ in range(probes):
            for what, options in logins.items():
                probe_times[what].append(_probe(case.kind, server.port, options))
        server.check_alive()
    finally:
        pool.close_sessions()
        server.stop()
    return (held - baseline) / case.sessions, held, probe_times


BY_TOKEN = "connect + login by token + get 4 KiB"


def _logins(kind: str, port: int) -> dict[str, dict]:
    """How probes log in (their session options), by what is probed."""
    if kind != "sockftp":
        return {"connect + login + get 4 KiB": {}}
    return {"connect + login by password + get 4 KiB": {}, BY_TOKEN: {"token": mint_token(port)}}


def _seed(kind: str, port: int, source: str) -> None:
    """Put the probe file in the bench user's home."""
    session = open_session(kind, port)
    session.put(source, PROBE_FILE)
    session.close()


def _probe(kind: str, port: int, options: dict) -> float:
    """Seconds for a new client to connect, log in (with *options*) and get
    the probe file."""
    with tempfile.TemporaryDirectory(prefix="probe-") as local:
        target = os.path.join(local, PROBE_FILE)

        def serve_one():
            session = open_session(kind, port, **options)
            session.get(PROBE_FILE, target)
            session.close()

        return timed(serve_one)


def _checks(case: Case, ours: tuple, theirs: tuple) -> list[Check]:
    """<= 25 KB of RSS per idle session; a new client served in under 50 ms.
    *ours* and *theirs* are (bytes per session, probe seconds by what was
    probed) of sockftp and of pyftpdlib; pyftpdlib's are shown beside
    sockftp's, as context (these targets are absolute).

    The client that logs in by password is not held to 50 ms: one argon2
    check alone takes longer (~0.13 s here, by design, and reported on its
    own line by the logins workload). Its row is still shown above; the
    target applies to the login that reconnecting clients use, by token."""
    (per_session, probe_times), (their_per_session, their_probes) = ours, theirs
    workload = f"{case.sessions:,} idle sessions"
    checks = [
        Check(
            workload,
            "server RSS per session",
            per_session / 1000,
            25,
            False,
            unit="KB",
            ours=Figure(per_session / 1000, "KB"),
            reference=Figure(their_per_session / 1000, "KB"),
            reference_name="pyftpdlib",
        )
    ]
    their_ms = statistics.median(v * 1000 for values in their_probes.values() for v in values)
    for what, values in probe_times.items():
        if "by password" in what:
            continue
        ms = [v * 1000 for v in values]
        checks.append(
            Check(
                workload,
                f"new client: {what}",
                statistics.median(ms),
                50,
                False,
                ms,
                unit="ms",
                ours=Figure(statistics.median(ms), "ms"),
                reference=Figure(their_ms, "ms"),
                reference_name="pyftpdlib, connect + login + get 4 KiB",
            )
        )
    return checks
