"""The frame codec, with plain bytes: no sockets."""

from __future__ import annotations

import json
import struct

import pytest

from sockftp.protocol import errors
from sockftp.protocol.errors import BadFrame, BadJson, BadRequest, SockftpError
from sockftp.protocol.frames import FrameDecoder, decode_header, encode_header, parse_length
from sockftp.protocol.limits import MAX_HEADER_SIZE


def frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def test_encode_writes_little_endian_length_then_compact_utf8_json():
    data = encode_header({"cmd": "put", "path": "日本"})
    (length,) = struct.unpack("<I", data[:4])
    assert length == len(data) - 4
    assert data[4:] == '{"cmd":"put","path":"日本"}'.encode()


def test_encoded_prefix_equals_seed_struct_pack_i():
    data = encode_header({"cmd": "ping", "pad": "x" * 300})
    assert data[:4] == struct.pack("i", len(data) - 4)
    assert decode_header(data[4:]) == json.loads(data[4:])


@pytest.mark.parametrize(
    "header",
    [
        {"cmd": "ping"},
        {},
        {"ok": True, "entries": [{"name": "a", "size": 0, "mtime": 1.5}], "more": False},
        {"path": "données/日本語 file.txt", "size": 2**62, "nested": {"a": [None, True, -1.25]}},
        {"quote": '"\\/', "emoji": "\U0001f600"},
    ],
)
def test_encode_decode_round_trip(header):
    decoder = FrameDecoder()
    decoder.feed(encode_header(header))
    assert decoder.next_header() == header
    assert decoder.next_header() is None
    assert decoder.buffered == 0


def test_encode_refuses_header_over_the_limit():
    with pytest.raises(ValueError):
        encode_header({"x": "a" * MAX_HEADER_SIZE})


def test_encode_refuses_nan():
    with pytest.raises(ValueError):
        encode_header({"x": float("nan")})


def test_encode_allows_header_of_exactly_the_limit():
    overhead = len(encode_header({"x": ""})) - 4
    data = encode_header({"x": "a" * (MAX_HEADER_SIZE - overhead)})
    assert len(data) == 4 + MAX_HEADER_SIZE


def test_decoder_fed_byte_by_byte_yields_each_header_once_complete():
    headers = [{"cmd": "ping"}, {"cmd": "ls", "path": "é"}, {"n": 3}]
    stream = b"".join(encode_header(h) for h in headers)
    decoder = FrameDecoder()
    got = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        header = decoder.next_header()
        if header is not None:
            got.append((i, header))
    ends = []
    pos = 0
    for h in headers:
        pos += len(encode_header(h))
        ends.append(pos - 1)
    assert [i for i, _ in got] == ends
    assert [h for _, h in got] == headers


def test_decoder_reports_partial_header_as_pending():
    decoder = FrameDecoder()
    assert not decoder.header_pending()
    data = encode_header({"cmd": "ping"})
    decoder.feed(data[:3])
    assert decoder.header_pending()
    assert decoder.next_header() is None
    decoder.feed(data[3:])
    assert decoder.next_header() == {"cmd": "ping"}
    assert not decoder.header_pending()


def test_take_raw_returns_bytes_after_header_and_leaves_next_header():
    decoder = FrameDecoder()
    decoder.feed(encode_header({"cmd": "put", "size": 5}) + b"hello" + encode_header({"cmd": "ping"}))
    assert decoder.next_header() == {"cmd": "put", "size": 5}
    assert decoder.take_raw(3) == b"hel"
    assert decoder.take_raw(100) == b"lo" + encode_header({"cmd": "ping"})
    assert decoder.take_raw(10) == b""


def test_take_raw_limit_stops_before_next_header():
    decoder = FrameDecoder()
    decoder.feed(encode_header({"cmd": "put", "size": 2}) + b"ab" + encode_header({"cmd": "ping"}))
    decoder.next_header()
    assert decoder.take_raw(2) == b"ab"
    assert decoder.next_header() == {"cmd": "ping"}


def test_decoder_long_stream_buffer_is_compacted():
    decoder = FrameDecoder()
    one = encode_header({"cmd": "ping", "pad": "x" * 100})
    for _ in range(2000):
        decoder.feed(one[:50])
        decoder.feed(one[50:] + one[:10])
        assert decoder.next_header() == {"cmd": "ping", "pad": "x" * 100}
        decoder.take_raw(10)
    assert decoder.buffered == 0
    assert len(decoder._buf) < 4 * len(one)


@pytest.mark.parametrize(
    "prefix",
    [
        struct.pack("<I", 0),
        struct.pack("<I", MAX_HEADER_SIZE + 1),
        struct.pack("<I", 0xFFFFFFFF),
        struct.pack("i", -1),
        struct.pack("i", -(2**31)),
    ],
    ids=["zero", "limit+1", "0xFFFFFFFF", "pack-i-minus-1", "pack-i-min"],
)
def test_bad_length_prefix_is_bad_frame(prefix):
    with pytest.raises(BadFrame):
        parse_length(prefix)
    decoder = FrameDecoder()
    decoder.feed(prefix + b"{}")
    with pytest.raises(BadFrame):
        decoder.next_header()


def test_length_of_exactly_the_limit_is_accepted():
    assert parse_length(struct.pack("<I", MAX_HEADER_SIZE)) == MAX_HEADER_SIZE


@pytest.mark.parametrize(
    "payload, error",
    [
        (b"\xff\xfe{}", BadJson),
        (b'{"cmd": "\xc3"}', BadJson),
        (b"{not json", BadJson),
        (b'{"a": NaN}', BadJson),
        (b'{"a": Infinity}', BadJson),
        (b"1" * 5000, BadJson),  # integer too long for Python's int parser limit
        (b"[" * 20000 + b"]" * 20000, BadJson),  # recursion
        (b"[1, 2]", BadRequest),
        (b'"cmd"', BadRequest),
        (b"null", BadRequest),
        (b"true", BadRequest),
        (b"3.5", BadRequest),
    ],
    ids=[
        "not-utf8",
        "truncated-utf8",
        "invalid-json",
        "nan",
        "infinity",
        "huge-int",
        "deep-nesting",
        "array",
        "string",
        "null",
        "bool",
        "number",
    ],
)
def test_bad_payload_errors_and_stream_stays_in_step(payload, error):
    with pytest.raises(error):
        decode_header(payload)
    decoder = FrameDecoder()
    decoder.feed(frame(payload) + encode_header({"cmd": "ping"}))
    with pytest.raises(error):
        decoder.next_header()
    assert decoder.next_header() == {"cmd": "ping"}


def test_error_codes_of_frame_errors():
    assert BadFrame("x").code == "bad_frame"
    assert BadJson("x").code == "bad_json"
    assert BadRequest("x").code == "bad_request"
    assert errors.BadFrame.code in errors.FATAL_CODES
    assert errors.BadJson.code not in errors.FATAL_CODES


# --- property tests ------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=10,
)
_headers = st.dictionaries(st.text(max_size=20), _json_values, max_size=8)


def _drain(decoder: FrameDecoder) -> None:
    """Pull headers until more bytes are needed; only SockftpError may escape."""
    for _ in range(10000):
        try:
            header = decoder.next_header()
        except (BadJson, BadRequest):
            continue  # frame consumed; the stream is still in step
        if header is None:
            return
        assert isinstance(header, dict)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_arbitrary_bytes_only_raise_sockftp_errors(data, chunk):
    decoder = FrameDecoder()
    try:
        for i in range(0, len(data), chunk):
            decoder.feed(data[i : i + chunk])
            _drain(decoder)
    except SockftpError:
        pass


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_arbitrary_payloads_in_valid_frames_only_raise_sockftp_errors(payloads):
    decoder = FrameDecoder()
    stream = b"".join(frame(p) for p in payloads if p) + encode_header({"end": True})
    decoder.feed(stream)
    got = []
    while True:
        try:
            header = decoder.next_header()
        except (BadJson, BadRequest):
            continue
        if header is None:
            break
        got.append(header)
    assert got[-1] == {"end": True}


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(_headers, min_size=1, max_size=3), st.integers(min_value=1, max_value=50))
def test_encode_decode_round_trips_any_json_object(headers, chunk):
    stream = b"".join(encode_header(h) for h in headers)
    decoder = FrameDecoder()
    got = []
    for i in range(0, len(stream), chunk):
        decoder.feed(stream[i : i + chunk])
        while (header := decoder.next_header()) is not None:
            got.append(header)
    assert got == headers


def test_a_peeked_header_stays_until_read_and_a_bad_one_is_met_again():
    decoder = FrameDecoder()
    decoder.feed(encode_header({"cmd": "ping"}) + frame(b"{not json") + encode_header({"cmd": "pwd"})[:3])
    assert decoder.peek_header() == {"cmd": "ping"}
    assert decoder.peek_header() == {"cmd": "ping"}  # still there
    assert decoder.next_header() == {"cmd": "ping"}
    with pytest.raises(BadJson):
        decoder.peek_header()  # consumes nothing...
    with pytest.raises(BadJson):
        decoder.next_header()  # ...so reading meets it, and consumes it
    assert decoder.peek_header() is None  # only part of the next header is here
    decoder.feed(encode_header({"cmd": "pwd"})[3:])
    assert decoder.peek_header() == {"cmd": "pwd"}
    assert decoder.next_header() == {"cmd": "pwd"}
    assert decoder.buffered == 0


def test_a_peek_survives_the_buffer_moving_under_it():
    # Feeding may compact the buffer, moving the peeked bytes: the peek must
    # not point into the old place.
    decoder = FrameDecoder()
    first, second = encode_header({"cmd": "a" * 40}), encode_header({"cmd": "pwd"})
    decoder.feed(first + second)
    assert decoder.next_header() == {"cmd": "a" * 40}
    assert decoder.peek_header() == {"cmd": "pwd"}
    decoder.feed(encode_header({"cmd": "ping"}))  # compacts: the consumed half goes
    assert decoder.next_header() == {"cmd": "pwd"}
    assert decoder.next_header() == {"cmd": "ping"}
