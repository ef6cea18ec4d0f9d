"""The connection to a sockftp server, and the login on it.

:class:`Connection` connects (over TLS if asked), says hello, logs in
(by token while one is valid, else by password) and reconnects on demand;
it sends requests and reads replies, turning a broken or silent connection
into :class:`~sockftp.protocol.errors.ConnectionLost`. It must never move
file bytes itself (that is the transfer engines' job) nor prompt for a
password (the caller's business).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import NoReturn, Self

from ..protocol.errors import (
    FATAL_CODES,
    AuthFailed,
    ConnectionLost,
    ShuttingDown,
    SockftpError,
    Timeout,
    error_from_reply,
)
from ..protocol.limits import DEFAULT_HOST, DEFAULT_PORT, PROTOCOL_VERSIONS
from ..protocol.wire import ConnectionClosed, Wire

#: A token is used for a re-login only while it has at least this long to
#: live (seconds; or half its lifetime, if that is shorter): past it, the
#: client logs in with its password and asks for a new one, rather than
#: offer the server a token it is about to refuse.
TOKEN_MARGIN = 60.0

#: The first pause before a reconnect, and the longest: each doubles the one before.
RETRY_DELAY = 0.2
RETRY_DELAY_MAX = 5.0
#: How long a retry keeps asking while the server answers busy: the
#: transfer's own previous attempt is held by a node that died without
#: letting go (kill -9, a power cut), and another node may take it over
#: only when that node's lease runs out (``lease_time``, 60 s by default).
#: Those retries do not count against ``retries``.
BUSY_WAIT = 90.0

#: OpenSSL's verify code for a certificate that does not name the host.
_X509_V_ERR_HOSTNAME_MISMATCH = 62


class Connection:
    """The connection and login of a :class:`~sockftp.client.Client`
    (whose docstring says what the arguments mean).

    Expects of the class it is mixed into: ``cd(path)`` (from
    :class:`~sockftp.client.files.FileOperations`), with which a reconnect
    goes back to the remote directory kept in ``_cwd``.
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
        self.busy_wait = BUSY_WAIT
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
        #: Called before each reconnect of a retry, as ``on_retry(attempt,
        #: retries, delay, error)``: attempt *attempt* of *retries*, after
        #: *delay* seconds, because of *error*. The command line prints it.
        self.on_retry: Callable[[int, int, float, SockftpError], None] | None = None
        self._resending = False
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
            # An ASCII name as bytes: a str goes through the "idna" codec,
            # whose import (with unicodedata) costs every command's start-up.
            host = self.host.encode("ascii") if self.host.isascii() else self.host
            sock = socket.create_connection((host, self.port), timeout=self.timeout)
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
        # Imported here: a plaintext command never loads ssl (start-up time).
        import ssl

        from ..protocol.tls import TlsSetupError, client_context, describe_error

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

    def _abort(self) -> None:
        """Close with a reset (see :meth:`Wire.abort`): for a connection left
        in the middle of raw bytes, so that the server lets go at once."""
        if self._wire is not None:
            self._wire.abort()
            self._wire = None

    def __enter__(self) -> Self:
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

    def supports(self, feature: str) -> bool:
        """True if the server announced *feature* in its hello (connecting
        first if need be)."""
        self.wire  # noqa: B018 - connects, which reads the hello
        return feature in self.server_info.get("features", ())

    # -- requests ------------------------------------------------------------------

    def request(self, header: dict) -> dict:
        """Send *header*, return the reply. Raises the reply's error.

        A ``shutting_down`` reply is a goodbye sent before the server read
        the request (a draining node ends idle sessions so): the request
        never ran, so with ``retries`` it goes once more on a new
        connection, which a balancer gives to another node."""
        if header.get("cmd") != "hello":  # a hello is a connection's first: nothing to drop
            self._drop_if_ended()
        self._send(header)
        try:
            return self._reply()
        except ShuttingDown as exc:
            if not self.retries or self._resending or header.get("cmd") in ("hello", "quit"):
                raise
            self._resending = True
            try:
                self.pause_before_retry(1, exc)
                self._send(header)  # reconnects first: the wire is closed
                return self._reply()
            finally:
                self._resending = False

    def _drop_if_ended(self) -> None:
        """Before a request, with nothing outstanding: if the server has
        already spoken unasked, it was a goodbye (a draining node, an idle
        timeout) or a close, and the session is over. With ``retries``,
        drop the connection so the request goes out on a new one, rather
        than fail for a reason that was known before it was sent."""
        wire = self._wire
        if wire is None or not self.retries:
            return
        try:
            ended = wire.wait_for_input(0)
        except (ConnectionClosed, SockftpError):
            ended = True
        if ended:
            self.close()

    def pause_before_retry(self, attempt: int, error: SockftpError) -> None:
        """Wait before reconnect number *attempt* (from 1): the backoff
        every retry shares, reported to ``on_retry`` first."""
        delay = min(RETRY_DELAY * 2 ** (attempt - 1), RETRY_DELAY_MAX)
        if self.on_retry is not None:
            self.on_retry(attempt, self.retries, delay, error)
        time.sleep(delay)

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

    def _send_frames(self, frames: list[tuple[dict, bytes]]) -> None:
        with self._io():
            self.wire.send_frames(frames)

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

    def _payload(self, size: int) -> bytearray:
        """The *size* raw bytes that follow a reply's header (the caller
        has checked *size*)."""
        wire = self._wire
        if wire is None:
            raise ConnectionLost("the connection closed before the reply")
        data = bytearray()
        with self._io():
            wire.receive(size, data.extend, pooled=False)
        return data

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


def stays_on_this_machine(address: str) -> bool:
    """True if *address* (an IP address) is a loopback one: 127.0.0.0/8,
    ::1, or 127.x mapped into IPv6."""
    # By socket.inet_pton, not ipaddress: that module costs every command's start-up.
    address = address.split("%", 1)[0]
    try:
        return socket.inet_pton(socket.AF_INET, address)[0] == 127
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:
        return False
    if packed[:12] == _V4_MAPPED:
        return packed[12] == 127
    return packed == _V6_LOOPBACK


_V4_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:a.b.c.d, IPv4 mapped into IPv6
_V6_LOOPBACK = bytes(15) + b"\x01"  # ::1
