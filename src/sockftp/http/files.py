"""The file API for scripts: ``/files/PATH``, ``/api/quota`` and ``/healthz`` (docs/HTTP.md).

* ``GET``/``HEAD /files/PATH``: a file, with one ``Range`` (206, or 416)
  and ``If-Range``; ``ETag`` and ``X-Checksum`` (its XXH3-128);
  always as an attachment (``Content-Disposition`` with RFC 6266's
  ``filename*``) and ``application/octet-stream``, under a CSP that runs
  nothing, so an uploaded HTML or SVG file never runs in the door's origin.
* ``GET /files/DIR/``: the directory's listing as JSON, streamed entry by
  entry (chunked), so a directory of a million names is never held whole.
* ``PUT /files/PATH``: an upload, ``Content-Length`` or chunked, through a
  hidden partial that is hashed as it lands and renamed into place only
  once complete and (with ``X-Checksum``) verified: the native ``put``'s
  rules, through the same storage.
* ``DELETE /files/PATH``: a file, or an empty directory.
* ``POST /files/PATH?op=mkdir`` (``&parents=1``), ``?op=move&to=/NEW/PATH``.

Every path goes through :meth:`Session.resolve` (the jail, ``..``,
reserved names) and every file through the session's quota-accounted
storage; nothing here knows how files are stored.
"""

from __future__ import annotations

import email.utils
import json
import re
from urllib.parse import quote

from .. import __version__
from ..protocol import checksum as checksums
from ..protocol.errors import BadRequest, PathRefused
from ..server import receive
from ..server.quota import ledger_of
from ..storage import DIRECTORY
from .router import FileBody, HttpError, Request, Response, json_response

#: The header that carries a file's checksum, both ways.
CHECKSUM_HEADER = "X-Checksum"
#: Entries per chunk of a streamed listing.
LIST_BATCH = 256


def register(door) -> None:
    router = door.router
    router.register("GET", "/files/", get)
    router.register("PUT", "/files/", put)
    router.register("DELETE", "/files/", delete)
    router.register("POST", "/files/", post)
    router.register("GET", "/api/quota", quota)
    router.register("GET", "/healthz", healthz, auth="none")


def target_of(request: Request):
    """The storage path ``/files/...`` names, in the session's home."""
    return request.session.resolve("/" + request.rest)


# -- reading ---------------------------------------------------------------------------


def get(request: Request) -> Response:
    session = request.session
    target = target_of(request)
    request.state["audit"] = ("get", {"path": session.display(target)})  # refusals are audited too
    entry = session.storage.stat(target)
    if entry.type == DIRECTORY:
        del request.state["audit"]  # a listing, which no door audits
        return _listing(request, target)
    download = session.storage.open_read(target)
    try:
        response = _download(request, target, download)
    except BaseException:
        download.close()
        raise
    if not isinstance(response.body, FileBody):
        download.close()
    return response


def _download(request: Request, target, download) -> Response:
    size = download.size
    checksum = download.checksum()
    etag = '"' + checksum.partition(":")[2] + '"'
    modified = email.utils.formatdate(download.mtime, usegmt=True)
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("Content-Disposition", content_disposition(target[-1] if target else "download")),
        ("Accept-Ranges", "bytes"),
        ("ETag", etag),
        ("Last-Modified", modified),
        (CHECKSUM_HEADER, checksum),
        ("Cache-Control", "private, no-cache"),
    ]
    if etag in _etags(request.header("if-none-match")):
        return Response(304, headers, None)
    wanted = request.header("range")
    if_range = request.header("if-range")
    if wanted is not None and if_range is not None and if_range.strip() not in (etag, modified):
        wanted = None  # the file changed since the client's copy: all of it, not a piece
    span = parse_range(wanted, size) if wanted is not None else None
    if span is None:
        return Response(200, headers, FileBody(download, 0, size))
    first, last = span
    headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    return Response(206, headers, FileBody(download, first, last - first + 1))


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single ``Range`` on *size* bytes; None
    to send the whole file (several ranges, or a unit we do not know, which
    RFC 9110 lets a server ignore); HttpError 416 if it cannot be met."""
    match = _RANGE.match(header)
    if match is None:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:  # the last N bytes
        count = int(end)
        if count == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - count, 0), size - 1
    first = int(start)
    last = int(end) if end else size - 1
    if end and last < first:
        return None  # invalid: ignored, as RFC 9110 says
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> HttpError:
    return HttpError(
        416, f"the file has {size} bytes", code="range_not_satisfiable", headers=[("Content-Range", f"bytes */{size}")]
    )


def _etags(header: str | None) -> list[str]:
    if not header:
        return []
    return [tag.strip().removeprefix("W/") for tag in header.split(",")]


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback name and RFC 6266's
    ``filename*`` (RFC 8187 UTF-8, percent-encoded): any name, quotes, CR,
    LF and all, becomes a header value that cannot break out of itself."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%;' else "_" for c in name) or "download"
    encoded = quote(name.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _listing(request: Request, target) -> Response:
    session = request.session
    shown = session.display(target)
    entries = session.storage.list(target)

    def body():
        yield b'{"path":' + json.dumps(shown).encode() + b',"entries":['
        batch: list[bytes] = []
        first = True
        for entry in entries:
            item = json.dumps(entry.to_wire(), ensure_ascii=True, separators=(",", ":")).encode()
            batch.append(item if first else b"," + item)
            first = False
            if len(batch) >= LIST_BATCH:
                yield b"".join(batch)
                batch = []
        batch.append(b"]}\n")
        yield b"".join(batch)

    return Response(200, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body())


def quota(request: Request) -> Response:
    ledger = ledger_of(request.session)
    ledger.measure()
    return json_response(ledger.to_wire(), headers=[("Cache-Control", "no-store")])


def healthz(request: Request) -> Response:
    return json_response({"status": "ok", "server": f"sockftp/{__version__}"}, headers=[("Cache-Control", "no-store")])


# -- writing ---------------------------------------------------------------------------


def put(request: Request) -> Response:
    session = request.session
    session.require_write()
    if request.path.endswith("/"):
        raise PathRefused("a file name is needed (the path ends in /)")
    target = target_of(request)
    if target == session.identity.home:
        raise PathRefused("a file name is needed")
    expected = request.header(CHECKSUM_HEADER)
    if expected is not None and not checksums.is_valid(expected):
        raise BadRequest(f"{CHECKSUM_HEADER} must be one of {list(checksums.ALGORITHMS)} 'ALG:HEX'")
    length = request.header("content-length")
    size = int(length) if length is not None else None  # h11 checked it; None: chunked
    shown = session.display(target)
    request.state["audit"] = ("put", {"path": shown})
    if session.uploads is not None:
        session.uploads.wait_for_abandoned(target, session.user)
    upload = session.storage.open_upload(target, size, 0)
    lists = receive.keeps_blocks(session.storage, size)
    hasher = receive.hasher_for(lists)
    committed = False
    try:
        for chunk in request.body():
            hasher.update(chunk)
            upload.write(chunk)
        replaced = upload.replaced_size()
        actual = receive.verify_and_commit(upload, hasher, expected, lists, shown)
        committed = True
    finally:
        if not committed:
            upload.keep()  # a partial a later upload of this size may resume; no-op after a discard
    status = 201 if replaced is None else 200
    return json_response(
        {"path": shown, "size": upload.size if upload.size is not None else upload.offset, "checksum": actual},
        status,
        headers=[(CHECKSUM_HEADER, actual), ("ETag", '"' + actual.partition(":")[2] + '"')],
    )


def delete(request: Request) -> Response:
    session = request.session
    session.require_write()
    target = target_of(request)
    shown = session.display(target)
    request.state["audit"] = ("rm", {"path": shown})
    session.refuse_home(target, "removed")
    entry = session.storage.stat(target)
    if entry.type == DIRECTORY:
        request.state["audit"] = ("rmdir", {"path": shown})
        session.storage.rmdir(target)
    else:
        session.storage.remove(target)
    return Response(204, [], None)


def post(request: Request) -> Response:
    op = request.query.get("op")
    if op == "mkdir":
        return _mkdir(request)
    if op == "move":
        return _move(request)
    raise HttpError(400, "POST /files/PATH takes ?op=mkdir or ?op=move&to=PATH")


def _mkdir(request: Request) -> Response:
    session = request.session
    session.require_write()
    target = target_of(request)
    shown = session.display(target)
    request.state["audit"] = ("mkdir", {"path": shown})
    session.storage.mkdir(target, parents=request.query.get("parents") in ("1", "true", "yes"))
    return json_response({"path": shown}, 201)


def _move(request: Request) -> Response:
    session = request.session
    session.require_write()
    to = request.query.get("to")
    if not to:
        raise HttpError(400, "a move needs ?to=/NEW/PATH")
    source = target_of(request)
    target = session.resolve(to if to.startswith("/") else "/" + to)
    session.refuse_home(source, "renamed")
    session.refuse_home(target, "replaced")
    request.state["audit"] = ("mv", {"source": session.display(source), "target": session.display(target)})
    session.storage.rename(source, target)
    return json_response({"source": session.display(source), "target": session.display(target)})
