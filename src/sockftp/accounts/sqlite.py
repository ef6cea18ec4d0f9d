"""Accounts in a SQLite database file (``ROOT/.sockftp/users.db`` by default).

One connection per thread (sqlite3 connections must not be shared across
threads), WAL mode so the admin command line can change accounts while a
server reads them.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from ..errors import Exists, NotFound
from . import schema
from .base import Account, UserStore


class SqliteUserStore(UserStore):
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        # Password hashes: for the server's user only. SQLite gives its -wal
        # and -shm files the database's mode, so the database is created
        # private before SQLite first opens it.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(path + suffix, 0o600)
            except FileNotFoundError:
                pass
        self.path = path
        self._local = threading.local()
        self._migrate()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=10000")
            self._local.db = db
        return db

    def _migrate(self) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(schema.MIGRATIONS[1][1])
            current = db.execute(schema.GET_VERSION).fetchone()[0] or 0
            for version in range(current + 1, schema.SCHEMA_VERSION + 1):
                for statement in schema.MIGRATIONS[version]:
                    db.execute(statement)
                db.execute(schema.SET_VERSION, (version,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get(self, name: str) -> Account | None:
        row = self._db().execute(schema.SELECT_USER, (name,)).fetchone()
        return _account(row) if row else None

    def add(self, account: Account) -> None:
        try:
            self._db().execute(
                schema.INSERT_USER,
                (account.name, account.password_hash, account.quota_bytes, account.max_files, account.read_only),
            )
        except sqlite3.IntegrityError:
            raise Exists(f"user {account.name!r} already exists") from None

    def update(self, name: str, **fields) -> Account:
        unknown = set(fields) - set(schema.COLUMNS[1:])
        if unknown:
            raise TypeError(f"unknown account fields: {sorted(unknown)}")
        if fields:
            assignments = ", ".join(f"{column} = ?" for column in fields)
            cursor = self._db().execute(schema.UPDATE_USER.format(assignments=assignments), (*fields.values(), name))
            if cursor.rowcount == 0:
                raise NotFound(f"no such user: {name!r}")
        account = self.get(name)
        if account is None:
            raise NotFound(f"no such user: {name!r}")
        return account

    def delete(self, name: str) -> None:
        if self._db().execute(schema.DELETE_USER, (name,)).rowcount == 0:
            raise NotFound(f"no such user: {name!r}")

    def list(self) -> list[Account]:
        return [_account(row) for row in self._db().execute(schema.SELECT_USERS)]

    def count(self) -> int:
        return self._db().execute(schema.COUNT_USERS).fetchone()[0]

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _account(row) -> Account:
    name, password_hash, quota_bytes, max_files, read_only = row
    return Account(name, password_hash, quota_bytes, max_files, bool(read_only))


__all__ = ["SqliteUserStore"]
