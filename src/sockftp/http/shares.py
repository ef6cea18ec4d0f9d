"""Share links: a read-only link to a file or folder, or an upload-only drop
link into a folder, with an expiry and an optional password.

The owner's API (any login: the browser's cookie, Basic, Bearer):

* ``GET /shares/`` their live links; ``POST /shares/`` a new one (JSON
  ``path``, ``kind`` ``read`` or ``drop``, ``expires_in`` seconds or null
  for never, optional ``password``), answered once with its URL;
  ``DELETE /shares/ID`` revokes one.

The links, for anyone who has one, under ``/s/SECRET/``:

* ``/s/SECRET/`` the share page; ``info`` what the link opens; ``POST
  unlock`` its password, answered with a cookie for this link only;
* a read link: ``files/`` and below, the file or folder as ``/files/``
  serves it (Range, listings, attachments), nothing else;
* a drop link: ``tus/`` (uploads, resumable), ``PUT files/NAME`` and
  ``POST files/DIR?op=mkdir`` (a dropped folder's folders), into the
  folder only, never over an existing file, and nothing can be read.

The store keeps only the SHA-256 of a link's secret (256 random bits), as
for re-login tokens. A link's request is served by the owner's storage
through their quota (``identity_for``: a drop counts against the owner's
quota), jailed in the shared path by :meth:`Session.resolve` as a home is,
by the same handlers as the owner's own requests: nothing is re-implemented
here. A deleted or disabled owner, an expired or revoked link: 404. Wrong
passwords count as failed logins of the address, so bans apply. The audit
log names the owner, the path in their home and the link's id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from urllib.parse import unquote

from ..accounts import ShareRecord, hash_password, token_hash, verify_password
from ..protocol import paths
from ..protocol.errors import BadRequest, NotFound, PermissionDenied, SockftpError
from ..server import audit
from ..server.session import Session
from ..storage import DIRECTORY
from . import files, tus, ui
from .router import HttpError, Request, Response, json_response

#: Longest lifetime a link may be given, seconds (about ten years).
MAX_LIFETIME = 3650 * 86400
#: Bytes a share request's JSON body may have.
MAX_BODY = 8 * 1024
#: Methods a link of each kind may use, by what follows its secret.
READ_METHODS = {"GET", "HEAD"}


def register(door) -> None:
    router = door.router
    shares = Shares(door)
    door.extensions["shares"] = shares
    door.redactors.append(redact)
    router.register("GET", "/shares/", shares.list)
    router.register("POST", "/shares/", shares.create)
    router.register("DELETE", "/shares/", shares.revoke)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        router.register(method, "/s/", shares.serve, auth="none")


_SECRET_IN_TARGET = re.compile(r"^/s/([^/?]+)")


def redact(target: str) -> str:
    """*target* for the log: a link's secret opens the link to whoever reads
    it, so the log shows the link's public id instead (as ``/shares/`` lists it)."""
    return _SECRET_IN_TARGET.sub(lambda m: f"/s/id:{token_hash(unquote(m.group(1)))[:16]}", target)


class Shares:
    def __init__(self, door):
        self.door = door
        self.main = door.main
        self.users = door.main.users
        #: Signs the cookie that says a link's password was given; new at
        #: every start (a restart asks for passwords again).
        self._key = secrets.token_bytes(32)

    # -- the owner's API ----------------------------------------------------------------

    def list(self, request: Request) -> Response:
        if request.rest:
            raise HttpError(404, "no such page")
        owner = request.session.require_login().name
        links = self.users.shares(owner, time.time())
        return json_response({"shares": [_public(link) for link in links]}, headers=[("Cache-Control", "no-store")])

    def create(self, request: Request) -> Response:
        if request.rest:
            raise HttpError(404, "no such page")
        session = request.session
        owner = session.require_login().name
        fields = ui.json_body(request, MAX_BODY)
        kind = fields.get("kind", "read")
        if kind not in ("read", "drop"):
            raise BadRequest("kind is 'read' or 'drop'")
        raw = fields.get("path")
        if not isinstance(raw, str) or not raw:
            raise BadRequest("path: the file or folder to share")
        target = session.resolve(raw)
        entry = session.storage.stat(target)
        if kind == "drop":
            session.require_write()
            if entry.type != DIRECTORY:
                raise BadRequest("a drop link opens a folder")
        lifetime = fields.get("expires_in", 7 * 86400)
        if lifetime is not None and (
            isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or not 0 < lifetime <= MAX_LIFETIME
        ):
            raise BadRequest(f"expires_in: seconds, more than 0 and at most {MAX_LIFETIME}, or null for never")
        password = fields.get("password")
        if password is not None and (not isinstance(password, str) or not password):
            raise BadRequest("password: a non-empty string, or leave it out")
        secret = secrets.token_urlsafe(32)
        hashed = token_hash(secret)
        now = time.time()
        link = ShareRecord(
            id=hashed[:16],
            token_hash=hashed,
            owner=owner,
            path=session.display(target),
            kind=kind,
            password_hash=hash_password(password) if password else None,
            created=now,
            expires=None if lifetime is None else now + lifetime,
        )
        self.users.add_share(link)
        return json_response({**_public(link), "url": f"/s/{secret}/"}, 201, [("Cache-Control", "no-store")])

    def revoke(self, request: Request) -> Response:
        owner = request.session.require_login().name
        if not request.rest or not self.users.revoke_share(owner, request.rest):
            raise NotFound("no such share link")
        return Response(204, [], None)

    # -- the links ----------------------------------------------------------------------

    def serve(self, request: Request) -> Response:
        secret, slash, rest = request.rest.partition("/")
        link = self.users.share(token_hash(secret), time.time()) if secret else None
        if link is None:
            if slash and rest == "" and request.method in READ_METHODS:
                # A person following a dead link gets the page, which says so.
                page = ui.static_page(request, "share.html")
                page.status = 404
                return page
            raise HttpError(404, "this link does not exist, was revoked or has expired", code="not_found")
        if not slash:  # /s/SECRET: the page's relative URLs need the slash
            return Response(308, [("Location", f"/s/{secret}/"), ("Cache-Control", "no-store")], b"")
        where = f"/s/{secret}/"
        method = request.method
        if rest == "" and method in READ_METHODS:
            return ui.static_page(request, "share.html")
        if rest == "info" and method in READ_METHODS:
            return self._info(request, link, secret)
        if rest == "unlock" and method == "POST":
            return self._unlock(request, link, secret, where)
        if not self._unlocked(request, link, secret):
            raise HttpError(403, "this link needs its password", code="password_required")
        if link.kind == "read" and method in READ_METHODS and (rest == "files" or rest.startswith("files/")):
            return self._as_owner(request, link, where + "files/", files.get)
        if link.kind == "drop" and (rest == "tus" or rest.startswith("tus/")):
            return self._as_owner(request, link, where + "tus/", lambda r: self._drop_tus(r, where))
        if link.kind == "drop" and method == "PUT" and rest.startswith("files/"):
            return self._as_owner(request, link, where + "files/", self._drop_put)
        mkdir = method == "POST" and request.query.get("op") == "mkdir"
        if link.kind == "drop" and mkdir and rest.startswith("files/"):
            # Folders for a dropped folder's files: making one overwrites nothing.
            return self._as_owner(request, link, where + "files/", files.post)
        raise HttpError(404, "a read link reads, a drop link takes uploads: nothing else here")

    def _info(self, request: Request, link: ShareRecord, secret: str) -> Response:
        unlocked = self._unlocked(request, link, secret)
        info = {"kind": link.kind, "expires": link.expires, "password": link.password_hash is not None}
        info["unlocked"] = unlocked
        if unlocked:  # what it opens, only to whoever may open it
            session = self._session(request, link)
            try:
                entry = session.storage.stat(session.identity.home)
            finally:
                session.logout()
            info.update(name=link.path.rsplit("/", 1)[-1] or "/", type=entry.type, size=entry.size)
        return json_response(info, headers=[("Cache-Control", "no-store")])

    def _unlock(self, request: Request, link: ShareRecord, secret: str, where: str) -> Response:
        if link.password_hash is None:
            return Response(204, [], None)
        password = ui.json_body(request, MAX_BODY).get("password")
        bans = self.main.authenticator.bans
        bans.check(request.peer)
        with bans.attempt(request.peer):
            ok = isinstance(password, str) and verify_password(link.password_hash, password)
        if not ok:
            bans.failed(request.peer)
            raise HttpError(403, "wrong password for this link", code="auth_failed")
        secure = "; Secure" if request.tls else ""
        cookie = f"{_cookie_name(link)}={self._seal(secret)}; Path={where}; HttpOnly; SameSite=Strict{secure}"
        return Response(204, [("Set-Cookie", cookie), ("Cache-Control", "no-store")], None)

    def _unlocked(self, request: Request, link: ShareRecord, secret: str) -> bool:
        if link.password_hash is None:
            return True
        sent = request.cookies.get(_cookie_name(link))
        return sent is not None and hmac.compare_digest(sent.encode(), self._seal(secret).encode())

    def _seal(self, secret: str) -> str:
        return hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()

    # -- requests through a link, as its owner, jailed in the shared path --------------

    def _session(self, request: Request, link: ShareRecord) -> Session:
        """A session of the link's owner whose home is the shared path,
        writable for a drop link only. Log it out after use."""
        account = self.users.get(link.owner)
        if account is None or account.disabled:
            raise HttpError(404, "this link does not exist, was revoked or has expired", code="not_found")
        identity = self.main.identity_for(account)
        # account=None: the identity's own can_write rules, not the owner's
        # ledger's (which would let a read link write).
        shared = dataclasses.replace(
            identity,
            home=identity.home + paths.resolve((), link.path),
            can_write=link.kind == "drop" and not account.read_only,
            account=None,
        )
        session = ui.side_session(request)
        session.login(shared)
        return session

    def _as_owner(self, request: Request, link: ShareRecord, prefix: str, handler) -> Response:
        session = self._session(request, link)
        inner = dataclasses.replace(request, session=session, prefix=prefix)
        try:
            response = handler(inner)
        except SockftpError as exc:
            exc.localize(session.display)
            session.logout()
            raise
        except BaseException:
            session.logout()
            raise
        after = response.after

        def done() -> None:
            try:
                if after is not None:
                    after()
            finally:
                session.logout()
                _audit(request, link, inner.state.get("audit"), response.status)

        response.after = done
        return response

    def _drop_put(self, request: Request) -> Response:
        _refuse_existing(request.session, request.session.resolve("/" + request.rest))
        response = files.put(request)
        response.body = b""  # the drop's owner decides what a dropper sees: nothing
        return response

    def _drop_tus(self, request: Request, where: str) -> Response:
        """tus through a drop link, by the door's own tus routes: a new
        upload may not replace a file, and its URL stays under the link."""
        if request.method == "POST" and request.rest == "":
            metadata = tus.parse_metadata(request.header("upload-metadata") or "")
            raw = metadata.get("path") or metadata.get("dir", "/").rstrip("/") + "/" + metadata.get("filename", "")
            _refuse_existing(request.session, request.session.resolve(raw if raw.startswith("/") else "/" + raw))
        route = self.door.router.match(request.method, "/tus/" + request.rest)
        response = route.handler(request)
        response.headers = [
            (name, value.replace("/tus/", where + "tus/", 1) if name.lower() == "location" else value)
            for name, value in response.headers
        ]
        return response


def _audit(request: Request, link: ShareRecord, audited, status: int) -> None:
    """The audit line of a change or transfer through a link: as its owner,
    with the path in the owner's home and the link's id (the door's own
    line would name nobody, and a path inside the link)."""
    if audited is None:
        return
    name, fields = audited
    inside = fields.get("path") or fields.get("source") or "/"
    path = link.path if inside == "/" else link.path.rstrip("/") + inside
    moved = {}
    if name in ("put", "get"):
        moved["bytes"] = request.exchange.bytes_in if name == "put" else request.exchange.bytes_out
    result = "ok" if status < 400 else str(status)
    audit.record(name, user=link.owner, ip=request.peer, path=path, share=link.id, **moved, result=result)


def _refuse_existing(session: Session, target) -> None:
    try:
        session.storage.stat(target)
    except NotFound:
        return
    raise PermissionDenied("a drop link adds files; one with this name is there already")


def _cookie_name(link: ShareRecord) -> str:
    return f"sockftp_share_{link.id}"


def _public(link: ShareRecord) -> dict:
    """What the owner sees of a link: never its secret or password hash."""
    return {
        "id": link.id,
        "path": link.path,
        "kind": link.kind,
        "created": link.created,
        "expires": link.expires,
        "password": link.password_hash is not None,
    }


__all__ = ["MAX_LIFETIME", "Shares", "register"]
