"""What the HTTP door's tests share: a SockftpServer with its HTTP front door
on loopback in a tmp dir, raw sockets to it, and curl.

``http_server(**ServerConfig overrides)`` starts one (anonymous off unless
asked); users are added with ``srv.add_user(name, ...)``. Import the
fixture with ``from http_support import http_server_fixture``.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import add_user

from sockftp import http as door
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig

PASSWORD = "secret"
CURL = shutil.which("curl")


@dataclass
class RunningHttp:
    main: SockftpServer
    front: door.HttpServer
    root: Path
    _closing: list = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.front.port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, name: str, password: str = PASSWORD, **limits) -> Path:
        add_user(self.root, name, password, **limits)
        return self.home(name)

    def home(self, name: str) -> Path:
        return self.root / "anonymous" if name == "anonymous" else self.root / "users" / name

    def raw(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self._closing.append(sock)
        return sock

    def conn(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        self._closing.append(c)
        return c

    def request(self, method: str, path: str, body=None, headers=None, user=None, password=PASSWORD):
        """One request on a new connection: (status, headers dict, body bytes)."""
        headers = dict(headers or {})
        if user is not None:
            headers["Authorization"] = basic(user, password)
        c = self.conn()
        c.request(method, path, body=body, headers=headers)
        response = c.getresponse()
        data = response.read()
        c.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def json(self, method: str, path: str, **kwargs):
        status, _headers, data = self.request(method, path, **kwargs)
        return status, json.loads(data) if data else None

    def curl(self, *args: str, user: str | None = "alice", check: bool = True) -> subprocess.CompletedProcess:
        if CURL is None:
            pytest.skip("curl is not installed")
        command = [CURL, "-sS", "--max-time", "30"]
        if user is not None:
            command += ["-u", f"{user}:{PASSWORD}"]
        result = subprocess.run([*command, *args], capture_output=True, timeout=60)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result

    def close(self) -> None:
        for thing in self._closing:
            try:
                thing.close()
            except OSError:
                pass


def basic(user: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 5 s of silence)."""
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


@pytest.fixture(name="http_server")
def http_server_fixture(tmp_path_factory):
    started: list[RunningHttp] = []

    def start(**overrides) -> RunningHttp:
        root = overrides.pop("root", None) or tmp_path_factory.mktemp("root")
        settings = {"host": "127.0.0.1", "port": 0, "http_port": 0, "login_failure_delay": 0, **overrides}
        main = SockftpServer(ServerConfig(root=str(root), **settings))
        threading.Thread(target=main.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        front = door.start(main)
        running = RunningHttp(main, front, Path(root))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()
        running.main.stop(0)
