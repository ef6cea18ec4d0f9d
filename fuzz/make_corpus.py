"""Write the raw mode's seed corpus (fuzz/corpus/) and dictionary (fuzz/sockftp.dict).

    python -m fuzz.make_corpus

Each seed is one whole client side of a session, built with sockftp's own
frame encoder (and, for the seed-style ones, ``struct.pack('i', n)``),
against the tree every input starts from (fuzz/harness.py, build_tree).
The files are committed; run this again after changing it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import xxhash

from sockftp.protocol.frames import encode_header
from sockftp.server.commands import COMMANDS

from .harness import PARTIAL_BYTES, PARTIAL_SIZE, PASSWORD, READER, READER_PASSWORD, USER
from .structured import FIELD_NAMES, NAMES

HERE = Path(__file__).resolve().parent


def checksum(data: bytes) -> str:
    return "xxh3-128:" + xxhash.xxh3_128_hexdigest(data)


def frames(*headers: dict) -> bytes:
    return b"".join(encode_header(h) for h in headers)


def seed_style(header: dict) -> bytes:
    """A frame as the seed's clients build it."""
    payload = json.dumps(header).encode()
    return struct.pack("i", len(payload)) + payload


def put(path: str, data: bytes, how: str = "up front", **fields) -> bytes:
    header = {"cmd": "put", "path": path, "size": len(data), **fields}
    if how == "up front":
        header["checksum"] = checksum(data)
        return encode_header(header) + data
    if how == "trailer":
        header["checksum"] = "trailer"
        return encode_header(header) + data + encode_header({"checksum": checksum(data)})
    return encode_header(header) + data  # unverified


def seeds() -> dict[str, bytes]:
    hello = {"cmd": "hello", "versions": [1], "client": "fuzz"}
    resumed = b"abcdefghij"
    return {
        "hello-ping": frames(hello, {"cmd": "ping"}, {"cmd": "quit"}),
        "ls": frames({"cmd": "ls"}, {"cmd": "ls", "path": "/dir"}, {"cmd": "ls", "path": "link-in"}),
        "mkdir": frames(
            {"cmd": "mkdir", "path": "new"},
            {"cmd": "mkdir", "path": "new/a/b", "parents": True},
            {"cmd": "mkdir", "path": "a.txt/x"},
        ),
        "put-get": put("up.bin", b"0123456789" * 5) + frames({"cmd": "get", "path": "up.bin"}),
        "put-trailer": put("dir/t.txt", b"trailer data\n", how="trailer")
        + frames({"cmd": "stat", "path": "dir/t.txt", "checksum": True}),
        "put-bad-checksum": encode_header({"cmd": "put", "path": "bad.bin", "size": 3, "checksum": checksum(b"xyz")})
        + b"abc"
        + frames({"cmd": "ls"}),
        "get": frames(
            {"cmd": "get", "path": "a.txt"},
            {"cmd": "get", "path": "dir/b.bin", "offset": 200},
            {"cmd": "get", "path": "a.txt", "offset": 99},
            {"cmd": "get", "path": "fifo"},
        ),
        "resume": frames({"cmd": "resume", "path": "big.bin", "size": PARTIAL_SIZE})
        + encode_header(
            {
                "cmd": "put",
                "path": "big.bin",
                "size": PARTIAL_SIZE,
                "offset": len(PARTIAL_BYTES),
                "checksum": checksum(PARTIAL_BYTES + resumed),
            }
        )
        + resumed
        + frames({"cmd": "get", "path": "big.bin", "offset": 5}),
        "stat": frames(
            {"cmd": "stat", "path": "/"},
            {"cmd": "stat", "path": "a.txt", "checksum": True},
            {"cmd": "stat", "path": "link-out"},
        ),
        "mv": frames(
            {"cmd": "mv", "source": "a.txt", "target": "dir/c.txt"},
            {"cmd": "mv", "from": "dir", "to": "moved"},
            {"cmd": "mv", "source": "moved", "target": "moved/sub/x"},
        ),
        "rm-rmdir": frames(
            {"cmd": "rm", "path": "empty.txt"},
            {"cmd": "rmdir", "path": "emptydir"},
            {"cmd": "rmdir", "path": "dir"},
            {"cmd": "rmdir", "path": "partials"},
            {"cmd": "rm", "path": "link-out"},
        ),
        "cd-pwd": frames(
            {"cmd": "cd", "path": "dir/sub"},
            {"cmd": "pwd"},
            {"cmd": "ls", "path": "../.."},
            {"cmd": "cd", "path": "../../.."},
            {"cmd": "cd", "path": "link-in"},
            {"cmd": "rmdir", "path": "/dir/sub"},
            {"cmd": "pwd"},
        ),
        "auth-user": frames(
            {"cmd": "auth", "user": USER, "password": PASSWORD},
            {"cmd": "pwd"},
            {"cmd": "quota"},
        )
        + put("q.bin", b"q" * 100)
        + frames({"cmd": "df"}),
        "auth-reader": frames(
            {"cmd": "auth", "user": READER, "password": READER_PASSWORD},
            {"cmd": "mkdir", "path": "x"},
            {"cmd": "get", "path": "a.txt"},
        ),
        "auth-wrong": frames(
            {"cmd": "auth", "user": USER, "password": "wrong"},
            {"cmd": "auth", "user": "nobody", "password": "x"},
            {"cmd": "auth", "user": USER, "password": "wrong again"},
            {"cmd": "ping"},
        ),
        "quota-exceeded": frames({"cmd": "auth", "user": USER, "password": PASSWORD})
        + encode_header({"cmd": "put", "path": "big", "size": 5000})
        + b"z" * 5000,
        "pipelined": frames(
            hello,
            {"cmd": "mkdir", "path": "p"},
            {"cmd": "cd", "path": "p"},
        )
        + put("f", b"pipelined\n", how="unverified")
        + frames({"cmd": "ls"}, {"cmd": "quit"}, {"cmd": "ping"}),
        "seed-style": seed_style({"cmd": "put", "filename": "seed.txt", "filesize": 4})
        + b"seed"
        + seed_style({"cmd": "get", "filename": "seed.txt"}),
        "bad-input": encode_header({"cmd": "nope"})
        + struct.pack("<I", 4)
        + b"[1,]"
        + struct.pack("<I", 2)
        + b"[]"
        + encode_header({"cmd": "handle"})
        + encode_header({"cmd": "get"})
        + encode_header({"cmd": "hello", "versions": [2]})
        + struct.pack("<I", 0),
        "put-refused": put("../escape.txt", b"nope") + put(".sockftp-part-x", b"nope") + frames({"cmd": "ping"}),
        "put-too-large": encode_header({"cmd": "put", "path": "huge", "size": 2**40}) + b"x" * 100,
        "put-bad-size": encode_header({"cmd": "put", "path": "s", "size": -1}) + b"x",
    }


def dictionary() -> list[str]:
    """libFuzzer dictionary entries: JSON tokens the server looks for."""
    names = [n for n in NAMES if 2 <= len(n) <= 16 and n.isascii() and n.isprintable()]
    words = sorted(COMMANDS) + list(FIELD_NAMES) + ["trailer", USER, PASSWORD, READER] + names
    entries = [json.dumps(w) for w in words] + ['"xxh3-128:', "true", "false", "null", "[1]", '{"cmd":"', '":"']
    return entries


def _escape(entry: str) -> str:
    out = []
    for byte in entry.encode():
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '"\\' else f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def main() -> None:
    corpus = HERE / "corpus"
    corpus.mkdir(exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    for name, data in seeds().items():
        (corpus / name).write_bytes(data)
    lines = ["# libFuzzer dictionary for fuzz/fuzz_session.py; written by fuzz/make_corpus.py"]
    lines += [_escape(entry) for entry in dictionary()]
    (HERE / "sockftp.dict").write_text("\n".join(lines) + "\n")
    print(f"{len(seeds())} seeds in {corpus}, dictionary in {HERE / 'sockftp.dict'}")


if __name__ == "__main__":
    main()
