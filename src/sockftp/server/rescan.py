"""Measuring users' usage anew: what ``sockftp user rescan NAME|--all`` runs.

The server keeps each account's usage in the account store and walks a
home only when it must (see :mod:`sockftp.server.quota`). Files changed
behind its back (an admin deleting or restoring files on disk, a power
cut that undid the last usage writes) leave that figure wrong until it is
measured again: :func:`rescan` walks each home, as the server would, and
stores what it finds. A running server takes it up at the user's next
first session (when none of theirs is open).

It never changes a file and needs no server. A rescan that runs while the
user is uploading or deleting can miss what they change meanwhile: run it
when they are idle, or run it again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..accounts import StoredUsage, UserStore
from ..protocol.errors import NotFound
from ..storage import Storage, Usage
from .config import user_home
from .quota import human


@dataclass(frozen=True)
class Rescan:
    """One user's usage: as the store had it, and as measured now."""

    name: str
    before: StoredUsage
    after: Usage

    def describe(self) -> str:
        """One line for people: ``alice: 3.0 MiB in 2 files (was 1.0 MiB in 1 file)``."""
        now = _amount(self.after.bytes, self.after.files)
        before = self.before
        if before.used_bytes is None or before.used_files is None:
            was = "never measured before"
        elif (before.used_bytes, before.used_files) == (self.after.bytes, self.after.files) and not before.changes:
            was = "unchanged"
        else:
            was = "was " + _amount(before.used_bytes, before.used_files)
            if before.changes:
                was += ", with a change cut off"
        return f"{self.name}: {now} ({was})"


def _amount(size: int, files: int) -> str:
    return f"{human(size)} in {files} file{'' if files == 1 else 's'}"


def rescan(storage: Storage, users: UserStore, names: Iterable[str]) -> Iterator[Rescan]:
    """Measure the home of each of *names* in *storage* and store it as
    their usage in *users*, one after the other. Raises NotFound at the
    first name with no account (those before it are stored)."""
    for name in names:
        before = users.usage(name)
        if before is None:
            raise NotFound(f"no such user: {name}")
        after = storage.usage(user_home(name))
        if not users.set_usage(name, after.bytes, after.files):
            raise NotFound(f"no such user: {name} (deleted while it was measured)")
        yield Rescan(name, before, after)


def rescan_root(
    root: str, name: str | None = None, db: str | None = None, storage: str | None = None
) -> Iterator[Rescan]:
    """:func:`rescan` for the command line: user *name* (None: every user)
    of the data directory *root*, on its storage (*storage*: an
    ``s3://`` URL as ``serve --storage`` takes; None: the data directory)
    and account store (*db*: see accounts.stores; None: the data
    directory's SQLite file).
    Creates nothing: without an account store there is no user to rescan.
    Raises NotFound for an unknown *name*; StoreError or sqlite3.Error if
    the store fails; OSError if a home cannot be read."""
    from ..accounts.stores import is_url, open_store, sqlite_path

    if not is_url(db) and not os.path.exists(sqlite_path(db, root)):
        if name is not None:
            raise NotFound(f"no such user: {name} (in {root})")
        return
    with open_store(db, root) as users:
        names = [account.name for account in users.list()] if name is None else [name]
        store = open_homes(root, storage, users)
        try:
            try:
                yield from rescan(store, users, names)
            except NotFound as exc:
                raise NotFound(f"{exc.message} (in {root})") from None
        finally:
            store.close()


def open_homes(root: str, storage: str | None, users: UserStore) -> Storage:
    """The storage the homes of data directory *root* are in, for the
    admin commands: the directory itself, or the ``s3://`` URL *storage*
    (whose uploads' records are in *users*)."""
    from .config import ServerConfig
    from .listener import open_storage

    return open_storage(ServerConfig(root=root, storage=storage), users)


__all__ = ["Rescan", "open_homes", "rescan", "rescan_root"]
