"""Directory listings as FTP clients read them, from storage entries. Pure.

* ``LIST`` lines look like ``ls -l`` output, which is what clients parse
  (there is no standard): permissions, link count, owner, group, size,
  date, name. Permissions say what the logged-in user may do: a read-only
  account sees no ``w``.
* ``MLSD`` and ``MLST`` lines are RFC 3659 facts, ``type=file;size=12;...``
  then a space and the name, meant for programs.
* ``NLST`` lines are names alone.

Names holding CR or LF (possible only for files made outside sockftp) are
left out of every listing: they would break the line and could forge one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from ..storage import DIRECTORY, FILE, LINK, Entry
from .parser import format_time

#: RFC 3659 facts the server can give, in the order it gives them.
FACTS = ("type", "size", "modify", "perm")

#: Six months, in seconds: ls shows the time of newer entries, the year of older ones.
_RECENT = 182 * 24 * 3600

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def listable(entries: Iterable[Entry]) -> Iterator[Entry]:
    """*entries* without those whose names cannot be shown on one line."""
    return (entry for entry in entries if "\r" not in entry.name and "\n" not in entry.name)


def list_line(entry: Entry, owner: str, can_write: bool, now: float | None = None) -> str:
    """One ``LIST`` line, as ``ls -l`` would print it."""
    now = time.time() if now is None else now
    if entry.type == DIRECTORY:
        mode = "drwxr-xr-x" if can_write else "dr-xr-xr-x"
    elif entry.type == LINK:
        mode = "lrwxrwxrwx"
    elif entry.type == FILE:
        mode = "-rw-r--r--" if can_write else "-r--r--r--"
    else:
        mode = "?---------"
    when = time.gmtime(entry.mtime)
    month = _MONTHS[when.tm_mon - 1]
    if abs(now - entry.mtime) < _RECENT:
        date = f"{month} {when.tm_mday:2d} {when.tm_hour:02d}:{when.tm_min:02d}"
    else:
        date = f"{month} {when.tm_mday:2d} {when.tm_year:5d}"
    return f"{mode} 1 {owner:<8} {owner:<8} {entry.size:>12} {date} {entry.name}"


def facts(entry: Entry, wanted: Iterable[str], can_write: bool, kind: str | None = None) -> str:
    """The RFC 3659 facts of *entry*: ``type=file;size=5;modify=...;perm=...;``.

    *kind* replaces the type (``cdir`` for the directory being listed).
    Facts not in *wanted* are left out.
    """
    wanted = set(wanted)
    out = []
    if "type" in wanted:
        out.append(f"type={kind or _mlsx_type(entry)}")
    if "size" in wanted and entry.type == FILE:
        out.append(f"size={entry.size}")
    if "modify" in wanted:
        out.append(f"modify={format_time(entry.mtime, fraction=True)}")
    if "perm" in wanted:
        out.append(f"perm={_perm(entry, can_write)}")
    return "".join(fact + ";" for fact in out)


def facts_line(entry: Entry, name: str, wanted: Iterable[str], can_write: bool, kind: str | None = None) -> str:
    """An MLSD line (or MLST's second line without its leading space)."""
    return f"{facts(entry, wanted, can_write, kind)} {name}"


def _mlsx_type(entry: Entry) -> str:
    if entry.type == DIRECTORY:
        return "dir"
    if entry.type == FILE:
        return "file"
    if entry.type == LINK:
        return "OS.unix=symlink"
    return "OS.unix=other"


def _perm(entry: Entry, can_write: bool) -> str:
    # RFC 3659 7.5.5: a append, d delete, f rename, r retrieve, w store
    # (files); c create, e enter, l list, m mkdir, p purge (directories).
    if entry.type == DIRECTORY:
        return "cdeflmp" if can_write else "el"
    if entry.type == FILE:
        return "adfrw" if can_write else "r"
    return "df" if can_write else ""


def feat_line(selected: Iterable[str]) -> str:
    """The FEAT line for MLST: every fact, the selected ones starred."""
    selected = set(selected)
    return "MLST " + "".join(f"{fact}{'*' if fact in selected else ''};" for fact in FACTS)


def select_facts(argument: str) -> tuple[str, ...]:
    """``OPTS MLST type;size;`` -> the facts asked for that the server knows."""
    asked = {fact.strip().lower() for fact in argument.split(";") if fact.strip()}
    return tuple(fact for fact in FACTS if fact in asked)
