"""Who may log in: user accounts, their passwords, their limits, what they
store, and their re-login tokens.

:class:`UserStore` is the interface; :class:`SqliteUserStore` keeps accounts
in SQLite in the server's data directory (the default), and
:mod:`sockftp.accounts.postgres` in a PostgreSQL database shared by several
servers. :func:`sockftp.accounts.stores.open_store` picks one from ``--db``.
The SQL both share lives in :mod:`sockftp.accounts.schema`.
"""

from .base import (
    SHARE_KINDS,
    Account,
    AccountListener,
    QuotaState,
    ShareRecord,
    StoredUsage,
    StoreError,
    TokenRecord,
    UserStore,
    check_user_name,
)
from .passwords import hash_password, verify_password
from .sqlite import SqliteUserStore
from .tokens import new_token, token_hash, token_id

__all__ = [
    "SHARE_KINDS",
    "Account",
    "AccountListener",
    "QuotaState",
    "ShareRecord",
    "SqliteUserStore",
    "StoreError",
    "StoredUsage",
    "TokenRecord",
    "UserStore",
    "check_user_name",
    "hash_password",
    "new_token",
    "token_hash",
    "token_id",
    "verify_password",
]
