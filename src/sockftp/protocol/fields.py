"""Reading typed fields out of request headers. Pure: no I/O.

Every command takes its arguments through these helpers, so a missing
field, a wrong type or an out-of-range number gets the same clear
``bad_request`` reply whatever the command. Unknown extra fields are
ignored, so newer clients can send hints older servers do not know.
"""

from __future__ import annotations

from .errors import BadRequest
from .limits import MAX_FILE_SIZE

_MISSING = object()


def _lookup(header: dict, name: str, aliases: tuple[str, ...]):
    if name in header:
        return name, header[name]
    for alias in aliases:
        if alias in header:
            return alias, header[alias]
    return name, _MISSING


def string(header: dict, name: str, default=_MISSING, aliases: tuple[str, ...] = ()) -> str:
    key, value = _lookup(header, name, aliases)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise BadRequest(f"missing field {name!r}")
        return default
    if not isinstance(value, str):
        raise BadRequest(f"field {key!r} must be a string")
    return value


def integer(
    header: dict,
    name: str,
    default=_MISSING,
    aliases: tuple[str, ...] = (),
    minimum: int = 0,
    maximum: int = MAX_FILE_SIZE,
) -> int:
    key, value = _lookup(header, name, aliases)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise BadRequest(f"missing field {name!r}")
        return default
    # bool is an int in Python, but true is not a size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field {key!r} must be an integer")
    if not minimum <= value <= maximum:
        raise BadRequest(f"field {key!r} must be between {minimum} and {maximum}")
    return value


#: The latest modification time a request may set: the year 9999, as far as
#: FTP's MFMT and every filesystem sockftp runs on can write.
MAX_TIMESTAMP = 253402300799.0


def timestamp(header: dict, name: str) -> float | None:
    """An optional time in seconds since the epoch (a number, fractions
    allowed), from 1970 to the year 9999; None if absent or null."""
    value = header.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_TIMESTAMP:
        raise BadRequest(f"field {name!r} must be a number of seconds since 1970, up to the year 9999")
    return float(value)


def boolean(header: dict, name: str, default: bool = False) -> bool:
    value = header.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"field {name!r} must be true or false")
    return value


def command_name(header: dict) -> str:
    """The ``cmd`` field, which every request must carry."""
    if "cmd" not in header:
        raise BadRequest("missing field 'cmd'")
    cmd = header["cmd"]
    if not isinstance(cmd, str):
        raise BadRequest("field 'cmd' must be a string")
    return cmd


def ok(**fields) -> dict:
    """A success reply."""
    return {"ok": True, **fields}
