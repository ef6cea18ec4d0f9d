"""What the cluster tests share: uploads racing at a quota's edge
(:func:`race_uploads`), and a tiny TCP balancer (:class:`Forwarder`) that
listens on 127.0.0.1, forwards each connection to the first of its backends that accepts (so a dead node's
clients land on the next one), and can put a PROXY v2 header in front,
with the client's real address or one the test makes up (a client seen as
203.0.113.7 without owning that address).

Real sockets and threads, no mocks; HAProxy does the same job in
tests/test_cluster.py when it is installed.
"""

from __future__ import annotations

import socket
import threading

from sockftp.client import Client
from sockftp.protocol import proxy
from sockftp.protocol.errors import QuotaExceeded


def race_uploads(port: int, user: str, password: str, local, count: int = 20) -> list[str]:
    """*count* sessions of *user*, each logged in first, then all at once
    putting *local* under a name of its own: "ok" or "quota" for each."""
    outcomes: list[str] = []
    barrier = threading.Barrier(count)

    def racer(index: int) -> None:
        with Client("127.0.0.1", port, timeout=20, user=user, password=password) as client:
            barrier.wait()
            try:
                client.put(str(local), f"f{index}")
                outcomes.append("ok")
            except QuotaExceeded:
                outcomes.append("quota")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


class Forwarder:
    def __init__(self, backends: list[tuple[str, int]], send_proxy: bool = True, source: tuple[str, int] | None = None):
        self.backends = list(backends)
        self.send_proxy = send_proxy
        #: The client address the header claims; None: the real one.
        self.source = source
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="forwarder", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, address = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, address), daemon=True).start()

    def _serve(self, client: socket.socket, address) -> None:
        backend = None
        for target in list(self.backends):
            try:
                backend = socket.create_connection(target, timeout=5)
                break
            except OSError:
                continue
        if backend is None:
            client.close()
            return
        backend.settimeout(None)
        with self._lock:
            self.connections += 1
            self._open += [client, backend]
        if self.send_proxy:
            source = self.source or address[:2]
            backend.sendall(proxy.encode(source, backend.getsockname()[:2]))
        threading.Thread(target=_pump, args=(client, backend), daemon=True).start()
        _pump(backend, client)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.close()
                except OSError:
                    pass


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until end of stream, then pass the end on (a half close), or
    reset the other side when either breaks: a node killed mid-transfer
    is a broken connection for its client too."""
    try:
        while data := source.recv(262144):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, target):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                # A close alone leaves the connection open while the other
                # pump's thread sits in recv() on it (Linux): its client
                # would wait for its own timeout instead of seeing the cut.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
