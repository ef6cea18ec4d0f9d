"""One client session of each server, behind the same small interface:
``put(local, remote)``, ``get(remote, local)``, ``rm(remote)``, ``close()``.

* :class:`SockftpSession` is sockftp's own :class:`sockftp.Client`, as a user
  of the library would call it: every transfer verified end to end.
* :class:`FtpSession` is ``ftplib`` over one control connection, in binary
  mode, with a data connection per transfer (FTP has no other way). Its
  data loops reuse one 4 MiB buffer per session (``recv_into`` then a file
  write; ``readinto`` then ``sendall``), like sockftp's client and the raw
  limits. ``retrbinary``/``storbinary`` allocate a fresh 4 MiB bytes object
  for every ``recv`` or ``read``, and fresh memory is slow on this VM: with
  100 clients each getting 10 MiB from pyftpdlib, the ftplib clients used
  1.50 CPU seconds in a 1.01 s run while the server used 0.20, so the
  clients, not the server, set the pace. (On one stream alone the two made
  no difference: RETR 2.39 against 2.33 GB/s.) Many clients at once use
  128 KiB buffers (:data:`CROWD_BUFFER_SIZE`).

Both transfer to fresh names: replacing a large file makes ext4 allocate
its blocks synchronously, a cost of the filesystem, not of either server.
"""

from __future__ import annotations

import ftplib
import os

from .common import CLIENT_TIMEOUT, MiB
from .servers import PASSWORD, USER

HOST = "127.0.0.1"
BUFFER_SIZE = 4 * MiB

#: FtpSession's buffer when hundreds of clients run at once. sockftp's
#: client lends 4 MiB buffers to 64 transfers per process and 128 KiB ones
#: to the rest; for ftplib, 128 KiB was the faster of the two at 100 and at
#: 300 clients (medians of 3: RETR 0.39 against 0.52 s at 100 clients,
#: 1.99 against 2.26 s at 300, the clients using 2.0 against 2.9 CPU s).
CROWD_BUFFER_SIZE = 128 * 1024


class SockftpSession:
    """A logged-in (or anonymous) sockftp session.

    Args:
        port: the server's port on 127.0.0.1.
        login: log in as the bench user, by password (an argon2 check,
            ~0.1 s; the client also asks for a re-login token, as every
            library client does) or with *token*; else the server must allow
            anonymous access.
        token: a re-login token of the bench user (see :func:`mint_token`).
        tls_ca: speak TLS and trust this CA (PEM); None for plaintext.
    """

    kind = "sockftp"

    def __init__(self, port: int, *, login: bool = True, token: str | None = None, tls_ca: str | None = None):
        from sockftp import Client

        self.client = Client(
            HOST,
            port,
            timeout=CLIENT_TIMEOUT,
            user=USER if login else None,
            password=PASSWORD if login and token is None else None,
            token=token if login else None,
            tls=tls_ca is not None,
            tls_ca=tls_ca,
        )

    def put(self, local: str, remote: str) -> None:
        self.client.put(local, remote, resume=False)

    def get(self, remote: str, local: str) -> None:
        self.client.get(remote, local, resume=False)

    def put_many(self, pairs) -> None:
        """Pipelined: requests go out without waiting for each reply."""
        self.client.put_many(pairs)

    def get_many(self, pairs) -> None:
        self.client.get_many(pairs)

    def rm(self, remote: str) -> None:
        self.client.rm(remote)

    def close(self) -> None:
        self.client.close()


class FtpSession:
    """A logged-in FTP session (ftplib), binary mode, passive data connections."""

    kind = "pyftpdlib"

    def __init__(self, port: int, *, login: bool = True, buffer_size: int = BUFFER_SIZE):
        self.buffer_size = buffer_size
        self.ftp = ftplib.FTP()
        self.ftp.connect(HOST, port, timeout=CLIENT_TIMEOUT)
        if login:
            self.ftp.login(USER, PASSWORD)
            self.ftp.voidcmd("TYPE I")
        self._buffer: bytearray | None = None  # at the first transfer: idle sessions hold none

    def _view(self) -> memoryview:
        if self._buffer is None:
            self._buffer = bytearray(self.buffer_size)
        return memoryview(self._buffer)

    def put(self, local: str, remote: str) -> None:
        view = self._view()
        with open(local, "rb", buffering=0) as f, self.ftp.transfercmd(f"STOR {remote}") as conn:
            while n := f.readinto(view):
                conn.sendall(view[:n])
        self.ftp.voidresp()

    def get(self, remote: str, local: str) -> None:
        view = self._view()
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with self.ftp.transfercmd(f"RETR {remote}") as conn:
                while n := conn.recv_into(view):
                    written = 0
                    while written < n:
                        written += os.write(fd, view[written:n])
        finally:
            os.close(fd)
        self.ftp.voidresp()

    def put_many(self, pairs) -> None:
        """One after another: FTP opens a data connection per file and
        has no way to pipeline them."""
        for local, remote in pairs:
            self.put(local, remote)

    def get_many(self, pairs) -> None:
        for remote, local in pairs:
            self.get(remote, local)

    def rm(self, remote: str) -> None:
        self.ftp.delete(remote)

    def close(self) -> None:
        self.ftp.close()


def mint_token(port: int) -> str:
    """A re-login token of the bench user on the sockftp server at *port*:
    one password login, whose token outlives it."""
    from sockftp import Client

    with Client(HOST, port, timeout=CLIENT_TIMEOUT, user=USER, password=PASSWORD, keep_token=True) as client:
        if client.token is None:
            raise RuntimeError("the server issued no re-login token")
        return client.token


#: The kinds of session, by the server they talk to. sockftp's FTP front
#: door is driven by the very same ftplib client as pyftpdlib.
KINDS = {"sockftp": SockftpSession, "pyftpdlib": FtpSession, "sockftp-ftp": FtpSession}


def open_session(kind: str, port: int, **options):
    """A session of *kind* (a key of :data:`KINDS`) to *port*."""
    return KINDS[kind](port, **options)
