"""Memory with many idle sessions, and how fast a new client is served
while they are held: sockftp against pyftpdlib.

For each count, a fresh server: its RSS (VmRSS in /proc) once a first
client has logged in and got a small file (the baseline: one-off
allocations are in it), then again with *count* idle sessions held; the
difference over *count* is the memory of one session. While they are held,
new clients connect, log in and get a 4 KiB file, one after another; each
is timed (the median and spread of those probes is reported).

Logged-in sessions cost sockftp an argon2 check each (~0.1 s of CPU, two
at a time per address), so 10,000 of them would take ~1000 s to set up.
Counts above ``max_logins`` therefore use anonymous sessions (the server
runs with ``--anonymous``, and such a session is logged in as
``anonymous`` when it connects); at every count up to it, both kinds are
measured, so the difference between them is shown. pyftpdlib's sessions
always log in (a plaintext compare).

sockftp probes are timed twice: connect + login + get (the issue's
measure; the login alone is one argon2 check), and connect + get without a
password (anonymous), which is the server's own part.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from .clients import open_session
from .common import Env, Samples, timed
from .pool import ClientPool
from .report import Check, Section
from .servers import FtpServer, SockftpServer

#: Seconds to let a server settle before its RSS is read (less for --quick).
SETTLE = 1.0
PROBE_FILE = "probe.bin"
PROBE_SIZE = 4096


@dataclass
class Case:
    kind: str  # "sockftp" or "pyftpdlib"
    sessions: int
    login: bool  # held sessions log in; else anonymous

    @property
    def label(self) -> str:
        how = "logged-in" if self.login else "anonymous"
        return f"{self.kind}, {self.sessions:,} {how} sessions"


def cases(counts: list[int], max_logins: int) -> list[Case]:
    result = []
    for sessions in counts:
        if sessions <= max_logins:
            result.append(Case("sockftp", sessions, login=True))
        result.append(Case("sockftp", sessions, login=False))
        result.append(Case("pyftpdlib", sessions, login=True))
    return result


def run(
    env: Env, pool: ClientPool, counts: list[int], max_logins: int, probes: int, settle: float = SETTLE
) -> tuple[Section, list[Check]]:
    section = Section("idle sessions: server memory, and a new client served meanwhile")
    checks: list[Check] = []
    probe_source = env.path("probe-source.bin")
    with open(probe_source, "wb") as f:
        f.write(b"p" * PROBE_SIZE)
    for case in cases(counts, max_logins):
        env.say(f"idle sessions: {case.label}")
        per_session, total, probe_times = _measure(env, pool, case, probe_source, probes, settle)
        section.add(
            f"{case.label}: RSS per session", Samples("KB", [per_session / 1000]), f"server RSS {total / 1e6:.1f} MB"
        )
        for what, values in probe_times.items():
            section.add(f"{case.label}: new client, {what}", Samples("ms", [v * 1000 for v in values]))
        if case.kind == "sockftp":
            checks += _checks(case, per_session, probe_times)
    section.notes.append(
        f"sessions above {max_logins:,} are anonymous: sockftp logs in 2 at a time per address at ~0.1 s of "
        "argon2 each, so 10,000 logins would take ~1000 s"
    )
    section.notes.append(
        f"memory: one server and one holding per case; new client: {probes} probe{'s' if probes != 1 else ''}, "
        "one at a time, while the sessions are held"
    )
    return section, checks


def _measure(env: Env, pool: ClientPool, case: Case, probe_source: str, probes: int, settle: float):
    """(bytes per session, server RSS with them held, probe seconds by what was probed)."""
    directory = env.path(f"idle-{case.kind}-{case.sessions}-{'login' if case.login else 'anonymous'}")
    if case.kind == "sockftp":
        server = SockftpServer(directory, anonymous=True, sessions=case.sessions, idle_timeout=3600)
    else:
        server = FtpServer(directory, sessions=case.sessions, idle_timeout=3600)
    try:
        _seed(case.kind, server.port, probe_source)
        _probe(case.kind, server.port, login=True)  # one-off allocations go in the baseline
        time.sleep(settle)
        baseline = server.rss()
        pool.open(case.kind, server.port, case.sessions, parallel=_parallel(case), login=case.login)
        time.sleep(settle)
        held = server.rss()
        probe_times: dict[str, list[float]] = {"connect + login + get 4 KiB": []}
        if case.kind == "sockftp":
            probe_times["connect + get 4 KiB, no password"] = []
        for _ in range(probes):
            for what, values in probe_times.items():
                values.append(_probe(case.kind, server.port, login="no password" not in what))
        server.check_alive()
    finally:
        pool.close_sessions()
        server.stop()
    return (held - baseline) / case.sessions, held, probe_times


def _parallel(case: Case) -> int:
    # sockftp checks two passwords at a time per address: more connects in
    # parallel would only queue. Anonymous connects and pyftpdlib's logins
    # are cheap; 16 per worker keeps the server's accept queue busy.
    return 4 if case.kind == "sockftp" and case.login else 16


def _seed(kind: str, port: int, source: str) -> None:
    """Put the probe file where both logged-in and anonymous probes find it."""
    logins = (True, False) if kind == "sockftp" else (True,)
    for login in logins:
        session = open_session(kind, port, login=login)
        session.put(source, PROBE_FILE)
        session.close()


def _probe(kind: str, port: int, login: bool) -> float:
    """Seconds for a new client to connect (and log in) and get the probe file."""
    with tempfile.TemporaryDirectory(prefix="probe-") as local:
        target = os.path.join(local, PROBE_FILE)

        def serve_one():
            session = open_session(kind, port, login=login)
            session.get(PROBE_FILE, target)
            session.close()

        return timed(serve_one)


def _checks(case: Case, per_session: float, probe_times: dict[str, list[float]]) -> list[Check]:
    """<= 25 KB of RSS per idle session; a new client served in under 50 ms."""
    workload = case.label.replace("sockftp, ", "")
    checks = [Check(workload, "server RSS per session", per_session / 1000, 25, False, unit="KB")]
    for what, values in probe_times.items():
        ms = [v * 1000 for v in values]
        checks.append(Check(workload, f"new client: {what}", statistics.median(ms), 50, False, ms, unit="ms"))
    return checks
