"""The structured mode: fuzz input bytes become a session of valid-ish requests.

Raw byte mutation mostly breaks the length prefix or the JSON, so it
rarely gets past the frame decoder. Here the fuzzer's bytes choose, through
:class:`atheris.FuzzedDataProvider`, a sequence of requests: which commands,
which fields, values of the right type or deliberately of the wrong one,
paths built from the names in the starting tree, uploads with their bytes
and a correct or damaged checksum, trailers, pauses between frames, and now
and then a broken frame. The JSON is always well formed unless the
fuzzer asks otherwise, so mutations land in the commands' logic.
"""

from __future__ import annotations

import json
import struct

import xxhash

from sockftp.server.commands import COMMANDS as SERVER_COMMANDS

from .harness import PARTIAL_BYTES, PARTIAL_SIZE, PASSWORD, READER, READER_PASSWORD, USER

#: Every command of the server (_request also makes up names now and then).
COMMANDS = tuple(sorted(SERVER_COMMANDS))

#: Path components: the starting tree (see harness.build_tree), new names,
#: and the names the path rules are about.
NAMES = (
    "a.txt",
    "empty.txt",
    "dir",
    "b.bin",
    "sub",
    "emptydir",
    "link-in",
    "link-file",
    "link-out",
    "link-abs",
    "link-dangling",
    "secret.txt",
    "fifo",
    "bad\\xff",
    "big.bin",
    "partials",
    "gone.bin",
    "new",
    "new.txt",
    "..",
    ".",
    "",
    "users",
    "anonymous",
    ".sockftp",
    ".sockftp-part-0",
    "caf\u00e9",
    "line\u2028break",
    "nul\x00",
    "tab\t",
    "back\\slash",
    "x" * 255,
    "y" * 256,
    "\ud800",
)

USERS = (USER, READER, "nobody", "", "anonymous", "../fuzz", "fuzz\n")
PASSWORDS = (PASSWORD, READER_PASSWORD, "wrong", "")
_ODD_VALUES = (None, True, False, 0, -1, 1.5, "", "1", [], {}, [1], {"a": 1})
_INTEGERS = (0, 1, 2, 9, 10, 11, 19, 20, 21, 4096, 4097, 2**62, 2**62 + 1, 64 * 2**20 + 1, 2**63, -1, -(2**31))


def session(fdp) -> list[bytes]:
    """The chunks of one session. A new chunk starts where the client pauses."""
    chunks: list[bytes] = []
    current = bytearray()
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        if not fdp.remaining_bytes():
            break
        current += _request(fdp)
        if fdp.ConsumeIntInRange(0, 5) == 0:
            # Pause here, or within the bytes sent so far (mid-frame).
            cut = len(current) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, len(current))
            chunks.append(bytes(current[:cut]))
            del current[:cut]
    chunks.append(bytes(current))
    return [c for c in chunks if c]


def _request(fdp) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 63)
    if kind == 0:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))  # noise where a frame belongs
    if kind == 1:
        return _frame(fdp, _value(fdp))  # JSON that is not an object
    name = _pick(fdp, COMMANDS) if kind > 3 else fdp.ConsumeUnicodeNoSurrogates(12)
    header: dict = {"cmd": name}
    raw = _FIELDS.get(name, _no_fields)(fdp, header)
    extras = fdp.ConsumeIntInRange(1, 3) if fdp.ConsumeIntInRange(0, 3) == 0 else 0
    for _ in range(extras):
        header[_pick(fdp, FIELD_NAMES)] = _value(fdp)  # unknown, mistyped or replaced fields
    if fdp.ConsumeIntInRange(0, 31) == 0:
        del header["cmd"]
    return _frame(fdp, header) + raw


def _frame(fdp, value) -> bytes:
    style = fdp.ConsumeIntInRange(0, 31)
    if style == 0:
        payload = json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        payload = json.dumps(value, ensure_ascii=style % 2 == 0).encode("utf-8", "surrogatepass")
    length = len(payload)
    if style == 1:
        length = _pick(fdp, (0, length - 1, length + 1, 65536, 65537, 2**32 - 1))
    elif style == 2:
        return struct.pack("i", length) + payload  # the seed's clients
    return struct.pack("<I", max(0, min(length, 2**32 - 1))) + payload


# -- field values ----------------------------------------------------------------------------


def _pick(fdp, choices):
    return choices[fdp.ConsumeIntInRange(0, len(choices) - 1)]


def _value(fdp):
    """Any JSON value, usually of a type no field wants."""
    choice = fdp.ConsumeIntInRange(0, 7)
    if choice == 0:
        return fdp.ConsumeUnicode(16)
    if choice == 1:
        return fdp.ConsumeInt(9)
    if choice == 2:
        return [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 2))]
    return _pick(fdp, _ODD_VALUES)


def _path(fdp):
    choice = fdp.ConsumeIntInRange(0, 31)
    if choice == 0:
        return _value(fdp)
    if choice == 1:
        return fdp.ConsumeUnicode(24)
    if choice == 2:
        return "/".join("d" for _ in range(fdp.ConsumeIntInRange(250, 260)))  # near MAX_PATH_DEPTH
    parts = [_pick(fdp, NAMES) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    return ("/" if fdp.ConsumeBool() else "") + "/".join(parts)


def _integer(fdp, near: int = 0):
    choice = fdp.ConsumeIntInRange(0, 15)
    if choice < 8:
        return near
    if choice < 13:
        return _pick(fdp, _INTEGERS)
    if choice == 13:
        return fdp.ConsumeInt(8)
    return _pick(fdp, _ODD_VALUES)


def _boolean(fdp):
    return fdp.ConsumeBool() if fdp.ConsumeIntInRange(0, 7) else _pick(fdp, _ODD_VALUES)


def _maybe(fdp, header: dict, key: str, make, *args) -> None:
    if fdp.ConsumeIntInRange(0, 7):
        header[key] = make(fdp, *args)


# -- per command: fill the header, return the raw bytes that follow it ----------------------


def _no_fields(fdp, header: dict) -> bytes:
    return b""


def _path_only(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "path", _path)
    return b""


def _hello(fdp, header: dict) -> bytes:
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        header["versions"] = _pick(fdp, ([1], [2], [], [1, 2], [0, 1], ["1"], [True], None, 1))
    elif choice == 1:
        header["version"] = _integer(fdp, 1)
    return b""


def _auth(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "user", lambda f: _pick(f, USERS) if f.ConsumeIntInRange(0, 7) else _value(f))
    _maybe(fdp, header, "password", lambda f: _pick(f, PASSWORDS) if f.ConsumeIntInRange(0, 7) else _value(f))
    return b""


def _mkdir(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "path", _path)
    _maybe(fdp, header, "parents", _boolean)
    return b""


def _stat(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "path", _path)
    _maybe(fdp, header, "checksum", _boolean)
    return b""


def _mv(fdp, header: dict) -> bytes:
    source, target = ("source", "target") if fdp.ConsumeIntInRange(0, 3) else ("from", "to")
    _maybe(fdp, header, source, _path)
    _maybe(fdp, header, target, _path)
    return b""


def _resume(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "path", _path)
    _maybe(fdp, header, "size", _integer, PARTIAL_SIZE)
    return b""


def _get(fdp, header: dict) -> bytes:
    _maybe(fdp, header, "path" if fdp.ConsumeIntInRange(0, 3) else "filename", _path)
    if fdp.ConsumeBool():
        header["offset"] = _integer(fdp, 1)
    return b""


def _put(fdp, header: dict) -> bytes:
    """An upload: usually announced right, sometimes resuming the partial
    of big.bin, with its checksum up front, in a trailer, wrong or absent."""
    resuming = fdp.ConsumeIntInRange(0, 3) == 0
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    if resuming:
        header["path"] = "big.bin"
        offset = len(PARTIAL_BYTES)
        whole = PARTIAL_BYTES + data
        header["offset"] = _integer(fdp, offset)
        header["size"] = _integer(fdp, PARTIAL_SIZE if len(whole) == PARTIAL_SIZE else len(whole))
    else:
        header["path" if fdp.ConsumeIntInRange(0, 3) else "filename"] = _path(fdp)
        whole = data
        if fdp.ConsumeIntInRange(0, 3):
            header["size" if fdp.ConsumeIntInRange(0, 3) else "filesize"] = _integer(fdp, len(data))
    right = "xxh3-128:" + xxhash.xxh3_128_hexdigest(whole)
    how = fdp.ConsumeIntInRange(0, 7)
    trailer = b""
    if how in (1, 2):
        header["checksum"] = right
    elif how in (3, 4):
        header["checksum"] = "trailer"
        value = right if how == 3 else _pick(fdp, ("xxh3-128:" + "0" * 32, right.upper(), "", None, 5))
        trailer = _frame(fdp, {"checksum": value})
    elif how == 5:
        header["checksum"] = _pick(fdp, ("xxh3-128:" + "0" * 32, "md5:00", right[:-1], None, 7))
    return data + trailer


_FIELDS = {
    "hello": _hello,
    "auth": _auth,
    "cd": _path_only,
    "ls": _path_only,
    "rm": _path_only,
    "rmdir": _path_only,
    "stat": _stat,
    "mkdir": _mkdir,
    "mv": _mv,
    "resume": _resume,
    "get": _get,
    "put": _put,
}
FIELD_NAMES = (
    "path",
    "filename",
    "size",
    "filesize",
    "offset",
    "checksum",
    "parents",
    "source",
    "target",
    "from",
    "to",
    "user",
    "password",
    "versions",
    "version",
    "cmd",
    "delta",  # a put's, whose ops decide how many raw bytes follow
    "length",
    "checksums",
    "mtime",
)
