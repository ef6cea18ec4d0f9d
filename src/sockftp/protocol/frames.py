"""The frame codec: bytes in, header dicts out, and back. No sockets here.

A frame is a 4-byte little-endian unsigned length N followed by N bytes of
UTF-8 JSON holding one object (the header). These are the bytes of the
seed's ``struct.pack('i', n)`` on every little-endian machine, so clients
written in that style interoperate. Raw file bytes follow a header only
when it announces their count; the decoder hands those back untouched
through :meth:`FrameDecoder.take_raw`.

Errors are the protocol's own: :class:`~sockftp.protocol.errors.BadFrame` when the
length prefix cannot be trusted (the stream is lost, the caller must close),
:class:`~sockftp.protocol.errors.BadJson` or :class:`~sockftp.protocol.errors.BadRequest` when
one header is bad but the stream is still in step (the frame is consumed).
Nothing else escapes, whatever the input: the property tests hold us to it.
"""

from __future__ import annotations

import json
import struct

from .errors import BadFrame, BadJson, BadRequest
from .limits import LENGTH_PREFIX_SIZE, MAX_HEADER_SIZE

_PREFIX = struct.Struct("<I")


def _reject_constant(name: str):
    # NaN and Infinity are not JSON; Python's parser accepts them by default.
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_header(header: dict, max_size: int = MAX_HEADER_SIZE) -> bytes:
    """One frame (prefix and JSON) for *header*.

    Raises:
        ValueError: the header is larger than *max_size* once encoded, or
            holds something JSON cannot carry. Both are bugs of the sender.
    """
    payload = _encoder.encode(header).encode("utf-8")
    if len(payload) > max_size:
        raise ValueError(f"header of {len(payload)} bytes exceeds {max_size}")
    return _PREFIX.pack(len(payload)) + payload


def encoded_size(value) -> int:
    """Bytes *value* takes inside a header, for callers packing a frame."""
    return len(_encoder.encode(value).encode("utf-8"))


def parse_length(prefix: bytes, max_size: int = MAX_HEADER_SIZE) -> int:
    """The header length from a 4-byte prefix.

    Raises:
        BadFrame: zero or above *max_size*. A signed prefix from a seed-style
            client (``struct.pack('i', -1)``) reads as a huge length and is
            refused the same way.
    """
    (length,) = _PREFIX.unpack(prefix)
    if length == 0:
        raise BadFrame("empty header: the length prefix is 0")
    if length > max_size:
        raise BadFrame(f"header length {length} exceeds the limit of {max_size} bytes")
    return length


def decode_header(payload: bytes) -> dict:
    """The JSON object in *payload*.

    Raises:
        BadJson: not UTF-8, or not JSON.
        BadRequest: JSON, but not an object.
    """
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson(f"header is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and over-long integer literals.
        raise BadJson(f"header is not valid JSON: {_first_line(exc)}") from None
    if not isinstance(value, dict):
        raise BadRequest(f"header must be a JSON object, not {_json_type(value)}")
    return value


class FrameDecoder:
    """Turns a byte stream into headers, buffering what has not been used.

    Feed it whatever the transport received; ask for the next header; when a
    header announces raw bytes, take them with :meth:`take_raw` (which
    returns what is already buffered) and read the rest straight from the
    transport. The same object works over a socket, a socketpair or a fuzzer.
    """

    def __init__(self, max_header: int = MAX_HEADER_SIZE):
        self.max_header = max_header
        self._buf = bytearray()
        self._pos = 0
        self._peeked: tuple[int, dict] | None = None  # (end, header) of the header peek_header decoded

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            # Compact before growing, so a long session's buffer stays small.
            del self._buf[: self._pos]
            self._pos = 0
            self._peeked = None  # its end pointed into the bytes that moved
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buf) - self._pos

    def next_header(self) -> dict | None:
        """The next complete header, or None if more bytes are needed.

        Raises:
            BadFrame: the length prefix is invalid; the stream is lost.
            BadJson, BadRequest: this header is bad; it has been consumed and
                the next one may be read.
        """
        if self._peeked is not None:
            end, header = self._peeked
            self._consume_to(end)
            return header
        payload = self._complete_header()
        if payload is None:
            return None
        end, payload = payload
        self._consume_to(end)
        return decode_header(payload)

    def peek_header(self) -> dict | None:
        """The next complete header, left in place (the next
        :meth:`next_header` returns it without decoding it again); None if
        more bytes are needed. Raises as next_header does, but consumes
        nothing, so the error is met again by the next next_header."""
        if self._peeked is None:
            payload = self._complete_header()
            if payload is None:
                return None
            end, payload = payload
            self._peeked = (end, decode_header(payload))
        return self._peeked[1]

    def _complete_header(self) -> tuple[int, bytes] | None:
        """(end, JSON bytes) of the next header if all of it is here."""
        if len(self._buf) - self._pos < LENGTH_PREFIX_SIZE:
            return None
        start = self._pos
        length = parse_length(bytes(self._buf[start : start + LENGTH_PREFIX_SIZE]), self.max_header)
        end = start + LENGTH_PREFIX_SIZE + length
        if end > len(self._buf):
            return None
        return end, bytes(self._buf[start + LENGTH_PREFIX_SIZE : end])

    def _consume_to(self, end: int) -> None:
        self._peeked = None
        self._pos = end
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0

    def take_raw(self, limit: int) -> bytes:
        """Up to *limit* buffered bytes that follow the last header."""
        n = min(limit, len(self._buf) - self._pos)
        if n <= 0:
            return b""
        data = bytes(self._buf[self._pos : self._pos + n])
        self._consume_to(self._pos + n)
        return data

    def header_pending(self) -> bool:
        """True while part of a header has arrived but not all of it."""
        return self._pos < len(self._buf)


def _json_type(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
