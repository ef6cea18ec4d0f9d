"""docs/PROTOCOL.md is the contract for clients written in other languages;
these tests keep its tables and byte examples equal to the code.

They read the document as text: the error table under ``## Error codes``,
the limits table under ``### Limits``, the hex dump under ``### Example
frame``, the byte-level walkthroughs, the checksum test vectors, and the
command and feature lists. No server is started.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sockftp.protocol import checksum, frames, limits
from sockftp.protocol.errors import FATAL_CODES, ErrorCode
from sockftp.server.commands import COMMANDS, FEATURES

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"

_HEADING = re.compile(r"^(#{1,6}) (.*)$")
_DUMP_LINE = re.compile(r"^([0-9a-f]{8})  ((?:[0-9a-f]{2} {1,2})*[0-9a-f]{2})\s+\|.*\|$")
_FRAME_LABEL = re.compile(r"^(C->S|S->C) .*\((\d+) bytes\): (\{.*\})$")


# -- reading the document ----------------------------------------------------------------


def _lines() -> list[tuple[str, bool]]:
    """The document's lines, each with True if it is inside a code block."""
    result = []
    fenced = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            result.append((line, True))
        else:
            result.append((line, fenced))
    return result


def _section(heading: str) -> list[tuple[str, bool]]:
    """The lines under *heading* (e.g. ``"## Error codes"``), up to the next
    heading of the same or a higher level. Headings inside code blocks
    (comments in pseudocode) do not count."""
    lines = _lines()
    level = len(heading) - len(heading.lstrip("#"))
    for index, (line, fenced) in enumerate(lines):
        if not fenced and line.strip() == heading:
            body = []
            for later, later_fenced in lines[index + 1 :]:
                match = _HEADING.match(later)
                if match and not later_fenced and len(match.group(1)) <= level:
                    break
                body.append((later, later_fenced))
            return body
    raise AssertionError(f"docs/PROTOCOL.md has no heading {heading!r}")


def _tables(section: list[tuple[str, bool]]) -> list[list[list[str]]]:
    """The Markdown tables in *section*: each a list of rows, each a list of
    cells, the header row first and the |---| row left out."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line, fenced in section:
        if not fenced and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                continue
            if current is None:
                current = []
                tables.append(current)
            current.append(cells)
        else:
            current = None
    return tables


def _table(section: list[tuple[str, bool]], first_header: str) -> list[list[str]]:
    """The body rows of the table in *section* whose first column is *first_header*."""
    for table in _tables(section):
        if table[0][0] == first_header:
            return table[1:]
    raise AssertionError(f"no table with a {first_header!r} column")


def _code(cell: str) -> str:
    """The text of a cell written as `code`."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected a `code` cell, got {cell!r}"
    return match.group(1)


def _code_blocks(section: list[tuple[str, bool]], language: str) -> list[list[str]]:
    """The bodies of the fenced blocks opened with ```<language> in *section*."""
    blocks = []
    current: list[str] | None = None
    for line, _fenced in section:
        if current is None and line.strip() == f"```{language}":
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def _dump_bytes(lines: list[str]) -> bytes:
    """The bytes of a hex dump in the doc's format:
    ``00000010  22 2c 22 70 ...  |","path":"/docs/|``. Offsets must run on."""
    data = bytearray()
    for line in lines:
        match = _DUMP_LINE.match(line)
        assert match, f"not a hex dump line: {line!r}"
        assert int(match.group(1), 16) == len(data), f"offset out of step: {line!r}"
        data += bytes.fromhex(match.group(2))
    return bytes(data)


def _decode_one_frame(data: bytes) -> dict:
    """The single header that *data* holds, with nothing left over."""
    decoder = frames.FrameDecoder()
    decoder.feed(data)
    header = decoder.next_header()
    assert header is not None, "the bytes hold less than one frame"
    assert decoder.buffered == 0, f"{decoder.buffered} bytes left after the frame"
    return header


# -- error codes -----------------------------------------------------------------


def _error_rows() -> list[list[str]]:
    return _table(_section("## Error codes"), "Code")


def test_error_table_lists_every_error_code_once():
    documented = [_code(row[0]) for row in _error_rows()]
    assert len(documented) == len(set(documented)), "a code is listed twice"
    assert set(documented) == {code.value for code in ErrorCode}


def test_error_table_marks_exactly_the_fatal_codes_as_closing():
    closing = {_code(row[0]) for row in _error_rows() if row[2].strip("*").startswith("yes")}
    assert closing == {code.value for code in FATAL_CODES}


# -- limits --------------------------------------------------------------------------

_LIMIT_ROWS = _table(_section("### Limits"), "Constant")


@pytest.mark.parametrize("row", _LIMIT_ROWS, ids=[row[0].strip("`") for row in _LIMIT_ROWS])
def test_limits_table_states_the_value_in_limits_py(row):
    name = _code(row[0])
    assert hasattr(limits, name), f"sockftp.limits has no constant {name}"
    actual = getattr(limits, name)
    stated = row[1]
    if isinstance(actual, str):
        assert _code(stated) == actual
    else:
        number = re.match(r"^\d+(?:\.\d+)?", stated)
        assert number, f"{name}: no number at the start of {stated!r}"
        assert float(number.group()) == actual, f"{name}: the doc says {stated}, limits.py says {actual}"


def test_limits_table_covers_the_limits_hello_reports():
    named = {_code(row[0]) for row in _LIMIT_ROWS}
    assert {"MAX_HEADER_SIZE", "MAX_PATH_LENGTH", "MAX_NAME_LENGTH", "MAX_PATH_DEPTH", "MAX_FILE_SIZE"} <= named
    assert {"MAX_DRAIN", "LENGTH_PREFIX_SIZE", "LIST_BATCH_ENTRIES", "RESERVED_PREFIX"} <= named


# -- byte examples ---------------------------------------------------------------------


def test_example_frame_decodes_to_the_stated_header():
    section = _section("### Example frame")
    (dump, *_) = _code_blocks(section, "text")
    (stated, *_) = _code_blocks(section, "json")
    data = _dump_bytes(dump)
    header = json.loads("\n".join(stated))

    assert frames.parse_length(data[: limits.LENGTH_PREFIX_SIZE]) == len(data) - limits.LENGTH_PREFIX_SIZE
    assert _decode_one_frame(data) == header
    # The dump is also exactly what the codec writes for that header.
    assert frames.encode_header(header) == data


def _walkthrough_frames() -> list[tuple[str, int, dict, bytes]]:
    """(label, stated size, stated header, dumped bytes) for every frame dump
    in the walkthroughs: a ``C->S ... (N bytes): {json}`` line followed by a
    hex dump. Dumps of raw file bytes have no JSON in their label."""
    found = []
    for heading in ("### Walkthrough: a verified `put` with trailer, resumed", "### Walkthrough: a resumed `get`"):
        for block in _code_blocks(_section(heading), "text"):
            label = None
            dump: list[str] = []
            for line in [*block, ""]:
                if _DUMP_LINE.match(line):
                    dump.append(line)
                    continue
                if label is not None:
                    found.append((label.group(0), int(label.group(2)), json.loads(label.group(3)), _dump_bytes(dump)))
                label, dump = _FRAME_LABEL.match(line), []
    return found


def test_walkthrough_frames_hold_the_headers_their_labels_state():
    walkthrough = _walkthrough_frames()
    assert len(walkthrough) >= 7, "the walkthroughs should show every frame of both transfers"
    for label, size, header, data in walkthrough:
        assert len(data) == size, label
        assert _decode_one_frame(data) == header, label


# -- checksums ---------------------------------------------------------------------------------


def _vector_input(cell: str) -> bytes:
    if cell == "empty":
        return b""
    repeated = re.fullmatch(r"bytes 0, 1, 2, \.\.\., 255, repeated (\d+) times", cell)
    if repeated:
        return bytes(range(256)) * int(repeated.group(1))
    return _code(cell).replace("\\n", "\n").encode("utf-8")


def test_checksum_test_vectors_match_the_implementation():
    rows = _table(_section("### Algorithm"), "Input")
    assert len(rows) >= 4
    for cell, length, stated in rows:
        data = _vector_input(cell)
        assert len(data) == int(length), cell
        assert _code(stated) == checksum.of_bytes(data), cell


# -- commands and features -----------------------------------------------------------------------


def test_every_command_has_a_section_and_no_other_is_described():
    section = _section("## Commands")
    documented = {
        match.group(1)
        for line, fenced in section
        if not fenced and (match := re.fullmatch(r"### `([a-z_]+)`", line.strip()))
    }
    assert documented == set(COMMANDS)


def test_hello_features_table_lists_the_features_hello_announces():
    rows = _table(_section("### `hello`"), "Feature")
    assert [_code(row[0]) for row in rows] == list(FEATURES)
