"""The browser UI's logins: a session cookie and the CSRF token bound to it.

A browser logs in once with its password (``POST /ui/login``, through
:meth:`sockftp.server.session.Session.authenticate`, so bans, argon2 and the
password cache apply as on every door) and gets a cookie holding a random
256-bit secret. The server keeps only the secret's SHA-256, in memory, with
the login's :class:`~sockftp.server.session.Identity` (its quota ledger
stays joined while the login lives) and a CSRF token.

* **The cookie** is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
  and ``Secure`` under TLS. Strict costs the UI nothing: the page itself
  is static and asks ``/ui/session`` who is logged in by a same-origin
  ``fetch``, which carries the cookie even when the page was reached by a
  link from another site; and it keeps another site's links (to a
  ``/files/`` download, say) from carrying the login at all.
* **CSRF:** every request that a cookie logs in and that may change
  something (any method but GET, HEAD and OPTIONS) must carry the token in
  ``X-CSRF-Token``, and an ``Origin``, when there is one, must be this
  server's. A cross-site form can send neither header.
* **Expiry slides:** a login lives until it has been idle for ``idle``
  seconds, and every request renews it, each tus ``PATCH`` included, so a
  login never expires in the middle of a transfer, however long
  (SFTPGo's #1398: a 7.8 GB upload killed by a fixed expiry).
* **Revocation:** logging out forgets the secret at once. A deleted or
  disabled account is refused by the server's watcher (the ledger's
  ``gone``); a changed password is found by reading the account again at
  most every ``RECHECK`` seconds, and ends the login, as it revokes tokens.

Logins live in this process's memory: a restart logs browsers out (their
uploads resume once they log in again). Nothing here touches a socket.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from ..accounts import StoreError

#: Cookie names. ``__Host-`` would pin the cookie to this host and path
#: ``/``, but browsers accept it only with ``Secure``, so only under TLS.
COOKIE = "sockftp_session"
TLS_COOKIE = "__Host-sockftp_session"
#: The request header that carries the CSRF token.
CSRF_HEADER = "x-csrf-token"
#: Seconds a login may sit idle (no request at all) before it ends.
IDLE = 3600.0
#: Seconds between two reads of a logged-in account, to end the logins of
#: a password changed since.
RECHECK = 30.0
#: Logins kept at most; past it the least recently used goes. Bounds the
#: memory a password-holding client can make the server spend.
MAX_LOGINS = 10_000
#: Methods that change nothing, and need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class WebLogin:
    """One browser's login."""

    user: str
    csrf: str
    password_hash: str | None  # as at login; a change ends the login
    last_seen: float
    checked: float  # when the account was last read


class WebLogins:
    """Browser logins by the hash of their cookie's secret. Thread-safe."""

    def __init__(self, users=None, idle: float = IDLE, clock=time.monotonic, max_logins: int = MAX_LOGINS):
        self.users = users  # a UserStore, to see changed passwords; None: never checked
        self.idle = idle
        self.max_logins = max_logins
        self._clock = clock
        self._lock = threading.Lock()
        self._logins: dict[str, WebLogin] = {}  # insertion order = least recently used first

    def open(self, user: str, password_hash: str | None = None) -> tuple[str, WebLogin]:
        """A new login of account *user*: its cookie secret and its record."""
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        login = WebLogin(user, secrets.token_urlsafe(32), password_hash, now, now)
        with self._lock:
            self._logins[_hash(secret)] = login
            while len(self._logins) > self.max_logins:
                del self._logins[next(iter(self._logins))]
            self._expire(now)
        return secret, login

    def find(self, secret: str | None) -> WebLogin | None:
        """The live login of cookie *secret*, renewed; None if there is none."""
        if not secret:
            return None
        key = _hash(secret)
        now = self._clock()
        with self._lock:
            self._expire(now)
            login = self._logins.pop(key, None)
            if login is not None:
                login.last_seen = now
                self._logins[key] = login  # most recently used last
                due = now - login.checked >= RECHECK
                if due:
                    login.checked = now
        if login is None:
            return None
        if due and not self._still_valid(login):
            self.logout(secret)
            return None
        return login

    def logout(self, secret: str | None) -> None:
        """Log cookie *secret* out (nothing if it is not logged in)."""
        if not secret:
            return
        with self._lock:
            self._logins.pop(_hash(secret), None)

    def close(self) -> None:
        """Forget every login (the door is stopping)."""
        with self._lock:
            self._logins.clear()

    def __len__(self) -> int:
        return len(self._logins)

    def _still_valid(self, login: WebLogin) -> bool:
        if self.users is None or login.password_hash is None:
            return True
        try:
            account = self.users.get(login.user)
        except StoreError:
            return True  # the store is away: keep the login, read it next time
        return account is not None and not account.disabled and account.password_hash == login.password_hash

    def _expire(self, now: float) -> None:
        """Drop the logins idle too long: the least recently used come
        first, so this stops at the first live one. Lock held."""
        while self._logins:
            key = next(iter(self._logins))
            if now - self._logins[key].last_seen <= self.idle:
                break
            del self._logins[key]


def csrf_ok(login: WebLogin, sent: str | None) -> bool:
    """True if *sent* is *login*'s CSRF token (compared in constant time)."""
    return sent is not None and hmac.compare_digest(login.csrf.encode(), sent.encode("utf-8", "replace"))


def origin_ok(origin: str | None, host: str | None, tls: bool) -> bool:
    """True if a request's ``Origin`` is absent or this server's own."""
    if origin is None:
        return True
    scheme = "https" if tls else "http"
    return host is not None and origin == f"{scheme}://{host}"


def cookie_name(tls: bool) -> str:
    return TLS_COOKIE if tls else COOKIE


def set_cookie(secret: str, tls: bool) -> str:
    """The ``Set-Cookie`` value of a login. No Max-Age: the browser keeps
    it until it closes, and the server ends it after ``IDLE`` anyway."""
    secure = "; Secure" if tls else ""
    return f"{cookie_name(tls)}={secret}; Path=/; HttpOnly; SameSite=Strict{secure}"


def clear_cookie(tls: bool) -> str:
    secure = "; Secure" if tls else ""
    return f"{cookie_name(tls)}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


__all__ = [
    "CSRF_HEADER",
    "IDLE",
    "SAFE_METHODS",
    "WebLogin",
    "WebLogins",
    "clear_cookie",
    "cookie_name",
    "csrf_ok",
    "origin_ok",
    "set_cookie",
]
