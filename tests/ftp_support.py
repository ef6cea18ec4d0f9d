"""What the FTP tests share: a SockftpServer with its FTP front door, on
loopback, in a tmp dir, and clients of both front doors.

``ftp_server(**ServerConfig overrides)`` starts one; users are added with
``srv.add_user(name, ...)``. Import the fixture into a test module with
``from ftp_support import ftp_server_fixture`` (it is named ``ftp_server``).
"""

from __future__ import annotations

import ftplib
import socket
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from conftest import add_user

from sockftp import ftp
from sockftp.client import Client
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig

PASSWORD = "secret"


@dataclass
class RunningFtp:
    main: SockftpServer
    front: ftp.FtpServer
    root: Path
    _closing: list = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.front.server_address[0]

    @property
    def port(self) -> int:
        return self.front.port

    def add_user(self, name: str, password: str = PASSWORD, **limits) -> Path:
        """Create account *name*; returns where its home is on disk."""
        add_user(self.root, name, password, **limits)
        return self.home(name)

    def home(self, name: str) -> Path:
        return self.root / "anonymous" if name == "anonymous" else self.root / "users" / name

    def connect(self, tls_context=None, timeout: float = 10.0) -> ftplib.FTP:
        """An ftplib client, connected (not logged in); FTP_TLS with *tls_context*."""
        client = ftplib.FTP_TLS(context=tls_context, timeout=timeout) if tls_context else ftplib.FTP(timeout=timeout)
        client.connect(self.host, self.port)
        self._closing.append(client)
        return client

    def login(self, user: str = "alice", password: str = PASSWORD, **kwargs) -> ftplib.FTP:
        """An ftplib client logged in as *user*, in binary mode."""
        client = self.connect(**kwargs)
        client.login(user, password)
        client.voidcmd("TYPE I")
        return client

    def native(self, user: str | None = "alice", password: str = PASSWORD, **kwargs) -> Client:
        """A native sockftp client of the same server."""
        kwargs.setdefault("timeout", 10.0)
        if user is not None:
            kwargs["password"] = password
        client = Client(self.main.server_address[0], self.main.port, user=user, **kwargs)
        self._closing.append(client)
        return client

    def raw(self, timeout: float = 5.0) -> socket.socket:
        """A raw socket to the FTP port (the greeting not read)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self._closing.append(sock)
        sock.settimeout(timeout)
        sock.connect((self.host, self.port))
        return sock

    def stop(self, grace: float = 0) -> None:
        self.main.stop(grace)

    def close_clients(self) -> None:
        for client in self._closing:
            try:
                client.close()
            except (OSError, EOFError):
                pass


def free_port_run(count: int) -> int:
    """The first of *count* consecutive ports that are free now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            held = []
            for port in range(first, first + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise AssertionError("no run of free ports")


@pytest.fixture(name="ftp_server")
def ftp_server_fixture(tmp_path_factory):
    """Factory: ``ftp_server(**overrides)`` -> a started :class:`RunningFtp`
    (no anonymous access, fast login failures, unless overridden)."""
    started: list[RunningFtp] = []

    def start(**overrides) -> RunningFtp:
        root = overrides.pop("root", None) or tmp_path_factory.mktemp("ftproot")
        settings = {"host": "127.0.0.1", "port": 0, "ftp_port": 0, "login_failure_delay": 0.01, **overrides}
        main = SockftpServer(ServerConfig(root=str(root), **settings))
        threading.Thread(target=main.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        front = ftp.start(main)
        running = RunningFtp(main, front, Path(root))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close_clients()
        running.stop(0)


#: Bytes read from a raw control socket past the reply asked for: the
#: server may send two replies at once (150, then 226 after a small file),
#: and the second belongs to the next read_reply.
_UNREAD: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_reply(sock: socket.socket) -> str:
    """One whole reply (multi-line ones too) from a raw control socket;
    what follows it is kept for the next call."""
    data = _UNREAD.pop(sock, b"")
    while True:
        reply, rest = _split_reply(data)
        if reply is not None:
            if rest:
                _UNREAD[sock] = rest
            return reply.decode(errors="replace")
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


def _split_reply(data: bytes) -> tuple[bytes | None, bytes]:
    """The first complete reply in *data*, and the bytes after it."""
    end = data.find(b"\r\n")
    if end < 0:
        return None, data
    first = data[:end]
    if first[3:4] != b"-":
        return data[: end + 2], data[end + 2 :]
    closing = b"\r\n" + first[:3] + b" "
    start = data.find(closing, end)
    if start < 0:
        return None, data
    stop = data.find(b"\r\n", start + 2)
    if stop < 0:
        return None, data
    return data[: stop + 2], data[stop + 2 :]


def ftp_command(sock: socket.socket, line: str) -> str:
    """Send *line* on a raw control socket; its whole reply."""
    sock.sendall(line.encode() + b"\r\n")
    return read_reply(sock)


@pytest.fixture(scope="module", name="pki")
def pki_fixture(tmp_path_factory) -> dict[str, str]:
    """A throwaway CA (``ca``) and a certificate for 127.0.0.1, ::1 and
    localhost signed by it (``cert``, ``key``): PEM file paths."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    paths = {name: str(directory / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.cert_chain_pems[0].write_to_path(paths["cert"])
    cert.private_key_pem.write_to_path(paths["key"])
    return paths
