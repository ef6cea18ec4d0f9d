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

SCHEMA_VERSION = 8

#: Any constant of our own: the key of the advisory lock migrations hold.
MIGRATION_LOCK = 0x50C4F7

#: The channel on which the database notifies account changes (the name).
CHANNEL = "sockftp_accounts"
LISTEN = f"LISTEN {CHANNEL}"


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
    4: [step.replace("ADD COLUMN", "ADD COLUMN IF NOT EXISTS") for step in _shared.FENCING_STEPS],
    # Account changes reach every node at once (sockftp.server.watch): a
    # notification on CHANNEL with the account's name, from the database
    # itself, whatever wrote the change. Only the columns an admin changes:
    # usage and reservations (every upload) notify nothing.
    5: [
        f"""CREATE OR REPLACE FUNCTION sockftp_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('{CHANNEL}', OLD.name);
            ELSE
                PERFORM pg_notify('{CHANNEL}', NEW.name);
            END IF;
            RETURN NULL;
        END $$""",
        "DROP TRIGGER IF EXISTS account_changed ON users",
        """CREATE TRIGGER account_changed
            AFTER UPDATE OF password_hash, quota_bytes, max_files, read_only, disabled OR DELETE ON users
            FOR EACH ROW EXECUTE PROCEDURE sockftp_account_changed()""",
    ],
    6: [_shared.SHARES_TABLE, _shared.SHARES_INDEX],
    # Multipart uploads of S3 storage.
    7: [_shared.MULTIPART_UPLOADS_TABLE, _shared.MULTIPART_PARTS_TABLE],
    # tus records shared by every node (they were files in ROOT/.sockftp/tus).
    8: [_shared.TUS_UPLOADS_TABLE],
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
#: The measure, stored only if nothing changed meanwhile; and the
#: tombstones it counted dropped, in the same statement.
SET_MEASURE = f"""WITH u AS ({pg(_shared.SET_MEASURE)} RETURNING 1),
    t AS (DELETE FROM leases WHERE user_name = %(name)s AND reaped AND EXISTS (SELECT 1 FROM u))
    SELECT COUNT(*) FROM u"""
DROP_TOMBSTONES = pg(_shared.DROP_TOMBSTONES)
ADD_USAGE = pg(_shared.ADD_USAGE)
#: ADD_USAGE under a write's id, in one statement: only if the id is new
#: (a retry of a write that landed finds it), dropping the ids the writer
#: knows have landed (*done*).
ADD_USAGE_ONCE = """WITH d AS (DELETE FROM usage_ops WHERE id = ANY(%(done)s)),
    op AS (INSERT INTO usage_ops (id, at) VALUES (%(op)s, %(now)s) ON CONFLICT DO NOTHING RETURNING id)
    UPDATE users SET used_bytes = used_bytes + %(bytes)s, used_files = used_files + %(files)s,
        usage_changes = CASE WHEN usage_changes + %(changes)s > 0 THEN usage_changes + %(changes)s ELSE 0 END,
        usage_version = usage_version + 1
    WHERE name = %(name)s AND EXISTS (SELECT 1 FROM op)"""

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
#: The lease's DELETE tells the UPDATE what it still reserves (nothing, if
#: it is a tombstone); no lease, no UPDATE. Returns whether it was one.
FINISH = """WITH l AS (DELETE FROM leases WHERE id = %(id)s RETURNING reaped,
        CASE WHEN reaped THEN 0 ELSE bytes END AS bytes, CASE WHEN reaped THEN 0 ELSE files END AS files,
        CASE WHEN reaped THEN 1 ELSE 0 END AS cut)
    UPDATE users SET reserved_bytes = users.reserved_bytes - l.bytes,
        reserved_files = users.reserved_files - l.files,
        used_bytes = users.used_bytes + %(bytes)s, used_files = users.used_files + %(files)s,
        usage_changes = CASE WHEN users.usage_changes - l.cut > 0 THEN users.usage_changes - l.cut ELSE 0 END,
        usage_version = users.usage_version + 1
    FROM l WHERE users.name = %(name)s RETURNING l.reaped"""
#: The ids of those leases still live: the others were given back.
RENEW = "UPDATE leases SET expires = %(expires)s WHERE id = ANY(%(ids)s) AND NOT reaped RETURNING id"
#: Expired leases become tombstones, their reservations go and their
#: changes count as cut off; tombstones and write ids past FORGET_AFTER go.
REAP = """WITH l AS (UPDATE leases SET reaped = TRUE WHERE expires < %(now)s AND NOT reaped
            RETURNING user_name, bytes, files),
    s AS (SELECT user_name, SUM(bytes) AS bytes, SUM(files) AS files, COUNT(*) AS n FROM l GROUP BY user_name),
    u AS (UPDATE users SET reserved_bytes = users.reserved_bytes - s.bytes,
            reserved_files = users.reserved_files - s.files, usage_changes = users.usage_changes + s.n
        FROM s WHERE users.name = s.user_name),
    t AS (DELETE FROM leases WHERE reaped AND expires < %(forget)s),
    o AS (DELETE FROM usage_ops WHERE at < %(forget)s)
    SELECT user_name, bytes, files FROM l"""
FORGET_AFTER = _shared.FORGET_AFTER
SELECT_LEASE_NODES = _shared.SELECT_LEASE_NODES
#: REAP, for the leases of dead nodes (*nodes*) whatever their expiry.
REAP_NODES = REAP.replace("expires < %(now)s AND NOT reaped", "node = ANY(%(nodes)s) AND NOT reaped")
SELECT_QUOTA_STATE = pg(_shared.SELECT_QUOTA_STATE)

COUNT_FAILURE = pg(_shared.COUNT_FAILURE)
BAN = pg(_shared.BAN)
CLEAR_FAILURES = pg(_shared.CLEAR_FAILURES)
SELECT_BANS = pg(_shared.SELECT_BANS)
DELETE_OLD_BANS = pg(_shared.DELETE_OLD_BANS)

INSERT_SHARE = pg(_shared.INSERT_SHARE)
DELETE_EXPIRED_SHARES = pg(_shared.DELETE_EXPIRED_SHARES)
SELECT_SHARE = pg(_shared.SELECT_SHARE)
SELECT_USER_SHARES = pg(_shared.SELECT_USER_SHARES)
DELETE_USER_SHARE = pg(_shared.DELETE_USER_SHARE)
DELETE_USER_SHARES = pg(_shared.DELETE_USER_SHARES)
