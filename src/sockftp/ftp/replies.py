"""FTP replies: what the server says on the control connection. Pure: no I/O.

A reply is a three-digit code and one or more lines of text (RFC 959,
section 4.2). One line goes out as ``CODE text``; several as ``CODE-first``,
the middle lines, and ``CODE last``. A middle line that starts with a digit
is indented by a space, so a client cannot take it for the last line.

No text a client chose (a path, a user name) may start a line of its own:
:func:`encode` turns CR, LF and NUL inside a line into spaces.

:func:`for_error` maps sockftp's error codes (:mod:`sockftp.protocol.errors`) to
the FTP reply codes a client understands, so storage and session refusals
read the same on both front doors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..protocol.errors import ErrorCode, SockftpError

_BREAKS = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True)
class Reply:
    """A reply code and its lines of text (at least one)."""

    code: int
    lines: tuple[str, ...]

    def __init__(self, code: int, *lines: str):
        if not 100 <= code <= 599:
            raise ValueError(f"not an FTP reply code: {code}")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "lines", lines or ("",))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def positive(self) -> bool:
        """A 1xx, 2xx or 3xx reply: the command was accepted."""
        return self.code < 400

    def encode(self) -> bytes:
        return encode(self)


def encode(reply: Reply) -> bytes:
    """The reply as it goes on the wire, UTF-8 (RFC 2640), CRLF line ends."""
    lines = [_BREAKS.sub(" ", line) for line in reply.lines]
    if len(lines) == 1:
        return f"{reply.code} {lines[0]}\r\n".encode("utf-8", "surrogateescape")
    out = [f"{reply.code}-{lines[0]}"]
    for line in lines[1:-1]:
        out.append(" " + line if line[:1].isdigit() else line)
    out.append(f"{reply.code} {lines[-1]}")
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


def quote_path(path: str) -> str:
    """*path* in double quotes, with its own quotes doubled (RFC 959 PWD and MKD)."""
    return '"' + path.replace('"', '""') + '"'


#: sockftp error codes and the FTP replies that mean the same. The default,
#: for a code not listed, is 550 (action not taken).
_CODES = {
    ErrorCode.NOT_FOUND: 550,
    ErrorCode.EXISTS: 550,
    ErrorCode.NOT_A_DIRECTORY: 550,
    ErrorCode.IS_A_DIRECTORY: 550,
    ErrorCode.NOT_EMPTY: 550,
    ErrorCode.PERMISSION_DENIED: 550,
    ErrorCode.PATH_REFUSED: 553,  # file name not allowed
    ErrorCode.BUSY: 450,  # file unavailable (busy): try again later
    ErrorCode.QUOTA_EXCEEDED: 552,  # exceeded storage allocation
    ErrorCode.NO_SPACE: 452,  # insufficient storage space
    ErrorCode.INSUFFICIENT_STORAGE: 452,
    ErrorCode.OFFSET_MISMATCH: 554,  # invalid REST parameter (RFC 3659)
    ErrorCode.CHECKSUM_MISMATCH: 451,
    ErrorCode.IO_ERROR: 451,  # local error in processing
    ErrorCode.INTERNAL: 451,
    ErrorCode.AUTH_REQUIRED: 530,
    ErrorCode.AUTH_FAILED: 530,
    ErrorCode.BAD_REQUEST: 501,
    ErrorCode.BANNED: 421,
    ErrorCode.TIMEOUT: 421,
    ErrorCode.SHUTTING_DOWN: 421,
    ErrorCode.TOO_MANY_SESSIONS: 421,
}

#: Reply codes after which the server closes the control connection.
CLOSING = frozenset({221, 421})


def for_error(exc: SockftpError, display=None, creates: bool = False) -> Reply:
    """The reply for a refusal: its FTP code, and sockftp's message with
    the path as the client sees it (*display*, see
    :meth:`sockftp.server.session.Session.display`). A refused path is 553 (file
    name not allowed) for a command that *creates* a name, 550 otherwise."""
    exc.localize(display or (lambda parts: "/" + "/".join(parts)))
    code = _CODES.get(exc.code, 550)
    if code == 553 and not creates:
        code = 550
    return Reply(code, exc.message)
