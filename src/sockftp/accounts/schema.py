"""Every SQL statement the account stores run, in one place.

Written in the SQL that SQLite and PostgreSQL share, with ``?`` parameters;
a PostgreSQL store translates the placeholders. Bump ``SCHEMA_VERSION`` and
add a step to ``MIGRATIONS`` for any change.

Times in the ``tokens`` table are Unix times in seconds (UTC), as numbers:
both databases compare them, and no time zone can creep in.
"""

SCHEMA_VERSION = 3

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

SELECT_USAGE = "SELECT used_bytes, used_files, usage_changes FROM users WHERE name = ?"
SET_USAGE = "UPDATE users SET used_bytes = ?, used_files = ?, usage_changes = 0 WHERE name = ?"
# Relative, so that concurrent writers commute; NULL + n stays NULL (never
# measured stays so). CASE, not MAX(a, b) or GREATEST: both databases have it.
ADD_USAGE = """UPDATE users SET used_bytes = used_bytes + ?, used_files = used_files + ?,
    usage_changes = CASE WHEN usage_changes + ? > 0 THEN usage_changes + ? ELSE 0 END
    WHERE name = ?"""

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
