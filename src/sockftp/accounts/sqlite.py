"""Accounts in a SQLite database file (``ROOT/.sockftp/users.db`` by default).

Connections come from a small pool shared by every thread: at most
``POOL_SIZE`` are ever open, each is opened at its first use, and a thread
holds one only for the length of one query or transaction. So a session
that has logged in and sits idle holds no connection (each costs about
100 KB and two file descriptors), and ten thousand sessions cost the same
few connections as one. WAL mode lets the admin command line change
accounts while a server reads them.

Usage changes (:meth:`SqliteUserStore.add_usage`, one or two per upload
and delete) go through one connection of the pool kept for them, one at a
time, with ``synchronous=NORMAL``: a write then costs about 30 us instead
of the 400 us of an fsync (this VM's disk), and the server's own writers
never queue in SQLite's busy handler, which sleeps milliseconds at a time.
Such a write survives the server process being killed; a power cut can
undo the last ones (as it can undo the last uploads unless ``fsync`` is
on): ``sockftp user rescan --all`` after one. Every other write keeps
SQLite's full durability.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple

from ..protocol.errors import Exists, NotFound, WouldBlock
from . import schema
from .base import Account, QuotaState, ShareRecord, StoredUsage, StoreError, TokenRecord, UserStore
from .multipart import MultipartRecords
from .tus_records import TusRecords

#: Connections open at most; a thread that finds all in use waits. A query
#: takes microseconds, but under load the thread holding a connection waits
#: for the GIL between its steps, behind every busy session: with 4, the
#: soak's 500 sessions held 141 token logins waiting here and reconnects
#: took up to 50 s; with 32, at most 4.3 s (anonymous ones: 3.3 s). Each
#: costs about 100 KB and two descriptors, and is opened only when needed.
POOL_SIZE = 32


class SqliteUserStore(MultipartRecords, TusRecords, UserStore):
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
        # The pool: POOL_SIZE slots, each None until its connection is first
        # opened. A SimpleQueue takes no Python-level lock: with a semaphore,
        # a thread that held it while waiting for the GIL held up every other
        # login (the soak's 500 clients: reconnects by token took seconds).
        self._pool: queue.SimpleQueue[sqlite3.Connection | None] = queue.SimpleQueue()
        for _ in range(POOL_SIZE):
            self._pool.put(None)
        # The pool's connection kept for usage changes (see the module's
        # docstring), taken at the first one; its lock keeps them in turn.
        self._usage_lock = threading.Lock()
        self._usage_db: sqlite3.Connection | None = None
        self._migrate()

    # -- connections -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        # check_same_thread=False: a pooled connection serves one thread at
        # a time, but not always the same one.
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of the pool, for one query or transaction."""
        db = self._pool.get()
        if db is None:
            try:
                db = self._open()
            except BaseException:
                self._pool.put(None)
                raise
        with self._lent(db):
            yield db

    @contextmanager
    def _idle_connection(self) -> Iterator[sqlite3.Connection]:
        """A connection of the pool that is free and open right now, or
        WouldBlock. In WAL mode a read does not wait for writers."""
        db, unopened = None, []
        try:
            for _ in range(POOL_SIZE):  # the pool is first in, first out: look past unopened slots
                slot = self._pool.get_nowait()
                if slot is not None:
                    db = slot
                    break
                unopened.append(slot)
        except queue.Empty:
            pass
        finally:
            for slot in unopened:
                self._pool.put(slot)
        if db is None:
            raise WouldBlock  # all in use, or opening one would read the disk
        with self._lent(db):
            yield db

    @contextmanager
    def _lent(self, db: sqlite3.Connection) -> Iterator[None]:
        """*db*, taken from the pool, back into it after use, rolled back if
        a transaction was left open, with SQLite's failures as StoreError."""
        try:
            yield
        except sqlite3.OperationalError as exc:  # disk full, locked, I/O: not our bug
            raise StoreError(f"account database {self.path}: {exc}") from exc
        finally:
            if db.in_transaction:  # an exception inside _transaction's body
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolled back itself (as it does on a full disk)
            self._pool.put(db)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside a write transaction, committed at the end
        (rolled back on an exception)."""
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")

    def _query(self, sql: str, params: tuple = ()) -> list:
        with self._connection() as db:
            return db.execute(sql, params).fetchall()

    def _change(self, sql: str, params: tuple = ()) -> int:
        """Run one statement that writes; the number of rows it changed."""
        with self._connection() as db:
            return db.execute(sql, params).rowcount

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute(schema.MIGRATIONS[1][1])
            current = db.execute(schema.GET_VERSION).fetchone()[0] or 0
            for version in range(current + 1, schema.SCHEMA_VERSION + 1):
                for statement in schema.MIGRATIONS[version]:
                    db.execute(statement)
                db.execute(schema.SET_VERSION, (version,))

    # -- accounts ----------------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        rows = self._query(schema.SELECT_USER, (name,))
        return _account(rows[0]) if rows else None

    def add(self, account: Account) -> None:
        try:
            self._change(
                schema.INSERT_USER,
                (
                    account.name,
                    account.password_hash,
                    account.quota_bytes,
                    account.max_files,
                    account.read_only,
                    account.disabled,
                ),
            )
        except sqlite3.IntegrityError:
            raise Exists(f"user {account.name!r} already exists") from None

    def update(self, name: str, *, keep_tokens: bool = False, **fields) -> Account:
        unknown = set(fields) - set(schema.COLUMNS[1:])
        if unknown:
            raise TypeError(f"unknown account fields: {sorted(unknown)}")
        revoke = not keep_tokens and ("password_hash" in fields or fields.get("disabled"))
        if fields:
            assignments = ", ".join(f"{column} = ?" for column in fields)
            with self._transaction() as db:
                cursor = db.execute(schema.UPDATE_USER.format(assignments=assignments), (*fields.values(), name))
                if cursor.rowcount == 0:
                    raise NotFound(f"no such user: {name!r}")
                if revoke:
                    db.execute(schema.DELETE_USER_TOKENS, (name,))
        account = self.get(name)
        if account is None:
            raise NotFound(f"no such user: {name!r}")
        return account

    def delete(self, name: str) -> None:
        with self._transaction() as db:
            if db.execute(schema.DELETE_USER, (name,)).rowcount == 0:
                raise NotFound(f"no such user: {name!r}")
            db.execute(schema.DELETE_USER_TOKENS, (name,))
            db.execute(schema.DELETE_USER_LEASES, {"name": name})
            db.execute(schema.DELETE_USER_SHARES, (name,))

    def list(self) -> list[Account]:
        return [_account(row) for row in self._query(schema.SELECT_USERS)]

    def count(self) -> int:
        return self._query(schema.COUNT_USERS)[0][0]

    # -- usage -------------------------------------------------------------------------

    def usage(self, name: str) -> StoredUsage | None:
        rows = self._query(schema.SELECT_USAGE, (name,))
        return StoredUsage(*rows[0]) if rows else None

    def set_usage(self, name, used_bytes, used_files, *, version=None) -> bool:
        params = {"name": name, "bytes": used_bytes, "files": used_files, "version": version}
        with self._usage_transaction() as db:
            statement = schema.SET_USAGE if version is None else schema.SET_MEASURE
            if db.execute(statement, params).rowcount == 0:
                return False
            db.execute(schema.DROP_TOMBSTONES, params)
        return True

    def add_usage(
        self, name, bytes_delta, files_delta, changes_delta, op: str | None = None, done: Sequence[str] = ()
    ) -> None:
        row = (bytes_delta, files_delta, changes_delta, changes_delta, name)
        if op is not None:
            # A local write either lands or raises with nothing changed, but
            # the contract is the one a store over a network needs (see
            # UserStore.add_usage), and it costs one more row write.
            with self._usage_transaction() as db:
                db.executemany(schema.DELETE_USAGE_OP, [{"op": done_op} for done_op in done])
                if db.execute(schema.INSERT_USAGE_OP, {"op": op, "now": time.time()}).rowcount:
                    db.execute(schema.ADD_USAGE, row)
            return
        with self._usage_lock:
            try:
                if self._usage_db is None:
                    self._usage_db = self._usage_connection()
                self._usage_db.execute(schema.ADD_USAGE, row)
            except sqlite3.Error as exc:  # disk full, locked, I/O, refused: never the upload's failure
                raise StoreError(f"account database {self.path}: {exc}") from exc

    @contextmanager
    def _usage_transaction(self) -> Iterator[sqlite3.Connection]:
        """The usage connection (see the module's docstring) inside a write
        transaction: reservations and their ends are usage changes too, one
        or two per upload, and must not cost an fsync each."""
        with self._usage_lock:
            try:
                if self._usage_db is None:
                    self._usage_db = self._usage_connection()
                db = self._usage_db
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._usage_db is not None and self._usage_db.in_transaction:
                    try:
                        self._usage_db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise StoreError(f"account database {self.path}: {exc}") from exc

    # -- reservations ------------------------------------------------------------------

    def reserve(self, name, lease_id, node, size, files, replaces, expires) -> QuotaState | None:
        params = {"name": name, "id": lease_id, "node": node, "bytes": size, "files": files}
        with self._usage_transaction() as db:
            if db.execute(schema.RESERVE, {**params, "replaces": replaces}).rowcount == 0:
                return None
            db.execute(schema.INSERT_LEASE, {**params, "expires": expires})
            return QuotaState(*db.execute(schema.SELECT_QUOTA_STATE, {"name": name}).fetchone())

    def grow(self, name, lease_id, size, replaces) -> bool:
        params = {"name": name, "id": lease_id, "bytes": size, "replaces": replaces}
        with self._usage_transaction() as db:
            if db.execute(schema.GROW, params).rowcount == 0:
                return False
            db.execute(schema.GROW_LEASE, params)
            return True

    def finish(self, name, lease_id, bytes_delta, files_delta) -> bool | None:
        with self._usage_transaction() as db:
            held = db.execute(schema.SELECT_LEASE, {"id": lease_id}).fetchone()
            if held is None:
                return None  # ended already (see schema.FINISH)
            size, files, reaped = held
            db.execute(schema.DELETE_LEASE, {"id": lease_id})
            params = {"name": name, "bytes": bytes_delta, "files": files_delta, "cut": 1 if reaped else 0}
            lease = {"lease_bytes": 0, "lease_files": 0} if reaped else {"lease_bytes": size, "lease_files": files}
            db.execute(schema.FINISH, {**params, **lease})
            return not reaped

    def renew(self, lease_ids, expires) -> set[str]:
        live = set()
        if lease_ids:
            with self._usage_transaction() as db:
                for lease_id in lease_ids:
                    if db.execute(schema.RENEW_LEASE, {"id": lease_id, "expires": expires}).rowcount:
                        live.add(lease_id)
        return live

    def reap(self, now) -> list[tuple[str, int, int]]:
        return self._give_back(now, schema.SELECT_EXPIRED_LEASES, [{"now": now}])

    def lease_nodes(self) -> set[str]:
        return {row[0] for row in self._query(schema.SELECT_LEASE_NODES)}

    def reap_nodes(self, nodes, now) -> list[tuple[str, int, int]]:
        return self._give_back(now, schema.SELECT_NODE_LEASES, [{"node": node} for node in nodes])

    def _give_back(self, now, select: str, selections: list[dict]) -> list[tuple[str, int, int]]:
        """Make the leases *select* finds tombstones (see schema.RELEASE_EXPIRED)."""
        given = []
        with self._usage_transaction() as db:
            for selection in selections:
                for lease_id, name, size, files in db.execute(select, selection).fetchall():
                    db.execute(schema.MARK_REAPED, {"id": lease_id})
                    db.execute(schema.RELEASE_EXPIRED, {"name": name, "bytes": size, "files": files})
                    given.append((name, size, files))
            forget = {"forget": now - schema.FORGET_AFTER}
            db.execute(schema.FORGET_TOMBSTONES, forget)
            db.execute(schema.FORGET_USAGE_OPS, forget)
        return given

    def quota_state(self, name) -> QuotaState | None:
        rows = self._query(schema.SELECT_QUOTA_STATE, {"name": name})
        return QuotaState(*rows[0]) if rows else None

    def _usage_connection(self) -> sqlite3.Connection:
        """A connection of the pool, kept out of it for usage changes (so the
        pool's bound holds), with writes that skip the fsync."""
        db = self._pool.get()
        try:
            if db is None:
                db = self._open()
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            if db is not None:
                db.close()
            self._pool.put(None)
            raise
        return db

    # -- failed logins and bans ---------------------------------------------------------

    def login_failed(self, address, now, window, failures, ban_time) -> float | None:
        params = {"address": address, "now": now, "cutoff": now - window}
        with self._transaction() as db:
            count = db.execute(schema.COUNT_FAILURE, params).fetchone()[0]
            if count < failures:
                return None
            db.execute(schema.BAN, {**params, "until": now + ban_time})
        return now + ban_time

    def login_succeeded(self, address, now) -> None:
        self._change(schema.CLEAR_FAILURES, {"address": address, "now": now})

    def bans(self, now, window) -> dict[str, float]:
        with self._transaction() as db:
            db.execute(schema.DELETE_OLD_BANS, {"now": now, "cutoff": now - window})
            return dict(db.execute(schema.SELECT_BANS, {"now": now}).fetchall())

    # -- tokens ------------------------------------------------------------------------

    def add_token(self, name: str, token_hash: str, created: float, expires: float, keep: int) -> None:
        with self._transaction() as db:
            db.execute(schema.INSERT_TOKEN, (token_hash, name, created, expires))
            db.execute(schema.DELETE_OLDEST_TOKENS, (name, token_hash, name, token_hash, max(keep - 1, 0)))
            db.execute(schema.DELETE_EXPIRED_TOKENS, (created,))

    def token_account(self, token_hash: str, now: float) -> tuple[Account, TokenRecord] | None:
        return _token_row(self._query(schema.SELECT_TOKEN_ACCOUNT, (token_hash, now)), token_hash)

    def token_account_now(self, token_hash: str, now: float) -> tuple[Account, TokenRecord] | None:
        with self._idle_connection() as db:
            return _token_row(db.execute(schema.SELECT_TOKEN_ACCOUNT, (token_hash, now)).fetchall(), token_hash)

    def touch_token(self, token_hash: str, now: float) -> None:
        self._change(schema.TOUCH_TOKEN, (now, token_hash))

    def tokens(self, name: str, now: float) -> list[TokenRecord]:
        return [TokenRecord(*row) for row in self._query(schema.SELECT_USER_TOKENS, (name, now))]

    def revoke_tokens(self, name: str, token_hash: str | None = None) -> int:
        if token_hash is None:
            return self._change(schema.DELETE_USER_TOKENS, (name,))
        return self._change(schema.DELETE_USER_TOKEN, (name, token_hash))

    # -- share links -------------------------------------------------------------------

    def add_share(self, share: ShareRecord) -> None:
        with self._transaction() as db:
            # The record's fields are in the table's column order.
            db.execute(schema.INSERT_SHARE, astuple(share))
            db.execute(schema.DELETE_EXPIRED_SHARES, (share.created,))

    def share(self, token_hash: str, now: float) -> ShareRecord | None:
        rows = self._query(schema.SELECT_SHARE, (token_hash, now))
        return ShareRecord(*rows[0]) if rows else None

    def shares(self, owner: str, now: float) -> list[ShareRecord]:
        return [ShareRecord(*row) for row in self._query(schema.SELECT_USER_SHARES, (owner, now))]

    def revoke_share(self, owner: str, share_id: str) -> bool:
        return self._change(schema.DELETE_USER_SHARE, (owner, share_id)) > 0

    def close(self) -> None:
        """Close the connections not in use (the store opens new ones if it
        is used again)."""
        with self._usage_lock:
            if self._usage_db is not None:
                self._usage_db.close()
                self._usage_db = None
                self._pool.put(None)  # its slot, back in the pool, unopened
        idle = []
        while True:
            try:
                idle.append(self._pool.get_nowait())
            except queue.Empty:
                break
        for db in idle:
            if db is not None:
                db.close()
            self._pool.put(None)


def _token_row(rows: list, token_hash: str) -> tuple[Account, TokenRecord] | None:
    if not rows:
        return None
    *account, created, expires, last_used = rows[0]
    return _account(account), TokenRecord(token_hash, created, expires, last_used)


def _account(row) -> Account:
    name, password_hash, quota_bytes, max_files, read_only, disabled = row
    return Account(name, password_hash, quota_bytes, max_files, bool(read_only), bool(disabled))


__all__ = ["POOL_SIZE", "SqliteUserStore"]
