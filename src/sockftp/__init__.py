"""sockftp: a concurrent, multi-user file-transfer server, client library and command line.

The packages, by role (docs/ARCHITECTURE.md draws the map):

- :mod:`sockftp.protocol`: what both ends share: frames, header fields,
  error codes, limits, checksums, the wire and TLS contexts;
- :mod:`sockftp.server`: the listener, sessions, commands, logins, quotas;
- :mod:`sockftp.ftp`: the FTP front door, on the server's sessions;
- :mod:`sockftp.storage` and :mod:`sockftp.accounts`: where files and
  users live, behind interfaces every door shares;
- :mod:`sockftp.client` and :mod:`sockftp.cli`: the other end.

The data path of an upload: :mod:`~sockftp.protocol.wire` reads bytes,
:mod:`~sockftp.protocol.frames` turns them into a header,
:mod:`~sockftp.server.commands` acts on it for a session, and
:mod:`~sockftp.storage` keeps the file.
"""

__version__ = "0.1.0"

from .protocol.errors import (  # noqa: E402 - after __version__, which commands.py imports
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
    DeltaBaseChanged,
    ErrorCode,
    Exists,
    InsufficientStorage,
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
    "InsufficientStorage",
    "QuotaExceeded",
    "DeltaBaseChanged",
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
