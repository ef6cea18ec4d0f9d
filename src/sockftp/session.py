"""One client's state, shared by every protocol front end.

A session knows who the client is (anonymous, or a user once accounts
exist), which subtree of the storage is their jail (``home``), where in it
they stand (``cwd``), and what they may do. It turns client paths into
storage paths and back. It holds no socket: the native protocol's handler
and a future FTP handler both drive the same session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import paths
from .errors import AuthRequired, PermissionDenied
from .paths import RemotePath
from .storage import Storage


@dataclass(frozen=True)
class Identity:
    """Who a session acts for and what they may do."""

    name: str
    home: RemotePath  # the jail, as a storage path
    can_write: bool = True

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS


ANONYMOUS = "anonymous"

#: Where anonymous sessions live inside the storage.
ANONYMOUS_HOME: RemotePath = ("anonymous",)


@dataclass
class Session:
    storage: Storage
    peer: str  # "host:port", for logs
    identity: Identity | None = None
    cwd: RemotePath = ()  # relative to the home
    protocol_version: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def user(self) -> str:
        return self.identity.name if self.identity else "-"

    def login(self, identity: Identity) -> None:
        self.identity = identity
        self.cwd = ()

    def require_login(self) -> Identity:
        if self.identity is None:
            raise AuthRequired("log in first: this server does not allow anonymous access")
        return self.identity

    def require_write(self) -> None:
        if not self.require_login().can_write:
            raise PermissionDenied(f"{self.user} may not change anything here")

    def resolve(self, raw: str) -> RemotePath:
        """The storage path for client path *raw*, inside the home."""
        identity = self.require_login()
        return identity.home + paths.resolve(self.cwd, raw)

    def relative(self, storage_path: RemotePath) -> RemotePath:
        """*storage_path* as seen from the home (the inverse of resolve)."""
        return storage_path[len(self.require_login().home) :]

    def display(self, storage_path: RemotePath) -> str:
        """*storage_path* as the client writes it, e.g. ``/docs/a.txt``."""
        return paths.to_text(self.relative(storage_path))
