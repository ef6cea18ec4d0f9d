"""Accounts in PostgreSQL, shared by every server (node) that points at the
same database: ``--db postgresql://...``.

One :class:`psycopg_pool.ConnectionPool` per store (so per process),
bounded by ``POOL_SIZE``, each connection checked before it is lent, and
lent for one query or transaction, never for a transfer: ten thousand idle
sessions cost the few connections of the pool. Connections are in
autocommit mode, so a single statement is one round trip; a transaction is
opened only where several statements must land together.

psycopg 3 and psycopg_pool are an optional extra (``pip install
'sockftp[postgres]'``): this module imports them, and nothing imports this
module unless a PostgreSQL URL is given, so the embedded SQLite default
needs neither.

Every failure to reach or use the database is a :class:`StoreError`, with
the URL's password left out of the message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple
from urllib.parse import urlsplit, urlunsplit

try:
    import psycopg
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "a postgresql:// account store needs psycopg 3 and psycopg_pool: pip install 'sockftp[postgres]'"
    ) from exc

from ..protocol.errors import Exists, NotFound
from . import pg_schema as sql
from .base import Account, AccountListener, QuotaState, ShareRecord, StoredUsage, StoreError, TokenRecord, UserStore
from .multipart import MultipartRecords
from .tus_records import TusRecords

#: Connections open at most per process. Queries take well under a
#: millisecond on a LAN; a thread that finds all in use waits up to
#: POOL_TIMEOUT. PostgreSQL's own default max_connections is 100, which a
#: few nodes with this many each leave room in.
POOL_SIZE = 16
#: Seconds a thread waits for a connection (or the database) before the
#: operation fails with a StoreError.
POOL_TIMEOUT = 10.0


def redact(url: str) -> str:
    """*url* without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "the PostgreSQL database"


class PostgresUserStore(MultipartRecords, TusRecords, UserStore):
    shared = True

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE, timeout: float = POOL_TIMEOUT):
        self.url = url
        self.where = redact(url)
        #: Round trips to the database so far (a statement each; a
        #: transaction adds its BEGIN and COMMIT): what bench/ and the
        #: tests count per upload.
        self.round_trips = 0
        self._counting = threading.Lock()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            open=False,
            check=ConnectionPool.check_connection,
            kwargs={"autocommit": True},
            name="sockftp-accounts",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._migrate()
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"account database {self.where}: cannot connect within {timeout:.0f} s") from exc
        except BaseException:
            self._pool.close()
            raise

    def _sql(self, statement: str) -> str:
        """A statement of accounts/schema.py in psycopg's placeholders."""
        return sql.pg(statement)

    # -- connections -------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A connection of the pool for one query, with the database's
        failures (unreachable, restarted, timed out) as StoreError."""
        with self._counting:
            self.round_trips += 1
        try:
            with self._pool.connection() as db:
                yield db
        except PoolTimeout as exc:
            raise StoreError(f"account database {self.where}: no connection within the timeout") from exc
        except psycopg.OperationalError as exc:
            raise StoreError(f"account database {self.where}: {exc}".strip()) from exc

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with self._counting:
            self.round_trips += 2  # BEGIN and COMMIT
        with self._connection() as db, db.transaction():
            yield db

    def _query(self, statement: str, params: tuple = ()) -> list:
        with self._connection() as db:
            return db.execute(statement, params).fetchall()

    def _change(self, statement: str, params: tuple = ()) -> int:
        with self._connection() as db:
            return db.execute(statement, params).rowcount

    def _migrate(self) -> None:
        with self._transaction() as db:
            db.execute(sql.LOCK_MIGRATIONS, (sql.MIGRATION_LOCK,))
            db.execute(sql.CREATE_VERSION_TABLE)
            current = db.execute(sql.GET_VERSION).fetchone()[0] or 0
            for version in range(current + 1, sql.SCHEMA_VERSION + 1):
                for statement in sql.MIGRATIONS[version]:
                    db.execute(statement)
                db.execute(sql.SET_VERSION, (version,))

    # -- accounts ----------------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        if not _storable(name):
            return None  # PostgreSQL text cannot hold it, so no account has it
        rows = self._query(sql.SELECT_USER, (name,))
        return _account(rows[0]) if rows else None

    def add(self, account: Account) -> None:
        row = (
            account.name,
            account.password_hash,
            account.quota_bytes,
            account.max_files,
            account.read_only,
            account.disabled,
        )
        try:
            self._change(sql.INSERT_USER, row)
        except psycopg.errors.UniqueViolation:
            raise Exists(f"user {account.name!r} already exists") from None

    def update(self, name: str, *, keep_tokens: bool = False, **fields) -> Account:
        unknown = set(fields) - set(sql.COLUMNS[1:])
        if unknown:
            raise TypeError(f"unknown account fields: {sorted(unknown)}")
        revoke = not keep_tokens and ("password_hash" in fields or fields.get("disabled"))
        if fields:
            with self._transaction() as db:
                if db.execute(sql.update_user(fields), (*fields.values(), name)).rowcount == 0:
                    raise NotFound(f"no such user: {name!r}")
                if revoke:
                    db.execute(sql.DELETE_USER_TOKENS, (name,))
        account = self.get(name)
        if account is None:
            raise NotFound(f"no such user: {name!r}")
        return account

    def delete(self, name: str) -> None:
        with self._transaction() as db:
            if db.execute(sql.DELETE_USER, (name,)).rowcount == 0:
                raise NotFound(f"no such user: {name!r}")
            db.execute(sql.DELETE_USER_TOKENS, (name,))
            db.execute(sql.DELETE_USER_LEASES, {"name": name})
            db.execute(sql.DELETE_USER_SHARES, (name,))

    def list(self) -> list[Account]:
        return [_account(row) for row in self._query(sql.SELECT_USERS)]

    def count(self) -> int:
        return self._query(sql.COUNT_USERS)[0][0]

    # -- usage -------------------------------------------------------------------------

    def usage(self, name: str) -> StoredUsage | None:
        rows = self._query(sql.SELECT_USAGE, (name,))
        return StoredUsage(*rows[0]) if rows else None

    def set_usage(self, name, used_bytes, used_files, *, version=None) -> bool:
        params = {"name": name, "bytes": used_bytes, "files": used_files, "version": version}
        if version is not None:
            return self._query(sql.SET_MEASURE, params)[0][0] > 0
        with self._transaction() as db:
            if db.execute(sql.SET_USAGE, params).rowcount == 0:
                return False
            db.execute(sql.DROP_TOMBSTONES, params)
        return True

    def add_usage(
        self, name, bytes_delta, files_delta, changes_delta, op: str | None = None, done: Sequence[str] = ()
    ) -> None:
        if op is None:
            self._change(sql.ADD_USAGE, (bytes_delta, files_delta, changes_delta, changes_delta, name))
            return
        params = {
            "name": name,
            "bytes": bytes_delta,
            "files": files_delta,
            "changes": changes_delta,
            "op": op,
            "done": list(done),
            "now": time.time(),
        }
        self._change(sql.ADD_USAGE_ONCE, params)

    # -- reservations: one statement each ------------------------------------------------

    def reserve(self, name, lease_id, node, size, files, replaces, expires) -> QuotaState | None:
        params = {
            "name": name,
            "id": lease_id,
            "node": node,
            "bytes": size,
            "files": files,
            "replaces": replaces,
            "changes": 1,
            "expires": expires,
        }
        rows = self._query(sql.RESERVE, params)
        return QuotaState(*rows[0]) if rows else None

    def grow(self, name, lease_id, size, replaces) -> bool:
        rows = self._query(sql.GROW, {"name": name, "id": lease_id, "bytes": size, "replaces": replaces})
        return rows[0][0] > 0

    def finish(self, name, lease_id, bytes_delta, files_delta) -> bool | None:
        rows = self._query(sql.FINISH, {"name": name, "id": lease_id, "bytes": bytes_delta, "files": files_delta})
        return (not rows[0][0]) if rows else None

    def renew(self, lease_ids, expires) -> set[str]:
        if not lease_ids:
            return set()
        return {row[0] for row in self._query(sql.RENEW, {"ids": list(lease_ids), "expires": expires})}

    def reap(self, now) -> list[tuple[str, int, int]]:
        params = {"now": now, "forget": now - sql.FORGET_AFTER}
        return [(name, int(size), int(files)) for name, size, files in self._query(sql.REAP, params)]

    def lease_nodes(self) -> set[str]:
        return {row[0] for row in self._query(sql.SELECT_LEASE_NODES)}

    def reap_nodes(self, nodes, now) -> list[tuple[str, int, int]]:
        params = {"nodes": list(nodes), "forget": now - sql.FORGET_AFTER}
        return [(name, int(size), int(files)) for name, size, files in self._query(sql.REAP_NODES, params)]

    def quota_state(self, name) -> QuotaState | None:
        rows = self._query(sql.SELECT_QUOTA_STATE, {"name": name})
        return QuotaState(*rows[0]) if rows else None

    # -- failed logins and bans ---------------------------------------------------------

    def login_failed(self, address, now, window, failures, ban_time) -> float | None:
        params = {"address": address, "now": now, "cutoff": now - window}
        with self._transaction() as db:
            count = db.execute(sql.COUNT_FAILURE, params).fetchone()[0]
            if count < failures:
                return None
            db.execute(sql.BAN, {**params, "until": now + ban_time})
        return now + ban_time

    def login_succeeded(self, address, now) -> None:
        self._change(sql.CLEAR_FAILURES, {"address": address, "now": now})

    def bans(self, now, window) -> dict[str, float]:
        with self._transaction() as db:
            db.execute(sql.DELETE_OLD_BANS, {"now": now, "cutoff": now - window})
            return dict(db.execute(sql.SELECT_BANS, {"now": now}).fetchall())

    # -- tokens ------------------------------------------------------------------------

    def add_token(self, name: str, token_hash: str, created: float, expires: float, keep: int) -> None:
        with self._transaction() as db:
            db.execute(sql.INSERT_TOKEN, (token_hash, name, created, expires))
            db.execute(sql.DELETE_OLDEST_TOKENS, (name, token_hash, name, token_hash, max(keep - 1, 0)))
            db.execute(sql.DELETE_EXPIRED_TOKENS, (created,))

    def token_account(self, token_hash: str, now: float) -> tuple[Account, TokenRecord] | None:
        rows = self._query(sql.SELECT_TOKEN_ACCOUNT, (token_hash, now))
        if not rows:
            return None
        *account, created, expires, last_used = rows[0]
        return _account(account), TokenRecord(token_hash, created, expires, last_used)

    # token_account_now keeps the interface's default (WouldBlock): a query
    # over the network is not for the server's parking-lot thread.

    def touch_token(self, token_hash: str, now: float) -> None:
        self._change(sql.TOUCH_TOKEN, (now, token_hash))

    def tokens(self, name: str, now: float) -> list[TokenRecord]:
        return [TokenRecord(*row) for row in self._query(sql.SELECT_USER_TOKENS, (name, now))]

    def revoke_tokens(self, name: str, token_hash: str | None = None) -> int:
        if token_hash is None:
            return self._change(sql.DELETE_USER_TOKENS, (name,))
        return self._change(sql.DELETE_USER_TOKEN, (name, token_hash))

    # -- share links -------------------------------------------------------------------

    def add_share(self, share: ShareRecord) -> None:
        with self._transaction() as db:
            # The record's fields are in the table's column order.
            db.execute(sql.INSERT_SHARE, astuple(share))
            db.execute(sql.DELETE_EXPIRED_SHARES, (share.created,))

    def share(self, token_hash: str, now: float) -> ShareRecord | None:
        rows = self._query(sql.SELECT_SHARE, (token_hash, now))
        return ShareRecord(*rows[0]) if rows else None

    def shares(self, owner: str, now: float) -> list[ShareRecord]:
        return [ShareRecord(*row) for row in self._query(sql.SELECT_USER_SHARES, (owner, now))]

    def revoke_share(self, owner: str, share_id: str) -> bool:
        return self._change(sql.DELETE_USER_SHARE, (owner, share_id)) > 0

    def listen(self) -> PostgresListener:
        return PostgresListener(self.url, self.where)

    def close(self) -> None:
        self._pool.close()


class PostgresListener(AccountListener):
    """LISTEN on a connection of its own, outside the pool (a listening
    connection is held for as long as the server runs: one per node)."""

    def __init__(self, url: str, where: str):
        self.url = url
        self.where = where
        self._db: psycopg.Connection | None = None

    def wait(self, timeout: float) -> bool:
        try:
            if self._db is None or self._db.closed:
                self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(POOL_TIMEOUT)))
                self._db.execute(sql.LISTEN)
                return True  # changes made while nobody listened are not notified again
            return any(True for _ in self._db.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"account database {self.where}: {exc}".strip()) from exc

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except psycopg.Error:
                pass


def _storable(text) -> bool:
    """PostgreSQL's text refuses NUL; a name from the wire may hold one."""
    return isinstance(text, str) and "\x00" not in text


def _account(row) -> Account:
    name, password_hash, quota_bytes, max_files, read_only, disabled = row
    return Account(name, password_hash, quota_bytes, max_files, bool(read_only), bool(disabled))


__all__ = ["POOL_SIZE", "PostgresListener", "PostgresUserStore", "redact"]
