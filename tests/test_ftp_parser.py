"""The FTP front door's pure modules: command lines, arguments, replies and
listings, from and to plain strings and bytes. No sockets, no files."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockftp.ftp import listing, parser, replies
from sockftp.ftp.replies import Reply
from sockftp.protocol import errors
from sockftp.storage import DIRECTORY, FILE, LINK, OTHER, Entry

# --- command lines -------------------------------------------------------------------------------


def lines_of(*chunks: bytes) -> list[str]:
    reader = parser.LineReader()
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while (line := reader.next_line()) is not None:
            out.append(line)
    return out


def test_lines_end_with_crlf_or_a_bare_lf_and_may_arrive_in_pieces():
    assert lines_of(b"USER al", b"ice\r", b"\nPASS x\nNOOP\r\n") == ["USER alice", "PASS x", "NOOP"]


def test_telnet_commands_are_dropped_and_iac_iac_is_a_data_byte():
    assert lines_of(b"\xff\xf4\xff\xf2ABOR\r\n") == ["ABOR"]  # IAC IP IAC DM ABOR
    assert lines_of(b"NO\xff\xfb\x01OP\r\n") == ["NOOP"]  # IAC WILL ECHO in the middle
    assert lines_of(b"NO\xff", b"\xf4OP\r\n") == ["NOOP"]  # split after IAC
    assert lines_of(b"NO\xff\xfd", b"\x01OP\r\n") == ["NOOP"]  # split before the option
    assert lines_of(b"STOR a\xff\xffb\r\n") == ["STOR a\udcffb"]  # 0xFF itself: not UTF-8, refused later


def test_lines_are_utf8_and_other_bytes_become_surrogates():
    assert lines_of("STOR héllo ✓.txt\r\n".encode()) == ["STOR héllo ✓.txt"]
    assert lines_of(b"STOR caf\xe9\r\n") == ["STOR caf\udce9"]


def test_a_line_over_the_limit_is_refused_once_and_skipped():
    reader = parser.LineReader(max_line=10)
    reader.feed(b"NOOP 12345678901234")
    with pytest.raises(parser.LineTooLong):
        reader.next_line()
    reader.feed(b"more of the same line\r\nNOOP\r\n")
    assert reader.next_line() == "NOOP"
    assert reader.next_line() is None
    reader.feed(b"NOOP 123456789\r\nSYST\r\n")  # too long, with its end in view
    with pytest.raises(parser.LineTooLong):
        reader.next_line()
    assert reader.next_line() == "SYST"


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_any_bytes_give_lines_or_line_too_long_and_nothing_else(chunks):
    reader = parser.LineReader(max_line=64)
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            try:
                line = reader.next_line()
            except parser.LineTooLong:
                continue
            if line is None:
                break
            assert "\n" not in line and len(line.encode("utf-8", "surrogateescape")) <= 64
    assert reader.buffered <= 64 + 50 + 3


def test_parse_command_keeps_spaces_in_the_argument():
    assert parser.parse_command("stor  my file .txt") == parser.Command("STOR", " my file .txt")
    assert parser.parse_command("NOOP") == parser.Command("NOOP", "")
    for bad in ("", " NOOP", "X", "N0OP", "TOOLONGVERB x", "ÜBER x"):
        with pytest.raises(parser.ParseError):
            parser.parse_command(bad)


# --- arguments ----------------------------------------------------------------------------------------


def test_port_and_pasv():
    assert parser.parse_port("127,0,0,1,4,1") == ("127.0.0.1", 1025)
    assert parser.parse_port(" 10,0,0,7,255,255 ") == ("10.0.0.7", 65535)
    for bad in ("127,0,0,1,4", "127,0,0,1,4,256", "a,b,c,d,e,f", "127.0.0.1:21", "-1,0,0,1,4,1"):
        with pytest.raises(parser.ParseError):
            parser.parse_port(bad)
    assert parser.format_pasv("203.0.113.7", 50001) == "Entering Passive Mode (203,0,113,7,195,81)."


def test_eprt_and_epsv():
    assert parser.parse_eprt("|1|127.0.0.1|5000|") == (4, "127.0.0.1", 5000)
    assert parser.parse_eprt("!2!::1!6275!") == (6, "::1", 6275)
    for bad in ("|3|::1|5|", "|1|::1|5|", "|2|127.0.0.1|5|", "|1|127.0.0.1|0|", "|1|127.0.0.1|70000|", "1|x|2|", ""):
        with pytest.raises(parser.ParseError):
            parser.parse_eprt(bad)
    assert parser.format_epsv(6275) == "Entering Extended Passive Mode (|||6275|)"


def test_same_host_treats_ipv4_mapped_addresses_as_ipv4():
    assert parser.same_host("127.0.0.1", "::ffff:127.0.0.1")
    assert parser.same_host("::1", "0:0:0:0:0:0:0:1")
    assert not parser.same_host("127.0.0.1", "127.0.0.2")
    assert not parser.same_host("127.0.0.1", "not an address")


def test_rest_type_and_list_options():
    assert parser.parse_rest("1024") == 1024
    for bad in ("-1", "1e3", "", "١٢"):  # the last: Arabic-Indic digits, which isdigit() accepts
        with pytest.raises(parser.ParseError):
            parser.parse_rest(bad)
    assert [parser.parse_type(t) for t in ("A", "a n", "I", "L 8")] == ["A", "A", "I", "I"]
    with pytest.raises(parser.ParseError):
        parser.parse_type("E")
    assert parser.split_list_options("-la /dir") == ("la", "/dir")
    assert parser.split_list_options("-a -l") == ("al", "")
    assert parser.split_list_options("my dir") == ("", "my dir")


def test_times_are_utc():
    assert parser.format_time(0) == "19700101000000"
    assert parser.format_time(1_700_000_000.25, fraction=True) == "20231114221320.250"


# --- replies --------------------------------------------------------------------------------------------


def test_replies_one_line_and_several():
    assert Reply(200, "OK").encode() == b"200 OK\r\n"
    assert Reply(211, "Features:", " UTF8", "End").encode() == b"211-Features:\r\n UTF8\r\n211 End\r\n"
    assert Reply(214, "a", "200 looks like an end", "b").encode() == b"214-a\r\n 200 looks like an end\r\n214 b\r\n"


def test_no_text_can_start_a_line_of_its_own():
    assert Reply(550, "no such file: a\r\n230 logged in").encode() == b"550 no such file: a  230 logged in\r\n"
    assert Reply(213, "x\x00y").encode() == b"213 x y\r\n"


def test_quote_path_doubles_quotes():
    assert replies.quote_path('/a "b"') == '"/a ""b"""'


@pytest.mark.parametrize(
    "error, creates, code",
    [
        (errors.NotFound("x"), False, 550),
        (errors.PathRefused("x"), True, 553),
        (errors.PathRefused("x"), False, 550),
        (errors.QuotaExceeded("x"), True, 552),
        (errors.NoSpace("x"), True, 452),
        (errors.Busy("x"), True, 450),
        (errors.OffsetMismatch("x"), True, 554),
        (errors.PermissionDenied("x"), False, 550),
        (errors.IOFailure("x"), False, 451),
    ],
)
def test_sockftp_errors_map_to_ftp_codes(error, creates, code):
    assert replies.for_error(error, creates=creates).code == code


def test_an_error_reply_names_the_path_as_the_client_sees_it():
    error = errors.NotFound("no such file: {path}", path=("users", "alice", "a.txt"))
    reply = replies.for_error(error, display=lambda parts: "/" + "/".join(parts[2:]))
    assert reply.lines == ("no such file: /a.txt",)


# --- listings -------------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def test_list_lines_look_like_ls():
    file = Entry("a b.txt", FILE, 1234, NOW - 3600)
    assert listing.list_line(file, "alice", True, NOW) == (
        "-rw-r--r-- 1 alice    alice            1234 Nov 14 21:13 a b.txt"
    )
    old = Entry("old", DIRECTORY, 0, NOW - 400 * 24 * 3600)
    assert listing.list_line(old, "alice", False, NOW) == "dr-xr-xr-x 1 alice    alice               0 Oct 10  2022 old"
    assert listing.list_line(Entry("l", LINK, 0, NOW), "a", True, NOW)[0] == "l"
    assert listing.list_line(Entry("p", OTHER, 0, NOW), "a", True, NOW)[0] == "?"


def test_facts_follow_rfc_3659_and_the_selection():
    file = Entry("f", FILE, 5, NOW)
    assert listing.facts_line(file, "f", listing.FACTS, True) == (
        "type=file;size=5;modify=20231114221320.000;perm=adfrw; f"
    )
    assert listing.facts(file, ["size"], False) == "size=5;"
    assert listing.facts(Entry("d", DIRECTORY, 0, NOW), ["type", "size", "perm"], False) == "type=dir;perm=el;"
    assert listing.facts(Entry("l", LINK, 0, NOW), ["type"], True) == "type=OS.unix=symlink;"
    assert listing.feat_line(("type", "size")) == "MLST type*;size*;modify;perm;"
    assert listing.select_facts("Size;TYPE;unknown;") == ("type", "size")


def test_names_that_would_break_a_line_are_left_out():
    entries = [Entry("ok", FILE, 1, NOW), Entry("bad\nname", FILE, 1, NOW), Entry("bad\rname", FILE, 1, NOW)]
    assert [e.name for e in listing.listable(entries)] == ["ok"]


def test_list_line_time_is_in_utc_whatever_the_local_zone(monkeypatch):
    entry = Entry("f", FILE, 1, NOW)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert " Nov 14 22:13 f" in listing.list_line(entry, "a", True, NOW)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_time_gives_seconds_since_the_epoch_in_utc():
    assert parser.parse_time("19700101000000") == 0
    assert parser.parse_time("20261207063146") == 1796625106
    assert parser.parse_time("20240229120000.5") == 1709208000.5
    assert parser.parse_time("00010101000000") == -62135596800
    assert parser.parse_time("20230229000000") is None  # no such day
    assert parser.parse_time("2023022900000") is None
