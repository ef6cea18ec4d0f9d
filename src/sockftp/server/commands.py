"""The native protocol's commands: one small function each, in a registry.

The handler looks a request's ``cmd`` up in :data:`COMMANDS` and nowhere
else, so no client-supplied name can reach a method it was not meant to
(the seed's ``getattr(self, cmd)`` let ``{"cmd": "handle"}`` re-enter the
handler). Each command declares whether it needs a logged-in session and
whether it writes; the dispatcher enforces both before the command runs.

Commands speak to the client through a :class:`~sockftp.protocol.wire.Wire` and to
files through the session's :class:`~sockftp.storage.Storage`; they know
nothing of sockets or of the local filesystem.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .. import __version__
from ..protocol import checksum as checksums
from ..protocol import fields as protocol
from ..protocol.blocks import FileHasher
from ..protocol.errors import (
    BadRequest,
    ChecksumMismatch,
    Internal,
    IOFailure,
    IsADirectory,
    NotADirectory,
    NotFound,
    OffsetMismatch,
    PathRefused,
    SockftpError,
    UnknownCommand,
    UnsupportedVersion,
)
from ..protocol.frames import encoded_size
from ..protocol.limits import (
    DELTA_BLOCK,
    DELTA_MIN,
    LIST_BATCH_ENTRIES,
    MAX_DRAIN,
    MAX_FILE_SIZE,
    MAX_HEADER_SIZE,
    MAX_NAME_LENGTH,
    MAX_PATH_DEPTH,
    MAX_PATH_LENGTH,
    PROTOCOL_VERSIONS,
    SMALL_FILE,
)
from ..protocol.wire import ConnectionClosed, Wire
from ..storage import DIRECTORY, FILE
from . import delta as deltas
from .quota import QuotaLedger
from .session import Session

log = logging.getLogger("sockftp.commands")

#: What ``hello`` announces. A client checks for a feature before using it.
FEATURES = (
    "resume",  # put with offset, the resume command, get with offset
    "checksum",  # checksums on get replies and put requests or trailers
    "ls-stream",  # listings come in several frames
    "pipelining",  # requests may be sent before earlier replies arrive
    "mkdir-parents",
    "accounts",  # the auth command; homes per user
    "quota",  # the quota (df) command; quota_exceeded on put
    "tokens",  # re-login tokens: auth with new_token or token; the revoke command
    "mtime",  # put keeps the modification time it is given; the utime command
    "tree",  # the tree command: a whole tree's listing in one request, with kept checksums
    "tree-packed",  # tree with packed: columns in one binary body per frame (protocol.tree_pack)
    "delta",  # the blocks command, get with length, put with delta (absent where checksums cannot be kept)
)


@dataclass
class Context:
    """What a command may use, and what it reports for the log."""

    session: Session
    wire: Wire
    path: str | None = None  # the client path it acted on
    bytes: int = 0  # raw bytes moved
    close: bool = False  # close the connection after the reply
    #: raw bytes were promised to the peer: an error now cannot be sent as a
    #: frame (the peer is reading file bytes), only by closing.
    wire_dirty: bool = False
    #: Run on the parking lot's thread, which serves every idle session:
    #: a quick command raises WouldBlock rather than wait for anything.
    quick: bool = False


Handler = Callable[[Context, dict], dict | None]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    needs_login: bool
    writes: bool
    #: Never waits (or raises WouldBlock when it would): may be served on
    #: the parking lot's thread, without waking a worker.
    quick: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, *, needs_login: bool = True, writes: bool = False, quick: bool = False):
    """Register *handler* as command *name*.

    A handler returns the reply header, or None if it sent its replies
    itself (listings, downloads).
    """

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = Command(name, handler, needs_login, writes, quick)
        return handler

    return register


def dispatch(ctx: Context, header: dict) -> dict | None:
    """Run the command *header* asks for. Raises SockftpError on refusal."""
    name = protocol.command_name(header)
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise UnknownCommand(f"unknown command {name[:64]!r}")
    if cmd.needs_login:
        ctx.session.require_login()
    if cmd.writes:
        ctx.session.require_write()
    try:
        return cmd.handler(ctx, header)
    except SockftpError as exc:
        exc.localize(ctx.session.display)
        raise


# -- session ------------------------------------------------------------------


@command("hello", needs_login=False, quick=True)
def hello(ctx: Context, req: dict) -> dict:
    offered = req.get("versions")
    if offered is None:
        single = req.get("version")
        offered = [1 if single is None else single]
    if not isinstance(offered, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in offered):
        raise BadRequest("field 'versions' must be a list of integers")
    common = set(offered) & set(PROTOCOL_VERSIONS)
    if not common:
        raise UnsupportedVersion(
            f"this server speaks protocol versions {list(PROTOCOL_VERSIONS)}", versions=list(PROTOCOL_VERSIONS)
        )
    ctx.session.protocol_version = max(common)
    return protocol.ok(
        server=f"sockftp/{__version__}",
        version=ctx.session.protocol_version,
        versions=list(PROTOCOL_VERSIONS),
        features=[f for f in FEATURES if _offered(ctx, f)],
        checksums=list(checksums.ALGORITHMS),
        commands=sorted(COMMANDS),
        user=ctx.session.identity.name if ctx.session.identity else None,
        limits={
            "max_header_size": MAX_HEADER_SIZE,
            "max_path_length": MAX_PATH_LENGTH,
            "max_name_length": MAX_NAME_LENGTH,
            "max_path_depth": MAX_PATH_DEPTH,
            "max_file_size": MAX_FILE_SIZE,
        },
    )


@command("auth", needs_login=False, quick=True)
def auth(ctx: Context, req: dict) -> dict:
    """Log in with a password (and perhaps ask for a re-login token), or
    with a token. A failure looks the same whether or not the user exists."""
    name = protocol.string(req, "user")
    password = protocol.string(req, "password", default=None)
    token = protocol.string(req, "token", default=None)
    new_token = protocol.boolean(req, "new_token")
    if password is None and token is None:
        raise BadRequest("missing field 'password' (or 'token')")
    if password is not None and token is not None:
        raise BadRequest("give 'password' or 'token', not both")
    if token is not None and new_token:
        raise BadRequest("'new_token' needs a password: a token cannot make another")
    result = ctx.session.authenticate(name, password=password, token=token, new_token=new_token, quick=ctx.quick)
    reply = protocol.ok(user=result.identity.name, read_only=not result.identity.can_write)
    if result.token is not None:
        reply["token"] = result.token
    if result.token_expires is not None:
        reply["token_expires"] = int(result.token_expires)
        reply["token_expires_in"] = max(int(result.token_expires - ctx.session.authenticator.now()), 0)
    return reply


@command("revoke")
def revoke(ctx: Context, req: dict) -> dict:
    """Revoke one of the logged-in user's re-login tokens, or all of them.
    The session stays logged in."""
    token = protocol.string(req, "token", default=None)
    everything = protocol.boolean(req, "all")
    if (token is None) == (not everything):
        raise BadRequest("revoke takes a 'token', or 'all': true")
    authenticator = ctx.session.authenticator
    count = 0 if authenticator is None else authenticator.revoke(ctx.session.address, ctx.session.user, token)
    return protocol.ok(revoked=count)


def _offered(ctx: Context, feature: str) -> bool:
    if feature == "tokens":
        return _tokens_enabled(ctx)
    if feature == "delta":
        # A delta's base is checked by the checksum kept with the file.
        return ctx.session.storage.keeps_checksums
    return True


def _tokens_enabled(ctx: Context) -> bool:
    authenticator = ctx.session.authenticator
    return authenticator is not None and authenticator.tokens_enabled


@command("quota")
def quota(ctx: Context, req: dict) -> dict:
    """Usage and limits of the logged-in user. A usage never measured (a
    user without limits, the anonymous area) is measured now, once: from
    then on it is kept. If the user's changes under way do not end within
    a few seconds, the reply says ``usage_known: false`` instead."""
    ledger = _ledger(ctx)
    ledger.measure()
    return protocol.ok(**ledger.to_wire())


COMMANDS["df"] = COMMANDS["quota"]  # the name Unix users reach for


def _ledger(ctx: Context):
    ledger = getattr(ctx.session.storage, "ledger", None)
    if ledger is None:  # a storage without accounting: measure it now
        usage = ctx.session.storage.usage(ctx.session.identity.home)
        return QuotaLedger(ctx.session.user, usage.bytes, usage.files)
    return ledger


@command("ping", needs_login=False, quick=True)
def ping(ctx: Context, req: dict) -> dict:
    return protocol.ok()


@command("quit", needs_login=False)
def quit_(ctx: Context, req: dict) -> dict:
    ctx.close = True
    return protocol.ok(message="bye")


# -- navigation and metadata ---------------------------------------------------------


@command("pwd")
def pwd(ctx: Context, req: dict) -> dict:
    return protocol.ok(path=ctx.session.display(ctx.session.resolve("")))


@command("cd")
def cd(ctx: Context, req: dict) -> dict:
    ctx.path = protocol.string(req, "path", default="/")
    target = ctx.session.change_directory(ctx.path)
    return protocol.ok(path=ctx.session.display(target))


@command("stat")
def stat(ctx: Context, req: dict) -> dict:
    target = _path(ctx, req)
    entry = ctx.session.storage.stat(target)
    reply = protocol.ok(path=ctx.session.display(target), **entry.to_wire())
    if target == ctx.session.identity.home:
        reply["name"] = "/"
    if protocol.boolean(req, "checksum"):
        if entry.type != FILE:
            raise IsADirectory(f"only files have a checksum: {ctx.session.display(target)}")
        reply["checksum"] = ctx.session.storage.checksum(target)
    return reply


@command("ls")
def ls(ctx: Context, req: dict) -> None:
    target = _path(ctx, req, default="")
    storage = ctx.session.storage
    entry = storage.stat(target)
    if entry.type != DIRECTORY:
        ctx.wire.send_header(protocol.ok(path=ctx.session.display(target), entries=[entry.to_wire()], more=False))
        return None
    # Frames stay under the header limit whatever the names: each entry is
    # at most a few hundred bytes, and we cut before the budget, which leaves
    # room for the last frame's path and fields.
    shown = ctx.session.display(target)
    budget = MAX_HEADER_SIZE - 1024 - encoded_size(shown)
    batch: list[dict] = []
    used = 0
    count = 0
    for item in storage.list(target):
        wire_entry = item.to_wire()
        size = encoded_size(wire_entry) + 1
        if batch and (len(batch) >= LIST_BATCH_ENTRIES or used + size > budget):
            ctx.wire.send_header(protocol.ok(entries=batch, more=True))
            batch, used = [], 0
        batch.append(wire_entry)
        used += size
        count += 1
    ctx.wire.send_header(protocol.ok(path=shown, entries=batch, more=False))
    ctx.bytes = count
    return None


# -- changing the tree ------------------------------------------------------------


@command("mkdir", writes=True)
def mkdir(ctx: Context, req: dict) -> dict:
    target = _path(ctx, req)
    ctx.session.storage.mkdir(target, parents=protocol.boolean(req, "parents"))
    return protocol.ok(path=ctx.session.display(target))


@command("rmdir", writes=True)
def rmdir(ctx: Context, req: dict) -> dict:
    target = _path(ctx, req)
    _refuse_home(ctx, target, "removed")
    ctx.session.storage.rmdir(target)
    ctx.session.directory_removed(target)
    return protocol.ok(path=ctx.session.display(target))


@command("rm", writes=True)
def rm(ctx: Context, req: dict) -> dict:
    target = _path(ctx, req)
    _refuse_home(ctx, target, "removed")
    ctx.session.storage.remove(target)
    return protocol.ok(path=ctx.session.display(target))


@command("mv", writes=True)
def mv(ctx: Context, req: dict) -> dict:
    source = _path(ctx, req, field="source", aliases=("from",))
    target = ctx.session.resolve(protocol.string(req, "target", aliases=("to",)))
    _refuse_home(ctx, source, "renamed")
    _refuse_home(ctx, target, "replaced")
    ctx.session.storage.rename(source, target)
    return protocol.ok(source=ctx.session.display(source), target=ctx.session.display(target))


# -- transfers ---------------------------------------------------------------------


@command("resume")
def resume(ctx: Context, req: dict) -> dict:
    """How much of an interrupted upload of this path and size is held."""
    target = _path(ctx, req)
    size = protocol.integer(req, "size")
    ctx.session.require_write()
    # Refuse now what put would refuse, before the client sends the bytes.
    if target == ctx.session.identity.home:
        raise PathRefused("a file name is needed")
    if ctx.session.storage.stat(target[:-1]).type != DIRECTORY:
        raise NotADirectory(f"not a directory: {ctx.session.display(target[:-1])}")
    try:
        if ctx.session.storage.stat(target).type == DIRECTORY:
            raise IsADirectory(f"is a directory: {ctx.session.display(target)}")
    except NotFound:
        pass
    # What an upload whose client is gone still has to write counts too.
    _wait_for_abandoned(ctx, target)
    return protocol.ok(path=ctx.session.display(target), offset=ctx.session.storage.partial_size(target, size))


@command("get")
def get(ctx: Context, req: dict) -> None:
    target = _path(ctx, req, aliases=("filename",))
    offset = protocol.integer(req, "offset", default=0)
    length = protocol.integer(req, "length", default=None)  # a range (feature delta); None: to the end
    with ctx.session.storage.open_read(target) as download:
        if offset > download.size:
            raise OffsetMismatch(
                f"offset {offset} is past the end of {ctx.session.display(target)} ({download.size} bytes)",
                size=download.size,
            )
        count = download.size - offset if length is None else min(length, download.size - offset)
        small = download.size <= SMALL_FILE and not ctx.wire.limits
        # A small file is read whole and hashed from memory: cheaper than the
        # storage's cached checksum, and it is the checksum of what is sent.
        data = _read_whole(download) if small else None
        reply = protocol.ok(
            path=ctx.session.display(target),
            size=download.size,
            offset=offset,
            filesize=count,  # the seed's name for "bytes that follow"
            mtime=download.mtime,
            checksum=checksums.of_bytes(data) if small else _stored_checksum(ctx, download),
        )
        if small:
            # One write for the reply and the bytes: for small files the
            # system calls, not the bytes, are the cost.
            ctx.wire_dirty = True
            ctx.wire.send_header(reply, memoryview(data)[offset : offset + count], hold=True)
            ctx.bytes = count
            return None
        ctx.wire.send_header(reply)
        ctx.wire_dirty = True
        fd = download.fileno()
        if fd is not None and ctx.wire.use_sendfile and not ctx.wire.tls:
            ctx.wire.send_file(fd, offset, count)
        else:
            ctx.wire.send_from(download.readinto, offset, count)
        ctx.bytes = count
    return None


def _stored_checksum(ctx: Context, download) -> str:
    # It may hash the whole file: replies held for a batch go out first.
    ctx.wire.flush()
    return download.checksum()


def _read_whole(download) -> bytearray:
    count = download.size
    buffer = bytearray(count)
    view = memoryview(buffer)
    done = 0
    while done < count:
        n = download.readinto(view[done:], done)
        if not n:  # shrunk since it was opened; nothing is sent yet, so say so
            raise IOFailure(f"the file changed while being read ({done} of {count} bytes); try again")
        done += n
    return buffer


# put checks login itself: it must drop the bytes of a refused upload.
@command("put", needs_login=False)
def put(ctx: Context, req: dict) -> dict:
    """Receive a file. The raw bytes follow the header at once, so every
    refusal below must first read and drop them to keep the stream in step."""
    try:
        size = protocol.integer(req, "size", aliases=("filesize",))
        offset = protocol.integer(req, "offset", default=0, maximum=size)
        # A delta's raw bytes are its literals: their count is in its ops.
        delta = None if req.get("delta") is None else deltas.parse(req["delta"])
    except SockftpError:
        # Without a trustworthy count we cannot find the next header.
        ctx.close = True
        raise
    count = size - offset if delta is None else delta.literals
    if ctx.session.identity is None:
        # Reading a stranger's bytes only to drop them is work for nothing:
        # say why and close.
        ctx.close = True
        ctx.session.require_login()
    try:
        expected = protocol.string(req, "checksum", default=None)
        if expected is not None and expected != "trailer" and not checksums.is_valid(expected):
            raise BadRequest(f"field 'checksum' must be 'trailer' or one of {list(checksums.ALGORITHMS)} 'ALG:HEX'")
        mtime = protocol.timestamp(req, "mtime")
        if delta is not None and (offset or expected is None):
            raise BadRequest("a delta put starts at offset 0 and carries the new file's checksum")
        ctx.session.require_write()
        target = _path(ctx, req, aliases=("filename",))
        if target == ctx.session.identity.home:
            raise PathRefused("a file name is needed")
        plan = None if delta is None else deltas.open_base(ctx.session.storage, target, size, delta)
        try:
            # All of it here already (a pipelined small put), and no bandwidth
            # limit to pause for: nothing to wait for between start and commit.
            at_once = delta is None and expected != "trailer" and not ctx.wire.limits
            at_once = at_once and ctx.wire.decoder.buffered >= count
            # Before opening, which reserves quota: the old upload's reservation
            # could make this one's look over the quota.
            _wait_for_abandoned(ctx, target)
            upload = ctx.session.storage.open_upload(target, size, offset, at_once=at_once)
        except BaseException:
            if plan is not None:
                plan.close()
            raise
        upload.set_mtime(mtime)
    except SockftpError:
        _skip_upload(ctx, count, trailer=req.get("checksum") == "trailer")
        raise
    uploads = ctx.session.uploads
    if uploads is None or at_once:  # all in hand: it waits for no client, so none can abandon it
        return _receive_upload(ctx, upload, count, expected, plan)
    holder = uploads.hold(target, ctx.session.user, ctx.wire.peer_hung_up)
    try:
        return _receive_upload(ctx, upload, count, expected, plan)
    finally:
        uploads.release(target, holder)


def _wait_for_abandoned(ctx: Context, target) -> None:
    """If an upload of *target* by this user is under way, but its client
    is gone, let it finish letting go (briefly) rather than answer busy:
    it is most likely this client's own, interrupted and run again."""
    if ctx.session.uploads is not None:
        ctx.session.uploads.wait_for_abandoned(target, ctx.session.user)


def _receive_upload(ctx: Context, upload, count: int, expected: str | None, plan=None) -> dict:
    # Every upload is hashed as it arrives, checksum sent or not (a few
    # percent of a core): the reply then tells a client that sent none what
    # was stored, the checksum is kept with the file, and no get of a file
    # sockftp stored ever has to read it all first to hash it. A large one's
    # blocks are hashed too, for later deltas (plan: the delta it is built by).
    lists = plan is not None or (upload.size or 0) >= DELTA_MIN and ctx.session.storage.keeps_checksums
    hasher = FileHasher(DELTA_BLOCK) if lists else checksums.Hasher()
    failures: list[SockftpError] = []
    received = 0

    def write(chunk) -> None:
        # A storage failure (disk full) must not desynchronise the stream:
        # note it, drop the rest of the bytes, and report it afterwards; or,
        # if too much is still to come, report it now and close.
        nonlocal received
        received += len(chunk)
        if not failures:
            try:
                upload.write(chunk)
            except SockftpError as exc:
                failures.append(exc)
            except Exception:  # noqa: BLE001 - a bug, but the stream must stay in step
                log.exception("writing %s failed", ctx.path)
                failures.append(Internal(f"writing {ctx.path} failed; see the server log"))
        if failures and count - received > MAX_DRAIN:
            ctx.close = True
            raise failures[0]

    if upload.offset:
        try:
            upload.hash_existing(hasher)
        except Exception:
            upload.keep()
            _skip_upload(ctx, count, trailer=expected == "trailer")
            raise

    committed = False
    try:
        if plan is None:
            ctx.wire.receive(count, write, hasher)
        else:
            plan.receive(ctx.wire, upload, write, hasher, failures)
        if expected == "trailer":
            expected = _read_trailer(ctx)
        if failures:
            raise failures[0]
        actual = hasher.value()
        if expected is not None and actual != expected:
            upload.discard()
            raise ChecksumMismatch(
                f"upload of {ctx.path} arrived damaged: expected {expected}, got {actual}; nothing was stored",
                checksum=actual,
            )
        if lists:
            upload.set_blocks(DELTA_BLOCK, hasher.digests())
        upload.commit(actual)
        committed = True
    finally:
        ctx.bytes = received  # what arrived, even if the upload was cut short
        if plan is not None:
            plan.close()
            if not committed:
                upload.discard()  # a delta is never resumed: it leaves no partial
        elif not committed:
            upload.keep()  # no-op after discard; keeps a resumable partial otherwise
    return protocol.ok(path=ctx.session.display(upload.path), size=upload.size, checksum=actual)


def _read_trailer(ctx: Context) -> str:
    trailer = ctx.wire.read_header()
    if trailer is None:
        raise ConnectionClosed("peer closed the connection before the checksum trailer")
    value = trailer.get("checksum")
    if not checksums.is_valid(value):
        raise BadRequest('the trailer after an upload must be {"checksum": "ALG:HEX"}')
    return value


def _skip_upload(ctx: Context, count: int, trailer: bool) -> None:
    """Drop a refused upload's bytes, or close if there are too many."""
    if count > MAX_DRAIN:
        ctx.close = True
        return
    ctx.wire.discard(count)
    if trailer:
        try:
            ctx.wire.read_header()
        except SockftpError:
            pass


# -- helpers ------------------------------------------------------------------------


def _path(ctx: Context, req: dict, field: str = "path", default=None, aliases: tuple[str, ...] = ()):
    raw = (
        protocol.string(req, field, aliases=aliases)
        if default is None
        else protocol.string(req, field, default=default, aliases=aliases)
    )
    ctx.path = raw
    return ctx.session.resolve(raw)


def _refuse_home(ctx: Context, target, verb: str) -> None:
    ctx.session.refuse_home(target, verb)
