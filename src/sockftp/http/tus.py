"""tus 1.0 resumable uploads at ``/tus/`` (docs/HTTP.md).

The core protocol (HEAD, PATCH; 409 on a wrong offset, 412 on a wrong
version, 415 on a wrong content type), OPTIONS, and the extensions
creation, creation-with-upload, termination, expiration and checksum
(``sha1``, per PATCH; 460 on a mismatch, and the chunk is dropped).

Creation names the target in ``Upload-Metadata``: ``path`` (the file's
whole path), or ``filename`` (and optionally ``dir``, default ``/``). A
``checksum`` key (XXH3-128 as 32 hex digits, or ``xxh3-128:HEX``) is
verified against the whole file at the end; a mismatch stores nothing
and the upload is gone. The quota is reserved at creation.

There is no "finish" request in tus: the PATCH that brings the offset to
the length verifies the file, renames it into place and settles the
quota before it answers 204. Until then a HEAD reports at most
``length - 1`` (see :meth:`TusStore.offset`), so a client never takes a
failed finish for a success; after a failure it re-sends the last byte
and the finish runs again.

Records and expiry: :mod:`sockftp.http.tus_store`.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import logging

from ..protocol import checksum as checksums
from ..protocol.errors import BadRequest, Busy, ChecksumMismatch, NotFound, PathRefused, SockftpError
from ..protocol.limits import MAX_FILE_SIZE
from ..server import receive
from .conn import Closed
from .router import HttpError, Request, Response, error_response
from .tus_store import TusStore

log = logging.getLogger("sockftp.http.tus")

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
CHUNK_TYPE = "application/offset+octet-stream"
#: Bytes of Upload-Metadata accepted.
MAX_METADATA = 8 * 1024


def register(door) -> None:
    store = door.extensions["tus"] = TusStore(door.main)
    router = door.router
    router.register("OPTIONS", "/tus/", options, auth="none")
    router.register("POST", "/tus/", _tus(lambda r: create(r, store)))
    router.register("HEAD", "/tus/", _tus(lambda r: head(r, store)))
    router.register("PATCH", "/tus/", _tus(lambda r: patch(r, store)))
    router.register("DELETE", "/tus/", _tus(lambda r: terminate(r, store)))


def _tus(handler):
    """Check the client's tus version, and put ours on every answer."""

    def wrapped(request: Request) -> Response:
        try:
            if request.header("tus-resumable") != VERSION:
                raise HttpError(
                    412,
                    f"this server speaks tus {VERSION}",
                    code="unsupported_version",
                    headers=[("Tus-Version", VERSION)],
                )
            response = handler(request)
        except (HttpError, SockftpError) as exc:
            if isinstance(exc, SockftpError):
                exc.localize(request.session.display)
            response = error_response(exc)
            if isinstance(exc, Busy):
                response.status = 423
        response.headers.append(("Tus-Resumable", VERSION))
        return response

    return wrapped


def options(request: Request) -> Response:
    return Response(
        204,
        [
            ("Tus-Resumable", VERSION),
            ("Tus-Version", VERSION),
            ("Tus-Extension", EXTENSIONS),
            ("Tus-Max-Size", str(MAX_FILE_SIZE)),
            ("Tus-Checksum-Algorithm", "sha1"),
        ],
        None,
    )


# -- creation ---------------------------------------------------------------------------


def create(request: Request, store: TusStore) -> Response:
    session = request.session
    session.require_write()
    if request.rest:
        raise HttpError(405, "create uploads with POST /tus/", headers=[("Allow", "HEAD, PATCH, DELETE")])
    if request.header("upload-defer-length") is not None:
        raise HttpError(400, "Upload-Defer-Length is not supported: give Upload-Length")
    size = _integer(request, "upload-length")
    if size > MAX_FILE_SIZE:
        raise HttpError(413, f"uploads are limited to {MAX_FILE_SIZE} bytes", code="too_large")
    metadata = parse_metadata(request.header("upload-metadata") or "")
    raw = metadata.get("path")
    if raw is None:
        name = metadata.get("filename") or metadata.get("name")
        if not name or "/" in name:
            raise BadRequest("Upload-Metadata needs 'path', or a 'filename' (and perhaps 'dir')")
        raw = metadata.get("dir", "/").rstrip("/") + "/" + name
    target = session.resolve(raw if raw.startswith("/") else "/" + raw)
    if target == session.identity.home:
        raise PathRefused("a file name is needed")
    expected = _whole_checksum(metadata.get("checksum"))
    shown = session.display(target)
    if session.uploads is not None:  # one of this user's, abandoned: it lets go (see TusStore._idle)
        session.uploads.wait_for_abandoned(target, session.user)
    # The upload keeps a login of its own: this connection may end long before it.
    identity = store.login(session.user)
    upload = store.create(identity, target, shown, size, metadata, expected)
    request.state["audit"] = ("put", {"path": shown})
    headers = [
        ("Location", f"/tus/{upload.record.id}"),
        ("Upload-Expires", _http_date(upload.record.expires)),
        ("Cache-Control", "no-store"),
    ]
    if request.header("content-type") == CHUNK_TYPE:  # creation-with-upload
        store.acquire(upload)
        try:
            offset = _receive(request, store, upload, 0)
        finally:
            upload.lock.release()
        headers.append(("Upload-Offset", str(offset)))
    elif size == 0:
        with upload.lock:
            _finish(store, upload)
        headers.append(("Upload-Offset", "0"))
    return Response(201, headers, None)


def parse_metadata(header: str) -> dict[str, str]:
    """``key base64,key base64`` to a dict of UTF-8 strings."""
    if len(header) > MAX_METADATA:
        raise BadRequest(f"Upload-Metadata is longer than {MAX_METADATA} bytes")
    fields: dict[str, str] = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        if not key.isascii() or not key.isprintable() or key in fields:
            raise BadRequest(f"bad Upload-Metadata key {key[:64]!r}")
        try:
            fields[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata {key!r}: the value must be base64 of UTF-8") from None
    return fields


def _whole_checksum(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if not value.startswith(checksums.ALGORITHM + ":"):
        value = f"{checksums.ALGORITHM}:{value}"
    if not checksums.is_valid(value):
        raise BadRequest("metadata 'checksum' must be the file's XXH3-128: 32 hex digits")
    return value


# -- the core: HEAD and PATCH ----------------------------------------------------------


def _upload_of(request: Request, store: TusStore):
    upload_id = request.rest
    upload = store.get(upload_id, request.session.user)
    if store.expired(upload):
        store.acquire(upload)
        try:
            store.drop(upload)
        finally:
            upload.lock.release()
        raise NotFound("this upload expired")
    return upload


def head(request: Request, store: TusStore) -> Response:
    upload = _upload_of(request, store)
    record = upload.record
    headers = [
        ("Upload-Offset", str(store.offset(upload))),
        ("Upload-Length", str(record.size)),
        ("Upload-Expires", _http_date(record.expires)),
        ("Cache-Control", "no-store"),
    ]
    if record.metadata:
        encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in record.metadata.items())
        headers.append(("Upload-Metadata", encoded))
    return Response(200, headers, None)


def patch(request: Request, store: TusStore) -> Response:
    if request.header("content-type") != CHUNK_TYPE:
        raise HttpError(415, f"a PATCH's Content-Type must be {CHUNK_TYPE}", code="unsupported_media_type")
    request.session.require_write()
    upload = _upload_of(request, store)
    store.acquire(upload)
    try:
        request.state["audit"] = ("put", {"path": upload.record.shown})
        offset = _receive(request, store, upload, _integer(request, "upload-offset"))
    finally:
        try:
            store.let_go(upload)
        finally:
            upload.lock.release()
    return Response(204, [("Upload-Offset", str(offset)), ("Upload-Expires", _http_date(upload.record.expires))], None)


def _receive(request: Request, store: TusStore, upload, offset: int) -> int:
    """Append the request's body to *upload*, which the client says is at
    *offset*; finish the upload if that completes it. Returns the new offset."""
    record = upload.record
    if record.done:
        raise HttpError(
            409, "this upload is complete", code="offset_mismatch", headers=[("Upload-Offset", str(record.size))]
        )
    held = store.offset(upload)
    if offset != held:
        raise HttpError(409, f"the upload is at offset {held}, not {offset}", code="offset_mismatch")
    digest = _chunk_checksum(request.header("upload-checksum"))
    store.reopen(upload, offset)
    storage_upload, hasher = upload.upload, upload.hasher
    room = record.size - offset
    chunk_hash = hashlib.sha1() if digest is not None else None
    received = 0
    try:
        for chunk in request.body():
            received += len(chunk)
            if received > room:
                raise HttpError(413, f"the upload is {record.size} bytes long; this PATCH goes past its end")
            if chunk_hash is not None:
                chunk_hash.update(chunk)
            hasher.update(chunk)
            storage_upload.write(chunk)
    except (Closed, HttpError, SockftpError, OSError):
        # The client went, or sent too much: what arrived stays unless the
        # chunk carried a checksum, which can no longer be checked.
        _settle(store, upload, offset, keep_new=chunk_hash is None and received <= room)
        raise
    if chunk_hash is not None and chunk_hash.digest() != digest:
        _settle(store, upload, offset, keep_new=False)
        raise HttpError(460, "the chunk does not match its Upload-Checksum; it was dropped", code="checksum_mismatch")
    store.touch(upload)
    if storage_upload.offset == record.size:
        _finish(store, upload)
        return record.size
    return storage_upload.offset


def _settle(store: TusStore, upload, offset: int, keep_new: bool) -> None:
    """After a PATCH that failed: keep its bytes, or go back to *offset*."""
    if keep_new:
        return  # the storage upload stays open at its new offset, its hasher in step
    try:
        store.reopen(upload, offset)  # drops what the PATCH wrote, hashes the rest again
    except SockftpError as exc:
        log.warning("tus upload %s: could not go back to offset %d: %s", upload.record.id, offset, exc)
        upload.close(keep=True)


def _finish(store: TusStore, upload) -> None:
    """Verify the whole file, rename it into place, settle the quota."""
    record = upload.record
    try:
        receive.verify_and_commit(upload.upload, upload.hasher, record.checksum, upload.lists, record.shown)
    except ChecksumMismatch as exc:
        store.drop(upload)  # the bytes are gone: nothing of this upload can be finished
        raise HttpError(460, exc.message, code="checksum_mismatch") from None
    except SockftpError:
        # Not committed (disk, quota, busy): the bytes are kept if the
        # storage could, and a HEAD says length - 1, so the client sends
        # the last byte again and this runs again.
        upload.upload = None
        upload.close(keep=True)
        raise
    store.finished(upload)


# -- termination ------------------------------------------------------------------------


def terminate(request: Request, store: TusStore) -> Response:
    request.session.require_write()
    upload = _upload_of(request, store)
    store.acquire(upload)
    try:
        store.drop(upload)
    finally:
        upload.lock.release()
    return Response(204, [], None)


# -- helpers ------------------------------------------------------------------------------


def _integer(request: Request, name: str) -> int:
    value = request.header(name)
    if value is None or not value.isdigit() or len(value) > 20:
        raise BadRequest(f"{name.title()} must be a non-negative integer")
    return int(value)


def _chunk_checksum(header: str | None) -> bytes | None:
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() != "sha1":
        raise HttpError(400, "Upload-Checksum supports sha1 only", code="bad_request")
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 20:
        raise BadRequest("Upload-Checksum: sha1 takes the base64 of a 20-byte digest")
    return digest


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)
