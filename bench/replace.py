"""Replacing a file against writing a new one (issue 16, item 7): the same
seed-style put, to a new name and over the name it was last put to.

Re-uploading a file that is already there is what sync tools do all day,
and it was much slower than a first upload: a rename that replaces a file
also frees the file it replaces, there and then, unless something else
holds it. For a large file that was just written (its pages all in the
page cache), that is tens of milliseconds inside the rename, on the
request's path (see ``sockftp.disk.dropper``).

Each run, for each variant, the same source goes up seed-style (a 4-byte
length, a JSON header ``{"cmd": "put", "filename": ..., "filesize": ...}``,
the bytes; no ``hello``, no login, no checksum: the server runs with
``--anonymous``), timed from the header to the reply:

* new name: a name never used before, removed afterwards, untimed (as the
  big-file put does);
* replace: always the same name, so each put replaces the file the
  previous one stored.

Each timed put is preceded by the page-cache prewarm of as many bytes, and
its reply must carry the source's checksum (the server hashes every upload
as it arrives). Target: replace >= 0.9 x new name, GB/s, medians of the
interleaved runs.

On a busy machine the loopback and the client spread the figures more
than a replace costs. The storage's share alone, in this process, without
a server or a socket (a LocalStorage upload of the same size in 4 MiB
writes, then its commit; the new name removed after, untimed)::

    python -m bench.replace --size 512M --runs 9 --dir /mnt/ext4
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from itertools import count

from .common import Env, MiB, Prewarm, Samples, describe_filesystem, human_size, interleave, make_file, parse_size
from .fresh_get import SeedClient
from .report import Check, Section, ratio_check
from .servers import SockftpServer

NEW = "seed-style put to a new name"
REPLACE = "seed-style put over the last one"


def run(env: Env, size: int) -> tuple[Section, list[Check]]:
    from sockftp.protocol import checksum

    source = make_file(env.path("replace-source.bin"), size)
    try:
        with open(source, "rb") as f:
            expected = checksum.of_file(f)
        with SockftpServer(env.path("replace-sockftp"), anonymous=True) as server:
            seed = SeedClient(server.port)
            try:
                _put(seed, source, "same.bin", expected)  # something to replace from the first run on
                names = (f"new-{n}.bin" for n in count())

                def new() -> float:
                    name = next(names)
                    env.prewarm(size)
                    elapsed = _put(seed, source, name, expected)
                    seed.rm(name)
                    return elapsed

                def replace() -> float:
                    env.prewarm(size)
                    return _put(seed, source, "same.bin", expected)

                env.say(f"a {human_size(size)} seed-style put, new name and replace: 2 variants x {env.runs} runs")
                seconds = interleave({NEW: new, REPLACE: replace}, env.runs)
                server.check_alive()
            finally:
                seed.close()
    finally:
        os.unlink(source)

    rates = {name: [size / t / 1e9 for t in times] for name, times in seconds.items()}
    section = Section(f"a {human_size(size)} seed-style put: to a new name, and replacing a file (GB/s)")
    for name, values in rates.items():
        section.add(name, Samples("GB/s", values))
    section.notes.append(
        "timed from the header to the reply; the new name is removed afterwards, untimed; "
        "each reply carried the source's checksum"
    )
    check = ratio_check(
        f"replace a {human_size(size)} file, seed-style put",
        "replace / new name",
        rates[REPLACE],
        rates[NEW],
        0.9,
        True,
        unit="GB/s",
        reference_name="the same put to a new name",
    )
    return section, [check]


def _put(seed: SeedClient, source: str, name: str, expected: str) -> float:
    """Seconds one seed-style put of *source* as *name* took, from its header
    to its reply; the reply must carry *expected*, the source's checksum."""
    start = time.perf_counter()
    reply = seed.put(source, name)
    elapsed = time.perf_counter() - start
    if reply["checksum"] != expected:
        raise RuntimeError(f"the server stored {name} with checksum {reply['checksum']}, not the source's {expected}")
    return elapsed


# -- the storage's share alone: python -m bench.replace ----------------------------------


def storage_only(directory: str, size: int, runs: int) -> dict[str, list[tuple[float, float]]]:
    """(seconds of the whole upload, seconds of its commit) per run, for a
    LocalStorage upload of *size* bytes to a new name and over the last one,
    interleaved, each after the prewarm."""
    from sockftp.storage import LocalStorage

    storage = LocalStorage(os.path.join(directory, "root"))
    prewarm = Prewarm(directory)
    chunk = os.urandom(4 * MiB)

    def upload(name: str) -> tuple[float, float]:
        start = time.perf_counter()
        up = storage.open_upload((name,), size)
        for offset in range(0, size, len(chunk)):
            up.write(memoryview(chunk)[: size - offset])
        committing = time.perf_counter()
        up.commit(None)
        done = time.perf_counter()
        return done - start, done - committing

    names = (f"new-{n}.bin" for n in count())

    def new() -> tuple[float, float]:
        name = next(names)
        prewarm(size)
        measured = upload(name)
        storage.remove((name,))
        return measured

    def replace() -> tuple[float, float]:
        prewarm(size)
        return upload("same.bin")

    try:
        upload("same.bin")
        return interleave({"upload to a new name": new, "upload over the last one": replace}, runs)
    finally:
        storage.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replace", description="The storage's share of a replace, without a server or a socket."
    )
    parser.add_argument("--size", type=parse_size, default=parse_size("512M"))
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--dir", default=None, help="where the files go (default: the temp dir)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="sockftp-replace-", dir=args.dir)
    try:
        results = storage_only(work, args.size, args.runs)
        print(f"LocalStorage upload of {human_size(args.size)} in 4 MiB writes, then commit; {args.runs} runs")
        print(f"on {describe_filesystem(work)}; medians (min-max)")
        for name, runs in results.items():
            rates = Samples("GB/s", [args.size / total / 1e9 for total, _ in runs])
            commit = statistics.median(commit for _, commit in runs) * 1e3
            print(f"  {name:34} {rates.spread()} GB/s, commit {commit:.2f} ms")
        new, replace = ([total for total, _ in runs] for runs in results.values())
        print(f"  replace / new name, GB/s: {statistics.median(new) / statistics.median(replace):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
