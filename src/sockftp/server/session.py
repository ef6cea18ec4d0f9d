"""One client's state, shared by every protocol front end.

A session knows who the client is (anonymous, or a user once accounts
exist), which subtree of the storage is their jail (``home``), where in it
they stand (``cwd``), and what they may do. It turns client paths into
storage paths and back, and keeps the rules of the tree that every front
end shares (where ``cd`` may go, what becomes of the cwd when its directory
goes, that the home itself is never removed). It holds no socket: the
native protocol's handler and the FTP front door both drive the same
session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol import paths
from ..protocol.errors import AuthFailed, AuthRequired, NotADirectory, PathRefused, PermissionDenied
from ..protocol.paths import RemotePath
from ..storage import DIRECTORY, LINK, Storage
from .uploads import UploadHolders


@dataclass(frozen=True)
class Identity:
    """Who a session acts for and what they may do."""

    name: str
    home: RemotePath  # the jail, as a storage path
    can_write: bool = True
    #: The storage this identity sees (e.g. one that enforces its quota);
    #: None for the server's storage as it is.
    storage: Storage | None = None
    #: Bandwidth shared by all of this identity's sessions, or None.
    rate_limit: object | None = None
    #: Called once when a session stops using this identity.
    on_logout: object | None = None
    #: The account as the server last read it, shared by the user's
    #: sessions (``read_only``, ``gone``: see sockftp.server.watch); None:
    #: as it was at login.
    account: object | None = None

    @property
    def writable(self) -> bool:
        """May write now (the account's read-only flag may have changed since login)."""
        return self.can_write if self.account is None else not self.account.read_only

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS


ANONYMOUS = "anonymous"

#: Where anonymous sessions live inside the storage.
ANONYMOUS_HOME: RemotePath = ("anonymous",)


@dataclass
class Session:
    server_storage: Storage
    peer: str  # "host:port", for logs
    address: str = ""  # the client's IP address
    authenticator: object | None = None  # an auth.Authenticator; None: no accounts
    identity: Identity | None = None
    cwd: RemotePath = ()  # relative to the home
    protocol_version: int | None = None
    extra: dict = field(default_factory=dict)
    #: The server's uploads under way, for an upload to take over from one
    #: whose client is gone; None: never (it is refused busy).
    uploads: UploadHolders | None = None

    @property
    def storage(self) -> Storage:
        """The storage as the logged-in identity sees it."""
        if self.identity is not None and self.identity.storage is not None:
            return self.identity.storage
        return self.server_storage

    @property
    def user(self) -> str:
        return self.identity.name if self.identity else "-"

    def login(self, identity: Identity) -> None:
        self.logout()
        self.identity = identity
        self.cwd = ()

    def logout(self) -> None:
        """Drop the identity (at the session's end, or to log in again)."""
        identity, self.identity = self.identity, None
        if identity is not None and identity.on_logout is not None:
            identity.on_logout()

    def authenticate(self, name: str, **credentials):
        """Log in with a password or a token (see ``auth.Authenticator.login``
        for *credentials*). Returns the ``auth.Login``. Raises AuthFailed,
        Banned."""
        if self.authenticator is None:
            raise AuthFailed("this server has no user accounts")
        result = self.authenticator.login(self.address, name, **credentials)
        self.login(result.identity)
        return result

    def require_login(self) -> Identity:
        if self.identity is None:
            raise AuthRequired("log in first (the auth command): this server does not allow anonymous access")
        gone = self.identity.account.gone if self.identity.account is not None else None
        if gone:
            raise PermissionDenied(f"{gone}; this session can do nothing more")
        return self.identity

    def require_write(self) -> None:
        if not self.require_login().writable:
            raise PermissionDenied(f"{self.user} has read-only access")

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

    # -- rules every front end shares ------------------------------------------------

    def change_directory(self, raw: str) -> RemotePath:
        """Make *raw* the cwd; return its storage path. Raises NotFound,
        NotADirectory, PathRefused (a symbolic link)."""
        target = self.resolve(raw)
        entry = self.storage.stat(target)
        if entry.type == LINK:
            raise PathRefused(f"symbolic links are not followed: {self.display(target)}")
        if entry.type != DIRECTORY:
            raise NotADirectory(f"not a directory: {self.display(target)}")
        self.cwd = self.relative(target)
        return target

    def directory_removed(self, target: RemotePath) -> None:
        """After *target* was removed: if the cwd was in it, move up out of it."""
        removed = self.relative(target)
        if paths.is_within(self.cwd, removed):
            self.cwd = removed[:-1]

    def refuse_home(self, target: RemotePath, verb: str) -> None:
        """Raise PathRefused if *target* is the home itself (which cannot be
        removed, renamed or replaced)."""
        if target == self.require_login().home:
            raise PathRefused(f"the root directory cannot be {verb}")
