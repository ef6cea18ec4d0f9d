"""Which account store a server or an admin command opens: ``--db``.

*db* is a ``postgresql://`` (or ``postgres://``) URL, shared by every node
pointing at it; or the path of a SQLite file; or None for the embedded
default, ``ROOT/.sockftp/users.db``. PostgreSQL's driver is imported only
when a URL asks for it.
"""

from __future__ import annotations

import os

from ..protocol.limits import RESERVED_PREFIX
from .base import UserStore


def is_url(db: str | None) -> bool:
    """True if *db* names a PostgreSQL database rather than a SQLite file."""
    return bool(db) and db.split(":", 1)[0].lower() in ("postgresql", "postgres")


def sqlite_path(db: str | None, root: str) -> str:
    """The SQLite file of *db* (None: the data directory's own)."""
    if db:
        return os.path.abspath(os.path.expanduser(db))
    return os.path.join(root, RESERVED_PREFIX, "users.db")


def open_store(db: str | None, root: str) -> UserStore:
    """The account store *db* names (see the module's docstring)."""
    if is_url(db):
        from .postgres import PostgresUserStore

        return PostgresUserStore(db)
    from .sqlite import SqliteUserStore

    return SqliteUserStore(sqlite_path(db, root))


def describe(db: str | None, root: str) -> str:
    """*db* for a message: a URL without its password, or the file."""
    if is_url(db):
        from .postgres import redact

        return redact(db)
    return sqlite_path(db, root)


__all__ = ["describe", "is_url", "open_store", "sqlite_path"]
