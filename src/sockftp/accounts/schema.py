"""Every SQL statement the account stores run, in one place.

Written in the SQL that SQLite and PostgreSQL share, with ``?`` parameters;
a PostgreSQL store translates the placeholders. Bump ``SCHEMA_VERSION`` and
add a step to ``MIGRATIONS`` for any change.
"""

SCHEMA_VERSION = 1

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
}

COLUMNS = ("name", "password_hash", "quota_bytes", "max_files", "read_only")

GET_VERSION = "SELECT MAX(version) FROM schema_version"
SET_VERSION = "INSERT INTO schema_version (version) VALUES (?)"

SELECT_USER = "SELECT name, password_hash, quota_bytes, max_files, read_only FROM users WHERE name = ?"
SELECT_USERS = "SELECT name, password_hash, quota_bytes, max_files, read_only FROM users ORDER BY name"
COUNT_USERS = "SELECT COUNT(*) FROM users"
INSERT_USER = "INSERT INTO users (name, password_hash, quota_bytes, max_files, read_only) VALUES (?, ?, ?, ?, ?)"
DELETE_USER = "DELETE FROM users WHERE name = ?"
# Column names come from COLUMNS only, never from input.
UPDATE_USER = "UPDATE users SET {assignments} WHERE name = ?"
