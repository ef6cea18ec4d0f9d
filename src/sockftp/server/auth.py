"""Logging in: checking passwords and tokens, slowing guessers down, banning addresses.

Shared by every protocol front end. The :class:`Authenticator` turns a user
name and a password (or a re-login token) into an
:class:`~sockftp.server.session.Identity`, or refuses with the same answer whether
the user exists or not, after the same work (a full argon2 verification
against a dummy hash, for a password) and the same delay.

:class:`BanList` counts failures per client address: past
``ban_failures`` within ``ban_window`` seconds the address is refused for
``ban_time`` seconds, at connect and at login. Other addresses are not
affected. With an account store, failures are counted and bans kept in it
(the window then runs from the address's first failure): every server on
the store counts the same failures, so spreading guesses over servers
gains nothing, and a restart forgives nothing. The refusal itself is
checked in memory, where each server copies the store's bans every
``BAN_REFRESH`` seconds.

:class:`RecentPasswords` remembers, for ``password_cache_time``, which
passwords argon2 has just accepted, so that the same login again (an FTP
client's parallel connections, a script's next command) costs a keyed
hash, not another argon2 check.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from ..accounts import (
    Account,
    StoreError,
    TokenRecord,
    UserStore,
    new_token,
    token_hash,
    token_id,
    verify_password,
)
from ..accounts.passwords import hash_password, needs_rehash
from ..protocol.errors import AuthFailed, Banned, WouldBlock
from . import audit
from .config import ServerConfig, user_home
from .session import Identity

log = logging.getLogger("sockftp.auth")

#: Seconds between two copies of the store's bans into memory: how long a
#: ban earned on one server takes to be refused on another (the failures
#: themselves are counted in the store at once).
BAN_REFRESH = 1.0


class BanList:
    """Failed logins per address, and the addresses refused because of them."""

    #: Password checks one address may have under way at once; more wait.
    #: Without it, an address could run a guess in each of its sessions in
    #: parallel before the first failure is even counted.
    ATTEMPTS_PER_ADDRESS = 2

    def __init__(
        self,
        failures: int,
        window: float,
        ban_time: float,
        clock=time.monotonic,
        store: UserStore | None = None,
        wall=time.time,
    ):
        self.failures = failures
        self.window = window
        self.ban_time = ban_time
        self._clock = clock
        self._store = store  # None: in memory only
        self._wall = wall  # the store's times are Unix times, shared by every server
        self._failed_here: set[str] = set()  # addresses whose failures this server put in the store
        self._store_failing = False
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._turns = threading.Condition(self._lock)
        self._active: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}
        self._last_pruned = clock()

    @contextmanager
    def attempt(self, address: str):
        """Hold one of *address*'s few login slots while checking a password."""
        with self._turns:
            self._turns.wait_for(lambda: self._active.get(address, 0) < self.ATTEMPTS_PER_ADDRESS)
            self._active[address] = self._active.get(address, 0) + 1
        try:
            yield
        finally:
            with self._turns:
                left = self._active[address] - 1
                if left:
                    self._active[address] = left
                else:
                    del self._active[address]
                self._turns.notify_all()

    def check(self, address: str) -> None:
        """Raises Banned if *address* is refused now."""
        with self._lock:
            until = self._banned_until.get(address)
            if until is None:
                return
            left = until - self._clock()
            if left <= 0:
                del self._banned_until[address]
                return
        raise Banned(f"too many failed logins from {address}; try again in {left:.0f} s", retry_after=round(left))

    def failed(self, address: str) -> bool:
        """Count a failed login. True if it got *address* banned."""
        if self._store is not None:
            wall = self._wall()
            try:
                until = self._store.login_failed(address, wall, self.window, self.failures, self.ban_time)
            except StoreError as exc:
                self._store_trouble(exc)  # counted in memory meanwhile, as without a store
            else:
                self._failed_here.add(address)
                if until is None:
                    return False
                self._ban(address, until, wall)
                log.warning("banned %s for %.0f s after %d failed logins", address, self.ban_time, self.failures)
                return True
        now = self._clock()
        if now - self._last_pruned > 1.0:
            self._forget_old()
        with self._lock:
            recent = self._recent.setdefault(address, deque())
            recent.append(now)
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if len(recent) < self.failures:
                return False
            del self._recent[address]
            self._banned_until[address] = now + self.ban_time
        log.warning("banned %s for %.0f s after %d failed logins", address, self.ban_time, self.failures)
        return True

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._recent.pop(address, None)
        if address in self._failed_here:  # a write only after failures of its own
            self._failed_here.discard(address)
            try:
                self._store.login_succeeded(address, self._wall())
            except StoreError as exc:
                self._store_trouble(exc)
        self._forget_old()

    # -- the store's bans, copied into memory -----------------------------------------

    def _ban(self, address: str, until: float, wall: float) -> None:
        """Ban *address* in memory until Unix time *until* (*wall*: now)."""
        local = self._clock() + (until - wall)
        with self._lock:
            if self._banned_until.get(address, float("-inf")) < local:
                self._banned_until[address] = local
            self._recent.pop(address, None)

    def refresh(self) -> None:
        """Copy the store's bans (every server's) into memory."""
        if self._store is None:
            return
        wall = self._wall()
        try:
            bans = self._store.bans(wall, self.window)
        except StoreError as exc:
            self._store_trouble(exc)
            return
        if self._store_failing:
            self._store_failing = False
            log.warning("failed logins are counted in the account store again")
        for address, until in bans.items():
            self._ban(address, until, wall)

    def _store_trouble(self, exc: StoreError) -> None:
        if not self._store_failing:
            self._store_failing = True
            log.warning("failed logins are counted in memory only until the account store answers: %s", exc)

    def start(self) -> None:
        """Load the store's bans (a restart forgives none), then copy them
        again every BAN_REFRESH seconds until :meth:`close`."""
        if self._store is None or self._refresher is not None:
            return
        self.refresh()
        self._refresher = threading.Thread(target=self._refresh_loop, name="bans", daemon=True)
        self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(BAN_REFRESH):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the copier must outlive any bug of one round
                log.exception("copying bans failed")

    def close(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(5.0)

    def _forget_old(self) -> None:
        # Bound the tables: drop addresses whose failures and bans are over.
        now = self._clock()
        with self._lock:
            self._last_pruned = now
            for address in [a for a, until in self._banned_until.items() if until <= now]:
                del self._banned_until[address]
            for address in [a for a, times in self._recent.items() if not times or times[-1] <= now - self.window]:
                del self._recent[address]


class RecentPasswords:
    """Passwords argon2 accepted lately, each for *lifetime* seconds from
    its check.

    An entry is a keyed BLAKE2b of the user name, the stored argon2 hash
    and the password, under a key drawn at start and kept only in memory:
    nothing here gives a password back, or lets one be tested without the
    key. The stored hash is part of it, so a new password (or a rehash)
    makes the old entries miss. Only successes are remembered, so a wrong
    password, or an unknown user, always costs the full argon2 check, as
    before. Whether the account is disabled is read from the store at
    every login, not from here.
    """

    #: Entries kept at most; past it the oldest go first (about 100 bytes each).
    MAX_ENTRIES = 4096

    def __init__(self, lifetime: float, clock=time.monotonic):
        self.lifetime = lifetime
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()  # held for dictionary operations only, never across I/O
        self._until: dict[bytes, float] = {}  # in insertion order, which is expiry order

    @property
    def enabled(self) -> bool:
        return self.lifetime > 0

    def _digest(self, name: str, encoded: str, password: str) -> bytes:
        digest = hashlib.blake2b(key=self._key, digest_size=32)
        # The name and an argon2 hash hold no NUL, so the parts cannot run into each other.
        digest.update(f"{name}\0{encoded}\0".encode())
        # surrogatepass: a password may hold lone surrogates (from JSON, or an
        # FTP line that was not UTF-8), which strict UTF-8 refuses.
        digest.update(password.encode("utf-8", "surrogatepass"))
        return digest.digest()

    def holds(self, name: str, encoded: str, password: str) -> bool:
        """True if *password* was accepted for *name*, stored as *encoded*, within the lifetime."""
        key = self._digest(name, encoded, password)
        with self._lock:
            until = self._until.get(key)
        return until is not None and self._clock() < until

    def remember(self, name: str, encoded: str, password: str) -> None:
        """Remember that argon2 accepted *password* for *name* just now."""
        if not self.enabled:
            return
        key = self._digest(name, encoded, password)
        now = self._clock()
        with self._lock:
            self._until.pop(key, None)  # re-inserted at the end: the order stays the expiry order
            while self._until and (len(self._until) >= self.MAX_ENTRIES or next(iter(self._until.values())) <= now):
                del self._until[next(iter(self._until))]
            self._until[key] = now + self.lifetime

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)


@dataclass(frozen=True)
class Login:
    """A login that succeeded."""

    identity: Identity
    #: The token issued at this login (a password login that asked for one).
    token: str | None = None
    #: Unix time the token issued or used expires; None without a token.
    token_expires: float | None = None


class Authenticator:
    """Checks logins against a :class:`~sockftp.accounts.UserStore`.

    *make_identity(account)* builds the identity of a logged-in account (the
    server adds its quota ledger and bandwidth limit there). A quick login
    calls ``make_identity(account, quick=True)``, which raises WouldBlock
    rather than wait.

    A login is by password (argon2id) or by a re-login token (a SHA-256
    and an index lookup). Both fail the same way: ``auth_failed`` after the
    failure delay, counted by the ban list, whether the user exists or not.
    Only a password login can ask for a token, so a stolen token cannot be
    traded for a fresh one and dies at its expiry.
    """

    #: A token's last use is written at most this often (seconds), so a
    #: burst of logins by one token costs one database write, not one each.
    TOUCH_INTERVAL = 60.0

    def __init__(self, users: UserStore, config: ServerConfig, make_identity=None, clock=time.time):
        self.users = users
        self.delay = config.login_failure_delay
        self.bans = BanList(config.ban_failures, config.ban_window, config.ban_time, store=users)
        self.token_lifetime = config.token_lifetime
        self.max_tokens = config.max_tokens_per_user
        self._make_identity = make_identity or _plain_identity
        self.recent = RecentPasswords(config.password_cache_time)
        self._clock = clock  # wall-clock time: tokens outlive the process
        #: When this server last wrote each token's use (see _touch_due).
        self._touching: dict[str, float] = {}

    @property
    def tokens_enabled(self) -> bool:
        return self.token_lifetime > 0

    def login(
        self,
        address: str,
        name: str,
        *,
        password: str | None = None,
        token: str | None = None,
        new_token=False,
        quick=False,
    ) -> Login:
        """Log *name* in with *password* or *token* (exactly one). With
        *new_token* (password logins only), issue a token too, if tokens
        are on. A token login may give *name* None: the token names its
        account (HTTP's ``Authorization: Bearer TOKEN`` carries no name).

        Raises AuthFailed after the failure delay, or Banned if *address*
        is refused (before any password work).

        With *quick*, only a login that needs no waiting is done: a valid
        token, recently used, of a user with a session open. Anything else
        (a password, a failure, a ban, a write) raises WouldBlock first.
        """
        if (password is None) == (token is None):
            raise ValueError("a login takes a password or a token")
        if name is None and token is None:
            raise ValueError("a password login needs a name")
        if quick and token is None:
            raise WouldBlock
        method = "password" if token is None else "token"
        # Only password checks take one of the address's few slots: they are
        # what costs (argon2, ~0.1 s and 64 MiB) and what a guesser would run
        # in parallel. A token is 256 random bits, checked in microseconds;
        # queueing 300 reconnects behind two slots cost 2 ms of server CPU
        # each in wake-ups (bench: 300 token logins 0.68 s, pyftpdlib 0.09 s).
        # A password argon2 accepted lately takes no slot either: it is
        # checked with one keyed hash, and only a right one can match.
        recent = self._recently_verified(name, password) if token is None else None
        with self.bans.attempt(address) if token is None and recent is None else nullcontext():
            try:
                self._check_ban(address, quick)
            except Banned:
                audit.login_failed(name, address, Banned.code, method, banned=True)
                raise
            if recent is not None:
                account, used = recent, None
            elif token is None:
                account, used = self._check_password(name, password), None
            else:
                account, used = self._check_token(name, token, quick)
            if account is not None:
                # Banned while we checked (by a parallel failure): refused,
                # even with the right password.
                self._check_ban(address, quick)
        if account is None:
            if quick:
                raise WouldBlock  # the failure delay, and the ban count
            banned = self.bans.failed(address)
            audit.login_failed(name, address, AuthFailed.code, method, banned=banned)
            time.sleep(self.delay)
            if banned:
                self.bans.check(address)
            raise AuthFailed(
                "wrong user name or password"
                if token is None
                else "wrong user name or token (tokens expire, and are revoked when the password changes)"
            )
        self.bans.succeeded(address)
        if token is None and needs_rehash(account.password_hash):
            # The parameters were raised since this hash was made. The
            # password is the same, so its tokens stay.
            self._best_effort(
                "rehash", self.users.update, account.name, password_hash=hash_password(password), keep_tokens=True
            )
        issued = expires = None
        if used is not None:
            expires = used.expires
        elif new_token and self.tokens_enabled:
            # No token (the client keeps its password) if the store cannot write.
            issued, expires, used = self._best_effort("token", self._issue, account.name) or (None, None, None)
        identity = self._make_identity(account, quick=True) if quick else self._make_identity(account)
        audit.login(account.name, address, method, token_id(used.token_hash) if used else None)
        return Login(identity, issued, expires)

    def _check_ban(self, address: str, quick: bool) -> None:
        """Raises Banned if *address* is refused now; with *quick*,
        WouldBlock instead (the refusal closes the connection, which a
        worker does)."""
        try:
            self.bans.check(address)
        except Banned:
            if quick:
                raise WouldBlock from None
            raise

    def _check_password(self, name, password: str) -> Account | None:
        account = self.users.get(name) if isinstance(name, str) else None
        ok = verify_password(account.password_hash if account else None, password)
        if not ok or account.disabled:
            return None
        if isinstance(password, str):
            self.recent.remember(name, account.password_hash, password)
        return account

    def _recently_verified(self, name, password) -> Account | None:
        """*name*'s account if argon2 accepted *password* for its stored
        hash within ``password_cache_time`` and it is not disabled, else
        None (and the login takes the full check)."""
        if not (self.recent.enabled and isinstance(name, str) and isinstance(password, str)):
            return None
        account = self.users.get(name)
        if account is None or account.disabled or not self.recent.holds(name, account.password_hash, password):
            return None
        return account

    def _check_token(self, name, token: str, quick: bool = False) -> tuple[Account | None, TokenRecord | None]:
        if not self.tokens_enabled:
            return None, None
        hashed = token_hash(token)
        now = self._clock()
        found = self.users.token_account_now(hashed, now) if quick else self.users.token_account(hashed, now)
        if found is None:
            return None, None
        account, record = found
        if (name is not None and account.name != name) or account.disabled:
            return None, None
        if (record.last_used is None or now - record.last_used >= self.TOUCH_INTERVAL) and self._touch_due(hashed, now):
            if quick:
                raise WouldBlock  # a write, which may wait for the database's lock
            self._touching[hashed] = now
            self._best_effort("token use", self.users.touch_token, hashed, now)
        return account, record

    def _touch_due(self, hashed: str, now: float) -> bool:
        """False if this server has written the token's use within
        TOUCH_INTERVAL, or is writing it: a crowd reconnecting with one
        token then costs one write, not one each (the soak's 500 sessions
        queued seconds behind each other's writes every minute)."""
        if len(self._touching) > 4096:  # forget the old ones, keeping the table small
            self._touching = {h: t for h, t in self._touching.items() if now - t < self.TOUCH_INTERVAL}
        last = self._touching.get(hashed)
        return last is None or now - last >= self.TOUCH_INTERVAL

    @staticmethod
    def _best_effort(what: str, call, *args, **kwargs):
        """A write a login can do without: on a store that cannot write
        (a full disk, say), the login goes on and the operator is told."""
        try:
            return call(*args, **kwargs)
        except StoreError as exc:
            log.warning("login went on without its %s write: %s", what, exc)
            return None

    def _issue(self, name: str) -> tuple[str, float, TokenRecord]:
        token = new_token()
        now = self._clock()
        record = TokenRecord(token_hash(token), now, now + self.token_lifetime)
        self.users.add_token(name, record.token_hash, record.created, record.expires, self.max_tokens)
        return token, record.expires, record

    def revoke(self, address: str, name: str, token: str | None = None) -> int:
        """Revoke *name*'s token *token*, or all of their tokens; how many."""
        count = self.users.revoke_tokens(name, None if token is None else token_hash(token))
        audit.revoke(name, address, count)
        return count

    def now(self) -> float:
        return self._clock()


def _plain_identity(account, quick: bool = False) -> Identity:
    return Identity(account.name, user_home(account.name), can_write=not account.read_only)
