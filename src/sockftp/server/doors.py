"""What every extra front door's listener does the same way: admit, run, stop.

The FTP and HTTP doors (:mod:`sockftp.ftp`, :mod:`sockftp.http`) are
socketserver listeners of their own over a main
:class:`~sockftp.server.SockftpServer`. :class:`FrontDoor` holds the steps
they share, so that no door can admit, schedule or stop differently:
the main server's ``admit`` (bans, session caps) before anything is read
(after the PROXY header, when a balancer sends one),
its worker pool for each connection, its session registry's slot given
back at the end, and a stop that closes the listener with the main
server's. A door adds its protocol: how it refuses (:meth:`refuse`), and
the handler class it runs.
"""

from __future__ import annotations

import logging
import socketserver
import threading

from ..protocol.errors import Banned, SockftpError, TooManySessions
from ..protocol.limits import LISTEN_BACKLOG
from .listener import _resolve
from .sockets import _peer

log = logging.getLogger("sockftp.server")


class DoorHandler(socketserver.BaseRequestHandler):
    """The base of a door's connection handler: what :class:`FrontDoor`
    hands every handler besides the socket."""

    def __init__(self, request, client_address, server, record, quiet: bool = False):
        #: The session registry's slot (its ``busy`` flag, its socket for a stop).
        self.record = record
        #: A balancer's own connection (PROXY LOCAL, a health check):
        #: answered as any other, but not logged as a client's session.
        self.quiet = quiet
        super().__init__(request, client_address, server)


class FrontDoor(socketserver.TCPServer):
    """A listener on *host*:*port* whose connections are *main*'s sessions,
    each run by ``handler(request, client_address, door, record, quiet)``
    (*quiet*: a balancer's health check, which is not logged as a session).
    With the PROXY protocol on (``proxy_trusted``), a connection is admitted
    in its session's thread by the address its header gives
    (``SockftpServer.arrive``), not on the accept thread by its socket's."""

    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = True
    #: The protocol's name, for logs.
    name = "front door"

    def __init__(self, main, host: str, port: int, handler):
        self.main = main
        self._serving = threading.Event()
        self._admitted = None  # verify_request's registry record, for process_request
        family, address = _resolve(host, port)
        self.address_family = family
        self.allow_reuse_port = main.config.workers > 1  # the other workers listen on this port too
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def display_address(self) -> str:
        return _peer(self.server_address)

    def refuse(self, sock, error: SockftpError) -> None:
        """Tell a refused connection why, in the door's protocol, without
        blocking the accept loop."""

    # -- socketserver's template steps ---------------------------------------------------

    def verify_request(self, request, client_address) -> bool:
        if self.main.proxy_trusted is not None:
            # Admitted in the session's thread, by the address in its PROXY header.
            return self.main.trusts_proxy(client_address)
        try:
            self._admitted = self.main.admit(request, client_address)
            return True
        except (TooManySessions, Banned) as exc:
            log.warning("refused %s %s: %s", self.name, _peer(client_address), exc.message)
            self.refuse(request, exc)
            return False

    def process_request(self, request, client_address) -> None:
        record, self._admitted = self._admitted, None
        # The native listener's worker pool: it starts threads without
        # waiting for them to get the GIL, which held accept loops under load.
        try:
            self.main.workers.submit(self._run_session, request, client_address, record)
        except BaseException:
            if record is not None:
                self.main.sessions.release(record)
            raise

    def _run_session(self, request, client_address, record) -> None:
        quiet = False
        if record is None:  # through a balancer: the header first, then admission
            arrived = self.main.arrive(request, client_address, self.refuse)
            if arrived is None:
                self.shutdown_request(request)
                return
            arrival, record = arrived
            # quiet: the balancer's own health check, not a session to log.
            client_address, quiet = arrival.address, arrival.local
        try:
            self.RequestHandlerClass(request, client_address, self, record, quiet)
        except Exception:  # noqa: BLE001 - one session's bug must not reach the others
            log.exception("%s session %s failed", self.name, _peer(client_address))
        finally:
            self.main.sessions.release(record)
            self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.exception("error accepting %s %s", self.name, _peer(client_address))

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving.set()
        try:
            if not self.main.stopping.is_set():
                super().serve_forever(poll_interval)
        finally:
            self._serving.clear()

    def stop_accepting(self) -> None:
        """Stop the accept loop and close the listener. Sessions end with
        the main server's (they are in its registry)."""
        if self._serving.is_set():
            self.shutdown()
        self.server_close()

    def open(self):
        """Join the main server's front ends (its stop stops this door too)
        and run the accept loop in a thread. Returns the door."""
        self.main.front_ends.append(self)
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{self.name} accept", daemon=True
        ).start()
        return self
