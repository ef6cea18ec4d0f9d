"""The servers under test, each in a child process on 127.0.0.1, port 0.

* :class:`SockftpServer` runs ``python -m sockftp serve`` with the flags a
  workload needs (TLS, raised session caps, anonymous access, the FTP
  front door).
* :class:`FtpServer` runs pyftpdlib's async ``FTPServer`` (``bench.ftpd``).

A child process has its own GIL and its own memory, so its RSS and CPU
time can be read from /proc and the bench's clients never share a core's
Python interpreter with it. Each server's log goes to a file in the work
directory; if a server dies, the bench shows its tail.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

from .common import cpu_seconds, rss_bytes

#: The account every bench client logs in as, on both servers.
USER = "bench"
PASSWORD = "bench-password-not-secret"


#: Run first in every server child: ask Linux to send it SIGTERM when the
#: bench dies (PR_SET_PDEATHSIG, which survives exec), then exec the server
#: in the same process. So a bench killed with SIGKILL leaves no server behind.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
parent, argv = int(sys.argv[1]), sys.argv[2:]
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit("the bench is gone")
os.execv(argv[0], argv)
"""


class ServerProcess:
    """A server in a child process that prints ``... listening on HOST:PORT``
    (and, for *listeners* = 2, a second such line: sockftp's FTP port)."""

    name = "server"

    def __init__(self, argv: list[str], log_path: str, start_timeout: float = 30.0, listeners: int = 1):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        guarded = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        self.proc = subprocess.Popen(guarded, stdout=subprocess.PIPE, stderr=self._log, text=True)
        #: The port of each ``listening on`` line, in the order printed.
        self.ports = self._wait_for_ports(start_timeout, listeners)
        self.port = self.ports[0]

    def _wait_for_ports(self, timeout: float, count: int) -> list[int]:
        """The ports from the first *count* ``listening on`` lines. A thread
        reads stdout, to its end, so the wait can time out and the pipe
        never fills."""
        found: queue.Queue[int | None] = queue.Queue()

        def read_stdout() -> None:
            for line in self.proc.stdout:
                if "listening on" in line:
                    found.put(int(line.rsplit(":", 1)[1]))
            found.put(None)

        threading.Thread(target=read_stdout, name=f"{self.name} stdout", daemon=True).start()
        deadline = time.monotonic() + timeout
        ports: list[int] = []
        while len(ports) < count:
            try:
                port = found.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                port = None
            if port is None:
                self.stop()
                raise RuntimeError(f"{self.name} did not start within {timeout:g} s:\n{self.log_tail()}")
            ports.append(port)
        return ports

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class SockftpServer(ServerProcess):
    """``sockftp serve`` on a data directory of its own, its audit log
    written to a file next to it.

    Args:
        root: the data directory; ``bench`` (USER) is added to it if missing.
        tls: (cert, key) PEM paths, or None for plaintext.
        anonymous: also let clients in without a login (ROOT/anonymous).
        sessions: sessions to allow in total and from 127.0.0.1 (the caps
            are raised to this plus a margin for probes).
        idle_timeout: seconds an idle session is kept.
        ftp: also open the FTP front door (``--ftp-port 0``); its port is
            ``ftp_port``.
        http: also open the HTTP front door (``--http-port 0``); its port
            is ``http_port``.
        extra: more options of ``sockftp serve`` (``--storage s3://...``).
    """

    name = "sockftp"

    def __init__(
        self,
        root: str,
        *,
        tls: tuple[str, str] | None = None,
        anonymous: bool = False,
        sessions: int = 256,
        idle_timeout: float = 300.0,
        ftp: bool = False,
        http: bool = False,
        extra: tuple[str, ...] = (),
    ):
        os.makedirs(root, exist_ok=True)
        add_sockftp_user(root)
        cap = str(sessions + 64)
        argv = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root]
        argv += ["--log-level", "warning", "--max-sessions", cap, "--max-sessions-per-ip", cap]
        # The audit log stays on, in a file of its own, as in production.
        argv += ["--idle-timeout", str(idle_timeout), "--audit-log", root.rstrip("/") + ".audit.log"]
        argv += ["--anonymous"] if anonymous else []
        if tls is not None:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        if ftp:
            argv += ["--ftp-port", "0"]
        if http:
            argv += ["--http-port", "0"]
        argv += extra
        self.root = root
        self.tls = tls is not None
        # The listening lines come in this order: native, FTP, HTTP.
        super().__init__(argv, root.rstrip("/") + ".log", listeners=1 + ftp + http)
        self.ftp_port = self.ports[1] if ftp else None
        self.http_port = self.ports[-1] if http else None

    def home(self, anonymous: bool = False) -> str:
        """Where the bench user's (or the anonymous) files are on disk."""
        return os.path.join(self.root, "anonymous") if anonymous else os.path.join(self.root, "users", USER)


def add_sockftp_user(root: str) -> None:
    """Add USER to the data directory's account store, as ``sockftp user
    add bench`` does (without its process start-up: this runs for every
    server the bench starts). No quota, no file limit."""
    from sockftp.accounts import Account, SqliteUserStore, hash_password
    from sockftp.server.config import users_db

    store = SqliteUserStore(users_db(root))
    try:
        if store.get(USER) is None:
            store.add(Account(USER, hash_password(PASSWORD)))
    finally:
        store.close()


class FtpServer(ServerProcess):
    """pyftpdlib's async FTPServer with one user, ``bench``, homed in *home*."""

    name = "pyftpdlib"

    def __init__(self, home: str, *, sessions: int = 512, idle_timeout: float = 300.0):
        os.makedirs(home, exist_ok=True)
        argv = [sys.executable, "-m", "bench.ftpd", "--home", home, "--user", USER, "--password", PASSWORD]
        # pyftpdlib counts every socket against max_cons: a session in a
        # transfer holds three (control, passive listener, data).
        argv += ["--max-cons", str(3 * sessions + 64), "--timeout", str(idle_timeout)]
        self.root = home
        super().__init__(argv, home.rstrip("/") + ".log")

    def home(self, anonymous: bool = False) -> str:
        return self.root


def make_tls_files(directory: str) -> tuple[str, str, str] | None:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it, made with
    trustme: (cert, key, ca) PEM paths. None without trustme."""
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = tuple(os.path.join(directory, name) for name in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(paths[0])
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(paths[0], append=True)
    cert.private_key_pem.write_to_path(paths[1])
    ca.cert_pem.write_to_path(paths[2])
    return paths
