"""Accounts and the interface of a store that keeps them.

A store knows names, password hashes and limits. It never sees a socket
or a session, and it never holds a password in clear.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import BadRequest

#: Names are used as directory names (the home is ``users/NAME``) and in
#: logs, so they are kept to a conservative, case-sensitive set.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

#: Not a user name: it is the identity of sessions that never logged in.
RESERVED_NAMES = frozenset({"anonymous"})


@dataclass(frozen=True)
class Account:
    name: str
    password_hash: str  # encoded with its algorithm and parameters
    quota_bytes: int | None = None  # None: no limit
    max_files: int | None = None  # None: no limit
    read_only: bool = False


def check_user_name(name: str) -> str:
    """*name* if it may name an account. Raises BadRequest."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest("a user name is 1 to 64 letters, digits, '.', '_' or '-', and starts with a letter or digit")
    if name in RESERVED_NAMES:
        raise BadRequest(f"{name!r} is reserved")
    return name


class UserStore(ABC):
    """Where accounts are kept. Safe to use from several threads."""

    @abstractmethod
    def get(self, name: str) -> Account | None:
        """The account called *name*, or None."""

    @abstractmethod
    def add(self, account: Account) -> None:
        """Raises Exists if the name is taken."""

    @abstractmethod
    def update(self, name: str, **fields) -> Account:
        """Change some of *password_hash*, *quota_bytes*, *max_files*,
        *read_only*. Raises NotFound."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Raises NotFound."""

    @abstractmethod
    def list(self) -> list[Account]:
        """Every account, by name."""

    def count(self) -> int:
        return len(self.list())

    def close(self) -> None:
        """Release the store's resources."""
