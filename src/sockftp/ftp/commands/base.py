"""The machinery every FTP command shares: the registry and what a command sees.

:class:`Context` (with its :class:`Settings`, :class:`State` and
:class:`Link`), :class:`Refusal`, the :func:`command` decorator that fills
:data:`COMMANDS`, and :func:`dispatch`, which turns one command line into
its final reply: the checks every verb gets (login, argument, write
permission) and the mapping of errors to reply codes.

It must never import the modules of the verbs (they import it, and
``commands/__init__.py`` imports them all), and never touch a socket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ...protocol.errors import SockftpError
from ...protocol.paths import RemotePath
from ...server.session import Identity, Session
from ...storage import Storage
from .. import listing, parser
from ..data import DataConnection, TransferAborted, TransferFailed
from ..replies import Reply, for_error

#: HASH algorithms (draft-bryan-ftp-hash), by their IANA names. XXH3-128 is
#: sockftp's own checksum, kept with every file, so it costs nothing and is
#: the default; the others are computed on demand.
HASHES = {"XXH3-128": None, "SHA-256": "sha256", "SHA-512": "sha512", "SHA-1": "sha1", "MD5": "md5"}
DEFAULT_HASH = "XXH3-128"


@dataclass(frozen=True)
class Settings:
    """How the front door was configured (the same for every connection)."""

    tls_available: bool = False  # a certificate is configured: AUTH TLS works
    require_tls: bool = False  # no login and no data without TLS
    anonymous: bool = False  # USER anonymous logs in to the shared area
    masquerade: str | None = None  # the IPv4 address PASV announces


@dataclass
class State:
    """What one control connection remembers between commands."""

    user: str | None = None  # from USER, waiting for PASS
    failed_logins: int = 0
    rename_from: tuple[RemotePath, str] | None = None  # from RNFR: storage path, as sent
    rest: int = 0  # from REST, for the next transfer
    type: str = "A"  # RFC 959's default; file bytes go as stored either way
    tls: bool = False  # the control connection is TLS
    pbsz: bool = False
    protect: bool = False  # PROT P: data connections are TLS
    epsv_all: bool = False
    facts: tuple[str, ...] = listing.FACTS
    hash: str = DEFAULT_HASH
    #: ABOR arrived during a transfer: answer it after the transfer's reply.
    abort_requested: bool = False

    def take_rest(self) -> int:
        offset, self.rest = self.rest, 0
        return offset


class Link(ABC):
    """What commands need of the connection they serve."""

    #: The server's and the client's address on the control connection.
    local: str
    peer: str

    @abstractmethod
    def reply(self, reply: Reply) -> None:
        """Send a preliminary reply (150) at once."""

    @abstractmethod
    def passive(self) -> int:
        """Listen for the next data connection; its port. Raises DataError."""

    @abstractmethod
    def active(self, host: str, port: int) -> None:
        """Connect to *host*:*port* for the next data connection."""

    @property
    @abstractmethod
    def data_ready(self) -> bool:
        """True once PASV, EPSV, PORT or EPRT has said how to connect."""

    @abstractmethod
    def open_data(self, protect: bool) -> DataConnection:
        """The next data connection (TLS if *protect*). Raises DataError."""

    @abstractmethod
    def start_tls(self) -> None:
        """Wrap the control connection in TLS (after the 234 is sent)."""

    @abstractmethod
    def anonymous_identity(self) -> Identity:
        """The identity of the shared anonymous area."""


@dataclass
class Context:
    """One command's view of its connection, and what it reports."""

    session: Session
    state: State
    settings: Settings
    link: Link
    #: What the audit log records: the event (put, get, rm, rmdir, mkdir,
    #: mv) and the paths as the client sent them, as the native protocol's
    #: request fields (path, source, target).
    audit: tuple[str, dict] | None = None
    path: str | None = None  # the path argument, for the main log
    bytes: int = 0  # file bytes moved
    result: str = "ok"  # or an error code, for the audit log
    close: bool = False  # close the control connection after the reply
    after: Callable[[], None] | None = None  # run once the reply is sent

    @property
    def storage(self) -> Storage:
        return self.session.storage

    def resolve(self, raw: str, audit: str | None = None) -> RemotePath:
        """The storage path of *raw*; with *audit*, the event it is for."""
        self.path = raw
        if audit is not None:
            self.audit = (audit, {"path": raw})
        return self.session.resolve(raw)

    def display(self, target: RemotePath) -> str:
        return self.session.display(target)


class Refusal(Exception):
    """A command refused with a reply of its own (not a sockftp error)."""

    def __init__(self, reply: Reply, result: str = "refused"):
        super().__init__(reply.text)
        self.reply = reply
        self.result = result


Handler = Callable[[Context, str], Reply]

REQUIRED, OPTIONAL, NONE = "required", "optional", "none"


@dataclass(frozen=True)
class Verb:
    name: str
    handler: Handler
    needs_login: bool
    writes: bool
    argument: str  # REQUIRED, OPTIONAL or NONE
    syntax: str


COMMANDS: dict[str, Verb] = {}


def command(*names: str, needs_login: bool = True, writes: bool = False, argument: str = OPTIONAL, syntax: str = ""):
    """Register *handler* under *names* (the first is its name, the others
    RFC 775's X-aliases)."""

    def register(handler: Handler) -> Handler:
        for name in names:
            COMMANDS[name] = Verb(names[0], handler, needs_login, writes, argument, syntax or names[0])
        return handler

    return register


def dispatch(ctx: Context, line: str) -> Reply:
    """Run the command *line* and return its final reply. Never raises for
    the client's mistakes or refusals; a bug still raises."""
    try:
        cmd = parser.parse_command(line)
    except parser.ParseError:
        ctx.result = "bad_request"
        return Reply(500, "Syntax error, command unrecognized")
    verb = COMMANDS.get(cmd.verb)
    rename_from, ctx.state.rename_from = ctx.state.rename_from, None  # RNTO must come right after RNFR
    if verb is None:
        ctx.result = "unknown_command"
        return Reply(502, f"Command {cmd.verb} not implemented")
    if verb.name == "RNTO":
        ctx.state.rename_from = rename_from
    if verb.needs_login and ctx.session.identity is None:
        ctx.result = "auth_required"
        return Reply(530, "Log in with USER and PASS first")
    if verb.argument == REQUIRED and not cmd.argument.strip():
        ctx.result = "bad_request"
        return Reply(501, f"Syntax: {verb.syntax}")
    if verb.argument == NONE and cmd.argument.strip():
        ctx.result = "bad_request"
        return Reply(501, f"{verb.name} takes no argument")
    try:
        if verb.writes:
            ctx.session.require_write()
        return verb.handler(ctx, cmd.argument)
    except Refusal as refusal:
        ctx.result = refusal.result
        return refusal.reply
    except parser.ParseError as exc:
        ctx.result = "bad_request"
        return Reply(501, str(exc))
    except SockftpError as exc:
        ctx.result = str(exc.code)
        return for_error(exc, ctx.display if ctx.session.identity else None, creates=verb.name in _CREATES)
    except TransferAborted:
        ctx.result = "aborted"
        return Reply(426, "Transfer aborted; the data connection is closed")
    except TransferFailed as exc:
        ctx.result = "connection_lost"
        return Reply(426, f"Transfer failed, the data connection is closed: {exc}")


#: Commands whose path names something new: a refused name is 553 for them.
_CREATES = frozenset({"STOR", "APPE", "MKD", "RNTO"})
