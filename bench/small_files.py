"""Many small files over one session: 1000 files of 4 KiB put, then got,
one after the other, sockftp against pyftpdlib; files per second.

This measures the cost of one transfer when the bytes cost nothing: the
round trips, the per-request work of the server, and the per-file work
of storage (sockftp: a locked partial, a checksum and a rename per put).
sockftp sends them with ``Client.put_many``/``get_many``, pipelined over
its one connection (the protocol allows it, and the client keeps up to 64
requests in flight); a second sockftp row calls ``put``/``get`` once per
file, waiting for each reply, to show what pipelining buys. pyftpdlib's
session is one control connection, which must open a data connection per
file (PASV, connect, STOR/RETR, close, 226): FTP has no other way.

Each run puts into a fresh remote directory, and gets the files that were
put when the servers started into a fresh local one; both are deleted
after the run, untimed.
"""

from __future__ import annotations

import os
import shutil
from itertools import count

from .clients import FtpSession, SockftpSession
from .common import Env, Samples, human_size, interleave, timed
from .report import Check, Section, ratio_check
from .servers import FtpServer, SockftpServer


def run(env: Env, files: int, size: int) -> tuple[Section, list[Check]]:
    sources = _make_sources(env.fresh_dir("small-sources"), files, size)
    with (
        SockftpServer(env.path("small-sockftp")) as sockftp_server,
        FtpServer(env.path("small-pyftpdlib")) as ftp_server,
    ):
        sessions = {"sockftp": SockftpSession(sockftp_server.port), "pyftpdlib": FtpSession(ftp_server.port)}
        runs = count()
        variants = {}
        for kind, session in sessions.items():
            _mkdir(session, "seed")
            for source in sources:
                session.put(source, f"seed/{os.path.basename(source)}")
            variants[f"{kind} put"] = _put_all(env, session, sources, runs, pipelined=True)
            variants[f"{kind} get"] = _get_all(env, session, sources, runs, pipelined=True)
            if kind == "sockftp":
                variants["sockftp put, one at a time"] = _put_all(env, session, sources, runs, pipelined=False)
                variants["sockftp get, one at a time"] = _get_all(env, session, sources, runs, pipelined=False)
        env.say(f"{files} files of {human_size(size)}: {len(variants)} variants x {env.runs} runs")
        seconds = interleave(variants, env.runs)
        for session in sessions.values():
            session.close()
    shutil.rmtree(os.path.dirname(sources[0]), ignore_errors=True)

    per_second = {name: [files / t for t in times] for name, times in seconds.items()}
    section = Section(f"{files} files of {human_size(size)}, one after another over one session (files/s)")
    for name, values in per_second.items():
        section.add(name, Samples("files/s", values))
    workload = f"{files} files of {human_size(size)}, one session"
    checks = [
        ratio_check(
            f"{verb}, {workload}",
            f"{verb}: sockftp / pyftpdlib files/s",
            per_second[f"sockftp {verb}"],
            per_second[f"pyftpdlib {verb}"],
            5,
            True,
            unit="files/s",
            reference_name=f"pyftpdlib {ftp_verb}",
        )
        for verb, ftp_verb in (("put", "STOR"), ("get", "RETR"))
    ]
    return section, checks


def _make_sources(directory: str, files: int, size: int) -> list[str]:
    paths = []
    for i in range(files):
        path = os.path.join(directory, f"f{i:05d}.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        paths.append(path)
    return paths


def _mkdir(session, name: str) -> None:
    if isinstance(session, SockftpSession):
        session.client.mkdir(name)
    else:
        session.ftp.mkd(name)


def _rmdir(session, name: str) -> None:
    if isinstance(session, SockftpSession):
        session.client.rmdir(name)
    else:
        session.ftp.rmd(name)


def _put_all(env: Env, session, sources: list[str], runs, pipelined: bool):
    """Put every source into a fresh remote directory; the seconds it took."""

    def variant() -> float:
        directory = f"put-{next(runs)}"
        _mkdir(session, directory)
        names = [f"{directory}/{os.path.basename(source)}" for source in sources]

        def put_all():
            if pipelined:
                session.put_many(zip(sources, names, strict=True))
                return
            for source, name in zip(sources, names, strict=True):
                session.put(source, name)

        env.prewarm(len(sources) * os.path.getsize(sources[0]))
        elapsed = timed(put_all)
        for name in names:
            session.rm(name)
        _rmdir(session, directory)
        return elapsed

    return variant


def _get_all(env: Env, session, sources: list[str], runs, pipelined: bool):
    """Get every seeded file into a fresh local directory; the seconds it took."""

    def variant() -> float:
        local = env.fresh_dir(f"small-got-{next(runs)}")
        pairs = [(f"seed/{os.path.basename(s)}", os.path.join(local, os.path.basename(s))) for s in sources]

        def get_all():
            if pipelined:
                session.get_many(pairs)
                return
            for remote, target in pairs:
                session.get(remote, target)

        env.prewarm(len(sources) * os.path.getsize(sources[0]))
        elapsed = timed(get_all)
        if len(os.listdir(local)) != len(sources):
            raise RuntimeError(f"{local}: {len(os.listdir(local))} files, {len(sources)} expected")
        shutil.rmtree(local)
        return elapsed

    return variant
