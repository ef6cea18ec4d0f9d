"""What a sync must do, decided from two listings: pure, with no I/O.

A sync makes a destination directory hold what a source directory holds.
The engine (:mod:`sockftp.client.sync`) lists both sides into
:data:`Listing` s, one entry per relative path in pre-order (a directory
before what it holds; ``""`` is the root itself), and :func:`make_plan`
compares them into a :class:`Plan`: what to remove, which directories to
make, which files to send, which times to set. Keeping the decision here,
apart from sockets and files, lets the tests check every rule directly.

The rules (docs/SYNC.md says them for users):

* A file is unchanged when its size is the same and its modification
  times differ by no more than the *modify window* (1 ms by default: both
  ends keep times at full precision, so only a filesystem that cannot
  hold them, such as FAT's 2 s, needs more). With *checksum*, by size and
  XXH3-128 instead; a file whose content matches but whose time does not
  only has its time set.
* The source wins for every name it has: a file where the destination has
  a directory (or the reverse, or a link) replaces it, contents and all.
* Only regular files and directories are synced. Links and special files
  in the source are skipped, as ``rsync`` does without ``-l``.
* With *delete*, what the source lacks goes, children before their
  directory. Excluded names are never compared, sent or deleted.
* A directory gets the source's time after its contents are in place.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from ..protocol.entries import DIRECTORY, FILE
from ..protocol.errors import PathRefused

#: Seconds two modification times may differ and still count as the same.
#: Times travel as JSON numbers, which hold them to about 0.25 µs, and both
#: ends keep what they are given to the nanosecond; 1 ms leaves room for
#: filesystems that keep only microseconds or milliseconds, while an edit
#: that keeps a file's size is missed only if it lands within the same
#: millisecond (rsync compares whole seconds by default).
MODIFY_WINDOW = 0.001

#: The marks of a dry run's lines, one per change.
NEW, CHANGED, REMOVED, NEW_DIRECTORY = "+", "~", "-", "d"


@dataclass(slots=True)
class Item:
    """One entry of a listing: a file, a directory, a link or something else.
    (Not frozen: a frozen dataclass takes three times as long to make, and a
    listing makes one per entry, 100,000 for a big tree.)"""

    type: str  # FILE, DIRECTORY, LINK or OTHER (protocol.entries)
    size: int
    mtime: float  # seconds since the epoch
    checksum: str | None = None  # "xxh3-128:HEX", when known


#: Relative "/"-separated path -> Item, in pre-order; "" is the root.
Listing = dict[str, Item]


@dataclass(frozen=True, slots=True)
class FileChange:
    """A file to send: *old_size* is the size of the destination's file it
    replaces (a candidate for a delta), or None if there is none."""

    path: str
    size: int
    mtime: float
    old_size: int | None = None


@dataclass
class Plan:
    """What a sync does, in the order it does it."""

    #: (path, type) of destination entries to remove, children before their directory.
    remove: list[tuple[str, str]] = field(default_factory=list)
    #: Those of them that must make way for the source's entry of another type.
    replaced: set[str] = field(default_factory=set)
    #: Directories to make, parents first.
    mkdirs: list[str] = field(default_factory=list)
    #: Files to send, in pre-order.
    transfers: list[FileChange] = field(default_factory=list)
    #: Files whose content is the same (by checksum), but not their time.
    touch: list[FileChange] = field(default_factory=list)
    #: (path, mtime): directories whose time to set, deepest first ("" is the root).
    dir_times: list[tuple[str, float]] = field(default_factory=list)
    #: (mark, path) of each change, as a dry run shows them, by path; directories end in "/".
    changes: list[tuple[str, str]] = field(default_factory=list)
    #: Source files compared.
    checked: int = 0

    @property
    def empty(self) -> bool:
        return not (self.remove or self.mkdirs or self.transfers or self.touch or self.dir_times)


@dataclass
class SyncSummary:
    """What a sync did (or, in a dry run, would do)."""

    direction: str  # "up" or "down"
    dry_run: bool = False
    checked: int = 0  # source files compared
    transferred: int = 0  # files sent (up) or received (down), whole or by delta
    bytes: int = 0  # their sizes
    wire_bytes: int = 0  # file bytes that crossed the network for them
    deltas: int = 0  # of which by delta
    touched: int = 0  # files whose content matched: only their time was set
    deleted: int = 0
    dirs_created: int = 0
    #: (relative path, the error) of each file or directory that failed.
    failures: list[tuple[str, BaseException]] = field(default_factory=list)
    #: (mark, path) of each change planned (see Plan.changes).
    changes: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)


# -- excluding names ------------------------------------------------------------------


class Excluder:
    """``--exclude`` patterns: shell wildcards (fnmatch, case-sensitive)
    matched against an entry's relative path and against its name, so
    ``*.log`` and ``build`` exclude at any depth and ``docs/draft`` only
    there. A pattern ending in ``/`` matches directories only. An excluded
    directory is excluded with all it holds."""

    def __init__(self, patterns=()):
        patterns = [p for p in patterns if p and p != "/"]
        self.patterns = tuple(patterns)
        self._any = _compile(p for p in patterns if not p.endswith("/"))
        self._dirs = _compile(p.rstrip("/") for p in patterns if p.endswith("/"))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, path: str, is_dir: bool) -> bool:
        name = path.rsplit("/", 1)[-1]
        for regex in (self._any, self._dirs) if is_dir else (self._any,):
            if regex is not None and (regex.match(path) or regex.match(name)):
                return True
        return False


def _compile(patterns) -> re.Pattern | None:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def without_excluded(listing: Listing, excluded: Excluder) -> Listing:
    """*listing* less what *excluded* matches, and all inside excluded directories."""
    if not excluded:
        return listing
    kept: Listing = {}
    gone: set[str] = set()
    for path, item in listing.items():
        if path and (_parent(path) in gone or excluded(path, item.type == DIRECTORY)):
            gone.add(path)
            continue
        kept[path] = item
    return kept


# -- listings from the server -------------------------------------------------------


def add_remote_entry(listing: Listing, path, item: Item) -> None:
    """Add an entry of the server's listing to *listing*, refusing a path
    that could lead outside the directory (``..``, empty names, a
    backslash, NUL) or whose parent has not been listed as a directory
    before it: a sync down writes where these paths say, and must never
    write through a local link that a hostile listing names as a parent."""
    if not isinstance(path, str) or not path:
        raise PathRefused(f"the server listed an unsafe path: {path!r}")
    names = path.split("/")
    if "" in names or "." in names or ".." in names or "\\" in path or "\x00" in path:
        raise PathRefused(f"the server listed an unsafe path: {path!r}")
    parent = path[: -len(names[-1]) - 1] if len(names) > 1 else ""
    above = listing.get(parent)
    if above is None or above.type != DIRECTORY:
        raise PathRefused(f"the server listed {path!r} before its directory")
    listing[path] = item


# -- the comparison ------------------------------------------------------------------


def checksum_candidates(source: Listing, dest: Listing) -> list[str]:
    """Files on both sides with the same size: those a checksum comparison
    must hash (a different size is a change whatever the content)."""
    found = []
    for path, s in source.items():
        if s.type == FILE:
            d = dest.get(path)
            if d is not None and d.type == FILE and d.size == s.size:
                found.append(path)
    return found


def make_plan(
    source: Listing,
    dest: Listing,
    *,
    delete: bool = False,
    checksum: bool = False,
    modify_window: float = MODIFY_WINDOW,
) -> Plan:
    """Compare *source* with *dest* (each with its root ``""``; *dest*
    empty if the destination does not exist yet). With *checksum*, files
    of the same size on both sides must carry their checksums (see
    :func:`checksum_candidates`); one without counts as changed."""
    plan = Plan()
    changed_dirs: set[str] = set()  # directories whose entries change: their time moves
    gone: set[str] = set()  # destination paths removed

    # What goes: entries the source lacks (with delete), entries of another
    # type than the source's, and everything inside a directory that goes.
    # (The loops inline what the helpers below say: they run once per entry
    # of both listings, and an unchanged re-sync of 10,000 files is mostly
    # this comparison and the listings.)
    removals: list[tuple[str, str]] = []
    source_get = source.get
    for path, d in dest.items():
        s = source_get(path)
        if not gone and s is not None and s.type == d.type and s.type in _SYNCED:
            continue  # the common case: the same file or directory on both sides
        if not path:
            continue
        parent = _parent(path)
        s = _synced(s)
        if parent in gone:
            pass  # inside a directory that goes
        elif s is None:
            if not delete:
                continue
        elif s.type == d.type:
            continue
        else:
            plan.replaced.add(path)
        removals.append((path, d.type))
        gone.add(path)
        if parent not in gone:
            changed_dirs.add(parent)
    plan.remove = removals[::-1]  # pre-order reversed: children before their directory
    plan.changes.extend((REMOVED, _shown(path, kind)) for path, kind in removals)

    dest_get = dest.get
    checked = 0
    for path, s in source.items():
        kind = s.type
        if kind == FILE:
            checked += 1
            d = dest_get(path)
            if (
                d is not None
                and not checksum
                and d.size == s.size
                and -modify_window <= s.mtime - d.mtime <= modify_window
                and path not in gone
            ):
                continue  # the common case: unchanged (a removed d has another type, or is inside one)
        elif kind != DIRECTORY:
            continue
        d = None if path in gone else dest_get(path)
        if kind == DIRECTORY:
            if path and d is None:
                plan.mkdirs.append(path)
                plan.changes.append((NEW_DIRECTORY, path + "/"))
                changed_dirs.add(_parent(path))
            continue
        if d is None:
            plan.transfers.append(FileChange(path, s.size, s.mtime))
            plan.changes.append((NEW, path))
        elif _differ(s, d, checksum, modify_window):
            plan.transfers.append(FileChange(path, s.size, s.mtime, d.size))
            plan.changes.append((CHANGED, path))
        elif checksum and abs(s.mtime - d.mtime) > modify_window:
            plan.touch.append(FileChange(path, s.size, s.mtime, d.size))
            plan.changes.append((CHANGED, path))
            continue
        else:
            continue
        changed_dirs.add(_parent(path))
    plan.checked = checked

    for path, s in reversed(source.items()):
        if s.type != DIRECTORY:
            continue
        d = None if path in gone else dest.get(path)
        if d is None or path in changed_dirs or abs(s.mtime - d.mtime) > modify_window:
            plan.dir_times.append((path, s.mtime))
    # By path, a directory before what it holds, whatever order the
    # listings came in (a server lists in directory order).
    plan.changes.sort(key=lambda change: change[1].rstrip("/").split("/"))
    return plan


_SYNCED = frozenset((FILE, DIRECTORY))


def _synced(item: Item | None) -> Item | None:
    """*item* if a sync carries it (a file or a directory), else None."""
    return item if item is not None and item.type in (FILE, DIRECTORY) else None


def _differ(s: Item, d: Item, checksum: bool, modify_window: float) -> bool:
    if s.size != d.size:
        return True
    if checksum:
        return s.checksum is None or s.checksum != d.checksum
    return abs(s.mtime - d.mtime) > modify_window


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _shown(path: str, kind: str) -> str:
    return path + "/" if kind == DIRECTORY else path
