"""The one-request file operations on the server: where am I, what is
there, make, remove, rename.

Each method is one request and its reply (a listing, maybe several
replies). They must never move file contents: that is the transfer
engines' job (single, pipelined, tree).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..protocol import checksum as checksums
from ..protocol.blocks import DIGEST_SIZE, BlockList, block_count, parse_hexes
from ..protocol.entries import Entry
from ..protocol.errors import SockftpError


class FileOperations:
    """pwd, cd, stat, checksum, ls, mkdir, rmdir, rm, mv, exists, utime, blocks.

    Expects of the class it is mixed into (:class:`~sockftp.client.connection.Connection`):
    ``request``, ``_send``, ``_reply``, ``_wire``, and ``_cwd``, the remote
    directory a reconnect goes back to, which ``cd`` and ``rmdir`` keep.
    """

    def pwd(self) -> str:
        return self.request({"cmd": "pwd"})["path"]

    def cd(self, path: str) -> str:
        self._cwd = self.request({"cmd": "cd", "path": path})["path"]
        return self._cwd

    def stat(self, path: str) -> Entry:
        return _entry(self.request({"cmd": "stat", "path": path}))

    def checksum(self, path: str) -> str:
        return self.request({"cmd": "stat", "path": path, "checksum": True})["checksum"]

    def iter_ls(self, path: str = "") -> Iterator[Entry]:
        """The entries of a directory (or the file itself), as they arrive.

        Leaving the loop early reads the rest of the listing, so the
        connection stays in step."""
        self._drop_if_ended()
        self._send({"cmd": "ls", "path": path})
        more = True
        try:
            while more:
                more = False  # an error reply ends a listing too
                reply = self._reply()
                more = bool(reply.get("more"))
                for item in reply.get("entries", []):
                    yield _entry(item)
        finally:
            while more and self._wire is not None:
                more = False
                more = bool(self._reply().get("more"))

    def ls(self, path: str = "") -> list[Entry]:
        """The entries of a directory, sorted by name."""
        return sorted(self.iter_ls(path), key=lambda e: e.name)

    def mkdir(self, path: str, parents: bool = False) -> str:
        return self.request({"cmd": "mkdir", "path": path, "parents": parents})["path"]

    def rmdir(self, path: str) -> None:
        self.request({"cmd": "rmdir", "path": path})
        if self._cwd != "/":
            self._cwd = self.pwd()  # the server moves us out of a removed cwd

    def rm(self, path: str) -> None:
        self.request({"cmd": "rm", "path": path})

    def mv(self, source: str, target: str) -> None:
        self.request({"cmd": "mv", "source": source, "target": target})

    def utime(self, path: str, mtime: float) -> str:
        """Set the modification time of a file or directory (feature
        ``mtime``); returns its absolute path."""
        return self.request({"cmd": "utime", "path": path, "mtime": mtime})["path"]

    def blocks(self, path: str) -> BlockList:
        """The block list the server has for file *path* (feature
        ``delta``): what :meth:`put_delta` builds against, and what a
        download compares its local blocks with."""
        self._send({"cmd": "blocks", "path": path})
        head: dict | None = None
        digests: list[bytes] = []
        more = True
        try:
            while more:
                more = False  # an error reply ends the stream too
                reply = self._reply()
                more = bool(reply.get("more"))
                head = head or reply
                try:
                    digests.append(parse_hexes(reply.get("blocks")))
                except ValueError as exc:
                    raise SockftpError(f"the server sent a malformed block list: {exc}", code="bad_reply") from None
        finally:
            while more and self._wire is not None:
                more = False
                more = bool(self._reply().get("more"))
        listing = _block_list(head, b"".join(digests))
        if listing is None:
            raise SockftpError(f"the server sent an inconsistent block list for {path}", code="bad_reply")
        return listing

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except SockftpError as exc:
            if exc.code == "not_found":
                return False
            raise


def _entry(item: dict) -> Entry:
    return Entry(item["name"], item["type"], item["size"], item["mtime"])


def _block_list(head: dict, digests: bytes) -> BlockList | None:
    """The block list of a ``blocks`` reply, or None if it does not hold together."""
    size, mtime, checksum, block_size = (head.get(k) for k in ("size", "mtime", "checksum", "block_size"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (size, block_size)) or block_size < 1:
        return None
    if not isinstance(mtime, int | float) or isinstance(mtime, bool) or not checksums.is_valid(checksum):
        return None
    if size < 0 or len(digests) != block_count(size, block_size) * DIGEST_SIZE:
        return None
    return BlockList(size, float(mtime), checksum, block_size, digests)
