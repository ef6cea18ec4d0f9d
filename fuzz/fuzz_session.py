"""Fuzz a sockftp server session over real TCP connections, with atheris.

Run from the repository root (docs/FUZZING.md has more)::

    python -m fuzz -max_total_time=600                # raw byte streams
    python -m fuzz --structured -max_total_time=600   # sequences of requests
    python -m fuzz --proxy -max_total_time=60         # PROXY protocol headers, no server
    python fuzz/fuzz_session.py -max_total_time=600   # the same as the first
    python -m fuzz fuzz/work/artifacts/crash-...      # replay one input

Every other argument is libFuzzer's (``-help=1`` lists them). Without a
corpus directory, new inputs go to ``fuzz/work/corpus-MODE/`` and the raw
mode also reads the committed seeds in ``fuzz/corpus/``; crashes go to
``fuzz/work/artifacts/``. The exit status is 0 when the run ends without a
finding, and non-zero with the failing input saved when an oracle fails
(see fuzz/harness.py for the oracles).

This process only prepares a sandbox directory, runs the fuzzer in a child
process (libFuzzer ends its process without running Python's clean-up),
and removes the sandbox afterwards.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FUZZ = REPO / "fuzz"
WORK = FUZZ / "work"
SEEDS = FUZZ / "corpus"
DICTIONARY = FUZZ / "sockftp.dict"
PROXY_SEEDS = FUZZ / "corpus-proxy"
PROXY_DICTIONARY = FUZZ / "proxy.dict"

_SANDBOX_ENV = "SOCKFTP_FUZZ_SANDBOX"
_MODE_ENV = "SOCKFTP_FUZZ_MODE"
MODES = ("raw", "structured", "proxy")
#: libFuzzer settings unless given: inputs of up to 8 KiB, and an input
#: that runs over a minute is reported (as a timeout, with its stack).
DEFAULTS = {"-max_len": "8192", "-timeout": "60"}
_PATH_FLAGS = {"-artifact_prefix", "-exact_artifact_path", "-dict", "-merge_control_file", "-features_dir"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(_SANDBOX_ENV):
        return _fuzz(argv)
    return _supervise(argv)


def _supervise(argv: list[str]) -> int:
    mode = "structured" if "--structured" in argv else "proxy" if "--proxy" in argv else "raw"
    args = [a for a in argv if a not in ("--structured", "--proxy")]
    if any(a.startswith("--") for a in args):
        print(__doc__, file=sys.stderr)
        return 2
    args = libfuzzer_args(args, mode)
    with tempfile.TemporaryDirectory(prefix="sockftp-fuzz-", dir=memory_backed()) as top:
        env = dict(os.environ, **{_SANDBOX_ENV: top, _MODE_ENV: mode})
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                pass  # the child got the signal too: libFuzzer stops and reports


def memory_backed() -> str | None:
    """/dev/shm where there is one: on this project's VM a file operation on
    disk costs a millisecond or more, and every input makes dozens."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def libfuzzer_args(args: list[str], mode: str) -> list[str]:
    """*args* with this project's defaults for what they leave out, and
    with absolute paths (the fuzzer runs in a directory of its own)."""
    flags = {a.split("=", 1)[0] for a in args if a.startswith("-")}
    args = [_absolute(a) for a in args]
    for flag, value in DEFAULTS.items():
        if flag not in flags:
            args.append(f"{flag}={value}")
    if "-artifact_prefix" not in flags:
        (WORK / "artifacts").mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={WORK / 'artifacts'}{os.sep}")
    if mode in ("raw", "proxy") and "-dict" not in flags:
        args.append(f"-dict={DICTIONARY if mode == 'raw' else PROXY_DICTIONARY}")
    if not any(not a.startswith("-") for a in args):
        corpus = WORK / f"corpus-{mode}"
        corpus.mkdir(parents=True, exist_ok=True)
        args.append(str(corpus))  # the first directory gets the new inputs
        if mode == "raw":
            args.append(str(SEEDS))
        elif mode == "proxy":
            args.append(str(PROXY_SEEDS))
    return args


def _absolute(arg: str) -> str:
    if not arg.startswith("-"):
        return os.path.abspath(arg)
    flag, _, value = arg.partition("=")
    if flag in _PATH_FLAGS and value:
        return f"{flag}={os.path.abspath(value)}{os.sep if value.endswith(os.sep) else ''}"
    return arg


def raw_chunks(data: bytes) -> list[bytes]:
    """The raw mode's input, cut at up to three points that depend only on
    the input, so that a header or an upload can arrive in several reads."""
    rng = random.Random(zlib.crc32(data))
    if len(data) < 2:
        return [data]
    cuts = sorted({rng.randrange(1, len(data)) for _ in range(rng.randrange(4))})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def frame_aware_mutator():
    """A libFuzzer custom mutator for the raw mode, around libFuzzer's own
    byte mutations (``atheris.Mutate``).

    Half the time it mutates the whole stream as bytes. Otherwise it finds
    the frames in the stream (and the raw bytes a ``put`` announces), then
    mutates one frame's JSON, or duplicates, drops or swaps frames, and
    writes every length prefix anew: byte mutations alone nearly always
    break a prefix, and the server then sees one bad frame and closes.
    """

    import atheris

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        # Looked up on each call: atheris.Mutate is a stub that raises until
        # Fuzz() has started, and a reference taken before then stays one.
        mutate = atheris.Mutate
        rng = random.Random(seed)
        segments = client_segments(data)
        frames = [i for i, (is_frame, _) in enumerate(segments) if is_frame]
        if not frames or rng.random() < 0.5:
            return mutate(data, max_size)
        i = rng.choice(frames)
        action = rng.random()
        if action < 0.7:
            payload = segments[i][1]
            segments[i] = (True, mutate(payload, len(payload) + 64))
        elif action < 0.8:
            segments.insert(i, segments[i])
        elif action < 0.9 and len(segments) > 1:
            del segments[i]
        else:
            j = rng.randrange(len(segments))
            segments[i], segments[j] = segments[j], segments[i]
        out = b"".join(struct.pack("<I", len(p)) + p if is_frame else p for is_frame, p in segments)
        return out[:max_size]

    return mutator


def client_segments(data: bytes) -> list[tuple[bool, bytes]]:
    """The stream cut into (True, JSON payload) for each whole frame and
    (False, bytes) for the raw bytes a put announces, or for whatever is
    not a frame (which ends the walk)."""
    segments: list[tuple[bool, bytes]] = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "little") if len(data) - pos >= 4 else 0
        if not 0 < length <= len(data) - pos - 4:
            segments.append((False, data[pos:]))
            break
        payload = data[pos + 4 : pos + 4 + length]
        segments.append((True, payload))
        pos += 4 + length
        count = _announced(payload)
        if count:
            segments.append((False, data[pos : pos + count]))
            pos += count
    return segments


def _announced(payload: bytes) -> int:
    """The raw bytes that follow this request, if it is an upload."""
    try:
        header = json.loads(payload)
    except ValueError:
        return 0
    if not isinstance(header, dict) or header.get("cmd") != "put":
        return 0
    size = header.get("size", header.get("filesize"))
    offset = header.get("offset") or 0
    if isinstance(size, int) and isinstance(offset, int) and 0 <= offset <= size:
        return size - offset
    return 0


def _fuzz(argv: list[str]) -> int:
    import atheris

    mode = os.environ.get(_MODE_ENV, "raw")
    if mode not in MODES:
        raise SystemExit(f"{_MODE_ENV} must be one of {MODES}")
    if mode == "proxy":
        return _fuzz_proxy(argv)
    with atheris.instrument_imports(include=["sockftp"]):
        import sockftp.server.listener  # noqa: F401 - and everything it imports

    sys.path.insert(0, str(REPO))
    from fuzz import harness, structured

    prefix = next((a.split("=", 1)[1] for a in argv if a.startswith("-artifact_prefix=")), None)
    target = harness.Target(Path(os.environ[_SANDBOX_ENV]), prefix)
    instrumented = sorted(m for m in sys.modules if m == "sockftp" or m.startswith("sockftp."))
    print(
        f"sockftp fuzz: {mode} mode, server on {target.address[0]}:{target.address[1]}, "
        f"{len(instrumented)} sockftp modules instrumented",
        file=sys.stderr,
        flush=True,
    )

    if mode == "raw":

        def test_one_input(data: bytes) -> None:
            target.run(raw_chunks(data))

    else:

        def test_one_input(data: bytes) -> None:
            target.run(structured.session(atheris.FuzzedDataProvider(data)))

    mutator = frame_aware_mutator() if mode == "raw" else None
    atheris.Setup([sys.argv[0], *argv], test_one_input, custom_mutator=mutator)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer ends the process


def _fuzz_proxy(argv: list[str]) -> int:
    """The PROXY v2 decoder alone (sockftp/protocol/proxy.py), in this
    process: each input, cut as the raw mode cuts it, must give the same
    answer as the input whole (a header, "need more", or a ProxyError, and
    nothing else), and a header must lie within the input and the limit."""
    import atheris

    with atheris.instrument_imports(include=["sockftp.protocol.proxy"]):
        from sockftp.protocol import proxy

    def decide(chunks: list[bytes]):
        decoder = proxy.ProxyDecoder()
        header = None
        try:
            for chunk in chunks:
                header = decoder.feed(chunk)
            return (header, decoder.rest) if header is not None else (None, decoder.wanted())
        except proxy.ProxyError as exc:
            return "refused", str(exc)[:0]

    def test_one_input(data: bytes) -> None:
        whole, cut = decide([data]), decide(raw_chunks(data))
        if whole != cut:
            raise AssertionError(f"split input decoded differently: {whole!r} != {cut!r}")
        header = whole[0]
        if isinstance(header, proxy.ProxyHeader):
            if not (16 <= header.size <= min(len(data), proxy.MAX_HEADER)):
                raise AssertionError(f"header size {header.size} outside the input or the limit")
            if whole[1] != data[header.size :]:
                raise AssertionError("the bytes after the header were not kept as they came")

    print("sockftp fuzz: proxy mode (the decoder alone)", file=sys.stderr, flush=True)
    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()
    return 0  # not reached: libFuzzer ends the process


if __name__ == "__main__":
    sys.exit(main())
