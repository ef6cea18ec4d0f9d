"""sockftp: a concurrent, multi-user file-transfer server, client library and command line.

The data path, by module: :mod:`~sockftp.wire` moves bytes on a socket,
:mod:`~sockftp.frames` turns them into headers, :mod:`~sockftp.commands`
acts on them for a :mod:`~sockftp.session`, :mod:`~sockftp.storage` keeps
the files. :mod:`~sockftp.server` runs sessions; :mod:`~sockftp.client`
is the other end.
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402 - after __version__, which commands.py imports
    FATAL_CODES,
    AuthFailed,
    AuthRequired,
    BadFrame,
    BadJson,
    BadRequest,
    Banned,
    Busy,
    ChecksumMismatch,
    ConnectionLost,
    ErrorCode,
    Exists,
    Internal,
    IOFailure,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    OffsetMismatch,
    PathRefused,
    PermissionDenied,
    QuotaExceeded,
    ShuttingDown,
    SockftpError,
    Timeout,
    TlsRequired,
    TooManySessions,
    UnknownCommand,
    UnsupportedVersion,
    error_from_reply,
)

__all__ = [
    "Client",
    "Entry",
    "TransferResult",
    "__version__",
    "ErrorCode",
    "FATAL_CODES",
    "SockftpError",
    "ConnectionLost",
    "error_from_reply",
    "BadFrame",
    "Timeout",
    "TlsRequired",
    "BadJson",
    "BadRequest",
    "UnknownCommand",
    "UnsupportedVersion",
    "AuthRequired",
    "AuthFailed",
    "Banned",
    "PermissionDenied",
    "PathRefused",
    "NotFound",
    "Exists",
    "NotADirectory",
    "IsADirectory",
    "NotEmpty",
    "Busy",
    "ChecksumMismatch",
    "OffsetMismatch",
    "NoSpace",
    "QuotaExceeded",
    "TooManySessions",
    "ShuttingDown",
    "IOFailure",
    "Internal",
]


def __getattr__(name):
    # The client pulls in more than the server needs; load it on first use.
    if name in ("Client", "Entry", "TransferResult"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
