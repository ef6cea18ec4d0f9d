"""Every SQL statement the account stores run, in one place.

Written in the SQL that SQLite and PostgreSQL share, with ``?`` parameters;
a PostgreSQL store translates the placeholders. Bump ``SCHEMA_VERSION`` and
add a step to ``MIGRATIONS`` for any change.

Times in the ``tokens`` table are Unix times in seconds (UTC), as numbers:
both databases compare them, and no time zone can creep in.
"""

SCHEMA_VERSION = 9

#: Failed logins per client address, and the ban they earned, shared by
#: every server on the store: spreading guesses over servers gains nothing,
#: and a restart forgives nothing. The window is fixed from its first
#: failure. Unix seconds.
BANS_TABLE = """CREATE TABLE IF NOT EXISTS bans (
    address      TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start DOUBLE PRECISION NOT NULL,
    banned_until DOUBLE PRECISION NOT NULL
)"""

#: One row per upload under way: what it reserved, and until when. Its
#: server renews it; past ``expires`` any server gives it back (the server
#: died). Times are Unix seconds, as in ``tokens``.
LEASES_TABLE = """CREATE TABLE IF NOT EXISTS leases (
    id        TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    node      TEXT NOT NULL,
    bytes     BIGINT NOT NULL,
    files     BIGINT NOT NULL,
    expires   DOUBLE PRECISION NOT NULL
)"""
LEASES_INDEX = "CREATE INDEX IF NOT EXISTS leases_by_expiry ON leases (expires)"

#: Share links of the web door (sockftp.http): a link to a file or folder
#: of *owner*'s home (*path*, as the owner writes it) that reads it
#: (``kind`` ``read``) or drops files into it (``drop``). Only the SHA-256
#: of the link's secret is kept, as for tokens; ``id`` is a public name of
#: the link for listing and revoking it. ``password_hash``: an argon2
#: hash, or NULL for a link without a password. ``expires``: Unix seconds,
#: or NULL for a link that never expires.
SHARES_TABLE = """CREATE TABLE IF NOT EXISTS shares (
    token_hash    TEXT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    owner         TEXT NOT NULL,
    path          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    password_hash TEXT,
    created       DOUBLE PRECISION NOT NULL,
    expires       DOUBLE PRECISION
)"""
SHARES_INDEX = "CREATE INDEX IF NOT EXISTS shares_by_owner ON shares (owner, created)"

#: Usage writes made outside a lease (deletes, renames; uploads while the
#: store was unreachable), each under an id of its writer's: a write whose
#: reply was lost, written again with the same id, changes nothing. A
#: writer drops its ids once it knows they landed; leftovers go after a day.
USAGE_OPS_TABLE = """CREATE TABLE IF NOT EXISTS usage_ops (
    id TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL
)"""

#: Seconds a given-back lease (a tombstone: ``reaped``) and a usage write's
#: id are kept: a late end of the one, a retry of the other, counts once
#: within this time.
FORGET_AFTER = 86400.0

#: A lease given back as expired stays as a tombstone (``reaped``), so that
#: the late end of an upload whose server was only cut off, not dead, is
#: still counted, once. Every usage change bumps ``usage_version``, so a
#: measure of the home taken while another server changed it is refused.
FENCING_STEPS = [
    "ALTER TABLE leases ADD COLUMN reaped BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE users ADD COLUMN usage_version BIGINT NOT NULL DEFAULT 0",
    USAGE_OPS_TABLE,
]


#: The resumable uploads of an object store (storage/s3.py), shared by every
#: node on this database: one row per object key with an upload under way
#: or a partial kept. ``upload_id`` is the open multipart upload (NULL:
#: none), ``base`` the bytes of the sealed partial object, ``copied`` the
#: bytes of it the open upload's first parts copy, ``size`` the
#: announced size (NULL: unknown). Whoever holds the lease (``owner``, until
#: ``lease_until``, Unix seconds) is the one writer; each claim bumps
#: ``generation``, and a write is recorded only under the generation that
#: made it, so a node wrongly thought dead records nothing.
MULTIPART_UPLOADS_TABLE = """CREATE TABLE IF NOT EXISTS multipart_uploads (
    object_key  TEXT PRIMARY KEY,
    upload_id   TEXT,
    size        BIGINT,
    base        BIGINT NOT NULL DEFAULT 0,
    copied      BIGINT NOT NULL DEFAULT 0,
    owner       TEXT NOT NULL,
    generation  BIGINT NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL,
    touched     DOUBLE PRECISION NOT NULL
)"""
#: Each part of an open multipart upload, written only once the store has it.
MULTIPART_PARTS_TABLE = """CREATE TABLE IF NOT EXISTS multipart_parts (
    object_key TEXT NOT NULL,
    number     INTEGER NOT NULL,
    size       BIGINT NOT NULL,
    etag       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (object_key, number)
)"""
#: The tus uploads of the HTTP door (accounts/tus_records.py): what each
#: upload's creation said, as JSON, so that any node can resume it.
TUS_UPLOADS_TABLE = """CREATE TABLE IF NOT EXISTS tus_uploads (
    id        TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    record    TEXT NOT NULL,
    expires   DOUBLE PRECISION NOT NULL
)"""

MIGRATIONS = {
    1: [
        """CREATE TABLE IF NOT EXISTS users (
            name          TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            quota_bytes   BIGINT,
            max_files     BIGINT,
            read_only     BOOLEAN NOT NULL DEFAULT FALSE,
            created       TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
        )""",
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    ],
    2: [
        # A disabled account cannot log in, by password or by token.
        "ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE",
        # Re-login tokens. Only the SHA-256 of each token is kept, so the
        # table gives no usable token to whoever reads it.
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
    3: [
        # What each home holds, kept by the server as it changes it, so that
        # a login never walks the home. NULL: never measured (every account
        # right after this migration); the server measures it when it must.
        "ALTER TABLE users ADD COLUMN used_bytes BIGINT",
        "ALTER TABLE users ADD COLUMN used_files BIGINT",
        # Changes of the home begun and not ended (see StoredUsage.changes).
        "ALTER TABLE users ADD COLUMN usage_changes INTEGER NOT NULL DEFAULT 0",
    ],
    4: [
        # Bytes and files reserved by uploads under way, on every server
        # sharing this database: the sum of the account's leases below.
        "ALTER TABLE users ADD COLUMN reserved_bytes BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE users ADD COLUMN reserved_files BIGINT NOT NULL DEFAULT 0",
        LEASES_TABLE,
        LEASES_INDEX,
    ],
    5: [BANS_TABLE],
    6: FENCING_STEPS,
    7: [SHARES_TABLE, SHARES_INDEX],
    # Multipart uploads of S3 storage.
    8: [MULTIPART_UPLOADS_TABLE, MULTIPART_PARTS_TABLE],
    # tus records shared by every node (they were files in ROOT/.sockftp/tus).
    9: [TUS_UPLOADS_TABLE],
}

COLUMNS = ("name", "password_hash", "quota_bytes", "max_files", "read_only", "disabled")

GET_VERSION = "SELECT MAX(version) FROM schema_version"
SET_VERSION = "INSERT INTO schema_version (version) VALUES (?)"

_USER_COLUMNS = "name, password_hash, quota_bytes, max_files, read_only, disabled"
SELECT_USER = f"SELECT {_USER_COLUMNS} FROM users WHERE name = ?"
SELECT_USERS = f"SELECT {_USER_COLUMNS} FROM users ORDER BY name"
COUNT_USERS = "SELECT COUNT(*) FROM users"
INSERT_USER = f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
DELETE_USER = "DELETE FROM users WHERE name = ?"
# Column names come from COLUMNS only, never from input.
UPDATE_USER = "UPDATE users SET {assignments} WHERE name = ?"

# -- usage ---------------------------------------------------------------------------

SELECT_USAGE = "SELECT used_bytes, used_files, usage_changes, usage_version FROM users WHERE name = ?"
SET_USAGE = """UPDATE users SET used_bytes = :bytes, used_files = :files, usage_changes = 0,
    usage_version = usage_version + 1 WHERE name = :name"""
#: A server's measure of the home, stored only if nothing changed the usage
#: since the server read it (*version*) and no upload is under way on any
#: server (a live lease): else the walk may have counted a change that is
#: also counted when it ends, or missed one.
SET_MEASURE = (
    SET_USAGE
    + """ AND usage_version = :version
    AND NOT EXISTS (SELECT 1 FROM leases WHERE user_name = :name AND NOT reaped)"""
)
#: A measure counted what the tombstones' uploads left: their late ends must not count it again.
DROP_TOMBSTONES = "DELETE FROM leases WHERE user_name = :name AND reaped"
# Relative, so that concurrent writers commute; NULL + n stays NULL (never
# measured stays so). CASE, not MAX(a, b) or GREATEST: both databases have it.
ADD_USAGE = """UPDATE users SET used_bytes = used_bytes + ?, used_files = used_files + ?,
    usage_changes = CASE WHEN usage_changes + ? > 0 THEN usage_changes + ? ELSE 0 END,
    usage_version = usage_version + 1
    WHERE name = ?"""
#: The record of a usage write's id (see USAGE_OPS_TABLE).
INSERT_USAGE_OP = "INSERT INTO usage_ops (id, at) VALUES (:op, :now) ON CONFLICT DO NOTHING"
DELETE_USAGE_OP = "DELETE FROM usage_ops WHERE id = :op"
FORGET_USAGE_OPS = "DELETE FROM usage_ops WHERE at < :forget"

# -- reservations (leases) ---------------------------------------------------------------
# Named parameters (:name), which both sqlite3 and (as %(name)s) psycopg take.

#: What a reservation is checked against, and what the quota reply shows.
SELECT_QUOTA_STATE = """SELECT used_bytes, used_files, reserved_bytes, reserved_files, quota_bytes, max_files
    FROM users WHERE name = :name"""
#: The conditional reservation: the account's row changes only if the
#: upload fits (*replaces*: bytes of the file it replaces, credited), and
#: the row lock it takes makes a racing reservation wait and check again
#: against the new row. It does not count a change under way (see
#: StoredUsage.changes): the lease is the mark of one, renewed while its
#: server lives, so another server's first login does not take a live
#: upload for one cut off. Never-measured usage counts as 0 here: a server
#: measures before it reserves against a limit.
RESERVE = """UPDATE users SET reserved_bytes = reserved_bytes + :bytes, reserved_files = reserved_files + :files
    WHERE name = :name
        AND (quota_bytes IS NULL OR COALESCE(used_bytes, 0) + reserved_bytes + :bytes - :replaces <= quota_bytes)
        AND (max_files IS NULL OR :files = 0 OR COALESCE(used_files, 0) + reserved_files + :files <= max_files)"""
INSERT_LEASE = """INSERT INTO leases (id, user_name, node, bytes, files, expires)
    VALUES (:id, :name, :node, :bytes, :files, :expires)"""
#: More bytes for a lease that is still there (an upload of unannounced size).
GROW = """UPDATE users SET reserved_bytes = reserved_bytes + :bytes
    WHERE name = :name
        AND EXISTS (SELECT 1 FROM leases WHERE id = :id AND NOT reaped)
        AND (quota_bytes IS NULL OR COALESCE(used_bytes, 0) + reserved_bytes + :bytes - :replaces <= quota_bytes)"""
GROW_LEASE = "UPDATE leases SET bytes = bytes + :bytes WHERE id = :id AND NOT reaped"
SELECT_LEASE = "SELECT bytes, files, reaped FROM leases WHERE id = :id"
DELETE_LEASE = "DELETE FROM leases WHERE id = :id"
#: An upload's end: its lease goes (*lease_bytes*, *lease_files*: what it
#: still reserves, 0 for a tombstone), and its effect lands in usage. Only
#: if the lease (or its tombstone) is still there: so an end written twice
#: (its first reply lost with the connection) counts once. The late end of
#: a lease given back as expired (its server was cut off, not dead) still
#: counts its effect, and takes back the change that the give-back marked
#: as cut off (*cut*: 1).
FINISH = """UPDATE users SET reserved_bytes = reserved_bytes - :lease_bytes,
        reserved_files = reserved_files - :lease_files,
        used_bytes = used_bytes + :bytes, used_files = used_files + :files,
        usage_changes = CASE WHEN usage_changes - :cut > 0 THEN usage_changes - :cut ELSE 0 END,
        usage_version = usage_version + 1
    WHERE name = :name"""
RENEW_LEASE = "UPDATE leases SET expires = :expires WHERE id = :id AND NOT reaped"
SELECT_EXPIRED_LEASES = "SELECT id, user_name, bytes, files FROM leases WHERE expires < :now AND NOT reaped"
#: Giving a lease back whose server stopped renewing it: its reservation
#: goes, and its change is counted as cut off, so that the usage (its
#: partial's bytes) is measured again unless the lease's late end comes.
#: The lease stays as a tombstone (see FINISH).
RELEASE_EXPIRED = """UPDATE users SET reserved_bytes = reserved_bytes - :bytes,
        reserved_files = reserved_files - :files,
        usage_changes = usage_changes + 1
    WHERE name = :name"""
MARK_REAPED = "UPDATE leases SET reaped = TRUE WHERE id = :id"
SELECT_LEASE_NODES = "SELECT DISTINCT node FROM leases WHERE NOT reaped"
SELECT_NODE_LEASES = "SELECT id, user_name, bytes, files FROM leases WHERE node = :node AND NOT reaped"
FORGET_TOMBSTONES = "DELETE FROM leases WHERE reaped AND expires < :forget"
DELETE_USER_LEASES = "DELETE FROM leases WHERE user_name = :name"

# -- failed logins and bans -----------------------------------------------------------------

#: Count a failure of *address*: a new window if the last one is over
#: (started at or before *cutoff*). One statement, whatever the row held.
COUNT_FAILURE = """INSERT INTO bans (address, failures, window_start, banned_until) VALUES (:address, 1, :now, 0)
    ON CONFLICT (address) DO UPDATE SET
        failures = CASE WHEN bans.window_start <= :cutoff THEN 1 ELSE bans.failures + 1 END,
        window_start = CASE WHEN bans.window_start <= :cutoff THEN :now ELSE bans.window_start END
    RETURNING failures"""
BAN = "UPDATE bans SET banned_until = :until, failures = 0, window_start = :now WHERE address = :address"
CLEAR_FAILURES = "DELETE FROM bans WHERE address = :address AND banned_until <= :now"
SELECT_BANS = "SELECT address, banned_until FROM bans WHERE banned_until > :now"
#: Rows of no use any more: no ban, and a window long over.
DELETE_OLD_BANS = "DELETE FROM bans WHERE banned_until <= :now AND window_start <= :cutoff"

# -- tokens --------------------------------------------------------------------------

INSERT_TOKEN = "INSERT INTO tokens (token_hash, user_name, created, expires) VALUES (?, ?, ?, ?)"
# The per-user cap: keep the newest (limit) tokens besides the one just
# made, which is always kept whatever the clock says.
DELETE_OLDEST_TOKENS = """DELETE FROM tokens WHERE user_name = ? AND token_hash <> ? AND token_hash NOT IN (
    SELECT token_hash FROM tokens WHERE user_name = ? AND token_hash <> ? ORDER BY created DESC LIMIT ?
)"""
DELETE_EXPIRED_TOKENS = "DELETE FROM tokens WHERE expires <= ?"
# A live token and its account, found by the token's hash (an index
# lookup: nothing about the token is compared byte by byte in Python).
SELECT_TOKEN_ACCOUNT = f"""SELECT {", ".join("u." + c for c in COLUMNS)}, t.created, t.expires, t.last_used
    FROM tokens t JOIN users u ON u.name = t.user_name
    WHERE t.token_hash = ? AND t.expires > ?"""
TOUCH_TOKEN = "UPDATE tokens SET last_used = ? WHERE token_hash = ?"
SELECT_USER_TOKENS = (
    "SELECT token_hash, created, expires, last_used FROM tokens WHERE user_name = ? AND expires > ? ORDER BY created"
)
DELETE_USER_TOKENS = "DELETE FROM tokens WHERE user_name = ?"
DELETE_USER_TOKEN = "DELETE FROM tokens WHERE user_name = ? AND token_hash = ?"

# -- share links ---------------------------------------------------------------------

_SHARE_COLUMNS = "id, token_hash, owner, path, kind, password_hash, created, expires"
INSERT_SHARE = f"INSERT INTO shares ({_SHARE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
DELETE_EXPIRED_SHARES = "DELETE FROM shares WHERE expires IS NOT NULL AND expires <= ?"
#: A live link, found by its secret's hash (an index lookup).
SELECT_SHARE = f"SELECT {_SHARE_COLUMNS} FROM shares WHERE token_hash = ? AND (expires IS NULL OR expires > ?)"
SELECT_USER_SHARES = (
    f"SELECT {_SHARE_COLUMNS} FROM shares WHERE owner = ? AND (expires IS NULL OR expires > ?) ORDER BY created"
)
DELETE_USER_SHARE = "DELETE FROM shares WHERE owner = ? AND id = ?"
DELETE_USER_SHARES = "DELETE FROM shares WHERE owner = ?"

# -- multipart uploads of an object store (accounts/multipart.py) ----------------------------

MP_INSERT = """INSERT INTO multipart_uploads (object_key, owner, generation, lease_until, touched)
    VALUES (:key, :owner, 0, 0, :now) ON CONFLICT (object_key) DO NOTHING"""
#: The lease: taken only if it is free (expired, or released) or already ours.
MP_CLAIM = """UPDATE multipart_uploads SET owner = :owner, generation = generation + 1, lease_until = :until
    WHERE object_key = :key AND (lease_until < :now OR owner = :owner)
    RETURNING generation, upload_id, size, base, copied, lease_until, touched"""
MP_SELECT = """SELECT generation, upload_id, size, base, copied, lease_until, touched FROM multipart_uploads
    WHERE object_key = :key"""
MP_PARTS = "SELECT number, size, etag, hash FROM multipart_parts WHERE object_key = :key ORDER BY number"
#: Every write below is guarded by the generation that claimed the lease.
MP_TOUCH = """UPDATE multipart_uploads SET lease_until = :until, touched = :now
    WHERE object_key = :key AND generation = :generation"""
MP_RECORD_PART = """INSERT INTO multipart_parts (object_key, number, size, etag, hash)
    VALUES (:key, :number, :size, :etag, :hash)
    ON CONFLICT (object_key, number) DO UPDATE SET size = excluded.size, etag = excluded.etag, hash = excluded.hash"""
MP_SET = """UPDATE multipart_uploads
    SET upload_id = :upload_id, size = :size, base = :base, copied = :copied, touched = :now
    WHERE object_key = :key AND generation = :generation"""
MP_DROP_PARTS = "DELETE FROM multipart_parts WHERE object_key = :key"
MP_RENEW = "UPDATE multipart_uploads SET lease_until = :until WHERE object_key = :key AND generation = :generation"
MP_RELEASE = "UPDATE multipart_uploads SET lease_until = 0 WHERE object_key = :key AND generation = :generation"
MP_FORGET = "DELETE FROM multipart_uploads WHERE object_key = :key AND generation = :generation"
#: Keys under a prefix: substr, not LIKE, so that no character of a key is
#: a wildcard.
MP_EXPIRED = """SELECT object_key FROM multipart_uploads
    WHERE substr(object_key, 1, :length) = :prefix AND lease_until < :now AND touched < :cutoff"""
MP_HELD = """SELECT COALESCE(SUM(size), 0) FROM multipart_parts WHERE substr(object_key, 1, :length) = :prefix"""
MP_UNDER = "SELECT object_key FROM multipart_uploads WHERE substr(object_key, 1, :length) = :prefix"

# -- tus uploads of the HTTP door (accounts/tus_records.py) -------------------------------

TUS_SAVE = """INSERT INTO tus_uploads (id, user_name, record, expires) VALUES (:id, :user, :record, :expires)
    ON CONFLICT (id) DO UPDATE SET record = excluded.record, expires = excluded.expires"""
TUS_LOAD = "SELECT record FROM tus_uploads WHERE id = :id"
TUS_FORGET = "DELETE FROM tus_uploads WHERE id = :id"
TUS_EXPIRED = "SELECT id FROM tus_uploads WHERE expires <= :now"
