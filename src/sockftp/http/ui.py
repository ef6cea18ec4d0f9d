"""The browser UI at ``/``: its static page and scripts, and its logins.

Routes (each module under :mod:`sockftp.http` adds its own; see
:data:`sockftp.http.server.ROUTE_MODULES`):

* ``GET /`` the page, ``GET /static/NAME`` its scripts and styles (a fixed
  set of files shipped in the package, read once at start);
* ``GET /ui/session`` who is logged in, and the CSRF token the page must
  send with every change; ``POST /ui/login`` and ``POST /ui/logout``.

The page does everything else through the same APIs as scripts: ``/files/``
(listings, downloads, mkdir, move, delete, the quota), ``/tus/`` (uploads)
and ``/shares/`` (share links). A browser is logged in by a cookie
(:mod:`sockftp.http.websession`), which this module turns into a login for
every route through :func:`sockftp.http.auth.set_cookie_hook`, checking the
CSRF token of every change on the way.

What keeps a hostile file name or file from running script in this origin:
the page renders every name with ``textContent`` (never ``innerHTML``), its
Content-Security-Policy allows scripts from this origin's ``/static/``
only (no inline script, no ``eval``; ``'wasm-unsafe-eval'`` lets hash-wasm
compile its WebAssembly), and files are served by the file API as
attachments with ``nosniff``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from ..protocol.errors import AuthFailed, BadRequest, Banned
from ..server.session import Session
from . import auth
from .router import HttpError, Request, Response, json_response
from .websession import (
    CSRF_HEADER,
    SAFE_METHODS,
    WebLogins,
    clear_cookie,
    cookie_name,
    csrf_ok,
    origin_ok,
    set_cookie,
)

#: The page's policy: scripts, styles and requests to this origin only.
CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

#: The files under static/ that are served, and their types. Nothing else
#: in the package is reachable, whatever the path says.
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: The header the page sends with its every request (see cookie_login).
UI_HEADER = "x-sockftp-ui"
#: Bytes a login request's body may have.
MAX_LOGIN_BODY = 8 * 1024


def register(door) -> None:
    logins = WebLogins(users=door.main.users)
    door.extensions["ui"] = logins
    auth.set_cookie_hook(cookie_login)
    router = door.router
    router.register("GET", "/", _page, auth="none")
    router.register("GET", "/static/", _static, auth="none")
    router.register("GET", "/ui/session", lambda request: _session(request, logins), auth="none")
    router.register("POST", "/ui/login", lambda request: _login(request, logins), auth="none")
    router.register("POST", "/ui/logout", lambda request: _logout(request, logins), auth="none")


def logins_of(request: Request) -> WebLogins | None:
    """The logins of the door *request* came in by (the cookie hook is one
    function for the process; several doors may run in it, as in the tests)."""
    door = request.door
    return door.extensions.get("ui") if door is not None else None


def cookie_login(request: Request) -> str | None:
    """The cookie hook: the account a request's login cookie stands for,
    or None. A change (not GET, HEAD or OPTIONS) logged in by cookie must
    carry the login's CSRF token and come from this origin: HttpError 403
    otherwise. A request of the page's (``X-Sockftp-UI``) whose login has
    ended gets 403 ``login_required``."""
    logins = logins_of(request)
    secret = request.cookies.get(cookie_name(request.tls))
    login = logins.find(secret) if logins is not None else None
    if login is None:
        if request.header(UI_HEADER):
            # The page's own request, its login gone (idle, logged out, a
            # restart): not the door's 401, whose Basic challenge makes
            # chromium hold a fetch() forever for a password box.
            raise HttpError(403, "the browser login has ended: log in again", code="login_required")
        return None
    if request.method not in SAFE_METHODS:
        if not csrf_ok(login, request.header(CSRF_HEADER)):
            raise HttpError(403, "a change made through the browser login needs its CSRF token", code="csrf")
        if not origin_ok(request.header("origin"), request.header("host"), request.tls):
            raise HttpError(403, "a change made through the browser login must come from this site", code="csrf")
    return login.user


# -- the page ---------------------------------------------------------------------------


@functools.cache
def _load_static() -> dict[str, tuple[bytes, str]]:
    """Every servable file under static/, by its path there: its bytes and type."""
    files: dict[str, tuple[bytes, str]] = {}
    root = resources.files(__package__) / "static"

    def walk(folder, prefix: str) -> None:
        for item in folder.iterdir():
            if item.is_dir():
                walk(item, f"{prefix}{item.name}/")
                continue
            suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
            if suffix in STATIC_TYPES:
                files[prefix + item.name] = (item.read_bytes(), STATIC_TYPES[suffix])

    walk(root, "")
    return files


def page_response(body: bytes, content_type: str) -> Response:
    return Response(
        200,
        [
            ("Content-Type", content_type),
            ("Content-Security-Policy", CSP),
            ("Cache-Control", "no-cache"),
        ],
        body,
    )


def static_page(request: Request, name: str) -> Response:
    """The page *name* of static/, under the UI's policy."""
    return page_response(*_load_static()[name])


def _page(request: Request) -> Response:
    if request.path != "/":
        raise HttpError(404, "no such page")
    return static_page(request, "index.html")


def _static(request: Request) -> Response:
    found = _load_static().get(request.rest)
    if found is None or request.rest.endswith(".html"):
        raise HttpError(404, "no such file")
    return page_response(*found)


# -- logins -----------------------------------------------------------------------------


def _session(request: Request, logins: WebLogins) -> Response:
    login = logins.find(request.cookies.get(cookie_name(request.tls)))
    if login is None:
        # No WWW-Authenticate: the browser would pop up its own login box.
        return json_response({"error": "auth_required", "message": "not logged in"}, 401, _no_store())
    return json_response({"user": login.user, "csrf": login.csrf}, headers=_no_store())


def _login(request: Request, logins: WebLogins) -> Response:
    if not origin_ok(request.header("origin"), request.header("host"), request.tls):
        raise HttpError(403, "log in from this site's page", code="csrf")
    fields = json_body(request, MAX_LOGIN_BODY)
    name, password = fields.get("user"), fields.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise BadRequest("a login needs a user name and a password")
    # A session of its own, so that this connection is not left logged in
    # by the password: the cookie is what logs the browser's requests in.
    session = side_session(request, authenticator=request.session.authenticator)
    try:
        session.authenticate(name, password=password)  # bans, delays, argon2, the audit line
    except (AuthFailed, Banned) as exc:
        status = 403 if isinstance(exc, Banned) else 401
        return json_response({"error": str(exc.code), "message": exc.message}, status, _no_store())
    finally:
        session.logout()
    account = request.session.authenticator.users.get(name)
    secret, login = logins.open(name, account.password_hash if account is not None else None)
    headers = [("Set-Cookie", set_cookie(secret, request.tls)), *_no_store()]
    return json_response({"user": login.user, "csrf": login.csrf}, headers=headers)


def side_session(request: Request, **fields) -> Session:
    """A session beside the connection's own, for the same client."""
    door_session = request.session
    return Session(
        server_storage=door_session.server_storage,
        peer=door_session.peer,
        address=request.peer,
        uploads=door_session.uploads,
        **fields,
    )


def _logout(request: Request, logins: WebLogins) -> Response:
    secret = request.cookies.get(cookie_name(request.tls))
    login = logins.find(secret)
    if login is not None and not csrf_ok(login, request.header(CSRF_HEADER)):
        raise HttpError(403, "logging out needs the CSRF token", code="csrf")
    logins.logout(secret)
    return Response(204, [("Set-Cookie", clear_cookie(request.tls)), *_no_store()], None)


def json_body(request: Request, limit: int) -> dict:
    if not (request.header("content-type") or "").startswith("application/json"):
        # A cross-site form cannot send JSON without a CORS preflight.
        raise HttpError(415, "send JSON (Content-Type: application/json)")
    try:
        fields = json.loads(request.read_body(limit))
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise BadRequest("the body must be a JSON object")
    return fields


def _no_store() -> list[tuple[str, str]]:
    return [("Cache-Control", "no-store")]


__all__ = ["CSP", "cookie_login", "json_body", "logins_of", "page_response", "register", "side_session", "static_page"]
