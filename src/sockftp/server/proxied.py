"""Connections that come through a load balancer speaking the PROXY protocol
(``proxy_protocol``): the socket side, shared by every door.

Each door calls :func:`receive` first thing in the session's own thread,
before it sends a byte: it checks that the peer is a trusted balancer,
reads the v2 header (decoded by :mod:`sockftp.protocol.proxy`) under the
header timeout, however it is split, and returns the real client's address.
Only then does the door admit the connection
(:meth:`SockftpServer.admit <sockftp.server.listener.SockftpServer.admit>`:
bans and session caps, by that address) and name the peer in its logs, the
audit log and its address checks (FTP's PORT and passive connections).

With the protocol on, a header is required from every connection and
accepted only from ``proxy_trusted`` addresses: a connection from anywhere
else is closed unanswered (never served as itself: a client that can reach
a node directly would otherwise sidestep the balancer's view of it, and a
header is never guessed at).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass

from ..protocol.proxy import ProxyDecoder, ProxyError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Arrival:
    """Who a connection is from: *address* ``(host, port)``, the client's;
    *local*: the balancer's own connection (a health check), to be served
    but not logged as a session."""

    address: tuple
    local: bool = False


def networks(texts) -> tuple[Network, ...]:
    """*texts* (CIDRs or single addresses) as networks. Raises ValueError."""
    return tuple(ipaddress.ip_network(text.strip(), strict=False) for text in texts)


def is_trusted(host: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in trusted if net.version == ip.version)


def receive(sock: socket.socket, peer: tuple, trusted: tuple[Network, ...], timeout: float) -> Arrival:
    """Read the PROXY header of *sock*, accepted from *peer* (its socket
    address), within *timeout* seconds all told.

    Returns the client's address. Raises ProxyError (untrusted peer, no
    header, a bad one, the timeout, the peer gone), after which the door
    closes the connection without a word: the peer is a balancer that
    misbehaves, or not a balancer at all. Reads no byte past the header.
    """
    if not is_trusted(peer[0], trusted):
        raise ProxyError(f"{peer[0]} is not a trusted proxy (proxy_trusted)")
    decoder = ProxyDecoder()
    deadline = time.monotonic() + timeout
    previous = sock.gettimeout()
    try:
        while (wanted := decoder.wanted()) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProxyError(f"no whole PROXY header within {timeout:g} s")
            sock.settimeout(left)
            try:
                data = sock.recv(wanted)
            except TimeoutError:
                raise ProxyError(f"no whole PROXY header within {timeout:g} s") from None
            except OSError as exc:
                raise ProxyError(f"connection lost before the PROXY header: {exc.strerror or exc}") from None
            if not data:
                raise ProxyError("connection closed before the PROXY header was whole")
            header = decoder.feed(data)
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass
    if header.local:
        return Arrival(tuple(peer), local=True)
    return Arrival(header.source)


__all__ = ["Arrival", "ProxyError", "is_trusted", "networks", "receive"]
