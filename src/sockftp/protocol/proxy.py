"""The PROXY protocol, version 2: the header a load balancer (HAProxy's
``send-proxy-v2``) puts before a connection's first byte to say who the
real client is.

A sans-IO decoder: :class:`ProxyDecoder` is fed bytes and answers "need
more" (None), a :class:`ProxyHeader`, or raises :class:`ProxyError`. It
never reads a socket, so the native door, the FTP door and any later door
read the header the same way (the socket side is
:func:`sockftp.server.proxied.receive`), and the fuzzer can drive it alone.

The format (HAProxy's doc/proxy-protocol.txt, section 2.2): a 12-byte
signature, a version-and-command byte (0x20 LOCAL, 0x21 PROXY), a
family-and-transport byte, a 16-bit big-endian length of the rest, then
the addresses and optional TLVs (which are skipped: nothing here uses them).

Only version 2 is accepted: a version 1 (text) header, anything else that
is not the signature, a header longer than :data:`MAX_HEADER`, and
families this server cannot use as a client address (UDP, UNIX sockets)
are errors. The decoder decides as early as it can, so garbage is refused
from its first wrong byte rather than after a timeout, and it never asks
for more bytes than the header holds: what follows is the session's.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

#: The v2 signature: a line no text protocol can start with.
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: The fixed part: signature, version/command, family, length.
FIXED = 16

#: The largest header taken (fixed part included). An IPv6 address block is
#: 36 bytes; the rest is room for the TLVs a balancer may add (unique id,
#: TLS details). The spec's receivers need only 232 bytes for v2.
MAX_HEADER = 1024

LOCAL = 0x0
PROXY = 0x1

_TCP4 = 0x11
_TCP6 = 0x21
_UNSPEC = 0x00
_ADDRESS_SIZE = {_TCP4: 12, _TCP6: 36, _UNSPEC: 0}


class ProxyError(ValueError):
    """Not a PROXY v2 header this server accepts; the message says why."""


@dataclass(frozen=True)
class ProxyHeader:
    """A decoded header. *local*: a LOCAL command (a balancer's own
    connection, such as a health check), or a PROXY one without addresses:
    the connection's own addresses stand. Else *source* and *destination*
    are ``(host, port)`` of the client and of the address it connected to."""

    local: bool
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    size: int = 0  # bytes the header took


class ProxyDecoder:
    """Feed the bytes of a connection's start until the header is whole.

    ``wanted()`` says how many more bytes the header needs at least, so a
    socket reader can ask for exactly those and never read into the
    session's bytes; ``feed()`` takes any amount and keeps what lies past
    the header in ``rest``.
    """

    def __init__(self, max_size: int = MAX_HEADER):
        self.max_size = max_size
        self._buffer = bytearray()
        self.rest = b""
        self.header: ProxyHeader | None = None

    def wanted(self) -> int:
        """Bytes still needed before the header can be complete (0 once it is)."""
        if self.header is not None:
            return 0
        if len(self._buffer) < FIXED:
            return FIXED - len(self._buffer)
        return FIXED + _length(self._buffer) - len(self._buffer)

    def feed(self, data: bytes) -> ProxyHeader | None:
        """Take *data*; return the header once whole, else None.

        Raises ProxyError as soon as the bytes cannot be a header this
        server accepts. After the header, further bytes go to ``rest``.
        """
        if self.header is not None:
            self.rest += bytes(data)
            return self.header
        self._buffer += data
        buffer = self._buffer
        head = bytes(buffer[: len(SIGNATURE)])
        if not SIGNATURE.startswith(head):
            if head.startswith(b"PROXY"[: len(head)]) and len(head) >= 2:
                raise ProxyError("a PROXY protocol version 1 (text) header: only version 2 is accepted")
            raise ProxyError("no PROXY protocol header: the connection must start with one")
        if len(buffer) > len(SIGNATURE):
            command = buffer[12]
            if command >> 4 != 2:
                raise ProxyError(f"PROXY protocol version {command >> 4} is not supported (only 2)")
            if command & 0xF not in (LOCAL, PROXY):
                raise ProxyError(f"unknown PROXY protocol command {command & 0xF:#x}")
        if len(buffer) > 13 and buffer[12] & 0xF == PROXY and buffer[13] not in _ADDRESS_SIZE:
            raise ProxyError(f"PROXY protocol address family {buffer[13]:#04x} is not TCP over IPv4 or IPv6")
        if len(buffer) < FIXED:
            return None
        length = _length(buffer)
        if FIXED + length > self.max_size:
            raise ProxyError(f"PROXY protocol header of {FIXED + length} bytes is over the limit of {self.max_size}")
        if len(buffer) < FIXED + length:
            return None
        end = FIXED + length
        self.header = _decode(bytes(buffer[:end]))
        self.rest = bytes(buffer[end:])
        self._buffer = bytearray()
        return self.header


def parse(data: bytes, max_size: int = MAX_HEADER) -> ProxyHeader | None:
    """Decode the header at the start of *data*: None if more bytes are
    needed. Raises ProxyError. (``header.size`` says where the rest starts.)"""
    return ProxyDecoder(max_size).feed(data)


def encode(source: tuple[str, int] | None, destination: tuple[str, int] | None = None) -> bytes:
    """A v2 header for a TCP connection from *source* to *destination*, or
    a LOCAL one if *source* is None: what a balancer sends (tests, tools)."""
    if source is None:
        return SIGNATURE + bytes([0x20, _UNSPEC]) + struct.pack("!H", 0)
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0] if destination else ("::" if src.version == 6 else "0.0.0.0"))
    if src.version != dst.version:
        raise ValueError("source and destination must both be IPv4 or both IPv6")
    family = _TCP4 if src.version == 4 else _TCP6
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1] if destination else 0)
    return SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def _length(buffer) -> int:
    return struct.unpack_from("!H", buffer, 14)[0]


def _decode(header: bytes) -> ProxyHeader:
    command, family = header[12] & 0xF, header[13]
    if command == LOCAL:
        # The spec: a receiver must ignore the address block of a LOCAL.
        return ProxyHeader(local=True, size=len(header))
    size = _ADDRESS_SIZE[family]
    body = header[FIXED:]
    if len(body) < size:
        raise ProxyError(f"PROXY protocol header too short for its addresses ({len(body)} of {size} bytes)")
    if family == _UNSPEC:
        return ProxyHeader(local=True, size=len(header))
    half = (size - 4) // 2
    source = ipaddress.ip_address(body[:half])
    destination = ipaddress.ip_address(body[half : 2 * half])
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * half)
    return ProxyHeader(
        local=False,
        source=(_show(source), source_port),
        destination=(_show(destination), destination_port),
        size=len(header),
    )


def _show(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An address as the rest of the server writes a peer's: an IPv4 client
    seen through an IPv6 balancer as its dotted form."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


__all__ = ["MAX_HEADER", "SIGNATURE", "ProxyDecoder", "ProxyError", "ProxyHeader", "encode", "parse"]
