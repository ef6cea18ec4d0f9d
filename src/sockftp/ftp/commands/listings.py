"""Directory listings sent over a data connection: LIST, NLST and MLSD.

Which entries a listing shows (a directory, one file, or the matches of a
pattern) is decided here; how each entry becomes a line is
:mod:`sockftp.ftp.listing`'s (pure, no storage). Paths must go only
through the session (its jail and cwd), entries only through the
session's storage, and every entry through
:func:`sockftp.ftp.listing.listable`, so no name can break a line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

from ...protocol.errors import NotADirectory, NotFound
from ...storage import DIRECTORY, Entry
from .. import listing, parser
from ..replies import Reply
from .base import Context, command
from .channels import _open_data

_GLOB = re.compile(r"[*?\[]")


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
    can_write = ctx.session.identity.writable
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
    return listing.list_line(entry, identity.name, identity.writable)


def _send_listing(ctx: Context, lines: list[str], what: str) -> Reply:
    text = "".join(line + "\r\n" for line in lines).encode("utf-8", "surrogateescape")
    with _open_data(ctx, f"Here comes the {what} listing") as data:
        try:
            data.send(text)
        finally:
            ctx.bytes = data.bytes
    return Reply(226, f"{len(lines)} entries sent")
