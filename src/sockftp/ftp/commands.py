"""The FTP commands: one small function each, in an explicit registry.

A command gets the :class:`Context` of its control connection and its
argument, and returns its final :class:`~sockftp.ftp.replies.Reply`. It
reaches files only through the session's storage (the logged-in user's,
with their quota), paths only through the session (their jail and cwd),
logins only through the session's authenticator (bans, failure delays, the
dummy hash): the same objects the native protocol uses, so both front
doors enforce the same rules.

Decisions are taken here: who may do what before logging in, RFC 2577's
limits on PORT and EPRT and on failed logins, where an interrupted upload
resumes, what SIZE answers. Sockets are not: a command that needs the
data connection asks the :class:`Link` (the server's handler, or a test's
stand-in) and moves bytes through the :class:`~sockftp.ftp.data.DataConnection`
it gets back. So every command can be tested without a network.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from ..accounts.tokens import PREFIX as TOKEN_PREFIX
from ..protocol import checksum as checksums
from ..protocol.errors import (
    AuthFailed,
    Banned,
    IsADirectory,
    NotADirectory,
    NotFound,
    OffsetMismatch,
    QuotaExceeded,
    SockftpError,
)
from ..protocol.paths import RemotePath
from ..server.session import ANONYMOUS, Identity, Session
from ..storage import DIRECTORY, FILE, Entry, Storage, Upload
from . import listing, parser
from .data import DataConnection, DataError, TransferAborted, TransferFailed
from .replies import Reply, for_error, quote_path

log = logging.getLogger("sockftp.ftp")

#: Failed logins one control connection may make before it is closed
#: (RFC 2577 section 4). The ban list counts them per address as well.
MAX_LOGIN_FAILURES = 3

#: HASH algorithms (draft-bryan-ftp-hash), by their IANA names. XXH3-128 is
#: sockftp's own checksum, kept with every file, so it costs nothing and is
#: the default; the others are computed on demand.
HASHES = {"XXH3-128": None, "SHA-256": "sha256", "SHA-512": "sha512", "SHA-1": "sha1", "MD5": "md5"}
DEFAULT_HASH = "XXH3-128"

_GLOB = re.compile(r"[*?\[]")


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


# -- logging in -------------------------------------------------------------------------------


@command("USER", needs_login=False, argument=REQUIRED, syntax="USER name")
def user(ctx: Context, argument: str) -> Reply:
    if ctx.settings.require_tls and not ctx.state.tls:
        raise Refusal(Reply(534, "This server requires TLS: send AUTH TLS first"), "tls_required")
    ctx.session.logout()  # USER starts a new login (RFC 959)
    ctx.state.user = argument
    # The same reply whatever the name (RFC 2577): it says nothing about
    # which names exist.
    return Reply(331, "Password required")


@command("PASS", needs_login=False, syntax="PASS password")
def pass_(ctx: Context, argument: str) -> Reply:
    name, ctx.state.user = ctx.state.user, None
    if name is None:
        raise Refusal(Reply(503, "Send USER first"))
    if name == ANONYMOUS and ctx.settings.anonymous:
        ctx.session.login(ctx.link.anonymous_identity())
        return Reply(230, "Anonymous access granted")
    # A re-login token works as a password: scripts need not hold the
    # password, and a login by token costs no argon2 check.
    credentials = {"token": argument} if argument.startswith(TOKEN_PREFIX) else {"password": argument}
    try:
        identity = ctx.session.authenticate(name, **credentials).identity
    except AuthFailed:
        # The authenticator has already waited its failure delay and counted
        # the failure against the address; here it counts against the connection.
        ctx.state.failed_logins += 1
        ctx.result = "auth_failed"
        if ctx.state.failed_logins >= MAX_LOGIN_FAILURES:
            ctx.close = True
            return Reply(421, "Too many failed logins; closing the connection")
        return Reply(530, "Login incorrect")
    except Banned as exc:
        ctx.close = True
        ctx.result = "banned"
        return Reply(421, exc.message)
    return Reply(230, f"User {identity.name} logged in")


@command("QUIT", needs_login=False, syntax="QUIT")
def quit_(ctx: Context, argument: str) -> Reply:
    ctx.close = True
    return Reply(221, "Goodbye")


# -- TLS (RFC 2228, RFC 4217) -------------------------------------------------------------------


@command("AUTH", needs_login=False, argument=REQUIRED, syntax="AUTH TLS")
def auth(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() not in ("TLS", "TLS-C", "SSL", "TLS-P"):
        raise Refusal(Reply(504, "AUTH takes TLS"))
    if not ctx.settings.tls_available:
        raise Refusal(Reply(502, "TLS is not configured on this server"), "unsupported")
    if ctx.state.tls:
        raise Refusal(Reply(503, "The control connection already uses TLS"))
    ctx.after = ctx.link.start_tls
    return Reply(234, "AUTH TLS successful")


@command("PBSZ", needs_login=False, argument=REQUIRED, syntax="PBSZ 0")
def pbsz(ctx: Context, argument: str) -> Reply:
    if not ctx.state.tls:
        raise Refusal(Reply(503, "PBSZ needs a TLS control connection: send AUTH TLS first"))
    ctx.state.pbsz = True
    return Reply(200, "PBSZ=0")


@command("PROT", needs_login=False, argument=REQUIRED, syntax="PROT P | PROT C")
def prot(ctx: Context, argument: str) -> Reply:
    level = argument.strip().upper()
    if not ctx.state.tls:
        raise Refusal(Reply(503, "PROT needs a TLS control connection: send AUTH TLS first"))
    if level == "P":
        if not ctx.state.pbsz:
            raise Refusal(Reply(503, "Send PBSZ 0 before PROT P"))
        ctx.state.protect = True
        return Reply(200, "Data connections will be protected (TLS)")
    if level == "C":
        if ctx.settings.require_tls:
            raise Refusal(Reply(534, "This server requires TLS on data connections: use PROT P"), "tls_required")
        ctx.state.protect = False
        return Reply(200, "Data connections will be clear")
    if level in ("S", "E"):
        raise Refusal(Reply(536, f"PROT {level} is not supported: use P"))
    raise Refusal(Reply(504, "PROT takes P or C"))


# -- the session ------------------------------------------------------------------------------------


@command("NOOP", needs_login=False, argument=NONE)
def noop(ctx: Context, argument: str) -> Reply:
    return Reply(200, "OK")


@command("SYST", needs_login=False, argument=NONE)
def syst(ctx: Context, argument: str) -> Reply:
    return Reply(215, "UNIX Type: L8")


@command("CLNT", needs_login=False)
def clnt(ctx: Context, argument: str) -> Reply:
    return Reply(200, "Noted")


@command("FEAT", needs_login=False, argument=NONE)
def feat(ctx: Context, argument: str) -> Reply:
    features = ["EPRT", "EPSV", "MDTM", "REST STREAM", "SIZE", "TVFS", "UTF8"]
    features.append(listing.feat_line(ctx.state.facts))
    features.append("HASH " + ";".join(name + ("*" if name == ctx.state.hash else "") for name in HASHES))
    if ctx.settings.tls_available:
        features += ["AUTH TLS", "PBSZ", "PROT"]
    return Reply(211, "Features:", *(" " + feature for feature in sorted(features)), "End")


@command("OPTS", needs_login=False, argument=REQUIRED, syntax="OPTS UTF8 ON | OPTS MLST facts | OPTS HASH [name]")
def opts(ctx: Context, argument: str) -> Reply:
    option, _, value = argument.strip().partition(" ")
    option = option.upper()
    if option == "UTF8":
        return Reply(200, "UTF-8 is always on")
    if option == "MLST":
        ctx.state.facts = listing.select_facts(value)
        return Reply(200, "MLST OPTS " + "".join(fact + ";" for fact in ctx.state.facts))
    if option == "HASH":
        if value.strip():
            name = value.strip().upper()
            if name not in HASHES:
                raise Refusal(Reply(501, "Unknown algorithm, current selection not changed"))
            ctx.state.hash = name
        return Reply(200, ctx.state.hash)
    raise Refusal(Reply(501, f"Unknown option {option[:16]}"))


@command("HELP", needs_login=False, syntax="HELP [command]")
def help_(ctx: Context, argument: str) -> Reply:
    name = argument.strip().upper()
    if name:
        verb = COMMANDS.get(name)
        if verb is None:
            raise Refusal(Reply(502, f"Unknown command {name[:16]}"))
        return Reply(214, f"Syntax: {verb.syntax}")
    names = sorted(COMMANDS)
    rows = [" ".join(f"{n:<5}" for n in names[i : i + 10]).rstrip() for i in range(0, len(names), 10)]
    return Reply(214, "The following commands are recognized:", *rows, "Help OK")


@command("STAT", syntax="STAT [path]")
def stat(ctx: Context, argument: str) -> Reply:
    if argument.strip():
        entries, _ = _entries(ctx, argument)
        lines = [_list_line(ctx, entry) for entry in entries]
        return Reply(213, f"Status of {argument}:", *lines, "End of status")
    identity = ctx.session.identity
    lines = [
        "sockftp FTP server status:",
        f"Connected to {ctx.link.peer}",
        f"Logged in as {identity.name}" + ("" if identity.can_write else " (read-only)"),
        f"TYPE: {'ASCII' if ctx.state.type == 'A' else 'BINARY'}, STRUcture: File, MODE: Stream",
        f"Control connection: {'TLS' if ctx.state.tls else 'clear'}; "
        f"data connections: {'TLS' if ctx.state.protect else 'clear'}",
    ]
    return Reply(211, *lines, "End of status")


@command("TYPE", argument=REQUIRED, syntax="TYPE A | TYPE I")
def type_(ctx: Context, argument: str) -> Reply:
    ctx.state.type = parser.parse_type(argument)
    return Reply(200, f"Type set to {ctx.state.type}")


@command("MODE", argument=REQUIRED, syntax="MODE S")
def mode(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() != "S":
        raise Refusal(Reply(504, "Only MODE S (stream) is supported"))
    return Reply(200, "Mode set to S")


@command("STRU", argument=REQUIRED, syntax="STRU F")
def stru(ctx: Context, argument: str) -> Reply:
    if argument.strip().upper() != "F":
        raise Refusal(Reply(504, "Only STRU F (file) is supported"))
    return Reply(200, "Structure set to F")


@command("ALLO", syntax="ALLO size")
def allo(ctx: Context, argument: str) -> Reply:
    return Reply(202, "No storage allocation necessary")


@command("ACCT", needs_login=False, syntax="ACCT account")
def acct(ctx: Context, argument: str) -> Reply:
    return Reply(202, "No account necessary")


@command("ABOR", needs_login=False, argument=NONE)
def abor(ctx: Context, argument: str) -> Reply:
    # A transfer's ABOR is answered by the transfer (see data.py); this one
    # came between transfers.
    return Reply(225, "No transfer to abort")


# -- navigation -----------------------------------------------------------------------------------------


@command("PWD", "XPWD", argument=NONE)
def pwd(ctx: Context, argument: str) -> Reply:
    return Reply(257, f"{quote_path(ctx.display(ctx.session.resolve('')))} is the current directory")


@command("CWD", "XCWD", argument=REQUIRED, syntax="CWD path")
def cwd(ctx: Context, argument: str) -> Reply:
    ctx.path = argument
    target = ctx.session.change_directory(argument)
    return Reply(250, f"Directory changed to {ctx.display(target)}")


@command("CDUP", "XCUP", argument=NONE)
def cdup(ctx: Context, argument: str) -> Reply:
    target = ctx.session.change_directory("..")
    return Reply(250, f"Directory changed to {ctx.display(target)}")


# -- changing the tree -------------------------------------------------------------------------------------


@command("MKD", "XMKD", writes=True, argument=REQUIRED, syntax="MKD path")
def mkd(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument, audit="mkdir")
    ctx.storage.mkdir(target)
    return Reply(257, f"{quote_path(ctx.display(target))} created")


@command("RMD", "XRMD", writes=True, argument=REQUIRED, syntax="RMD path")
def rmd(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument, audit="rmdir")
    ctx.session.refuse_home(target, "removed")
    ctx.storage.rmdir(target)
    ctx.session.directory_removed(target)
    return Reply(250, f"Directory {ctx.display(target)} removed")


@command("DELE", writes=True, argument=REQUIRED, syntax="DELE path")
def dele(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument, audit="rm")
    ctx.session.refuse_home(target, "removed")
    ctx.storage.remove(target)
    return Reply(250, f"File {ctx.display(target)} deleted")


@command("RNFR", writes=True, argument=REQUIRED, syntax="RNFR path")
def rnfr(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    ctx.session.refuse_home(target, "renamed")
    ctx.storage.stat(target)  # it must exist
    ctx.state.rename_from = (target, argument)
    return Reply(350, "Ready for RNTO")


@command("RNTO", writes=True, argument=REQUIRED, syntax="RNTO path")
def rnto(ctx: Context, argument: str) -> Reply:
    pending, ctx.state.rename_from = ctx.state.rename_from, None
    if pending is None:
        raise Refusal(Reply(503, "Send RNFR first"))
    source, source_text = pending
    ctx.audit = ("mv", {"source": source_text, "target": argument})
    ctx.path = source_text
    target = ctx.session.resolve(argument)
    ctx.session.refuse_home(target, "replaced")
    ctx.storage.rename(source, target)
    return Reply(250, f"Renamed to {ctx.display(target)}")


# -- facts about files ---------------------------------------------------------------------------------------


@command("SIZE", argument=REQUIRED, syntax="SIZE path")
def size(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    # An interrupted upload is what a client resumes: SIZE says where it
    # stopped, as an FTP server writing in place would (docs/FTP.md).
    held = ctx.storage.partial_size(target, None)
    if held:
        return Reply(213, str(held))
    entry = ctx.storage.stat(target)
    if entry.type != FILE:
        raise Refusal(Reply(550, f"{ctx.display(target)} is not a plain file"))
    return Reply(213, str(entry.size))


@command("MDTM", argument=REQUIRED, syntax="MDTM path")
def mdtm(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    entry = ctx.storage.stat(target)
    if entry.type != FILE:
        raise Refusal(Reply(550, f"{ctx.display(target)} is not a plain file"))
    return Reply(213, parser.format_time(entry.mtime))


@command("MLST", syntax="MLST [path]")
def mlst(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    entry = ctx.storage.stat(target)
    shown = ctx.display(target)
    line = listing.facts_line(entry, shown, ctx.state.facts, ctx.session.identity.can_write)
    return Reply(250, f"Listing {shown}", " " + line, "End")


@command("HASH", argument=REQUIRED, syntax="HASH path")
def hash_(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    try:
        download = ctx.storage.open_read(target)
    except IsADirectory:
        raise Refusal(Reply(553, "The hash of a directory is not defined")) from None
    with download:
        algorithm = HASHES[ctx.state.hash]
        if algorithm is None:
            value = download.checksum().split(":", 1)[1]  # kept with the file: no hashing
        else:
            value = _hash(download, algorithm)
        end = max(download.size - 1, 0)
    return Reply(213, f"{ctx.state.hash} 0-{end} {value} {argument}")


def _hash(download, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    buffer = bytearray(1024 * 1024)
    view = memoryview(buffer)
    position = 0
    while position < download.size:
        n = download.readinto(view, position)
        if not n:
            break
        hasher.update(view[:n])
        position += n
    return hasher.hexdigest()


# -- data connections ------------------------------------------------------------------------------------------


@command("PASV", argument=NONE)
def pasv(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    host = ctx.settings.masquerade or ctx.link.local
    if ":" in host:
        raise Refusal(Reply(501, "PASV cannot announce an IPv6 address: use EPSV"))
    port = _listen(ctx)
    return Reply(227, parser.format_pasv(host, port))


@command("EPSV", syntax="EPSV [1 | 2 | ALL]")
def epsv(ctx: Context, argument: str) -> Reply:
    word = argument.strip().upper()
    if word == "ALL":
        ctx.state.epsv_all = True
        return Reply(200, "EPSV ALL: only EPSV from now on")
    if word:
        ours = 2 if ":" in ctx.link.local else 1
        if word not in ("1", "2"):
            raise Refusal(Reply(501, "EPSV takes 1, 2 or ALL"))
        if int(word) != ours:
            raise Refusal(Reply(522, f"Network protocol not supported, use ({ours})"))
    return Reply(229, parser.format_epsv(_listen(ctx)))


@command("PORT", argument=REQUIRED, syntax="PORT h1,h2,h3,h4,p1,p2")
def port(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    if ":" in ctx.link.local:
        raise Refusal(Reply(522, "Network protocol not supported, use (2)"))
    host, number = parser.parse_port(argument)
    _check_active_address(ctx, host, number)
    ctx.link.active(host, number)
    return Reply(200, "PORT command successful")


@command("EPRT", argument=REQUIRED, syntax="EPRT |protocol|address|port|")
def eprt(ctx: Context, argument: str) -> Reply:
    _refuse_after_epsv_all(ctx)
    version, host, number = parser.parse_eprt(argument)
    ours = 6 if ":" in ctx.link.local else 4
    if version != ours:
        raise Refusal(Reply(522, f"Network protocol not supported, use ({2 if ours == 6 else 1})"))
    _check_active_address(ctx, host, number)
    ctx.link.active(host, number)
    return Reply(200, "EPRT command successful")


def _check_active_address(ctx: Context, host: str, number: int) -> None:
    """RFC 2577: data goes only to the client's own host, never to a
    privileged port (no bouncing to a third host, no faking a service)."""
    if not parser.same_host(host, ctx.link.peer):
        log.warning("%s asked for a data connection to %s; refused", ctx.link.peer, host)
        raise Refusal(Reply(501, "Data connections go only to your own address"), "permission_denied")
    if number < 1024:
        raise Refusal(Reply(501, "Data connections to privileged ports (below 1024) are refused"), "permission_denied")


def _refuse_after_epsv_all(ctx: Context) -> None:
    if ctx.state.epsv_all:
        raise Refusal(Reply(503, "After EPSV ALL only EPSV is accepted"))


def _listen(ctx: Context) -> int:
    try:
        return ctx.link.passive()
    except DataError as exc:
        raise Refusal(Reply(425, str(exc)), "connection_lost") from None


def _open_data(ctx: Context, text: str) -> DataConnection:
    """Say 150, then open the transfer's data connection."""
    if ctx.settings.require_tls and not ctx.state.protect:
        raise Refusal(Reply(534, "This server requires TLS on data connections: send PBSZ 0 and PROT P"))
    if not ctx.link.data_ready:
        raise Refusal(Reply(425, "Use PASV, EPSV, PORT or EPRT first"), "connection_lost")
    ctx.link.reply(Reply(150, text))
    try:
        return ctx.link.open_data(ctx.state.protect)
    except DataError as exc:
        raise Refusal(Reply(425, f"Cannot open the data connection: {exc}"), "connection_lost") from None


# -- listings ----------------------------------------------------------------------------------------------------


@command("LIST", syntax="LIST [path]")
def list_(ctx: Context, argument: str) -> Reply:
    _, raw = parser.split_list_options(argument)
    entries, _ = _entries(ctx, raw)
    lines = [_list_line(ctx, entry) for entry in entries]
    return _send_listing(ctx, lines, "LIST")


@command("NLST", syntax="NLST [path]")
def nlst(ctx: Context, argument: str) -> Reply:
    _, raw = parser.split_list_options(argument)
    entries, prefix = _entries(ctx, raw)
    return _send_listing(ctx, [prefix + entry.name for entry in entries], "NLST")


@command("MLSD", syntax="MLSD [path]")
def mlsd(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    if ctx.storage.stat(target).type != DIRECTORY:
        raise NotADirectory(f"not a directory: {ctx.display(target)}")
    can_write = ctx.session.identity.can_write
    entries = sorted(listing.listable(ctx.storage.list(target)), key=_by_name)
    lines = [listing.facts_line(entry, entry.name, ctx.state.facts, can_write) for entry in entries]
    return _send_listing(ctx, lines, "MLSD")


def _entries(ctx: Context, raw: str) -> tuple[list[Entry], str]:
    """What a listing of *raw* shows: a directory's entries, a file alone,
    or the entries that match a pattern in the last name (``*.txt``); and
    the prefix NLST puts before each name (the directory part of a pattern
    as the client typed it, as ``ls dir/*.txt`` prints it)."""
    target = ctx.resolve(raw)
    try:
        entry = ctx.storage.stat(target)
    except NotFound:
        if not target or not _GLOB.search(target[-1]):
            raise
        pattern = target[-1]
        matches = [e for e in ctx.storage.list(target[:-1]) if fnmatch.fnmatchcase(e.name, pattern)]
        return sorted(listing.listable(matches), key=_by_name), raw[: raw.rfind("/") + 1]
    if entry.type == DIRECTORY:
        return sorted(listing.listable(ctx.storage.list(target)), key=_by_name), ""
    return list(listing.listable([dataclasses.replace(entry, name=raw)])), ""


def _by_name(entry: Entry) -> str:
    return entry.name


def _list_line(ctx: Context, entry: Entry) -> str:
    identity = ctx.session.identity
    return listing.list_line(entry, identity.name, identity.can_write)


def _send_listing(ctx: Context, lines: list[str], what: str) -> Reply:
    text = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
    with _open_data(ctx, f"Here comes the {what} listing") as data:
        try:
            data.send(text)
        finally:
            ctx.bytes = data.bytes
    return Reply(226, f"{len(lines)} entries sent")


# -- transfers ---------------------------------------------------------------------------------------------------


@command("REST", argument=REQUIRED, syntax="REST offset")
def rest(ctx: Context, argument: str) -> Reply:
    ctx.state.rest = parser.parse_rest(argument)
    return Reply(350, f"Restarting at {ctx.state.rest}: send STOR, APPE or RETR")


@command("RETR", argument=REQUIRED, syntax="RETR path")
def retr(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument, audit="get")
    offset = ctx.state.take_rest()
    with ctx.storage.open_read(target) as download:
        if offset > download.size:
            raise OffsetMismatch(f"REST {offset} is past the end of {ctx.display(target)} ({download.size} bytes)")
        count = download.size - offset
        with _open_data(ctx, f"Opening data connection for {ctx.display(target)} ({count} bytes)") as data:
            try:
                fd = download.fileno()
                if fd is not None:
                    data.send_file(fd, offset, count)
                else:
                    data.send_from(download.readinto, offset, count)
            finally:
                ctx.bytes = data.bytes
    return Reply(226, "Transfer complete")


@command("STOR", writes=True, argument=REQUIRED, syntax="STOR path")
def stor(ctx: Context, argument: str) -> Reply:
    return _store(ctx, argument, append=False)


@command("APPE", writes=True, argument=REQUIRED, syntax="APPE path")
def appe(ctx: Context, argument: str) -> Reply:
    return _store(ctx, argument, append=True)


def _store(ctx: Context, argument: str, append: bool) -> Reply:
    """Receive a file into a hidden partial until the client closes the
    data connection, then make it visible at once. An upload cut short, or
    aborted, stays a partial that REST + STOR or APPE continues."""
    target = ctx.resolve(argument, audit="put")
    ctx.session.refuse_home(target, "replaced")
    upload = open_upload(ctx.storage, target, ctx.state.take_rest(), append)
    committed = False
    try:
        hasher = checksums.Hasher()
        upload.hash_existing(hasher)  # the checksum is kept with the file, as for a native put
        text = f"Ready to receive {ctx.display(target)}" + (f" from byte {upload.offset}" if upload.offset else "")
        with _open_data(ctx, text) as data:
            try:
                data.receive(upload.write, hasher)
            finally:
                ctx.bytes = data.bytes
        upload.commit(hasher.value())
        committed = True
    except QuotaExceeded:
        upload.discard()  # it can never fit: do not keep it counting against the quota
        raise
    finally:
        if not committed:
            if upload.offset:
                upload.keep()  # resumable (a no-op after discard)
            else:
                upload.discard()  # nothing arrived: leave no empty partial behind
    return Reply(226, f"Transfer complete: {ctx.display(target)} stored, {upload.offset} bytes")


def open_upload(storage: Storage, target: RemotePath, rest: int, append: bool) -> Upload:
    """The upload a STOR (after REST *rest*) or an APPE writes to.

    What a client continues is what SIZE told it: the interrupted upload
    of *target* if one is held, else the stored file. So APPE continues a
    held partial, or the file, or starts a new one; REST N + STOR continues
    a partial that holds at least N bytes, or the first N bytes of the
    file; a plain STOR starts over.
    """
    if not (append or rest):
        return storage.open_upload(target, None)
    held = storage.partial_size(target, None)
    if append:
        if held:
            return storage.open_upload(target, None, held)
        try:
            return storage.open_append(target)
        except NotFound:
            return storage.open_upload(target, None)
    if held >= rest:
        return storage.open_upload(target, None, rest)
    try:
        return storage.open_append(target, rest)
    except NotFound:
        raise OffsetMismatch(
            f"cannot resume {{path}} at {rest}: the server holds {held} bytes", path=target, offset=held
        ) from None
