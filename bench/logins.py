"""Simultaneous connects with login: N clients connect and log in at once,
sockftp against pyftpdlib; the wall time until the last is logged in.

This is a reconnect storm (after a server restart, or a crowd of scripts
starting together). sockftp checks each password with argon2id, which is
meant to cost about 0.1 s of CPU and 64 MiB, and lets each address check
only two at a time; pyftpdlib's DummyAuthorizer compares plaintext
strings. So the cost of one argon2 verification is printed on its own
line, and sockftp logs in two ways: by password (each client also asks
for a re-login token, as the library does) and by a re-login token (a
SHA-256 and a database lookup), which is how the library reconnects. The
token is minted untimed before each run, and all N clients present it.
Only the login by token is held to the target (no slower than pyftpdlib):
the issue asks, once the hash dominates, for a way to keep reconnects cheap
without weakening passwords. The login by password is still timed and
shown, with its ratio in a note.

The clients come from a :class:`bench.pool.ClientPool` and hold their
sessions until all are logged in; they are closed after each run, untimed.
"""

from __future__ import annotations

import functools
import threading
import time

from .clients import mint_token
from .common import Env, Samples, interleave, timed
from .pool import ClientPool
from .report import Check, Section, ratio, ratio_check
from .servers import PASSWORD, FtpServer, SockftpServer

#: Seconds to let a server settle after a run's sessions close.
SETTLE = 0.5


def run(env: Env, pool: ClientPool, clients: int) -> tuple[Section, list[Check]]:
    hash_one, hash_two = password_hash_cost()
    with (
        SockftpServer(env.path("logins-sockftp"), sessions=clients) as sockftp,
        FtpServer(env.path("logins-pyftpdlib"), sessions=clients) as ftp,
    ):
        variants = {
            BY_PASSWORD: functools.partial(_connect_all, pool, "sockftp", sockftp, clients, {"login": True}),
            BY_TOKEN: functools.partial(_connect_by_token, pool, sockftp, clients),
            FTP: functools.partial(_connect_all, pool, "pyftpdlib", ftp, clients, {"login": True}),
        }
        env.say(f"{clients} simultaneous logins: {len(variants)} variants x {env.runs} runs")
        seconds = interleave(variants, env.runs)

    section = Section(f"{clients} simultaneous connects (s, until the last is logged in)")
    for name, values in seconds.items():
        section.add(name, Samples("s", values))
    section.add("argon2id password check (verify_password), alone", hash_one)
    section.add("argon2id password check, two at once, per check", hash_two)
    floor = clients * min(hash_one.median, hash_two.median)
    section.notes.append(
        f"so {clients} logins by password cost at least {floor:.1f} s of password checks on this machine, "
        "whatever the server does around them; logins by token need none"
    )
    measure = "sockftp time / pyftpdlib time"
    by_password, _ = ratio(seconds[BY_PASSWORD], seconds[FTP])
    section.notes.append(
        f"logins by password took {by_password:.3g}x pyftpdlib's time; once the hash dominates, the issue "
        "holds the cheap reconnect it asks for to the target instead: logins by token"
    )
    checks = [
        ratio_check(
            f"{clients} simultaneous connects + logins by token",
            measure,
            seconds[BY_TOKEN],
            seconds[FTP],
            1.0,
            False,
            unit="s",
            reference_name="pyftpdlib, plaintext password",
            context=f"logins by password (argon2id) took {by_password:.3g}x pyftpdlib's time",
        )
    ]
    return section, checks


BY_PASSWORD = "sockftp, connect + login by password"
BY_TOKEN = "sockftp, connect + login by token"
FTP = "pyftpdlib, connect + login"


def _connect_by_token(pool: ClientPool, server, clients: int) -> float:
    """*clients* sessions log in at once with one token, minted untimed just
    before (each password login adds a token, and may have pushed an older
    one past the server's per-user cap)."""
    return _connect_all(pool, "sockftp", server, clients, {"login": True, "token": mint_token(server.port)})


def _connect_all(pool: ClientPool, kind: str, server, clients: int, options: dict) -> float:
    """*clients* sessions connect and log in at once; the seconds until all have."""
    try:
        return pool.run("connect", clients, kind, port=server.port, options=options).seconds
    finally:
        pool.close_sessions()
        server.check_alive()
        time.sleep(SETTLE)


def password_hash_cost(samples: int = 5) -> tuple[Samples, Samples]:
    """Seconds of one ``sockftp.accounts.verify_password`` call, *samples*
    times; and seconds per check when two threads check at once (as two
    logins from one address may), to show whether checks overlap."""
    from sockftp.accounts import hash_password, verify_password

    encoded = hash_password(PASSWORD)
    verify_password(encoded, PASSWORD)  # warm up
    one = Samples("s", [timed(lambda: verify_password(encoded, PASSWORD)) for _ in range(samples)])

    def two_at_once() -> None:
        threads = [threading.Thread(target=verify_password, args=(encoded, PASSWORD)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    two = Samples("s", [timed(two_at_once) / 2 for _ in range(samples)])
    return one, two
