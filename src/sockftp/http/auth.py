"""Who an HTTP request is: Basic, Bearer tokens, a cookie hook, or anonymous.

Every way in ends in the server's :class:`~sockftp.server.auth.Authenticator`
(through :meth:`Session.authenticate`) or its ``identity_for``, so the
HTTP door has the same accounts, failure delays, bans, audit lines and
quota-wrapped storage as the other doors, and re-implements none of them.

* ``Authorization: Basic`` (user and password) only over TLS or from a
  loopback address: anywhere else the password would cross the network
  in clear. Refused with 403 ``tls_required``, before any check.
* ``Authorization: Bearer TOKEN``: one of sockftp's re-login tokens
  (``sockftp login`` or the native ``auth`` with ``new_token``); the token
  names its account. Same rule on plaintext as Basic.
* A cookie session: the browser UI registers a hook with
  :func:`set_cookie_hook`; it returns the account name a request's cookie
  stands for (having checked it, and CSRF, itself), or None.
* Nothing: the anonymous area if the server allows it, else 401.

A connection keeps its login from one request to the next while the
credentials stay the same, so a script's keep-alive requests pay one
password check, and the audit log gets one login per connection, not
per request.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable

from ..protocol.errors import AuthRequired, PermissionDenied, TlsRequired
from ..server import audit
from .router import HttpError, Request

#: fn(request) -> account name or None; see set_cookie_hook.
_cookie_hook: Callable[[Request], str | None] | None = None


def set_cookie_hook(hook: Callable[[Request], str | None] | None) -> None:
    """Let *hook* log requests in by cookie: it gets the request and
    returns the name of the account whose valid session the cookie holds
    (None: no cookie session, try the other ways). It is called only for
    requests without an ``Authorization`` header."""
    global _cookie_hook
    _cookie_hook = hook


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class Login:
    """One connection's login, kept across its requests."""

    def __init__(self, door, session):
        self.door = door  # the HttpServer
        self.session = session
        self.key: tuple | None = None  # the credentials the session is logged in with

    def authenticate(self, request: Request, required: bool) -> None:
        """Log *request*'s session in from its credentials. With
        *required*, HttpError 401 if it carries none and the server has
        no anonymous access."""
        header = request.header("authorization")
        if header is not None:
            self._by_header(request, header)
            return
        hook = _cookie_hook
        name = hook(request) if hook is not None else None
        if name is not None:
            self._as_user(name, ("cookie", name))
            return
        if self.door.main.config.anonymous:
            if self.key != ("anonymous",):
                self.session.login(self.door.main.anonymous_identity())
                self.key = ("anonymous",)
            return
        if self.key is not None:  # credentials gone: so is the login
            self.session.logout()
            self.key = None
        if required:
            raise AuthRequired("log in: Authorization: Basic (over TLS) or Bearer TOKEN")

    def _by_header(self, request: Request, header: str) -> None:
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme not in ("basic", "bearer"):
            raise HttpError(401, "unsupported Authorization scheme: use Basic or Bearer", code="auth_required")
        key = (scheme, value)
        if key == self.key and self.session.identity is not None:
            return
        if not request.tls and not is_loopback(request.peer):
            raise TlsRequired("credentials are accepted only over TLS (or from this machine)")
        if scheme == "basic":
            if _forged(request):
                raise HttpError(
                    403, "a change from another site's page is refused: use the UI, or a script", code="cross_site"
                )
            name, password = _basic(value)
            credentials = {"password": password}
        else:
            name, credentials = None, {"token": value}
        self.session.logout()
        self.key = None
        self.session.authenticate(name, **credentials)  # AuthFailed, Banned: counted, delayed, audited
        self.key = key

    def _as_user(self, name: str, key: tuple) -> None:
        """A login the hook vouched for: the account as it is now."""
        if key == self.key and self.session.identity is not None:
            return
        main = self.door.main
        account = main.users.get(name)
        if account is None or account.disabled:
            raise PermissionDenied("this account no longer exists or is disabled; log in again")
        self.session.logout()
        self.session.login(main.identity_for(account))
        audit.login(account.name, self.session.address, "cookie")
        self.key = key

    def close(self) -> None:
        self.session.logout()


#: Methods a browser may send cross-site without asking (a form, a link):
#: only these can be forged with credentials it has cached.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _forged(request: Request) -> bool:
    """True if *request* changes something and a browser says it came from
    another site's page. A browser that has cached Basic credentials for
    this server sends them with any form that posts here, so a change
    that comes with them is refused when its ``Sec-Fetch-Site`` or its
    ``Origin`` names another site. Scripts (curl, tuspy) send neither; a
    cookie login has its CSRF token instead, and a Bearer token is never
    sent by a browser on its own."""
    if request.method in _SAFE_METHODS:
        return False
    site = request.header("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return True
    origin = request.header("origin")
    if origin is None:
        return False
    host = request.header("host")
    return host is None or origin != f"{'https' if request.tls else 'http'}://{host}"


def _basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise HttpError(400, "Basic credentials must be base64 of UTF-8 'user:password'") from None
    name, sep, password = decoded.partition(":")
    if not sep:
        raise HttpError(400, "Basic credentials must be 'user:password'")
    return name, password
