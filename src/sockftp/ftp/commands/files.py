"""Commands on names in the user's tree, answered on the control connection.

Moving around (PWD, CWD, CDUP), changing the tree (MKD, RMD, DELE, RNFR,
RNTO) and facts about one file (SIZE, MDTM, MLST, HASH). Paths go only
through the session (its jail and cwd) and files only through its
storage; none of these commands opens a data connection.
"""

from __future__ import annotations

import hashlib

from ...protocol.errors import IsADirectory, SockftpError
from ...storage import FILE
from .. import listing, parser
from ..replies import Reply, quote_path
from .base import HASHES, NONE, REQUIRED, Context, Refusal, command

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


@command("MDTM", argument=REQUIRED, syntax="MDTM [YYYYMMDDHHMMSS] path")
def mdtm(ctx: Context, argument: str) -> Reply:
    # Some clients set a time with MDTM, as MFMT does: a time-val, a space
    # and a path. Only when no file has the whole argument as its name.
    stamp, _, rest = argument.partition(" ")
    when = parser.parse_time(stamp)
    if when is not None and rest and not _exists(ctx, argument):
        _set_time(ctx, rest, when)
        return Reply(213, f"Modify={stamp}; {ctx.display(ctx.resolve(rest))}")
    target = ctx.resolve(argument)
    entry = ctx.storage.stat(target)
    if entry.type != FILE:
        raise Refusal(Reply(550, f"{ctx.display(target)} is not a plain file"))
    return Reply(213, parser.format_time(entry.mtime))


@command("MFMT", writes=True, argument=REQUIRED, syntax="MFMT YYYYMMDDHHMMSS path")
def mfmt(ctx: Context, argument: str) -> Reply:
    """Set a file's or directory's modification time (draft-somers-ftp-mfxx),
    so a client such as rclone can keep times and not send files again."""
    stamp, _, rest = argument.partition(" ")
    when = parser.parse_time(stamp)
    if when is None or not rest:
        return Reply(501, "Syntax: MFMT YYYYMMDDHHMMSS path (UTC)")
    target = _set_time(ctx, rest, when)
    return Reply(213, f"Modify={stamp}; {ctx.display(target)}")


def _set_time(ctx: Context, raw: str, when: float):
    ctx.session.require_write()
    target = ctx.resolve(raw)
    ctx.storage.set_mtime(target, when)
    return target


def _exists(ctx: Context, raw: str) -> bool:
    try:
        ctx.storage.stat(ctx.resolve(raw))
    except SockftpError:
        return False
    return True


@command("MLST", syntax="MLST [path]")
def mlst(ctx: Context, argument: str) -> Reply:
    target = ctx.resolve(argument)
    entry = ctx.storage.stat(target)
    shown = ctx.display(target)
    line = listing.facts_line(entry, shown, ctx.state.facts, ctx.session.identity.writable)
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
