"""Whole directories: put_tree, walk and get_tree, a file at a time; and
tree, a whole tree's listing in one request.

Names in a remote listing come from the server: they must never make a
download write outside the local directory (see _check_remote_name).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..protocol import checksum as checksums
from ..protocol import tree_pack
from ..protocol.entries import DIRECTORY, FILE, Entry, TreeEntry
from ..protocol.errors import BadFrame, NotADirectory, PathRefused, SockftpError
from .single import TransferResult


class TreeTransfers:
    """put_tree, walk, get_tree and tree.

    Expects of the class it is mixed into: ``mkdir``, ``stat`` and ``ls``
    (from :class:`~sockftp.client.files.FileOperations`), ``put`` and
    ``get`` (from :class:`~sockftp.client.single.SingleTransfers`), and
    ``supports``, ``_send``, ``_reply`` and ``_wire`` (from
    :class:`~sockftp.client.connection.Connection`).
    """

    def tree(self, path: str = "", checksums: bool = False) -> Iterator[TreeEntry]:
        """Everything below remote directory *path*, as it arrives: depth
        first, each directory before what it holds, paths relative to
        *path*. With *checksums*, a file's entry carries the checksum the
        server keeps for it, when it has one (it never computes one for
        this). A *path* that is not a directory gives its own entry alone.

        One request, however large the tree (feature ``tree``); a server
        without it is walked one directory at a time, with no checksums
        and no links. Leaving the loop early reads the rest of the
        listing, so the connection stays in step."""
        if not self.supports("tree"):
            yield from self._tree_by_walk(path)
            return
        packed = self.supports("tree-packed")
        request = {"cmd": "tree", "path": path, "checksums": checksums}
        if packed:
            request["packed"] = True
        self._send(request)
        more = True
        try:
            while more:
                more = False  # an error reply ends a listing too
                reply = self._reply()
                more = bool(reply.get("more"))
                if packed:
                    columns = read_packed(self, reply, checksums)
                    if columns is not None:
                        paths, kinds, sizes, mtimes, sums = columns
                        for i, entry_path in enumerate(paths):
                            yield TreeEntry(entry_path, kinds[i], sizes[i], mtimes[i], sums[i] if sums else None)
                    continue
                for item in reply.get("entries", []):
                    yield _tree_entry(item)
        finally:
            while more and self._wire is not None:
                more = False
                reply = self._reply()
                more = bool(reply.get("more"))
                if packed:
                    read_packed(self, reply, checksums, keep=False)

    def _tree_by_walk(self, path: str) -> Iterator[TreeEntry]:
        top = self.stat(path)
        if top.type != DIRECTORY:
            yield TreeEntry(top.name, top.type, top.size, top.mtime)
            return
        prefix = path.rstrip("/")
        for directory, dirs, files in self.walk(path):
            rel = directory[len(prefix) :].strip("/")
            for entry in sorted(dirs + files, key=lambda e: e.name):
                yield TreeEntry(f"{rel}/{entry.name}" if rel else entry.name, entry.type, entry.size, entry.mtime)

    def put_tree(
        self, local_dir: str | os.PathLike, remote_dir: str, *, progress=None, on_file=None, times: bool = True
    ) -> list[TransferResult]:
        """Upload directory *local_dir* as *remote_dir*, recursively.

        Symbolic links to directories are skipped (they could loop).
        *on_file(local, remote)* is called before each file.
        """
        local_dir = os.fspath(local_dir)
        results = []
        self.mkdir(remote_dir, parents=True)
        for root, dirs, files in os.walk(local_dir):
            rel = os.path.relpath(root, local_dir)
            base = remote_dir if rel == "." else _join(remote_dir, *rel.split(os.sep))
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
            for d in dirs:
                self.mkdir(_join(base, d), parents=True)
            for name in sorted(files):
                source = os.path.join(root, name)
                if not os.path.isfile(source):
                    continue
                target = _join(base, name)
                if on_file is not None:
                    on_file(source, target)
                results.append(self.put(source, target, progress=progress, times=times))
        return results

    def walk(self, remote_dir: str) -> Iterator[tuple[str, list[Entry], list[Entry]]]:
        """Like os.walk: (directory, subdirectories, files), top down."""
        if self.stat(remote_dir).type != DIRECTORY:
            raise NotADirectory(f"not a directory: {remote_dir}")
        entries = self.ls(remote_dir)
        for entry in entries:
            _check_remote_name(entry.name)
        dirs = [e for e in entries if e.type == DIRECTORY]
        files = [e for e in entries if e.type == FILE]
        yield remote_dir, dirs, files
        for d in dirs:
            yield from self.walk(_join(remote_dir, d.name))

    def get_tree(
        self, remote_dir: str, local_dir: str | os.PathLike, *, progress=None, on_file=None, times: bool = True
    ) -> list[TransferResult]:
        """Download directory *remote_dir* into *local_dir*, recursively."""
        local_dir = os.fspath(local_dir)
        results = []
        prefix = remote_dir.rstrip("/")
        for directory, _dirs, files in self.walk(remote_dir):
            rel = directory[len(prefix) :].strip("/")
            target_dir = os.path.join(local_dir, *rel.split("/")) if rel else local_dir
            os.makedirs(target_dir, exist_ok=True)
            for entry in files:
                source = _join(directory, entry.name)
                target = os.path.join(target_dir, entry.name)
                if on_file is not None:
                    on_file(source, target)
                results.append(self.get(source, target, progress=progress, times=times))
        return results


def _join(base: str, *names: str) -> str:
    """Remote path *names* inside *base*; ``_join("/", "a")`` is ``/a``."""
    if base.endswith("/"):
        return base + "/".join(names)
    return "/".join([base, *names]) if base else "/".join(names)


def _check_remote_name(name: str) -> None:
    # A listing comes from the server: never let a hostile one make us write
    # outside the local directory.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise PathRefused(f"the server sent an unsafe name: {name!r}")


def read_packed(client, reply: dict, checksums_too: bool, keep: bool = True):
    """The body that follows a packed ``tree`` frame, unpacked into columns
    (:func:`sockftp.protocol.tree_pack.unpack`), or None if it holds no
    entries (or, without *keep*, read and thrown away). A body size the
    server should never send leaves the connection out of step: it is
    closed."""
    size, count = reply.get("body", 0), reply.get("count", 0)
    if type(size) is not int or not 0 <= size <= tree_pack.MAX_BODY or type(count) is not int or count < 0:
        client.close()
        raise SockftpError("the server sent a malformed packed tree frame", code="bad_reply")
    body = client._payload(size) if size else b""
    if not keep or not count:
        return None
    try:
        return tree_pack.unpack(body, count, checksums_too)
    except BadFrame as exc:
        raise SockftpError(f"the server sent a malformed packed tree frame: {exc.message}", code="bad_reply") from None


def _tree_entry(item: dict) -> TreeEntry:
    """A ``tree`` entry from the server, refused if its path could lead a
    download outside its directory."""
    try:
        path, kind, size, mtime = item["path"], item["type"], item["size"], item["mtime"]
        checksum = item.get("checksum")
    except (KeyError, TypeError):
        raise SockftpError("the server sent a malformed tree entry", code="bad_reply") from None
    if not isinstance(path, str) or (checksum is not None and not checksums.is_valid(checksum)):
        raise SockftpError("the server sent a malformed tree entry", code="bad_reply")
    # _check_remote_name of every name, at once: this runs once per file.
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\\" in path or "\x00" in path:
        raise PathRefused(f"the server sent an unsafe path: {path!r}")
    return TreeEntry(path, kind, size, mtime, checksum)
