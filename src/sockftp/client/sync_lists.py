"""The two listings a sync compares, and the checksums a ``checksum`` sync needs.

The server's side comes from one streamed ``tree`` request, sent in the
same write as a ``stat`` of the directory itself, so an unchanged tree
costs one round trip per listing frame and nothing else; a server without
``tree`` is walked with one ``ls`` per directory. The local side is a walk
that never follows a link: one ``lstat`` per entry. Both come out as
:data:`~sockftp.client.sync_plan.Listing` s, parents before what they hold,
for :func:`~sockftp.client.sync_plan.make_plan`.

Paths in the server's listing decide where a sync down writes, so each is
checked (:func:`~sockftp.client.sync_plan.add_remote_entry`) before use.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Iterator

from ..protocol import checksum as checksums
from ..protocol.entries import DIRECTORY, FILE, LINK, OTHER
from ..protocol.errors import ConnectionLost, NotADirectory, NotFound, PathRefused, SockftpError
from .single import PARTIAL_SUFFIX
from .sync_plan import Excluder, Item, Listing, add_remote_entry, checksum_candidates, without_excluded
from .tree import read_packed

# -- the server's side ----------------------------------------------------------------------


def remote_listing(client, remote: str, excluded: Excluder, checksums_too: bool) -> tuple[str | None, Listing]:
    """Directory *remote* on the server: (its absolute path, or None if it
    does not exist; its listing, or {} if it does not exist). With
    *checksums_too*, files carry the checksums the server has stored.

    Raises NotADirectory if it is a file."""
    stat = {"cmd": "stat", "path": remote}
    features = client.server_info.get("features", ())
    if "tree" not in features:
        return _walked(client, stat, excluded)
    # Packed: one binary body of columns per frame, not a JSON object per
    # entry (protocol.tree_pack); most of an unchanged re-sync is this listing.
    packed = "tree-packed" in features
    tree = {"cmd": "tree", "path": remote, "checksums": checksums_too}
    if packed:
        tree["packed"] = True
    # One write, one round trip: the stat says where and whether, the tree
    # what is inside.
    client._send_many([stat, tree])
    try:
        root = client._reply()
    except SockftpError as exc:
        _drain(client, packed, checksums_too)  # the tree's answer, an error too
        if isinstance(exc, NotFound):
            return None, {}
        raise
    listing: Listing = {"": _item(root)}
    more = True
    try:
        while more:
            more = False  # an error reply ends a listing too
            reply = client._reply()
            more = bool(reply.get("more"))
            if packed:
                columns = read_packed(client, reply, checksums_too)
                if columns is not None and listing[""].type == DIRECTORY:
                    _add_packed(listing, *columns)
            elif listing[""].type == DIRECTORY:
                for entry in reply.get("entries", ()):
                    add_remote_entry(listing, entry.get("path"), _item(entry))
    finally:
        if more:
            _drain(client, packed, checksums_too)
    if listing[""].type != DIRECTORY:
        raise NotADirectory(f"not a directory: {root.get('path', remote)}")
    return root.get("path", remote), without_excluded(listing, excluded)


def _walked(client, stat: dict, excluded: Excluder) -> tuple[str | None, Listing]:
    """For a server without ``tree``: one ``ls`` per directory."""
    try:
        root = client.request(stat)
    except NotFound:
        return None, {}
    path = root.get("path", stat["path"])
    if root.get("type") != DIRECTORY:
        raise NotADirectory(f"not a directory: {path}")
    listing: Listing = {"": _item(root)}
    pending = [""]
    while pending:
        rel = pending.pop()
        below = []
        for entry in sorted(client.iter_ls(remote_join(path, rel)), key=lambda e: e.name):
            if not isinstance(entry.name, str) or "/" in entry.name:
                raise PathRefused(f"the server listed an unsafe name: {entry.name!r}")
            sub = f"{rel}/{entry.name}" if rel else entry.name
            if excluded and excluded(sub, entry.type == DIRECTORY):
                continue
            add_remote_entry(listing, sub, _item(entry.to_wire()))
            if entry.type == DIRECTORY:
                below.append(sub)
        pending.extend(reversed(below))
    return path, listing


def _item(entry: dict) -> Item:
    """An entry of the server's listing (or a stat reply) as an Item;
    fields of the wrong type read as absent, never as a crash. (Exact type
    checks, not isinstance: a listing of 100,000 entries comes through here,
    and they also keep out bool, which JSON's true would otherwise pass as 1.)"""
    kind = entry.get("type")
    size = entry.get("size")
    mtime = entry.get("mtime")
    value = entry.get("checksum")
    return Item(
        kind if kind in _KINDS else OTHER,
        size if type(size) is int and size >= 0 else 0,
        mtime if type(mtime) is float else float(mtime) if type(mtime) is int else 0.0,
        value if value is not None and checksums.is_valid(value) else None,
    )


_KINDS = frozenset((FILE, DIRECTORY, LINK))


def _add_packed(listing: Listing, paths, kinds, sizes, mtimes, sums) -> None:
    """Add a packed frame's entries (each path already checked for ``..``,
    empty names and the like by tree_pack.unpack), refusing any whose
    directory was not listed before it, as add_remote_entry does."""
    get = listing.get
    for i, path in enumerate(paths):
        above = get(path.rpartition("/")[0])
        if above is None or above.type != DIRECTORY:
            raise PathRefused(f"the server listed {path!r} before its directory")
        listing[path] = Item(kinds[i], sizes[i], mtimes[i], sums[i] if sums else None)


def _drain(client, packed: bool = False, checksums_too: bool = False) -> None:
    """Read the rest of a streamed reply (the connection stays in step)."""
    try:
        while client._wire is not None:
            reply = client._reply()
            if packed:
                read_packed(client, reply, checksums_too, keep=False)
            if not reply.get("more"):
                break
    except ConnectionLost:
        raise
    except SockftpError:
        pass


def remote_join(root: str, path: str) -> str:
    """Remote *path* (relative, "/"-separated) inside remote directory *root*."""
    if not path:
        return root
    return root + path if root.endswith("/") else f"{root}/{path}"


# -- this machine's side ------------------------------------------------------------------


def local_listing(
    root: str, excluded: Excluder, *, strict_names: bool = False
) -> tuple[Listing, list[str], list[tuple[str, str, OSError]]]:
    """Walk local directory *root* without following links: (its listing,
    in pre-order and sorted by name; the relative paths of the partial
    downloads found, which are never synced; what could not be read, as
    (why, path, error), why being "dir", "entry" or "name"). With
    *strict_names*, a name that is not valid UTF-8 (which no server can
    store) is a failure, not an entry."""
    listing: Listing = {"": local_item(os.stat(root))}
    partials: list[str] = []
    failures: list[tuple[str, str, OSError]] = []
    # (directory, its entries to add: (path, item, name)), one per level.
    stack: list[tuple[str, Iterator[tuple[str, Item, str]]]] = []

    def enter(rel: str, full: str) -> None:
        """Read directory *full* (*rel* here): its entries, sorted by name,
        each stat'ed through the directory's descriptor (a lookup of one
        name, not of the whole path: this is most of a re-sync's time)."""
        found: list[tuple[str, Item, str]] = []
        try:
            fd = os.open(full, _DIR_FLAGS)
        except OSError as exc:
            failures.append(("dir", rel, exc))
            return
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=_by_name)
            # Names that are not UTF-8 hold surrogates, so all-ASCII names need no check one by one.
            check_names = strict_names and not "".join(e.name for e in entries).isascii()
            excluding = bool(excluded)
            for entry in entries:
                name = entry.name
                path = f"{rel}/{name}" if rel else name
                if name.startswith(".") and name.endswith(PARTIAL_SUFFIX):
                    partials.append(path)
                    continue
                if check_names and not _utf8(name):
                    failures.append(("name", path, OSError(f"{path!r}: the name is not valid UTF-8")))
                    continue
                try:
                    if excluding and excluded(path, entry.is_dir(follow_symlinks=False)):
                        continue
                    item = local_item(entry.stat(follow_symlinks=False))
                except FileNotFoundError:
                    continue  # gone since its directory was read
                except OSError as exc:
                    failures.append(("entry", path, exc))
                    continue
                found.append((path, item, name))
        except OSError as exc:
            failures.append(("dir", rel, exc))
            return
        finally:
            os.close(fd)
        stack.append((full, iter(found)))

    enter("", root)
    while stack:
        full, entries = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        path, item, name = entry
        listing[path] = item
        if item.type == DIRECTORY:
            enter(path, os.path.join(full, name))
    # In walk order (each directory's entries are read as it is entered, before those below its elder siblings).
    if len(failures) > 1:
        failures.sort(key=lambda failure: failure[1].split("/"))
    return listing, partials, failures


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _by_name(entry: os.DirEntry) -> str:
    return entry.name


def local_item(st: os.stat_result) -> Item:
    mode = st.st_mode
    if statmod.S_ISREG(mode):
        return Item(FILE, st.st_size, st.st_mtime_ns / 1e9)
    kind = DIRECTORY if statmod.S_ISDIR(mode) else LINK if statmod.S_ISLNK(mode) else OTHER
    return Item(kind, 0, st.st_mtime_ns / 1e9)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# -- checksums, for a comparison by content ----------------------------------------------


def fill_checksums(client, source: Listing, dest: Listing, *, up: bool, local_root: str, remote_root: str) -> None:
    """Give the files a ``checksum`` comparison must compare (same size on
    both sides) their checksums: this side's computed here, the server's
    from its listing, or asked for (pipelined) for the few it has not
    stored, which the server then hashes."""
    remote, local = (dest, source) if up else (source, dest)
    candidates = checksum_candidates(source, dest)
    # The local files are hashed by a few threads while the server hashes
    # the files it has no checksum for: reading and XXH3 let go of the GIL.
    from concurrent.futures import ThreadPoolExecutor  # here: only --checksum needs it

    with ThreadPoolExecutor(max_workers=HASHING_THREADS) as pool:
        sums = pool.map(_local_checksum, [os.path.join(local_root, *path.split("/")) for path in candidates])
        missing = [path for path in candidates if remote[path].checksum is None]
        requests = [{"cmd": "stat", "path": remote_join(remote_root, path), "checksum": True} for path in missing]
        for path, reply in zip(missing, client._pipeline(requests), strict=True):
            if isinstance(reply, dict):
                remote[path] = _with_checksum(remote[path], reply.get("checksum"))
        for path, value in zip(candidates, sums, strict=True):
            local[path] = _with_checksum(local[path], value)


def _with_checksum(item: Item, value: str | None) -> Item:
    return Item(item.type, item.size, item.mtime, value if checksums.is_valid(value) else None)


def _local_checksum(path: str) -> str | None:
    """XXH3-128 of the file at *path*, or None if it cannot be read (it
    then compares as changed, and its transfer says why)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size <= _WHOLE_READ:
            # Read whole: a file this small costs one read, and no 4 MiB
            # buffer made (and zeroed) for it alone.
            return checksums.of_bytes(os.pread(fd, size + 1, 0))
        hasher = checksums.Hasher()
        buffer = bytearray(_WHOLE_READ)
        view = memoryview(buffer)
        position = 0
        while n := os.preadv(fd, [view], position):
            hasher.update(view[:n])
            position += n
        return hasher.value()
    except OSError:
        return None
    finally:
        os.close(fd)


#: Files up to this size are read in one piece to be hashed; larger ones in pieces of it.
_WHOLE_READ = 4 * 1024 * 1024

#: Threads that hash local files for a checksum comparison.
HASHING_THREADS = min(4, os.cpu_count() or 1)
