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
"""

from __future__ import annotations

import os
import time
from itertools import count

from .common import Env, Samples, human_size, interleave, make_file
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
