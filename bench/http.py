"""The HTTP door (issue 20, item 6): curl's GET and PUT of one big file,
against the native protocol's get and put and against the raw loopback
limits, side by side in one run on 127.0.0.1.

One ``sockftp serve --http-port 0`` serves both protocols from the same
data directory, so the two differ only in the door. curl runs as a child
process per transfer, logged in with Basic (allowed on loopback), writing
its download to a file like the native client; its PUT sends
``Expect: 100-continue`` and a Content-Length, as ``curl -T`` does. The
native figures verify end to end (XXH3-128 on both ends); the HTTP ones
are hashed by the server on arrival, and a GET carries the stored
checksum in ``X-Checksum`` but curl checks nothing. Each run's copy is
checked by size outside the timing, and the first by content.

A third variant, ``curl -o /dev/null``, measures the door without curl's
file writes (curl cannot preallocate, and on some filesystems its writes,
not the door, set the pace), against the raw download that discards.

Target: HTTP >= 0.8 x native, both ways.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from itertools import count

from . import big_file, raw
from .clients import SockftpSession
from .common import Env, Samples, human_size, make_file, timed
from .report import Check, Section, ratio_check
from .servers import PASSWORD, USER, SockftpServer

#: The issue's target: the HTTP door at least this share of the native protocol.
TARGET = 0.8


def run(env: Env, size: int) -> tuple[Section, list[Check]]:
    curl = shutil.which("curl")
    if curl is None:
        raise RuntimeError("curl is not installed (apt-get install curl)")
    source = make_file(env.path("http-source.bin"), size)
    target = env.path("http-copy.bin")
    try:
        with SockftpServer(env.path("http-sockftp"), http=True) as server:
            native = big_file._sockftp_variants(env, "native", SockftpSession(server.port), source, target, size)
            variants = {
                name: big_file._raw(env, source, size, mode, buffer, env.path("raw-sink.bin") if writes else None)
                for name, mode, buffer, writes in raw.DOWNLOAD_VARIANTS
                + raw.UPLOAD_VARIANTS
                + raw.WRITING_DOWNLOAD_VARIANTS
            }
            variants |= native
            variants |= _curl_variants(env, curl, server, source, target, size)
            env.say(f"HTTP door, one {human_size(size)} file: {len(variants)} variants x {env.runs} runs")
            seconds = big_file._interleave_checked(env, variants, [server])
    finally:
        os.unlink(source)
    rates = {name: [size / t / 1e9 for t in times] for name, times in seconds.items()}
    section = Section(f"HTTP door: curl against the native protocol, one {human_size(size)} file (GB/s)")
    for name, values in rates.items():
        section.add(name, Samples("GB/s", values))
    section.notes.append(
        "native: verified end to end (XXH3-128 both ends); HTTP: curl -T (Expect: 100-continue, Content-Length) "
        "and curl -o, Basic on loopback; the server hashes uploads on arrival either way"
    )
    return section, _checks(rates, size)


def _curl_variants(env: Env, curl: str, server: SockftpServer, source: str, target: str, size: int) -> dict:
    base = f"http://127.0.0.1:{server.http_port}/files/"
    login = ["-u", f"{USER}:{PASSWORD}"]
    _curl(curl, [*login, "-T", source, base + "http-big.bin"])  # something to get, and a warm-up
    _curl(curl, [*login, "-o", target, base + "http-big.bin"])
    if not big_file._same_content(source, target):
        raise RuntimeError("the HTTP door returned a different file than it was given")
    os.unlink(target)
    counter = count()

    def put() -> float:
        name = f"http-put-{next(counter)}.bin"
        env.prewarm(size)
        elapsed = timed(lambda: _curl(curl, [*login, "-T", source, base + name]))
        big_file._check_size(os.path.join(server.home(), name), size)
        _curl(curl, [*login, "-X", "DELETE", base + name])
        return elapsed

    def get() -> float:
        env.prewarm(size)
        elapsed = timed(lambda: _curl(curl, [*login, "-o", target, base + "http-big.bin"]))
        big_file._check_size(target, size)
        os.unlink(target)
        return elapsed

    def get_discarding() -> float:
        # The door alone: curl writes nothing, as the raw discarding download.
        return timed(lambda: _curl(curl, [*login, "-o", os.devnull, base + "http-big.bin"]))

    return {"HTTP put (curl -T)": put, "HTTP get (curl -o)": get, "HTTP get (curl -o /dev/null)": get_discarding}


def _curl(curl: str, args: list[str]) -> None:
    sink = [] if "-o" in args else ["-o", os.devnull]  # the reply of a PUT or DELETE
    result = subprocess.run([curl, "-sS", "--fail", *sink, *args], capture_output=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"curl {' '.join(args[2:])} failed: {result.stderr.decode(errors='replace').strip()}")


def _checks(rates: dict[str, list[float]], size: int) -> list[Check]:
    big = human_size(size)
    ((writing, *_),) = raw.WRITING_DOWNLOAD_VARIANTS
    upload_name, upload_limit = big_file._limit(rates, [name for name, *_ in raw.UPLOAD_VARIANTS])
    discard_name, discard_limit = big_file._limit(rates, [name for name, *_ in raw.DOWNLOAD_VARIANTS])
    get_context = (
        f"against the raw download that writes its file: {_of(rates['HTTP get (curl -o)'], rates[writing])}; "
        f"curl -o /dev/null against the discarding download limit ({discard_name}): "
        f"{_of(rates['HTTP get (curl -o /dev/null)'], discard_limit)}"
    )
    put_context = f"against the raw upload limit ({upload_name}): {_of(rates['HTTP put (curl -T)'], upload_limit)}"
    return [
        ratio_check(
            f"HTTP get, one {big} file",
            "curl GET / native get",
            rates["HTTP get (curl -o)"],
            rates["native get"],
            TARGET,
            True,
            unit="GB/s",
            reference_name="native get",
            context=get_context,
        ),
        ratio_check(
            f"HTTP put, one {big} file",
            "curl PUT / native put",
            rates["HTTP put (curl -T)"],
            rates["native put"],
            TARGET,
            True,
            unit="GB/s",
            reference_name="native put",
            context=put_context,
        ),
    ]


def _of(numerator: list[float], denominator: list[float]) -> str:
    from .report import ratio

    value, per_run = ratio(numerator, denominator)
    return f"{value:.2f} ({min(per_run):.2f}-{max(per_run):.2f})"
