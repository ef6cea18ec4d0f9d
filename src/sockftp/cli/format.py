"""Text for people: listing lines, ``stat`` and ``quota`` fields, tables, and remote path arithmetic.

Shared by the commands and :mod:`sockftp.cli.shell`. Everything here only
turns values into text (:func:`echo_table` also prints it): it must never
talk to the server or touch the local disk, so that any command, and any
test, can use it as it is.
"""

from __future__ import annotations

import re
import time

import click

from ..protocol.entries import DIRECTORY, FILE, LINK, Entry
from .progress import human_size

# -- remote paths (for display and for choosing targets; the server resolves them) ------------


def remote_join(directory: str, name: str) -> str:
    if not directory:
        return name
    return (directory if directory.endswith("/") else directory + "/") + name


def remote_name(path: str) -> str:
    """The last name in *path*."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def remote_absolute(cwd: str, path: str) -> str:
    """*path* as seen from remote directory *cwd*, as an absolute path."""
    parts = [] if path.startswith("/") else cwd.split("/")
    for name in path.split("/"):
        if name == "..":
            if parts:
                parts.pop()
        elif name not in ("", "."):
            parts.append(name)
    return "/" + "/".join(p for p in parts if p)


# -- listings and fields -------------------------------------------------------------------


_TYPE_CHARS = {DIRECTORY: "d", FILE: "-", LINK: "l"}

# Names come from the server's disk: never let one move the cursor or
# recolour the terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """*text* (a name from a disk) with every control character shown as ``?``."""
    return _UNPRINTABLE.sub("?", text)


def format_entry(entry: Entry) -> str:
    """One ``ls -l``-like line: ``d     4.0 KiB 2024-05-01 12:00 docs/``."""
    name = _UNPRINTABLE.sub("?", entry.name) + ("/" if entry.type == DIRECTORY else "")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime))
    return f"{_TYPE_CHARS.get(entry.type, '?')} {human_size(entry.size):>10} {when} {name}"


def format_stat(path: str, entry: Entry, checksum: str | None = None) -> list[str]:
    fields = [
        ("path", _UNPRINTABLE.sub("?", path)),
        ("type", entry.type),
        ("size", f"{entry.size} ({human_size(entry.size)})"),
        ("mtime", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.mtime))),
    ]
    if checksum is not None:
        fields.append(("checksum", checksum))
    return [f"{key + ':':<10}{value}" for key, value in fields]


def format_quota(reply: dict) -> list[str]:
    """The ``quota`` reply for people: what is used, and the limits."""
    quota, max_files = reply.get("quota_bytes"), reply.get("max_files")
    used, files = reply.get("used_bytes", 0), reply.get("used_files", 0)
    if quota is None:
        limit = "unlimited"
    else:
        share = f"{used / quota:.0%} used" if quota else "nothing may be stored"
        limit = f"{human_size(quota)} ({share}, {human_size(max(quota - used, 0))} free)"
    fields = [
        ("user", _UNPRINTABLE.sub("?", str(reply.get("user")))),
        ("used", f"{human_size(used)} in {files} file{'' if files == 1 else 's'}"),
        ("quota", limit),
        ("max files", "unlimited" if max_files is None else f"{max_files} ({max(max_files - files, 0)} more allowed)"),
    ]
    return [f"{key + ':':<11}{value}" for key, value in fields]


def echo_table(rows: list[tuple[str, ...]]) -> None:
    """*rows* (the first one the headings) in left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
