"""The Python client library: one method per command, resumable verified transfers.

    from sockftp import Client

    with Client("127.0.0.1", 9999) as ftp:
        ftp.put("report.pdf", "inbox/report.pdf")
        for entry in ftp.ls("inbox"):
            print(entry.name, entry.size)
        ftp.get("inbox/report.pdf", "copy.pdf")

Every failure is a :class:`~sockftp.protocol.errors.SockftpError` subclass carrying the
server's code and message (``NotFound``, ``PathRefused``, ...), or
:class:`~sockftp.protocol.errors.ConnectionLost` when the connection broke.

Transfers are verified end to end with the checksum the protocol carries,
and resumed automatically: an interrupted ``put`` continues from what the
server holds, an interrupted ``get`` from the local partial file
(``.NAME.sockftp-part`` beside the target), which becomes the target only
once complete and verified.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import ssl
import stat as statmod
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from ..disk.prealloc import Preallocation
from ..protocol import checksum as checksums
from ..protocol.entries import DIRECTORY, FILE, Entry
from ..protocol.errors import (
    FATAL_CODES,
    AuthFailed,
    BadRequest,
    ChecksumMismatch,
    ConnectionLost,
    Exists,
    NotADirectory,
    OffsetMismatch,
    PathRefused,
    SockftpError,
    Timeout,
    error_from_reply,
)
from ..protocol.limits import DEFAULT_HOST, DEFAULT_PORT, MAX_NAME_LENGTH, PROTOCOL_VERSIONS
from ..protocol.tls import TlsSetupError, client_context, describe_error
from ..protocol.wire import ConnectionClosed, SourceEnded, Wire

#: progress(done, total): bytes of the current file moved so far, and its size.
Progress = Callable[[int, int], None]

#: Uploads at least this large first ask the server what it holds, to resume;
#: smaller ones are sent whole in one write, header and bytes together.
RESUME_THRESHOLD = 1024 * 1024

#: Suffix of a download in progress, beside its target.
PARTIAL_SUFFIX = ".sockftp-part"

#: A token is used for a re-login only while it has at least this long to
#: live (seconds; or half its lifetime, if that is shorter): past it, the
#: client logs in with its password and asks for a new one, rather than
#: offer the server a token it is about to refuse.
TOKEN_MARGIN = 60.0

#: OpenSSL's verify code for a certificate that does not name the host.
_X509_V_ERR_HOSTNAME_MISMATCH = 62


@dataclass(frozen=True)
class TransferResult:
    path: str  # the remote path
    local: str
    size: int  # the whole file
    sent: int  # bytes moved this time (less than size after a resume)
    resumed_from: int
    checksum: str | None


class Client:
    """A connection to a sockftp server.

    Args:
        host, port: the server.
        timeout: seconds any wait for the server may last.
        retries: times a transfer reconnects and resumes after the connection
            breaks, before giving up.
        connect: connect now (else at the first request).
        user, password, token: log in as *user* after every connect (so a
            reconnect logs in again), with *password* or a re-login
            *token*, or both (the token first; the password if the token
            is refused). The library never prompts for a password.
            With a password, if the server has the ``tokens`` feature, the
            first login asks for a token (:attr:`token`), and later logins
            (reconnects, retries) use it instead of the password, so they
            cost the server no argon2 check.
        keep_token: a token the client asked for itself is revoked by
            :meth:`quit` (and so when a ``with`` block ends), since nobody
            else knows it. With *keep_token*, it stays valid until it
            expires, for the caller to pass on (``Client(user=, token=)``).
        tls, tls_ca, insecure: speak TLS, verifying the server's certificate
            against the system's CAs, or against *tls_ca* (a PEM file); with
            *insecure*, not at all.

    Attributes:
        token: the re-login token in use (given, or issued at the first
            login), or None.
        token_expires: when it expires (Unix time, the server's clock), or
            None if unknown.

    Raises:
        ValueError: *user* without *password* or *token*, or the other way round.
        AuthFailed, Banned: when connecting, if the login is refused.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        timeout: float = 60.0,
        retries: int = 0,
        connect: bool = True,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        keep_token: bool = False,
        tls: bool = False,
        tls_ca: str | None = None,
        insecure: bool = False,
    ):
        # The library never prompts: reading a password is the caller's
        # business (the command line takes SOCKFTP_PASSWORD or asks).
        if user is not None and password is None and token is None:
            raise ValueError(
                f"Client(user={user!r}) needs password= too: the library never prompts for one (or give token=)"
            )
        if user is None and (password is not None or token is not None):
            raise ValueError(f"Client({'password' if password is not None else 'token'}=...) needs user= too")
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.user = user
        self.password = password
        self.token = token
        self.token_expires: float | None = None
        self.keep_token = keep_token
        self._token_deadline: float | None = None  # time.monotonic(); None: not known
        self._own_token = False  # issued to this client, known to no one else
        self.tls = tls or tls_ca is not None or insecure  # never send a password in clear by mistake
        self.tls_ca = tls_ca
        self.insecure = insecure
        self.server_info: dict = {}
        self._wire: Wire | None = None
        self._spoke_plaintext = False  # a plaintext hello of ours was answered
        self._cwd = "/"
        if connect:
            self.connect()

    # -- connection --------------------------------------------------------------

    def connect(self) -> dict:
        """Connect and say hello, then log in as ``user`` (if set) and go
        back to the remote directory. Returns the server's hello reply."""
        return self._connect(login=True)

    def _connect(self, login: bool) -> dict:
        """connect(); with *login* False, only the hello: for auth() on a
        lost connection, whose login is the new connection's first."""
        self.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = self._wrap_tls(sock)
        self._wire = Wire(sock, idle_timeout=self.timeout)
        token_login = None
        if login and self.user is not None and self._may_send_token_first():
            token_login = self._token_login()
        if token_login is None:
            try:
                self.server_info = self.hello()
            except SockftpError:
                self.close()  # (unsupported_version, say): never open but not logged in
                raise
            self._spoke_plaintext = not self.tls
            if not login:
                return self.server_info
        else:
            # The hello and the login by token go out in one write, and cost
            # one round trip, not two (see _may_send_token_first).
            self._send_many([self._hello_request(), token_login])
            try:
                self.server_info = self._reply()
            except SockftpError:
                self.close()  # the login's reply is still to come: out of step
                raise
        if self.user is not None:
            try:
                self._login(sent=token_login)
            except SockftpError:
                # Never leave a connection that is open but not logged in:
                # its next request would fail with a confusing auth_required.
                self.close()
                raise
        if self._cwd != "/":
            try:
                self.cd(self._cwd)
            except SockftpError as exc:
                if exc.code not in ("not_found", "not_a_directory"):
                    raise
                self._cwd = "/"  # removed meanwhile, by us or another session
        return self.server_info

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        """TLS over *sock*, verifying the server (see tls, tls_ca, insecure).

        Raises ConnectionLost saying why the handshake failed: an untrusted
        certificate, one for another host, or a server that does not speak
        TLS. (A plaintext client meeting a TLS server instead gets
        ``tls_required`` as the answer to its hello.)
        """
        where = f"{self.host}:{self.port}"
        try:
            context = client_context(self.tls_ca, self.insecure)
        except TlsSetupError as exc:
            sock.close()
            raise SockftpError(str(exc), code="local_error") from None
        sock.settimeout(self.timeout)
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            why = describe_error(exc)
            if exc.verify_code == _X509_V_ERR_HOSTNAME_MISMATCH or "mismatch" in why.lower():
                hint = f"certificate of {where} is for another host ({why}); connect by a name it was issued for"
                raise ConnectionLost(f"{hint}, or use --insecure") from None
            hint = f"certificate of {where} not trusted: {why}"
            raise ConnectionLost(f"{hint}; use --tls-ca FILE for a private CA or --insecure") from None
        except TimeoutError:
            raise ConnectionLost(
                f"no TLS handshake from {where} within {self.timeout:g} s: the server does not speak TLS?"
            ) from None
        except ssl.SSLError as exc:
            if exc.reason != "WRONG_VERSION_NUMBER":
                raise ConnectionLost(
                    f"TLS handshake with {where} failed ({describe_error(exc)}): the server does not speak TLS?"
                ) from None
            # The server answered in plaintext. A TLS server does that only
            # when it refuses a connection before TLS starts.
            raise ConnectionLost(
                f"{where} answered the TLS handshake in plaintext: the server does not speak TLS, or it refused"
                " the connection (too many sessions, or this address is banned)"
            ) from None
        except OSError as exc:
            raise ConnectionLost(
                f"TLS handshake with {where} failed ({describe_error(exc)}): the server does not speak TLS?"
            ) from None

    def _may_send_token_first(self) -> bool:
        """True if the token may go out with the hello, before the server
        has answered: over TLS; to a server that has answered a plaintext
        hello of this client; or to a loopback address, where the bytes
        never leave this machine. Anywhere else a TLS-only server, which
        answers a plaintext hello with tls_required, would have been sent
        the token in clear."""
        if self.tls or self._spoke_plaintext:
            return True
        try:
            return stays_on_this_machine(self._wire.sock.getpeername()[0])
        except OSError:
            return False

    def _token_login(self) -> dict | None:
        """The ``auth`` request of a login by token, while there is a token
        to use: one still valid, or the only way in (no password)."""
        fresh = self._token_deadline is None or time.monotonic() < self._token_deadline
        if self.token is None or not (fresh or self.password is None):
            return None
        return {"cmd": "auth", "user": self.user, "token": self.token}

    def _login(self, sent: dict | None = None) -> dict:
        """Log in as self.user (after hello): with the token while it is
        valid, else (or if the server refuses it) with the password.
        *sent*: the login by token, already sent behind the hello; its
        reply comes next. Returns the ``auth`` reply (``user``,
        ``read_only``...)."""
        header = sent or self._token_login()
        if header is not None:
            try:
                return self._auth(header, sent=sent is not None)
            except AuthFailed:
                self._forget_token()  # expired or revoked: it will never work again
                if self.password is None:
                    raise
        if self.password is None:
            raise AuthFailed(f"cannot log in as {self.user}: no token left, and no password")
        self._forget_token()
        return self._auth({"cmd": "auth", "user": self.user, "password": self.password})

    def _auth(self, header: dict, sent: bool = False) -> dict:
        """Send *header*, an ``auth`` request (unless *sent* already),
        asking for a token if it carries a password and the server has
        tokens; keep what the reply says of the token."""
        if "password" in header and "tokens" in self.server_info.get("features", ()):
            header["new_token"] = True
        if not sent:
            # On this connection only: a new one would log in before this
            # login is sent, with the credentials it is replacing.
            if self._wire is None:
                raise ConnectionLost(f"connection to {self.host}:{self.port} closed before the login")
            with self._io():
                self._wire.send_header(header)
        reply = self._reply()
        if isinstance(reply.get("token"), str):
            self.token, self._own_token = reply["token"], True
        expires_in = reply.get("token_expires_in")
        if isinstance(expires_in, int) and not isinstance(expires_in, bool):
            self._token_deadline = time.monotonic() + expires_in - min(TOKEN_MARGIN, expires_in / 2)
            self.token_expires = reply.get("token_expires")
        return reply

    def _forget_token(self) -> None:
        self.token = self.token_expires = self._token_deadline = None
        self._own_token = False

    def _release_token(self) -> None:
        """Revoke the token this client asked for itself (unless
        keep_token), if it is still connected. Best effort: the token
        expires anyway."""
        if self._own_token and not self.keep_token and self._wire is not None:
            try:
                self.revoke_token()
            except SockftpError:
                pass

    def close(self) -> None:
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        if self._wire is not None and exc[0] is None:
            try:
                self.quit()
            except SockftpError:
                pass
        self.close()

    @property
    def wire(self) -> Wire:
        """The connection, made again on demand if it was lost or closed
        (a new session: hello, then back to the remote cwd)."""
        if self._wire is None:
            self.connect()
        return self._wire

    # -- requests ------------------------------------------------------------------

    def request(self, header: dict) -> dict:
        """Send *header*, return the reply. Raises the reply's error."""
        self._send(header)
        return self._reply()

    @contextmanager
    def _io(self):
        """Turn a broken or silent connection into ConnectionLost.

        After a local timeout the connection is out of step (a late reply
        would answer the next request), so it is closed either way.
        """
        try:
            yield
        except ConnectionClosed as exc:
            self._lost(exc)
        except Timeout:
            self._lost(f"no answer for {self.timeout:g} s")

    def _send(self, header: dict, payload: bytes = b"") -> None:
        with self._io():
            self.wire.send_header(header, payload)

    def _send_many(self, headers: list[dict]) -> None:
        with self._io():
            self.wire.send_headers(headers)

    def _reply(self) -> dict:
        wire = self._wire  # never a new connection: the reply belongs to this one
        if wire is None:
            raise ConnectionLost("the connection closed before the reply")
        with self._io():
            reply = wire.read_header()
        if reply is None:
            self._lost("the server closed the connection")
        if reply.get("ok") is not True:
            error = error_from_reply(reply)
            if error.code in FATAL_CODES:
                self.close()
            raise error
        return reply

    def _lost(self, why) -> NoReturn:
        self.close()
        raise ConnectionLost(f"connection to {self.host}:{self.port} lost: {why}")

    # -- commands ------------------------------------------------------------------

    def hello(self) -> dict:
        return self.request(self._hello_request())

    @staticmethod
    def _hello_request() -> dict:
        return {"cmd": "hello", "versions": list(PROTOCOL_VERSIONS), "client": "sockftp-python"}

    def ping(self) -> None:
        self.request({"cmd": "ping"})

    def auth(self, user: str, password: str | None = None, *, token: str | None = None) -> dict:
        """Log in as *user* on this connection with *password* or *token*
        (switching from whoever was logged in), and again after every
        reconnect. The remote directory goes back to ``/``. Returns the
        reply (``user``, ``read_only``, and the token fields). On a lost
        connection it connects again and logs in as *user* only.

        Raises AuthFailed (the previous login, if any, stays in force; the
        token this client had asked for itself is revoked all the same if
        the connection was still open), Banned."""
        if not isinstance(user, str) or not isinstance(password if token is None else token, str):
            raise ValueError("auth needs a user name and a password or a token")
        if password is not None and token is not None:
            raise ValueError("auth takes a password or a token, not both")
        if self._wire is not None:
            self._release_token()  # (which may find the connection gone, or not)
        fresh = self._wire is None
        if fresh:
            # The connection was lost: this login is the new one's first.
            # Reconnecting as the previous user first would cost a login,
            # could fail on its own (a stale token), and would try the new
            # token under the old name.
            self._connect(login=False)
        kept = (self.token, self.token_expires, self._token_deadline, self._own_token)
        self._forget_token()
        header = {"cmd": "auth", "user": user}
        header.update({"password": password} if token is None else {"token": token})
        self.token = token  # for a token login; _auth learns its expiry from the reply
        try:
            try:
                reply = self._auth(header)
            except ConnectionLost:
                if fresh:
                    raise
                # The connection had died unnoticed (say, the server's idle
                # timeout): once more, on a new one.
                fresh = True
                self._connect(login=False)
                reply = self._auth(header)
        except SockftpError:
            # The previous login stays, and so does the token it uses.
            self.token, self.token_expires, self._token_deadline, self._own_token = kept
            if fresh:
                self.close()  # not logged in: the next request reconnects as before
            raise
        self.user, self.password = user, password
        self._cwd = "/"
        return reply

    def revoke_token(self, token: str | None = None) -> int:
        """Revoke *token* (by default the one this client uses) of the
        logged-in user. Returns 1, or 0 if it was not a live token of
        theirs. A client whose own token is revoked logs in with its
        password from then on."""
        if token is None and self.token is None:
            return 0
        count = self.request({"cmd": "revoke", "token": token or self.token})["revoked"]
        if token is None or token == self.token:
            self._forget_token()
        return count

    def revoke_all_tokens(self) -> int:
        """Revoke every token of the logged-in user, everywhere (this
        client's too). Returns how many there were."""
        count = self.request({"cmd": "revoke", "all": True})["revoked"]
        self._forget_token()
        return count

    def quota(self) -> dict:
        """The logged-in user's usage and limits: the ``quota`` reply, with
        ``user``, ``used_bytes``, ``used_files``, and ``quota_bytes`` and
        ``max_files`` (None for no limit)."""
        return self.request({"cmd": "quota"})

    def quit(self) -> None:
        """End the session, revoking the token this client asked for itself
        (unless keep_token)."""
        try:
            self._release_token()
            self.request({"cmd": "quit"})
        finally:
            self.close()

    def pwd(self) -> str:
        return self.request({"cmd": "pwd"})["path"]

    def cd(self, path: str) -> str:
        self._cwd = self.request({"cmd": "cd", "path": path})["path"]
        return self._cwd

    def stat(self, path: str) -> Entry:
        return _entry(self.request({"cmd": "stat", "path": path}))

    def checksum(self, path: str) -> str:
        return self.request({"cmd": "stat", "path": path, "checksum": True})["checksum"]

    def iter_ls(self, path: str = "") -> Iterator[Entry]:
        """The entries of a directory (or the file itself), as they arrive.

        Leaving the loop early reads the rest of the listing, so the
        connection stays in step."""
        self._send({"cmd": "ls", "path": path})
        more = True
        try:
            while more:
                more = False  # an error reply ends a listing too
                reply = self._reply()
                more = bool(reply.get("more"))
                for item in reply.get("entries", []):
                    yield _entry(item)
        finally:
            while more and self._wire is not None:
                more = False
                more = bool(self._reply().get("more"))

    def ls(self, path: str = "") -> list[Entry]:
        """The entries of a directory, sorted by name."""
        return sorted(self.iter_ls(path), key=lambda e: e.name)

    def mkdir(self, path: str, parents: bool = False) -> str:
        return self.request({"cmd": "mkdir", "path": path, "parents": parents})["path"]

    def rmdir(self, path: str) -> None:
        self.request({"cmd": "rmdir", "path": path})
        if self._cwd != "/":
            self._cwd = self.pwd()  # the server moves us out of a removed cwd

    def rm(self, path: str) -> None:
        self.request({"cmd": "rm", "path": path})

    def mv(self, source: str, target: str) -> None:
        self.request({"cmd": "mv", "source": source, "target": target})

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
            return True
        except SockftpError as exc:
            if exc.code == "not_found":
                return False
            raise

    # -- transfers -------------------------------------------------------------------

    def put(
        self,
        local: str | os.PathLike,
        remote: str | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Upload file *local* to *remote* (default: its name, in the current
        remote directory). Resumes an interrupted upload of the same path and
        size; the server commits the file only if its checksum matches."""
        local = os.fspath(local)
        remote = remote if remote is not None else os.path.basename(local)
        return self._with_retries(lambda: self._put_once(local, remote, resume, progress))

    def _put_once(self, local: str, remote: str, resume: bool, progress: Progress | None) -> TransferResult:
        with open(local, "rb", buffering=0) as f:
            st = os.fstat(f.fileno())
            if not statmod.S_ISREG(st.st_mode):
                raise BadRequest(f"not a regular file: {local}")
            size = st.st_size
            offset = 0
            if resume and size >= RESUME_THRESHOLD:
                offset = self.request({"cmd": "resume", "path": remote, "size": size})["offset"]
            restarted = False
            while True:
                try:
                    return self._send_file(f, local, remote, size, offset, progress)
                except ChecksumMismatch:
                    if not offset or restarted:
                        raise
                    # The held part came from another file: start over, once.
                    offset, restarted = 0, True
                except OffsetMismatch as exc:
                    # The partial changed between resume and put: use what is held.
                    held = exc.details.get("offset")
                    if restarted or not isinstance(held, int) or held == offset or not 0 <= held <= size:
                        raise
                    offset, restarted = held, True

    def _send_file(self, f, local: str, remote: str, size: int, offset: int, progress) -> TransferResult:
        hasher = checksums.Hasher()
        header = {"cmd": "put", "path": remote, "size": size, "offset": offset, "checksum": "trailer"}
        if size < RESUME_THRESHOLD:
            data = os.pread(f.fileno(), size + 1, 0)
            if len(data) != size:
                raise SockftpError(f"{local} changed size while being read", code="local_error")
            hasher.update(data)
            self._send(header, data)
        else:
            if offset:
                f.seek(0)
                checksums.hash_file_into(hasher, f, limit=offset)
            fd = f.fileno()

            def readinto(view, position):
                n = os.preadv(fd, [view], position)
                if progress is not None:
                    progress(position + n, size)
                return n

            self._send(header)
            with self._raw_transfer():
                try:
                    self.wire.send_from(readinto, offset, size - offset, hasher)
                except ConnectionClosed as exc:
                    self._salvage_reply(exc)
                except SourceEnded:
                    raise SockftpError(f"{local} shrank while being sent", code="local_error") from None
        self._send({"checksum": hasher.value()})
        try:
            reply = self._reply()
        except SockftpError:
            if self._wire is not None and self._wire.peer_closed():
                # Refused with more than MAX_DRAIN still to come, the server
                # answered and hung up: the next request needs a new connection.
                self.close()
            raise
        if progress is not None:
            # Only once the reply is read: a callback that raises (a cancel
            # at 100%) must not leave the reply to be read as the next one's.
            progress(size, size)
        return TransferResult(reply.get("path", remote), local, size, size - offset, offset, reply.get("checksum"))

    @contextmanager
    def _raw_transfer(self):
        """While raw bytes move, any failure leaves the stream out of step
        (bytes announced but not sent, or sent but not read): close the
        connection before passing the failure on, whatever it is, even an
        exception from a progress callback or Ctrl-C."""
        try:
            with self._io():
                yield
        except BaseException:
            self.close()
            raise

    def _salvage_reply(self, exc: ConnectionClosed) -> NoReturn:
        """The server cut an upload short: it may have said why first."""
        try:
            reply = self.wire.read_header(timeout=2.0)
        except (ConnectionClosed, SockftpError, OSError):
            reply = None
        if reply and reply.get("ok") is False:
            self.close()
            raise error_from_reply(reply)
        self._lost(exc)

    def get(
        self,
        remote: str,
        local: str | os.PathLike | None = None,
        *,
        resume: bool = True,
        progress: Progress | None = None,
    ) -> TransferResult:
        """Download *remote* to *local* (default: its name, in the current
        directory; a directory means a file of that name inside it). The file
        appears under its name only once complete and verified."""
        local = os.fspath(local) if local is not None else remote.rstrip("/").rsplit("/", 1)[-1]
        if os.path.isdir(local):
            local = os.path.join(local, remote.rstrip("/").rsplit("/", 1)[-1])
        return self._with_retries(lambda: self._get_once(remote, local, resume, progress))

    def _get_once(self, remote: str, local: str, resume: bool, progress) -> TransferResult:
        partial = partial_path(local)
        offset = 0
        if resume:
            try:
                offset = os.stat(partial).st_size
            except FileNotFoundError:
                pass
        try:
            return self._receive_file(remote, local, partial, offset, progress)
        except (ChecksumMismatch, OffsetMismatch):
            if not offset:
                raise
            # The local part no longer matches the remote file: start over, once.
            return self._receive_file(remote, local, partial, 0, progress)

    def _receive_file(self, remote: str, local: str, partial: str, offset: int, progress) -> TransferResult:
        # Everything local that can fail is done before asking: once the
        # server starts sending, a local failure would leave its bytes unread.
        hasher = checksums.Hasher()
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if offset:
                with open(fd, "rb", buffering=0, closefd=False) as held:
                    checksums.hash_file_into(hasher, held, limit=offset)
            if os.fstat(fd).st_size != offset:
                # Only when needed: ext4 flushes a file on close once it has
                # been truncated (auto_da_alloc), which costs a large download
                # a synchronous write-out.
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            try:
                reply = self.request({"cmd": "get", "path": remote, "offset": offset})
            except SockftpError:
                if not offset:
                    os.unlink(partial)  # ours, and empty: leave nothing behind
                raise
            size, count, expected = reply["size"], reply["filesize"], reply.get("checksum")
            done = offset
            # Disk blocks reserved ahead of the writes: they cost ext4 far
            # less than blocks it must reserve page by page (sockftp.storage.prealloc).
            ahead = Preallocation.for_file(fd, offset, offset + count)

            def write(chunk):
                nonlocal done
                if ahead is not None:
                    ahead.cover(done + len(chunk))
                _write_all(fd, chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)

            try:
                with self._raw_transfer():
                    self.wire.receive(count, write, hasher)
            except BaseException:
                if ahead is not None:
                    ahead.release(done)  # the partial, kept to resume, holds only its bytes
                raise
        finally:
            os.close(fd)
        if progress is not None and not count:
            progress(size, size)
        actual = hasher.value()
        if expected is not None and actual != expected:
            os.unlink(partial)
            raise ChecksumMismatch(f"download of {remote} arrived damaged (expected {expected}, got {actual})")
        os.replace(partial, local)
        mtime = reply.get("mtime")
        if isinstance(mtime, (int, float)):
            os.utime(local, (mtime, mtime))
        return TransferResult(reply.get("path", remote), local, size, count, offset, actual)

    def _with_retries(self, attempt):
        """Run a transfer; after a lost connection, reconnect and run it
        again (it resumes), up to ``retries`` times, backing off."""
        tries_left = self.retries
        delay = 0.2
        while True:
            try:
                if self._wire is None:
                    self.connect()
                return attempt()
            except SockftpError as exc:
                # A lost connection, or one the server has just ended (idle
                # timeout, shutdown): reconnect and resume.
                lost = isinstance(exc, ConnectionLost) or (exc.code in FATAL_CODES and self._wire is None)
                if not lost or tries_left <= 0:
                    raise
                tries_left -= 1
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- directories -----------------------------------------------------------------

    def put_many(self, pairs, *, window: int = 64) -> list[TransferResult]:
        """Upload many files over this connection, pipelined: small files go
        out without waiting for each reply, up to *window* at a time, so a
        thousand small files cost a thousand writes, not a thousand round
        trips. Files of ``RESUME_THRESHOLD`` or more go through :meth:`put`.

        *pairs* are ``(local, remote)``. Every file is tried; the first
        failure is raised once the rest are done. Returns the results of the
        files that were stored, in order.
        """
        results: list[TransferResult] = []
        pending: deque[tuple[str, str, int]] = deque()
        failures: list[SockftpError] = []

        def collect() -> None:
            local, remote, size = pending.popleft()
            reply = self._reply_or_failure(failures)
            if reply is None:
                return
            results.append(TransferResult(reply.get("path", remote), local, size, size, 0, reply.get("checksum")))

        for local, remote in pairs:
            local = os.fspath(local)
            with open(local, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size >= RESUME_THRESHOLD:
                    data = None
                else:
                    data = os.pread(f.fileno(), size + 1, 0)
                    if len(data) != size:
                        raise SockftpError(f"{local} changed size while being read", code="local_error")
            if data is None:
                while pending:
                    collect()
                try:
                    results.append(self.put(local, remote))
                except ConnectionLost:
                    raise
                except SockftpError as exc:
                    failures.append(exc)
                continue
            # The checksum goes up front: one frame per file, not two.
            header = {"cmd": "put", "path": remote, "size": size, "checksum": checksums.of_bytes(data)}
            self._check_batch(len(pending))
            self._send(header, data)
            pending.append((local, remote, size))
            if len(pending) >= window:
                collect()
        while pending:
            collect()
        if failures:
            raise failures[0]
        return results

    def _check_batch(self, unanswered: int) -> None:
        """Before sending more of a pipelined batch: if a reply (a fatal
        error, such as shutting_down) closed the connection, the requests
        still unanswered are lost with it, and a new connection must not
        take their place, or its replies would be read as theirs."""
        if unanswered and self._wire is None:
            raise ConnectionLost(f"the connection closed with {unanswered} requests of the batch unanswered")

    def _reply_or_failure(self, failures: list[SockftpError]) -> dict | None:
        """The next reply of a pipelined batch, or None after noting its
        error in *failures* (a lost connection ends the batch)."""
        try:
            return self._reply()
        except ConnectionLost:
            raise
        except SockftpError as exc:
            failures.append(exc)
            return None

    def get_many(self, pairs, *, window: int = 64) -> list[TransferResult]:
        """Download many small files over this connection, pipelined like
        :meth:`put_many`: up to *window* requests in flight. Each file is
        verified and appears under its name only once complete. *pairs* are
        ``(remote, local)``; the first failure is raised once the rest are
        done."""
        results: list[TransferResult] = []
        pending: deque[tuple[str, str]] = deque()
        failures: list[SockftpError] = []

        def collect() -> None:
            remote, local = pending.popleft()
            reply = self._reply_or_failure(failures)
            if reply is None:
                return
            hasher = checksums.Hasher()
            partial = partial_path(local)
            try:
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                fd = None
                failures.append(SockftpError(f"{partial}: {exc.strerror or exc}", code="local_error"))

            def write(chunk) -> None:
                if fd is not None:  # else read anyway, to stay in step
                    _write_all(fd, chunk)

            try:
                with self._raw_transfer():
                    self.wire.receive(reply["filesize"], write, hasher)
            except BaseException:
                if fd is not None:  # a local write failed, or the connection: leave no partial
                    os.close(fd)
                    os.unlink(partial)
                raise
            if fd is None:
                return
            try:
                if reply.get("checksum") is not None and hasher.value() != reply["checksum"]:
                    os.unlink(partial)
                    failures.append(ChecksumMismatch(f"download of {remote} arrived damaged"))
                    return
                mtime = reply.get("mtime")
                if isinstance(mtime, (int, float)):
                    os.utime(fd, (mtime, mtime))  # through the descriptor: no second path lookup
            finally:
                os.close(fd)
            try:
                os.replace(partial, local)
            except OSError as exc:  # a directory in the way, say: this file fails, the batch goes on in step
                os.unlink(partial)
                failures.append(SockftpError(f"{local}: {exc.strerror or exc}", code="local_error"))
                return
            size = reply["size"]
            results.append(TransferResult(reply.get("path", remote), local, size, size, 0, hasher.value()))

        # Requests go out in batches of half a window, one write each; the
        # other half of the window is still being answered meanwhile.
        batch: list[dict] = []
        for remote, local in pairs:
            batch.append({"cmd": "get", "path": remote})
            pending.append((remote, os.fspath(local)))
            if len(pending) >= window:
                self._check_batch(len(pending) - len(batch))
                self._send_many(batch)
                batch = []
                while len(pending) > window // 2:
                    collect()
        if batch:
            self._check_batch(len(pending) - len(batch))
            self._send_many(batch)
        while pending:
            collect()
        if failures:
            raise failures[0]
        return results

    def put_tree(
        self, local_dir: str | os.PathLike, remote_dir: str, *, progress=None, on_file=None
    ) -> list[TransferResult]:
        """Upload directory *local_dir* as *remote_dir*, recursively.

        Symbolic links to directories are skipped (they could loop).
        *on_file(local, remote)* is called before each file.
        """
        local_dir = os.fspath(local_dir)
        results = []
        self.mkdir(remote_dir, parents=True)
        for root, dirs, files in os.walk(local_dir):
            rel = os.path.relpath(root, local_dir)
            base = remote_dir if rel == "." else _join(remote_dir, *rel.split(os.sep))
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
            for d in dirs:
                self.mkdir(_join(base, d), parents=True)
            for name in sorted(files):
                source = os.path.join(root, name)
                if not os.path.isfile(source):
                    continue
                target = _join(base, name)
                if on_file is not None:
                    on_file(source, target)
                results.append(self.put(source, target, progress=progress))
        return results

    def walk(self, remote_dir: str) -> Iterator[tuple[str, list[Entry], list[Entry]]]:
        """Like os.walk: (directory, subdirectories, files), top down."""
        if self.stat(remote_dir).type != DIRECTORY:
            raise NotADirectory(f"not a directory: {remote_dir}")
        entries = self.ls(remote_dir)
        for entry in entries:
            _check_remote_name(entry.name)
        dirs = [e for e in entries if e.type == DIRECTORY]
        files = [e for e in entries if e.type == FILE]
        yield remote_dir, dirs, files
        for d in dirs:
            yield from self.walk(_join(remote_dir, d.name))

    def get_tree(
        self, remote_dir: str, local_dir: str | os.PathLike, *, progress=None, on_file=None
    ) -> list[TransferResult]:
        """Download directory *remote_dir* into *local_dir*, recursively."""
        local_dir = os.fspath(local_dir)
        results = []
        prefix = remote_dir.rstrip("/")
        for directory, _dirs, files in self.walk(remote_dir):
            rel = directory[len(prefix) :].strip("/")
            target_dir = os.path.join(local_dir, *rel.split("/")) if rel else local_dir
            os.makedirs(target_dir, exist_ok=True)
            for entry in files:
                source = _join(directory, entry.name)
                target = os.path.join(target_dir, entry.name)
                if on_file is not None:
                    on_file(source, target)
                results.append(self.get(source, target, progress=progress))
        return results


def partial_path(local: str) -> str:
    """Where a download to *local* is kept until complete: ``.NAME.sockftp-part``
    beside it; or, if that name would be too long for the filesystem (NAME
    is near the limit), NAME cut short and told apart by a hash of it."""
    head, tail = os.path.split(local)
    name = f".{tail}{PARTIAL_SUFFIX}"
    if len(os.fsencode(name)) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(os.fsencode(tail)).hexdigest()[:16]
        room = MAX_NAME_LENGTH - len(f"..{digest}{PARTIAL_SUFFIX}")
        name = f".{os.fsencode(tail)[:room].decode('utf-8', 'ignore')}.{digest}{PARTIAL_SUFFIX}"
    return os.path.join(head, name)


def _entry(item: dict) -> Entry:
    return Entry(item["name"], item["type"], item["size"], item["mtime"])


def _join(base: str, *names: str) -> str:
    """Remote path *names* inside *base*; ``_join("/", "a")`` is ``/a``."""
    if base.endswith("/"):
        return base + "/".join(names)
    return "/".join([base, *names]) if base else "/".join(names)


def _check_remote_name(name: str) -> None:
    # A listing comes from the server: never let a hostile one make us write
    # outside the local directory.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise PathRefused(f"the server sent an unsafe name: {name!r}")


__all__ = ["Client", "Entry", "Exists", "Progress", "TransferResult", "partial_path"]


def stays_on_this_machine(address: str) -> bool:
    """True if *address* (an IP address) is a loopback one: 127.0.0.0/8,
    ::1, or 127.x mapped into IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _write_all(fd: int, data) -> None:
    view = data
    while view:
        view = view[os.write(fd, view) :]
