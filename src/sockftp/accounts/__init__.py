"""Who may log in: user accounts, their passwords and their limits.

:class:`UserStore` is the interface; :class:`SqliteUserStore` keeps accounts
in SQLite in the server's data directory. A PostgreSQL store will follow, so
every SQL statement lives in :mod:`sockftp.accounts.schema`.
"""

from .base import Account, UserStore, check_user_name
from .passwords import hash_password, verify_password
from .sqlite import SqliteUserStore

__all__ = ["Account", "SqliteUserStore", "UserStore", "check_user_name", "hash_password", "verify_password"]
