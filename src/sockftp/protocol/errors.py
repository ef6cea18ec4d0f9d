"""Error codes, defined once for the server, the client and the docs.

A failed reply carries ``{"ok": false, "error": CODE, "message": TEXT}``.
CODE is one of the :class:`ErrorCode` values below and never changes
meaning between versions; TEXT is for people and may change at will.
``docs/PROTOCOL.md`` lists the same table, and a test keeps the two equal.

On the client side every code maps to an exception class, so callers can
``except sockftp.NotFound`` instead of comparing strings.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes. ``fatal`` ones are followed by the server closing."""

    # -- the byte stream (the connection closes after these) --
    BAD_FRAME = "bad_frame"  # length prefix of 0 or above MAX_HEADER_SIZE
    TIMEOUT = "timeout"  # idle or header deadline passed
    # -- the request --
    BAD_JSON = "bad_json"  # header bytes are not UTF-8 JSON
    BAD_REQUEST = "bad_request"  # not an object, missing or mistyped field
    UNKNOWN_COMMAND = "unknown_command"
    UNSUPPORTED_VERSION = "unsupported_version"
    # -- access --
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    BANNED = "banned"  # too many failed logins from this address
    TLS_REQUIRED = "tls_required"  # plaintext sent to a TLS server
    PERMISSION_DENIED = "permission_denied"
    # -- paths and files --
    PATH_REFUSED = "path_refused"  # invalid name, escapes the root, symlink
    NOT_FOUND = "not_found"
    EXISTS = "exists"
    NOT_A_DIRECTORY = "not_a_directory"
    IS_A_DIRECTORY = "is_a_directory"
    NOT_EMPTY = "not_empty"
    BUSY = "busy"  # another upload to the same path is under way
    # -- transfers --
    CHECKSUM_MISMATCH = "checksum_mismatch"
    OFFSET_MISMATCH = "offset_mismatch"
    NO_SPACE = "no_space"
    INSUFFICIENT_STORAGE = "insufficient_storage"  # refused up front: the rest would not fit
    QUOTA_EXCEEDED = "quota_exceeded"
    DELTA_BASE_CHANGED = "delta_base_changed"  # a delta put's base is not the file stored now
    # -- the server --
    TOO_MANY_SESSIONS = "too_many_sessions"
    SHUTTING_DOWN = "shutting_down"
    IO_ERROR = "io_error"
    INTERNAL = "internal"


#: Codes after which the server closes the connection: the byte stream can no
#: longer be trusted (or the session is over).
FATAL_CODES = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.TIMEOUT,
        ErrorCode.TOO_MANY_SESSIONS,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.BANNED,
        ErrorCode.TLS_REQUIRED,
    }
)


class SockftpError(Exception):
    """An error with a stable code and a human-readable message.

    Raised by storage and commands on the server (and turned into an error
    reply), and by the client library when the server answers with an error.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, code: ErrorCode | str | None = None, *, path=None, **details):
        super().__init__(message)
        if code is not None:
            self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else code
        self.message = message
        #: A storage path that the message names as ``{path}``. Storage does
        #: not know how the client sees it (the session's home is hidden), so
        #: the session fills it in with :meth:`localize`.
        self.path = path
        self.details = details

    def localize(self, display) -> None:
        """Write the path into the message, as ``display(path)`` shows it."""
        if self.path is not None:
            self.message = self.message.replace("{path}", display(self.path))
            self.path = None

    def __str__(self) -> str:
        self.localize(lambda parts: "/" + "/".join(parts))
        return f"{self.message} [{self.code}]"

    def to_reply(self) -> dict:
        self.localize(lambda parts: "/" + "/".join(parts))
        reply = {"ok": False, "error": str(self.code), "message": self.message}
        reply.update(self.details)
        return reply


def _subclass(name: str, code: ErrorCode, doc: str) -> type[SockftpError]:
    return type(name, (SockftpError,), {"code": code, "__doc__": doc})


BadFrame = _subclass("BadFrame", ErrorCode.BAD_FRAME, "The length prefix is invalid.")
Timeout = _subclass("Timeout", ErrorCode.TIMEOUT, "The peer was idle for too long.")
BadJson = _subclass("BadJson", ErrorCode.BAD_JSON, "The header is not UTF-8 JSON.")
BadRequest = _subclass("BadRequest", ErrorCode.BAD_REQUEST, "A field is missing or has the wrong type.")
UnknownCommand = _subclass("UnknownCommand", ErrorCode.UNKNOWN_COMMAND, "No such command.")
UnsupportedVersion = _subclass("UnsupportedVersion", ErrorCode.UNSUPPORTED_VERSION, "No protocol version in common.")
AuthRequired = _subclass("AuthRequired", ErrorCode.AUTH_REQUIRED, "Log in first.")
AuthFailed = _subclass("AuthFailed", ErrorCode.AUTH_FAILED, "Wrong user name or password.")
Banned = _subclass("Banned", ErrorCode.BANNED, "Too many failed logins from this address.")
TlsRequired = _subclass("TlsRequired", ErrorCode.TLS_REQUIRED, "This server speaks only TLS.")
PermissionDenied = _subclass("PermissionDenied", ErrorCode.PERMISSION_DENIED, "Not allowed.")
PathRefused = _subclass("PathRefused", ErrorCode.PATH_REFUSED, "The path is invalid or leaves the root.")
NotFound = _subclass("NotFound", ErrorCode.NOT_FOUND, "No such file or directory.")
Exists = _subclass("Exists", ErrorCode.EXISTS, "The target already exists.")
NotADirectory = _subclass("NotADirectory", ErrorCode.NOT_A_DIRECTORY, "A directory was expected.")
IsADirectory = _subclass("IsADirectory", ErrorCode.IS_A_DIRECTORY, "A file was expected.")
NotEmpty = _subclass("NotEmpty", ErrorCode.NOT_EMPTY, "The directory is not empty.")
Busy = _subclass("Busy", ErrorCode.BUSY, "Another upload to this path is under way.")
ChecksumMismatch = _subclass("ChecksumMismatch", ErrorCode.CHECKSUM_MISMATCH, "The data does not match its checksum.")
OffsetMismatch = _subclass(
    "OffsetMismatch", ErrorCode.OFFSET_MISMATCH, "The resume offset does not match what is held."
)
NoSpace = _subclass("NoSpace", ErrorCode.NO_SPACE, "The server's disk is full.")
InsufficientStorage = _subclass(
    "InsufficientStorage", ErrorCode.INSUFFICIENT_STORAGE, "The server has no room for the rest of this upload."
)
QuotaExceeded = _subclass("QuotaExceeded", ErrorCode.QUOTA_EXCEEDED, "The quota would be exceeded.")
DeltaBaseChanged = _subclass(
    "DeltaBaseChanged", ErrorCode.DELTA_BASE_CHANGED, "The file a delta was built against is no longer the one stored."
)
TooManySessions = _subclass(
    "TooManySessions", ErrorCode.TOO_MANY_SESSIONS, "The server or this address has too many sessions."
)
ShuttingDown = _subclass("ShuttingDown", ErrorCode.SHUTTING_DOWN, "The server is shutting down.")
IOFailure = _subclass("IOFailure", ErrorCode.IO_ERROR, "The server's storage failed.")
Internal = _subclass("Internal", ErrorCode.INTERNAL, "A bug in the server.")

_BY_CODE: dict[str, type[SockftpError]] = {
    cls.code: cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, SockftpError) and cls is not SockftpError
}


def error_from_reply(reply: dict) -> SockftpError:
    """The exception for a failed reply, of the class for its code."""
    code = reply.get("error")
    if not isinstance(code, str):
        code = "unknown"  # a broken server; still an error, never a crash
    message = reply.get("message") if isinstance(reply.get("message"), str) else code
    # "code" and "path" would collide with our own arguments.
    details = {k: v for k, v in reply.items() if k not in ("ok", "error", "message", "code", "path")}
    cls = _BY_CODE.get(code, SockftpError)
    err = cls(message, code=code if cls is SockftpError else None, **details)
    return err


class ConnectionLost(SockftpError):
    """The connection closed or broke. Raised by the client library only."""

    code = "connection_lost"  # type: ignore[assignment]


class WouldBlock(Exception):
    """Not an error of the protocol: raised by work asked to be *quick* (run
    on the server's parking-lot thread, where nothing may wait) when it would
    have to wait: for a password hash, a failure delay, a database write or
    a busy database, a walk of a home directory. It is raised before the
    work changes anything, so the caller hands the request to a worker
    thread, which runs it again from the start."""
