"""The HTTP door's routing table, and the Request and Response every handler sees.

A route is a method and a path prefix mapped to a handler:
``router.register("GET", "/files/", handler)``. The longest matching
prefix wins; a prefix ending in ``/`` matches everything below it, one
without matches that exact path only. Modules of their own (the file API,
tus, the browser UI, share links) register their routes on the door's
:class:`Router`, so adding a page never touches the connection loop.

A handler takes a :class:`Request` and returns a :class:`Response` (or
raises :class:`HttpError`, or a sockftp error, which :func:`error_response`
maps to a status). Each route says whether it needs a login
(``auth="required"``, the default), may use one (``"optional"``) or
ignores it (``"none"``); the door logs the request in through
:mod:`sockftp.http.auth` before calling a handler that asks for one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..protocol.errors import ErrorCode, SockftpError

#: Every response carries these: no sniffing a download into HTML, no
#: framing by other origins, no referrer leaking paths to other sites.
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)

#: The default Content-Security-Policy: nothing runs, nothing loads. A UI
#: route that serves pages sets its own, narrower than "anything".
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


class HttpError(Exception):
    """Answer with *status* and a short JSON error (and *headers*)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: Iterable = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _STATUS_CODES.get(status, "error")
        self.headers = list(headers)


_STATUS_CODES = {400: "bad_request", 401: "auth_required", 404: "not_found", 405: "method_not_allowed"}


@dataclass
class FileBody:
    """A response body read from a storage download: *count* bytes from
    *offset*. The connection sends it with ``sendfile`` when it can, and
    closes *download* when done."""

    download: object
    offset: int
    count: int


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: bytes; an iterable of bytes (sent chunked, unless a Content-Length
    #: header is given); a FileBody; or None for no body (HEAD, 204).
    body: bytes | Iterable[bytes] | FileBody | None = b""
    #: Called once the response is sent (or failed to be).
    after: Callable[[], None] | None = None

    def header(self, name: str, value) -> Response:
        self.headers.append((name, str(value)))
        return self


def json_response(data, status: int = 200, headers: Iterable = ()) -> Response:
    body = json.dumps(data, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
    return Response(status, [("Content-Type", "application/json"), *headers], body)


def text_response(text: str, status: int = 200, headers: Iterable = ()) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8"), *headers], text.encode())


@dataclass
class Request:
    """One request, its head read; the body is read through :meth:`body`.

    ``path`` is the target's path, percent-decoded and UTF-8 (a target
    that is not UTF-8 is refused before any handler runs); ``query`` its
    query string, decoded. ``headers`` maps lower-case names to values
    (repeated headers joined by ``", "``). ``session`` is a
    :class:`~sockftp.server.session.Session`, logged in when the route
    asked for a login; ``state`` is free for handlers and auth hooks.
    """

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    exchange: object  # the connection's Exchange: body reading, the socket
    session: object = None
    door: object = None  # the HttpServer: its router, its main server, its extensions
    tls: bool = False
    peer: str = ""  # the client's IP address
    #: What the route matched: path[len(prefix):] is the rest.
    prefix: str = ""
    state: dict = field(default_factory=dict)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def rest(self) -> str:
        """The path after the route's prefix."""
        return self.path[len(self.prefix) :]

    def body(self) -> Iterator[bytes]:
        """The body's chunks, as they arrive (nothing for a bodiless request)."""
        return self.exchange.body()

    def read_body(self, limit: int) -> bytes:
        """The whole body; HttpError 413 past *limit* bytes."""
        chunks, size = [], 0
        for chunk in self.body():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"the body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @property
    def cookies(self) -> dict[str, str]:
        jar: dict[str, str] = {}
        for part in (self.header("cookie") or "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name not in jar:
                jar[name] = value
        return jar


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    method: str
    prefix: str
    handler: Handler
    auth: str  # "required", "optional" or "none"


class Router:
    """Method + path prefix -> handler."""

    AUTH = ("required", "optional", "none")

    def __init__(self):
        self._routes: dict[tuple[str, str], Route] = {}

    def register(self, method: str, prefix: str, handler: Handler, *, auth: str = "required") -> None:
        """Route *method* requests for *prefix* (and below it, if it ends
        in ``/``) to *handler*. Registering the same pair again replaces it."""
        if auth not in self.AUTH:
            raise ValueError(f"auth must be one of {self.AUTH}")
        if not prefix.startswith("/"):
            raise ValueError("a route's prefix starts with /")
        method = method.upper()
        self._routes[(method, prefix)] = Route(method, prefix, handler, auth)

    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def match(self, method: str, path: str) -> Route:
        """The route for *method* and *path*; HttpError 404, or 405 (with
        ``Allow``) if the path is routed for other methods only."""
        found = self._longest(method, path)
        if found is None and method == "HEAD":
            found = self._longest("GET", path)  # a GET handler answers HEAD too (without its body)
        if found is not None:
            return found
        allowed = sorted({m for (m, _p) in self._routes if self._longest(m, path) is not None})
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise HttpError(405, f"{method} is not allowed here", headers=[("Allow", ", ".join(sorted(allowed)))])
        raise HttpError(404, "no such page")

    def _longest(self, method: str, path: str) -> Route | None:
        best = None
        for (m, prefix), route in self._routes.items():
            if m != method:
                continue
            if prefix.endswith("/"):
                hit = path.startswith(prefix) or path == prefix[:-1]
            else:
                hit = path == prefix
            if hit and (best is None or len(prefix) > len(best.prefix)):
                best = route
        return best


def parse_query(query: str) -> dict[str, str]:
    """The query string's fields (the first of repeated ones). Raises
    HttpError 400 if it is not UTF-8."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the query string is not UTF-8") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


#: sockftp's error codes as HTTP statuses.
ERROR_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.BAD_JSON: 400,
    ErrorCode.AUTH_REQUIRED: 401,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.BANNED: 403,
    ErrorCode.TLS_REQUIRED: 403,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.PATH_REFUSED: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.EXISTS: 409,
    ErrorCode.NOT_A_DIRECTORY: 409,
    ErrorCode.IS_A_DIRECTORY: 409,
    ErrorCode.NOT_EMPTY: 409,
    ErrorCode.BUSY: 423,
    ErrorCode.CHECKSUM_MISMATCH: 422,
    ErrorCode.OFFSET_MISMATCH: 409,
    ErrorCode.NO_SPACE: 507,
    ErrorCode.INSUFFICIENT_STORAGE: 507,
    ErrorCode.QUOTA_EXCEEDED: 413,
    ErrorCode.TOO_MANY_SESSIONS: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TIMEOUT: 408,
    ErrorCode.IO_ERROR: 500,
    ErrorCode.INTERNAL: 500,
}


def error_response(exc: Exception) -> Response:
    """The response for a refusal: a JSON ``{"error": CODE, "message": ...}``."""
    if isinstance(exc, HttpError):
        status, code, message, headers = exc.status, exc.code, exc.message, list(exc.headers)
    elif isinstance(exc, SockftpError):
        status = ERROR_STATUS.get(exc.code, 400)
        code, message, headers = str(exc.code), exc.message, []
        retry = exc.details.get("retry_after")
        if retry is not None:
            headers.append(("Retry-After", str(retry)))
    else:
        raise TypeError(exc)
    if status == 401:
        headers.append(("WWW-Authenticate", 'Basic realm="sockftp", charset="UTF-8"'))
    return json_response({"error": code, "message": message}, status, headers)
