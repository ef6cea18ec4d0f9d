"""Accounts and the interface of a store that keeps them.

A store knows names, password hashes, limits, what each user stores (their
usage) and the hashes of re-login tokens. It never sees a socket or a
session, and it never holds a password or a token in clear.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..protocol.errors import BadRequest, WouldBlock

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
    disabled: bool = False  # may not log in at all


@dataclass(frozen=True)
class StoredUsage:
    """What a store keeps of a user's usage: what their home holds, as last
    measured and changed since, beside their limits."""

    used_bytes: int | None  # None: never measured (a new account, or a store just migrated)
    used_files: int | None
    #: Changes begun and not ended, or cut off. A server counts each change
    #: of the home made outside a lease (a delete) here before making it and
    #: takes it back with the change's effect; a lease given back as expired
    #: counts one. So a count above zero when no server is at work means one
    #: died mid-change (killed, a power cut): the usage must be measured again.
    changes: int = 0
    #: Bumped by every change of the usage: a measure is stored only if it
    #: did not move meanwhile (:meth:`UserStore.set_usage`).
    version: int = field(default=0, compare=False)

    @property
    def known(self) -> bool:
        """Measured, and no change of it was cut off."""
        return self.used_bytes is not None and self.used_files is not None and self.changes <= 0


@dataclass(frozen=True)
class QuotaState:
    """An account's limits, usage and reservations (every server's), as
    one reservation saw them."""

    used_bytes: int | None
    used_files: int | None
    reserved_bytes: int
    reserved_files: int
    quota_bytes: int | None
    max_files: int | None


@dataclass(frozen=True)
class TokenRecord:
    """What a store keeps of one re-login token (never the token itself)."""

    token_hash: str  # hex SHA-256 of the token
    created: float  # Unix times, seconds
    expires: float
    last_used: float | None = None  # None: never used to log in


#: What a share link does: reads a file or folder, or drops files into a folder.
SHARE_KINDS = ("read", "drop")


@dataclass(frozen=True)
class ShareRecord:
    """What a store keeps of one share link (never its secret)."""

    id: str  # public: names the link in listings and revocations
    token_hash: str  # hex SHA-256 of the link's secret
    owner: str  # the account whose home it opens
    path: str  # in the owner's home, as the web door encodes it
    kind: str  # one of SHARE_KINDS
    password_hash: str | None  # None: no password
    created: float  # Unix times, seconds
    expires: float | None  # None: never


def check_user_name(name: str) -> str:
    """*name* if it may name an account. Raises BadRequest."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest("a user name is 1 to 64 letters, digits, '.', '_' or '-', and starts with a letter or digit")
    if name in RESERVED_NAMES:
        raise BadRequest(f"{name!r} is reserved")
    return name


class StoreError(Exception):
    """The store could not do what was asked: its disk is full, it is
    locked past its timeout, or it cannot be reached. Callers decide which
    writes are worth failing a login for."""


class AccountListener(ABC):
    """Account changes (added, changed, deleted) as the store notifies them,
    to one thread."""

    @abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for a change: True if one came, or if
        the listener has just (re)connected and may have missed some; False
        if none. Raises StoreError if the store cannot be reached (the next
        call connects again)."""

    def close(self) -> None:
        """Stop listening."""


class UserStore(ABC):
    """Where accounts are kept. Safe to use from several threads."""

    #: Other machines' servers may use this store at once (PostgreSQL):
    #: what one node holds in memory, another cannot see.
    shared = False

    @abstractmethod
    def get(self, name: str) -> Account | None:
        """The account called *name*, or None."""

    @abstractmethod
    def add(self, account: Account) -> None:
        """Raises Exists if the name is taken."""

    @abstractmethod
    def update(self, name: str, *, keep_tokens: bool = False, **fields) -> Account:
        """Change some of *password_hash*, *quota_bytes*, *max_files*,
        *read_only*, *disabled*. Raises NotFound.

        A new *password_hash*, or *disabled* set, revokes every token of
        the account in the same transaction, unless *keep_tokens* (a hash
        of the same password with stronger parameters)."""

    @abstractmethod
    def delete(self, name: str) -> None:
        """Delete the account, its tokens and its share links. Raises NotFound."""

    @abstractmethod
    def list(self) -> list[Account]:
        """Every account, by name."""

    def count(self) -> int:
        return len(self.list())

    # -- usage (see sockftp.server.quota) --

    @abstractmethod
    def usage(self, name: str) -> StoredUsage | None:
        """The stored usage of account *name*, or None if there is no such
        account."""

    @abstractmethod
    def set_usage(
        self, name: str, used_bytes: int | None, used_files: int | None, *, version: int | None = None
    ) -> bool:
        """Store a measure of *name*'s usage (None, None: forget it, so it is
        measured again), reset its count of changes under way, and drop its
        given-back leases (the measure counted what they left). False if
        there is no such account.

        With *version* (of the :class:`StoredUsage` read before the home was
        walked), only if the usage did not change since and no upload is
        under way on any server: else False, and nothing changes (another
        server's change may be in the walk and in the usage both)."""

    @abstractmethod
    def add_usage(
        self,
        name: str,
        bytes_delta: int,
        files_delta: int,
        changes_delta: int,
        op: str | None = None,
        done: Sequence[str] = (),
    ) -> None:
        """Add a change to *name*'s usage, in one short write that commutes
        with every other (so servers and threads need not agree on an
        order). *changes_delta* is +1 before a change is made and -1 with
        its effect once it is done; the count never goes below zero. A
        usage never measured stays so. No such account: nothing happens.

        With *op*, a new id of the caller's, the write counts once however
        often it is made with that id (within ``FORGET_AFTER``): one whose
        reply was lost can be made again. *done*: ids the caller made
        earlier whose writes are known to have landed, now forgotten.

        Called on every upload and delete: keep it to one indexed write."""

    # -- reservations: leases of uploads under way (see sockftp.server.leases) --
    # Every server sharing the store reserves here, so a quota holds across
    # all of them. Each call is one short write (PostgreSQL: one statement).

    @abstractmethod
    def reserve(
        self, name: str, lease_id: str, node: str, size: int, files: int, replaces: int, expires: float
    ) -> QuotaState | None:
        """Reserve *size* bytes and *files* files for an upload of *name*
        (which replaces a file of *replaces* bytes), as lease *lease_id* of
        server *node*, good until *expires*, and count one change of the
        home as under way, all in one step and only if it fits the limits.
        None if it does not fit (or there is no such account)."""

    @abstractmethod
    def grow(self, name: str, lease_id: str, size: int, replaces: int) -> bool:
        """Reserve *size* more bytes under lease *lease_id*, if they fit and
        the lease is still there. False if not."""

    @abstractmethod
    def finish(self, name: str, lease_id: str, bytes_delta: int, files_delta: int) -> bool | None:
        """An upload ends: give its lease back and add its effect to usage,
        in one transaction, if the lease is still there. True if it was;
        False if it had been given back as expired (its tombstone: the
        effect is added all the same, once); None if there was nothing (it
        was ended already: a retry whose first reply was lost)."""

    @abstractmethod
    def renew(self, lease_ids: list[str], expires: float) -> set[str]:
        """Move the expiry of these leases (a server's live ones) to
        *expires*. The ids of those still live: the others were given back."""

    @abstractmethod
    def reap(self, now: float) -> list[tuple[str, int, int]]:
        """Give back every lease expired at *now* (its server died, or was
        cut off from the store): their reservations; each counts a change
        as cut off, so that the usage is measured again unless its late end
        comes (see :meth:`finish`). Each stays as a tombstone for
        ``FORGET_AFTER`` seconds. (name, bytes, files) of each."""

    @abstractmethod
    def lease_nodes(self) -> set[str]:
        """The servers (nodes) holding live leases."""

    @abstractmethod
    def reap_nodes(self, nodes: list[str], now: float) -> list[tuple[str, int, int]]:
        """As :meth:`reap`, for every live lease of *nodes* (known dead),
        expired or not."""

    @abstractmethod
    def quota_state(self, name: str) -> QuotaState | None:
        """The account's limits, usage and reservations, or None."""

    # -- failed logins and bans, per client address (see sockftp.server.auth) --

    @abstractmethod
    def login_failed(self, address: str, now: float, window: float, failures: int, ban_time: float) -> float | None:
        """Count a failed login from *address* at *now*. If it makes
        *failures* within *window* seconds, ban the address until *now* +
        *ban_time* and return that time; else None."""

    @abstractmethod
    def login_succeeded(self, address: str, now: float) -> None:
        """Forget *address*'s failures (not a ban under way)."""

    @abstractmethod
    def bans(self, now: float, window: float) -> dict[str, float]:
        """Every address banned at *now*, with the time its ban ends; and
        forget failures older than *window*."""

    # -- re-login tokens (see sockftp.accounts.tokens) --

    @abstractmethod
    def add_token(self, name: str, token_hash: str, created: float, expires: float, keep: int) -> None:
        """Store a token of account *name*. Then drop the oldest tokens of
        *name* past *keep* (the new one always stays), and every expired
        token of anyone."""

    @abstractmethod
    def token_account(self, token_hash: str, now: float) -> tuple[Account, TokenRecord] | None:
        """The account that the live (unexpired at *now*) token *token_hash*
        belongs to, and the token; or None."""

    def token_account_now(self, token_hash: str, now: float) -> tuple[Account, TokenRecord] | None:
        """As :meth:`token_account`, but without waiting for anything (for
        the server's parking-lot thread): raises WouldBlock when the answer
        is not at hand. A store that must wait for it, over a network say,
        keeps this default, and its token logins are run by worker threads."""
        raise WouldBlock

    @abstractmethod
    def touch_token(self, token_hash: str, now: float) -> None:
        """Record that the token was used to log in at *now*."""

    @abstractmethod
    def tokens(self, name: str, now: float) -> list[TokenRecord]:
        """The live tokens of account *name*, oldest first."""

    @abstractmethod
    def revoke_tokens(self, name: str, token_hash: str | None = None) -> int:
        """Delete every token of *name*, or only *token_hash* if it is
        theirs. Returns how many were deleted."""

    # -- share links (see sockftp.http.shares) --

    @abstractmethod
    def add_share(self, share: ShareRecord) -> None:
        """Store a share link, and drop every expired link of anyone."""

    @abstractmethod
    def share(self, token_hash: str, now: float) -> ShareRecord | None:
        """The live (unexpired at *now*) link *token_hash*, or None."""

    @abstractmethod
    def shares(self, owner: str, now: float) -> list[ShareRecord]:
        """The live links of account *owner*, oldest first."""

    @abstractmethod
    def revoke_share(self, owner: str, share_id: str) -> bool:
        """Delete link *share_id* if it is *owner*'s. False if there is none."""

    def listen(self) -> AccountListener | None:
        """A listener for account changes made through any server or
        command, if this store can notify them; None if it cannot (then
        they are polled for)."""
        return None

    def close(self) -> None:
        """Release the store's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
