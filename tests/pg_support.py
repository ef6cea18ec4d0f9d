"""A throwaway PostgreSQL cluster for the tests that need one.

:func:`postgres_cluster` (a session fixture) runs ``initdb`` and ``pg_ctl``
from the Debian package (``/usr/lib/postgresql/*/bin``) or the PATH, on a
free port, with its data and its Unix socket in a temporary directory,
listening on 127.0.0.1 only, trusting local connections (nothing else can
reach it, and it lives for one test run). As root it runs as the
``postgres`` user (PostgreSQL refuses to run as root). The package's own
cluster and service are never used.

:func:`pg_url` gives each test a database of its own in that cluster.

Without PostgreSQL (or without psycopg) the tests that need it skip,
except with ``CI=true``, where they fail: CI installs it (``.ci/run``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest


def _missing(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {why}")
    pytest.skip(f"PostgreSQL not available: {why}")


def pg_bin_dir() -> str | None:
    """The directory holding initdb and pg_ctl, newest version first."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2].split(".")[0]), reverse=True
    )
    for directory in candidates:
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return directory
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Cluster:
    bin_dir: str
    base: str  # the temporary directory: data/ and the socket
    port: int
    as_user: list[str]  # the runuser prefix as root, else []

    @property
    def data(self) -> str:
        return os.path.join(self.base, "data")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_user, os.path.join(self.bin_dir, "pg_ctl"), "-D", self.data, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
        self.pg_ctl("-w", "-l", os.path.join(self.base, "log"), "start", "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-w", "-m", mode, "stop", check=False)

    def restart(self) -> None:
        """Stop (closing every connection) and start again on the same port."""
        self.stop()
        self.start()


def start_cluster() -> Cluster:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        _missing(f"{exc} (pip install -e '.[test]')")
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        _missing("no initdb (apt-get install postgresql)")
    base = tempfile.mkdtemp(prefix="sockftp-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _missing("running as root, and there is no postgres user to run it as")
        os.chown(base, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(bin_dir, base, free_port(), as_user)
    subprocess.run(
        [*as_user, os.path.join(bin_dir, "initdb"), "-D", cluster.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        check=True,
        timeout=120,
    )
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster():
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.base, ignore_errors=True)


_databases = itertools.count()


def new_database(cluster: Cluster) -> str:
    """A new, empty database in *cluster*; its URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_databases)}_{int(time.time() * 1000) % 100000}"
    with psycopg.connect(cluster.url(), autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return cluster.url(name)


@pytest.fixture
def pg_url(postgres_cluster) -> str:
    """The URL of an empty database of this test's own."""
    return new_database(postgres_cluster)


class Relay:
    """A TCP relay on 127.0.0.1 to the cluster: a node that connects through
    it can be cut off from its database (:meth:`sever`: every connection
    dropped, new ones closed at once) and put back (:meth:`mend`), with a
    real network failure and no mock."""

    def __init__(self, port: int):
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._severed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        """*url* (of the cluster) through this relay."""
        return url.replace(f":{self._upstream}/", f":{self.port}/")

    def sever(self) -> None:
        self._severed.set()
        with self._lock:
            dropped, self._open = self._open, []
        for sock in dropped:
            _drop(sock)

    def mend(self) -> None:
        self._severed.clear()

    def close(self) -> None:
        self.sever()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._severed.is_set():
                _drop(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self._upstream))
            except OSError:
                _drop(client)
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        _drop(source)
        _drop(sink)


def _drop(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def pg_relay(postgres_cluster):
    """A :class:`Relay` to the session's cluster."""
    relay = Relay(postgres_cluster.port)
    yield relay
    relay.close()
