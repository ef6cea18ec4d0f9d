"""The SQL of the PostgreSQL account store (:mod:`sockftp.accounts.postgres`).

The statements both databases share are written once, in
:mod:`sockftp.accounts.schema`, with ``?`` parameters; this module gives
them psycopg's ``%s``. The tables are created here in PostgreSQL's own
types, by the migrations below: the SQLite store's history (columns added
one release at a time) is no concern of a database created new.

Migrations run at every start, inside one transaction that first takes a
transaction-level advisory lock, so two nodes starting at once on an empty
database do not both create the tables (a transaction-level lock ends with
its transaction, so it never sticks to a pooled connection). Bump
``SCHEMA_VERSION`` and add a step to ``MIGRATIONS`` for any change.
"""

import re

from . import schema as _shared

SCHEMA_VERSION = 4

#: Any constant of our own: the key of the advisory lock migrations hold.
MIGRATION_LOCK = 0x50C4F7


def pg(sql: str) -> str:
    """*sql* from :mod:`schema` with psycopg's placeholders (``?`` and
    ``:name``). None of those statements holds a literal ``?``, ``%`` or
    ``::``."""
    assert "%" not in sql and "::" not in sql
    return re.sub(r":([a-z_]+)", r"%(\1)s", sql.replace("?", "%s"))


MIGRATIONS = {
    1: [
        """CREATE TABLE IF NOT EXISTS users (
            name          TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            quota_bytes   BIGINT,
            max_files     BIGINT,
            read_only     BOOLEAN NOT NULL DEFAULT FALSE,
            disabled      BOOLEAN NOT NULL DEFAULT FALSE,
            created       TIMESTAMPTZ NOT NULL DEFAULT now(),
            used_bytes    BIGINT,
            used_files    BIGINT,
            usage_changes INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS tokens (
            token_hash TEXT PRIMARY KEY,
            user_name  TEXT NOT NULL,
            created    DOUBLE PRECISION NOT NULL,
            expires    DOUBLE PRECISION NOT NULL,
            last_used  DOUBLE PRECISION
        )""",
        "CREATE INDEX IF NOT EXISTS tokens_by_user ON tokens (user_name, created)",
        "CREATE INDEX IF NOT EXISTS tokens_by_expiry ON tokens (expires)",
    ],
    2: [
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS reserved_bytes BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS reserved_files BIGINT NOT NULL DEFAULT 0",
        _shared.LEASES_TABLE,
        _shared.LEASES_INDEX,
    ],
    3: [_shared.BANS_TABLE],
    # Multipart uploads of S3 storage. (Renumber at merge if another step took 4.)
    4: [_shared.MULTIPART_UPLOADS_TABLE, _shared.MULTIPART_PARTS_TABLE],
}

CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%s)"
GET_VERSION = _shared.GET_VERSION
SET_VERSION = pg(_shared.SET_VERSION)

SELECT_USER = pg(_shared.SELECT_USER)
SELECT_USERS = _shared.SELECT_USERS
COUNT_USERS = _shared.COUNT_USERS
INSERT_USER = pg(_shared.INSERT_USER)
DELETE_USER = pg(_shared.DELETE_USER)
COLUMNS = _shared.COLUMNS


def update_user(columns) -> str:
    """The UPDATE of *columns* (names from COLUMNS only, never from input)."""
    return pg(_shared.UPDATE_USER.format(assignments=", ".join(f"{column} = ?" for column in columns)))


SELECT_USAGE = pg(_shared.SELECT_USAGE)
SET_USAGE = pg(_shared.SET_USAGE)
ADD_USAGE = pg(_shared.ADD_USAGE)

INSERT_TOKEN = pg(_shared.INSERT_TOKEN)
DELETE_OLDEST_TOKENS = pg(_shared.DELETE_OLDEST_TOKENS)
DELETE_EXPIRED_TOKENS = pg(_shared.DELETE_EXPIRED_TOKENS)
SELECT_TOKEN_ACCOUNT = pg(_shared.SELECT_TOKEN_ACCOUNT)
TOUCH_TOKEN = pg(_shared.TOUCH_TOKEN)
SELECT_USER_TOKENS = pg(_shared.SELECT_USER_TOKENS)
DELETE_USER_TOKENS = pg(_shared.DELETE_USER_TOKENS)
DELETE_USER_TOKEN = pg(_shared.DELETE_USER_TOKEN)
DELETE_USER_LEASES = pg(_shared.DELETE_USER_LEASES)

# -- reservations: each one statement, so one round trip --------------------------------
# PostgreSQL runs a statement's data-modifying CTEs and its main part in
# one transaction, on one snapshot.

_STATE = "used_bytes, used_files, reserved_bytes, reserved_files, quota_bytes, max_files"

#: The conditional UPDATE and, only if it changed the row, the lease.
RESERVE = f"""WITH u AS ({pg(_shared.RESERVE)} RETURNING {_STATE}),
    l AS (INSERT INTO leases (id, user_name, node, bytes, files, expires)
        SELECT %(id)s, %(name)s, %(node)s, %(bytes)s, %(files)s, %(expires)s FROM u)
    SELECT {_STATE} FROM u"""
GROW = f"""WITH u AS ({pg(_shared.GROW)} RETURNING 1),
    l AS (UPDATE leases SET bytes = bytes + %(bytes)s WHERE id = %(id)s AND EXISTS (SELECT 1 FROM u))
    SELECT COUNT(*) FROM u"""
#: The lease's DELETE tells the UPDATE what it held; no lease, no UPDATE.
FINISH = "WITH l AS (DELETE FROM leases WHERE id = %(id)s RETURNING bytes, files) " + pg(
    _shared.FINISH.replace(":lease_bytes", "l.bytes")
    .replace(":lease_files", "l.files")
    .replace("WHERE name = :name", "FROM l WHERE users.name = :name")
    .replace("SET reserved_bytes = reserved_bytes", "SET reserved_bytes = users.reserved_bytes")
    .replace("reserved_files = reserved_files", "reserved_files = users.reserved_files")
)
RENEW = "UPDATE leases SET expires = %(expires)s WHERE id = ANY(%(ids)s)"
REAP = """WITH l AS (DELETE FROM leases WHERE expires < %(now)s RETURNING user_name, bytes, files),
    s AS (SELECT user_name, SUM(bytes) AS bytes, SUM(files) AS files FROM l GROUP BY user_name),
    u AS (UPDATE users SET reserved_bytes = users.reserved_bytes - s.bytes,
            reserved_files = users.reserved_files - s.files
        FROM s WHERE users.name = s.user_name)
    SELECT user_name, bytes, files FROM l"""
SELECT_QUOTA_STATE = pg(_shared.SELECT_QUOTA_STATE)

COUNT_FAILURE = pg(_shared.COUNT_FAILURE)
BAN = pg(_shared.BAN)
CLEAR_FAILURES = pg(_shared.CLEAR_FAILURES)
SELECT_BANS = pg(_shared.SELECT_BANS)
DELETE_OLD_BANS = pg(_shared.DELETE_OLD_BANS)
