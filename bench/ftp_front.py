"""sockftp's FTP front door against pyftpdlib, on the workloads of the
native benchmark, with one and the same FTP client (ftplib, bench.clients.FtpSession).

* one big file: STOR and RETR over one session;
* small files: ``--files`` files of ``--file-size`` STORed, then RETRieved,
  one after the other over one session;
* simultaneous connects with login (``--logins``): sockftp checks argon2id
  hashes, pyftpdlib compares plaintext strings (see the native logins row);
* many clients (``--clients``): each RETRieves, then each STOREs, one
  ``--crowd-size`` file, all at once.

The sockftp server is ``sockftp serve --ftp-port 0``; only its FTP port is
used. Its uploads are atomic (a hidden partial renamed into place) and
hashed on arrival (XXH3-128, kept with the file), which pyftpdlib does not
do; neither side verifies anything end to end. Variants are interleaved
like the others', and each row is a median with its spread; the notes
give the ratios, run by run.
"""

from __future__ import annotations

import functools
import os
import shutil
import statistics
from itertools import count

from . import big_file, crowd, small_files
from .clients import CROWD_BUFFER_SIZE, FtpSession
from .common import Env, Samples, human_size, interleave, make_file
from .pool import ClientPool
from .report import Section
from .servers import FtpServer, SockftpServer

#: sockftp's FTP port, then pyftpdlib: the kind names in the pool and the row labels.
OURS, THEIRS = "sockftp-ftp", "pyftpdlib"
LABELS = {OURS: "sockftp FTP", THEIRS: "pyftpdlib"}


def run(
    env: Env,
    pool: ClientPool,
    size: int,
    files: int,
    file_size: int,
    logins: int,
    client_counts: list[int],
    crowd_size: int,
) -> tuple[Section, list]:
    section = Section("FTP front door: sockftp's FTP port against pyftpdlib, the same ftplib client")
    most = max([logins, *client_counts])
    with (
        SockftpServer(env.path("ftp-sockftp"), sessions=most, ftp=True) as ours,
        FtpServer(env.path("ftp-pyftpdlib"), sessions=most) as theirs,
    ):
        servers = {OURS: ours, THEIRS: theirs}
        ports = {OURS: ours.ftp_port, THEIRS: theirs.port}
        _big(env, section, servers, ports, size)
        _small(env, section, ports, files, file_size)
        _logins(env, section, pool, servers, ports, logins)
        _crowd(env, section, pool, servers, ports, client_counts, crowd_size)
    section.notes.append(
        "sockftp FTP: atomic uploads (partial + rename) hashed on arrival; pyftpdlib: writes in place, "
        "sendfile for RETR (its default); neither verifies end to end"
    )
    return section, []


def _big(env: Env, section: Section, servers: dict, ports: dict, size: int) -> None:
    source = make_file(env.path("ftp-big-source.bin"), size)
    target = env.path("ftp-big-copy.bin")
    try:
        variants = {}
        for kind in (OURS, THEIRS):
            session = FtpSession(ports[kind])
            variants |= big_file._ftp_variants(env, session, servers[kind], source, target, size, LABELS[kind])
        env.say(f"FTP front door, one {human_size(size)} file: {len(variants)} variants x {env.runs} runs")
        seconds = big_file._interleave_checked(env, variants, list(servers.values()))
    finally:
        os.unlink(source)
    rates = {name: [size / t / 1e9 for t in times] for name, times in seconds.items()}
    for name, values in rates.items():
        section.add(f"one {human_size(size)} file: {name}", Samples("GB/s", values))
    for verb in ("STOR", "RETR"):
        section.notes.append(_ratio(f"{verb} GB/s", rates[f"sockftp FTP {verb}"], rates[f"pyftpdlib {verb}"]))


def _small(env: Env, section: Section, ports: dict, files: int, file_size: int) -> None:
    directory = env.fresh_dir("ftp-small-sources")
    sources = small_files._make_sources(directory, files, file_size)
    runs = count()
    variants = {}
    sessions = []
    for kind in (OURS, THEIRS):
        session = FtpSession(ports[kind])
        sessions.append(session)
        small_files._mkdir(session, "seed")
        for source in sources:
            session.put(source, f"seed/{os.path.basename(source)}")
        variants[f"{LABELS[kind]} STOR"] = small_files._put_all(env, session, sources, runs, pipelined=False)
        variants[f"{LABELS[kind]} RETR"] = small_files._get_all(env, session, sources, runs, pipelined=False)
    env.say(f"FTP front door, {files} files of {human_size(file_size)}: {len(variants)} variants x {env.runs} runs")
    seconds = interleave(variants, env.runs)
    for session in sessions:
        session.close()
    shutil.rmtree(directory, ignore_errors=True)
    per_second = {name: [files / t for t in times] for name, times in seconds.items()}
    for name, values in per_second.items():
        section.add(f"{files} files of {human_size(file_size)}: {name}", Samples("files/s", values))
    for verb in ("STOR", "RETR"):
        section.notes.append(
            _ratio(f"small files {verb}/s", per_second[f"sockftp FTP {verb}"], per_second[f"pyftpdlib {verb}"])
        )


def _logins(env: Env, section: Section, pool: ClientPool, servers: dict, ports: dict, logins: int) -> None:
    def connect_all(kind: str) -> float:
        try:
            return pool.run("connect", logins, kind, port=ports[kind], options={"login": True}).seconds
        finally:
            pool.close_sessions()
            servers[kind].check_alive()

    env.say(f"FTP front door, {logins} simultaneous logins: 2 variants x {env.runs} runs")
    seconds = interleave({kind: functools.partial(connect_all, kind) for kind in (OURS, THEIRS)}, env.runs)
    for kind, values in seconds.items():
        section.add(f"{logins} simultaneous connects + USER/PASS: {LABELS[kind]}", Samples("s", values))
    section.notes.append(
        _ratio("login time (sockftp checks argon2id, pyftpdlib plaintext)", seconds[OURS], seconds[THEIRS])
    )


def _crowd(
    env: Env, section: Section, pool: ClientPool, servers: dict, ports: dict, client_counts: list[int], size: int
) -> None:
    most = max(client_counts)
    source = make_file(env.path("ftp-crowd-source.bin"), size)
    got = env.fresh_dir("ftp-crowd-got")
    try:
        for kind in (OURS, THEIRS):
            seed = FtpSession(ports[kind])
            seed.put(source, "crowd.bin")
            seed.close()
            env.say(f"FTP front door, many clients: logging in {most} {LABELS[kind]} sessions")
            # sockftp checks two passwords at a time per address: more parallel connects would only queue.
            pool.open(kind, ports[kind], most, parallel=4 if kind == OURS else 16, buffer_size=CROWD_BUFFER_SIZE)
        warm_ups = count()
        for kind in (OURS, THEIRS):
            for phase in ("get", "put"):
                crowd._phase(env, pool, servers[kind], kind, phase, most, size, source, got, warm_ups)
        for clients in client_counts:
            env.say(f"FTP front door, many clients: {clients} clients x {env.runs} runs")
            variants = {
                (clients, phase, kind): functools.partial(
                    crowd._phase, env, pool, servers[kind], kind, phase, clients, size, source, got, count()
                )
                for phase in ("get", "put")
                for kind in (OURS, THEIRS)
            }
            results = interleave(variants, env.runs)
            for (_, phase, kind), measurements in results.items():
                verb = "RETR" if phase == "get" else "STOR"
                name = f"{clients} clients x {human_size(size)} {verb}: {LABELS[kind]}"
                section.add(name, Samples("s", [m.seconds for m in measurements]), crowd._cpu_detail(measurements))
            for phase, verb in (("get", "RETR"), ("put", "STOR")):
                ours = [m.seconds for m in results[(clients, phase, OURS)]]
                theirs = [m.seconds for m in results[(clients, phase, THEIRS)]]
                section.notes.append(_ratio(f"{clients} clients {verb} time", ours, theirs))
    finally:
        pool.close_sessions()
        os.unlink(source)


def _ratio(what: str, ours: list[float], theirs: list[float]) -> str:
    """``sockftp FTP / pyftpdlib, WHAT: 1.23 (1.01-1.40)``: the ratio of the
    medians, then its range run by run."""
    value = statistics.median(ours) / statistics.median(theirs)
    per_run = [a / b for a, b in zip(ours, theirs, strict=True)]
    spread = f" ({min(per_run):.2f}-{max(per_run):.2f})" if len(per_run) > 1 else ""
    return f"sockftp FTP / pyftpdlib, {what}: {value:.2f}{spread}"
