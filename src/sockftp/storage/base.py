"""The storage interface: what commands may ask of where files live.

Commands and front ends (the native protocol and the FTP front door) talk to a
:class:`Storage` in :data:`~sockftp.protocol.paths.RemotePath` terms only. A backend
turns those into local files, objects in a bucket, or anything else; it
never sees a socket, a session or a user, and it raises only
:class:`~sockftp.protocol.errors.SockftpError` subclasses.

Uploads are two-phase by contract: bytes go to an :class:`Upload` that
no reader can see, and appear under their name only on :meth:`Upload.commit`,
atomically. An upload that is neither committed nor discarded stays as a
partial that a later upload of the same path and size may resume.

An upload's size is announced when it starts (the native protocol's
``put``), or unknown until its bytes end (FTP's ``STOR``, which announces
nothing): then ``size`` is None, and the partial it leaves can be resumed
by an upload of any size.

What sync needs has defaults that work on any backend, slowly: a whole
tree's listing (:meth:`Storage.tree`), a file's block list
(:meth:`Storage.blocks`), and an upload built partly from another file
(:meth:`Upload.copy_from`). A backend that keeps checksums and block lists
with its files answers them without reading the files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from ..protocol.blocks import BlockList, FileHasher
from ..protocol.entries import DIRECTORY, FILE, LINK, OTHER, Entry, TreeEntry
from ..protocol.errors import IOFailure, PermissionDenied
from ..protocol.limits import DELTA_BLOCK, MAX_PATH_DEPTH
from ..protocol.paths import RemotePath

__all__ = [
    "DIRECTORY",
    "FILE",
    "LINK",
    "OTHER",
    "BlockList",
    "Entry",
    "TreeEntry",
    "Usage",
    "Download",
    "Upload",
    "Storage",
]

_COPY_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """What a subtree holds: bytes (partial uploads included) and files
    (complete ones only)."""

    bytes: int = 0
    files: int = 0


class Download(ABC):
    """A file opened for reading. Its content and size stay fixed while open,
    even if the name is replaced by a new upload meanwhile."""

    size: int
    mtime: float

    @abstractmethod
    def checksum(self) -> str:
        """The whole file's checksum (see :mod:`sockftp.protocol.checksum`)."""

    def fileno(self) -> int | None:
        """A file descriptor for zero-copy sending, or None if there is none."""
        return None

    def stored_checksum(self) -> str | None:
        """The checksum the store keeps for the file as it is now, found
        without reading the file; None if it keeps none (or it is stale)."""
        return None

    @abstractmethod
    def readinto(self, buffer, offset: int) -> int:
        """Read into *buffer* from byte *offset*; 0 only at the end."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Upload(ABC):
    """An upload in progress, invisible until committed.

    ``offset`` is where the next :meth:`write` lands: 0 for a new upload,
    the resumed length otherwise. ``size`` is the announced size of the
    whole file, or None if it is unknown until the bytes end.
    """

    path: RemotePath
    size: int | None
    offset: int
    #: Bytes an earlier partial held beyond ``offset``, dropped on opening.
    dropped: int = 0
    #: Bytes this upload wrote and then could not keep: a commit that
    #: failed and kept no partial, or a :meth:`keep` that could not.
    lost: int = 0

    #: The modification time the file gets when it commits (seconds since
    #: the epoch); None for the time of the commit.
    mtime: float | None = None

    #: (block_size, digests) kept with the file when it commits; None: none.
    blocks: tuple[int, bytes] | None = None

    def set_mtime(self, mtime: float | None) -> None:
        """Give the file *mtime* when it commits, as ``rsync -t`` keeps it."""
        self.mtime = mtime

    def set_blocks(self, block_size: int, digests: bytes) -> None:
        """Keep these block digests (see :mod:`sockftp.protocol.blocks`)
        with the file when it commits, for later deltas."""
        self.blocks = (block_size, digests)

    def copy_from(self, source: Download, position: int, count: int, hasher) -> None:
        """Append *count* bytes of *source* from byte *position*, feeding
        *hasher* with them (a delta's copied blocks). Raises IOFailure if
        *source* ends first."""
        buffer = bytearray(min(_COPY_BUFFER, max(count, 1)))
        view = memoryview(buffer)
        end = position + count
        while position < end:
            n = source.readinto(view[: min(len(buffer), end - position)], position)
            if not n:
                raise IOFailure("the file a delta copies from shrank")
            hasher.update(view[:n])
            self.write(view[:n])
            position += n

    @abstractmethod
    def hash_existing(self, hasher) -> None:
        """Feed *hasher* with the bytes already held (before ``offset``)."""

    @abstractmethod
    def write(self, data) -> None:
        """Append *data* at ``offset`` and advance it."""

    @abstractmethod
    def replaced_size(self) -> int | None:
        """The size of the file the commit would replace now, None if none.

        Looked up where the commit will land, which is not always where the
        upload began: its directory may have been renamed meanwhile."""

    @abstractmethod
    def commit(self, checksum: str | None) -> int | None:
        """Make the file visible under its name, atomically. Returns the
        size of the file it replaced, None if none: as :meth:`replaced_size`
        found it, if that was asked just before.

        *checksum* is the verified checksum of the whole file, kept so that
        downloads need not hash it again; None if it was not computed.
        """

    @abstractmethod
    def keep(self) -> None:
        """Stop without committing and keep the bytes for a later resume."""

    @abstractmethod
    def discard(self) -> None:
        """Stop without committing and drop the bytes."""


class Storage(ABC):
    """Where files live. Paths are tuples of validated names from the root."""

    #: The store keeps a checksum with every file it commits, which
    #: :meth:`Download.stored_checksum` and :meth:`tree` find without
    #: reading the file (a delta put needs it).
    keeps_checksums: bool = False

    @abstractmethod
    def stat(self, path: RemotePath) -> Entry:
        """Raises NotFound, PathRefused (a symlink on the way)."""

    @abstractmethod
    def list(self, path: RemotePath) -> Iterator[Entry]:
        """The entries of a directory, in no particular order, without the
        server's own files."""

    @abstractmethod
    def mkdir(self, path: RemotePath, parents: bool = False) -> None:
        """Raises Exists (unless *parents* and it is a directory), NotFound."""

    @abstractmethod
    def rmdir(self, path: RemotePath) -> int:
        """Remove an empty directory. Raises NotEmpty, NotADirectory.

        Returns the bytes freed: abandoned partial uploads inside it, which
        clients cannot see, go with it."""

    @abstractmethod
    def remove(self, path: RemotePath) -> None:
        """Remove a file. Raises IsADirectory, NotFound."""

    @abstractmethod
    def rename(self, source: RemotePath, target: RemotePath) -> None:
        """Rename atomically, replacing a file at *target*.

        Raises IsADirectory if *target* is an existing directory, PathRefused
        if it would move a directory into itself.
        """

    @abstractmethod
    def open_read(self, path: RemotePath) -> Download:
        """Raises NotFound, IsADirectory, PathRefused."""

    @abstractmethod
    def partial_size(self, path: RemotePath, size: int | None) -> int:
        """Bytes held from an interrupted upload of *path* that an upload of
        *size* bytes in all may resume; 0 if none. With *size* None (not
        known), whatever size the interrupted upload announced."""

    @abstractmethod
    def open_upload(self, path: RemotePath, size: int | None, offset: int = 0, *, at_once: bool = False) -> Upload:
        """Start (offset 0) or resume (offset > 0) an upload of *size* bytes
        in all, or of a size not known until its bytes end (None).

        *at_once*: all the bytes are in the server's hands already, and will
        be written and committed without waiting for anyone; a store may
        then skip what only protects an upload that is seen in progress.

        Raises Busy if another upload of *path* is under way, OffsetMismatch
        if fewer than *offset* bytes are held, IsADirectory, NotFound (no
        parent directory). A store may leave IsADirectory to the commit for
        an upload of at most ``SMALL_FILE`` bytes (then it keeps nothing).
        """

    @abstractmethod
    def open_append(self, path: RemotePath, offset: int | None = None) -> Upload:
        """Start an upload of *path* whose first *offset* bytes are those of
        the file stored there now (all of it if *offset* is None), and whose
        size is unknown. FTP's ``APPE``, and ``REST`` + ``STOR`` over a
        complete file, both write after a prefix of the file.

        The file itself does not change until the upload commits, when the
        whole new content replaces it atomically. Any partial of *path* is
        dropped (see ``Upload.dropped``).

        Raises NotFound, IsADirectory or PathRefused (not a regular file),
        OffsetMismatch (carrying ``offset``: the file's size) if the file
        is shorter than *offset*, and Busy as :meth:`open_upload` does.
        """

    @abstractmethod
    def checksum(self, path: RemotePath) -> str:
        """The checksum of a stored file."""

    @abstractmethod
    def usage(self, path: RemotePath) -> Usage:
        """What the subtree at *path* holds (nothing if it does not exist)."""

    def tree(self, path: RemotePath, checksums: bool = False, max_depth: int = MAX_PATH_DEPTH) -> Iterator[TreeEntry]:
        """Everything below directory *path*, depth first, each directory
        before what it holds, siblings sorted by name; paths relative to
        *path*, at most *max_depth* names deep. With *checksums*, a file's
        entry carries the checksum the store keeps for it, if any: a store
        never reads a file to answer this. *path* not a directory: its
        own entry alone. Raises NotFound, PathRefused.

        This default walks with :meth:`stat` and :meth:`list`, and keeps no
        checksums."""
        entry = self.stat(path)
        if entry.type != DIRECTORY:
            yield TreeEntry(entry.name, entry.type, entry.size, entry.mtime)
            return

        def below(directory: RemotePath, prefix: str, depth: int) -> Iterator[TreeEntry]:
            for item in sorted(self.list(directory), key=lambda e: e.name):
                yield TreeEntry(prefix + item.name, item.type, item.size, item.mtime)
                if item.type == DIRECTORY and depth < max_depth:
                    yield from below((*directory, item.name), f"{prefix}{item.name}/", depth + 1)

        if max_depth > 0:
            yield from below(path, "", 1)

    def kept_blocks(self, path: RemotePath, download: Download) -> bytes | None:
        """The block digests the store keeps for the file open as
        *download* (found at *path*), if valid for it as it is: never read
        from the file. None if it keeps none."""
        return None

    def blocks(self, path: RemotePath) -> BlockList:
        """The block list of the file at *path* (see
        :mod:`sockftp.protocol.blocks`). This default reads the whole file
        each time; a store that keeps lists reads only what it keeps.
        Raises NotFound, IsADirectory, PathRefused."""
        with self.open_read(path) as download:
            hasher = FileHasher(DELTA_BLOCK)
            buffer = bytearray(_COPY_BUFFER)
            view = memoryview(buffer)
            position = 0
            while position < download.size:
                n = download.readinto(view[: min(len(buffer), download.size - position)], position)
                if not n:
                    raise IOFailure("the file shrank while it was read")
                hasher.update(view[:n])
                position += n
            return BlockList(download.size, download.mtime, hasher.value(), DELTA_BLOCK, hasher.digests())

    def set_mtime(self, path: RemotePath, mtime: float) -> None:
        """Set the modification time of the file or directory at *path*.
        Raises NotFound, PathRefused, PermissionDenied."""
        raise PermissionDenied("this storage cannot set modification times")

    def expire_partials(self, path: RemotePath, untouched_since: float) -> Iterator[tuple[RemotePath, int]]:
        """Remove the partial uploads under *path* that no upload holds and
        nothing wrote to since *untouched_since* (seconds since the epoch).
        Yields, for each, the directory it was in and the bytes it held.
        A backend without partials yields nothing."""
        return iter(())

    def check_space(self, count: int) -> None:
        """Raise InsufficientStorage unless *count* more bytes fit now. For
        a backend that cannot tell (an object store), anything fits."""

    def close(self) -> None:
        """Release what the backend holds open."""
