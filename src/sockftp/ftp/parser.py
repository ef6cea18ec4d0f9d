"""FTP command lines and arguments, from bytes. Pure: no I/O.

* :class:`LineReader` turns the bytes of the control connection into
  command lines: it drops Telnet commands (RFC 854; clients send
  ``IAC IP IAC DM`` before ``ABOR``), accepts CRLF or a bare LF, and bounds
  a line's length.
* :func:`parse_command` splits a line into its verb and argument.
* The other functions read and write the arguments of ``PORT``, ``EPRT``,
  ``PASV``, ``EPSV``, ``REST``, ``TYPE`` and ``LIST``, and times for
  ``MDTM`` and ``MLST``.

Everything here raises :class:`ParseError` (reply 501) on bad input, and
nothing else.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import time
from dataclasses import dataclass

from ..protocol.limits import MAX_FILE_SIZE, MAX_PATH_LENGTH

#: Longest command line, in bytes without its line end: a verb, a space and
#: the longest path a client may send (4096 bytes, limits.MAX_PATH_LENGTH),
#: with room to spare. RFC 959 sets no limit; pyftpdlib allows 2048 bytes,
#: vsftpd 4096.
MAX_LINE = MAX_PATH_LENGTH + 512

# Telnet (RFC 854): IAC starts a command; WILL, WONT, DO and DONT take one
# more byte (the option); IAC IAC is a data byte 0xFF, which UTF-8 never holds.
IAC = 0xFF
_NEGOTIATION = range(251, 255)


class ParseError(ValueError):
    """A command line or argument that cannot be understood (reply 501)."""


class LineTooLong(ParseError):
    """A command line longer than MAX_LINE. The rest of it is skipped."""


class LineReader:
    """Command lines out of the bytes of a control connection.

    ``feed(data)`` then ``next_line()`` until it returns None. A line is
    decoded as UTF-8 (RFC 2640); bytes that are not UTF-8 come through as
    lone surrogates, which path resolution refuses.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._raw = bytearray()  # not yet through the Telnet filter
        self._clean = bytearray()  # filtered, not yet a whole line
        self._skipping = False  # inside a line that was too long

    def feed(self, data: bytes) -> None:
        self._raw += data
        raw = self._raw
        position = 0
        while True:
            iac = raw.find(IAC, position)
            if iac < 0:
                self._clean += raw[position:]
                position = len(raw)
                break
            self._clean += raw[position:iac]
            if iac + 1 >= len(raw):
                position = iac  # wait for the command byte
                break
            command = raw[iac + 1]
            if command == IAC:
                self._clean.append(IAC)
                position = iac + 2
            elif command in _NEGOTIATION:
                if iac + 2 >= len(raw):
                    position = iac  # wait for the option byte
                    break
                position = iac + 3
            else:
                position = iac + 2  # IP, DM, AO, NOP...: no meaning for us
        del raw[:position]

    def next_line(self) -> str | None:
        """The next whole line without its line end, or None if there is
        none yet. Raises LineTooLong once for a line over the limit."""
        while True:
            end = self._clean.find(b"\n")
            if self._skipping:
                if end < 0:
                    self._clean.clear()
                    return None
                del self._clean[: end + 1]
                self._skipping = False
                continue
            if end < 0:
                if len(self._clean) > self.max_line:
                    self._clean.clear()
                    self._skipping = True
                    raise LineTooLong(f"command line longer than {self.max_line} bytes")
                return None
            line = bytes(self._clean[:end])
            del self._clean[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line:
                raise LineTooLong(f"command line longer than {self.max_line} bytes")
            return line.decode("utf-8", "surrogateescape")

    @property
    def buffered(self) -> int:
        """Bytes held that are not a whole line yet."""
        return len(self._raw) + len(self._clean)


@dataclass(frozen=True)
class Command:
    verb: str  # upper case
    argument: str  # everything after the first space; "" if none


def parse_command(line: str) -> Command:
    """``"stor my file.txt"`` -> Command("STOR", "my file.txt").

    The argument keeps its spaces: file names may hold them. A verb is 3 or
    4 letters (RFC 959), or one of the few longer ones clients send.
    """
    verb, _, argument = line.partition(" ")
    if not verb.isascii() or not verb.isalpha() or not 3 <= len(verb) <= 8:
        raise ParseError("not an FTP command")
    return Command(verb.upper(), argument)


# -- data connection addresses -------------------------------------------------------


def parse_port(argument: str) -> tuple[str, int]:
    """``PORT h1,h2,h3,h4,p1,p2`` -> ("h1.h2.h3.h4", p1 * 256 + p2)."""
    parts = argument.strip().split(",")
    if len(parts) != 6 or not all(part.strip().isdigit() for part in parts):
        raise ParseError("PORT takes h1,h2,h3,h4,p1,p2")
    numbers = [int(part) for part in parts]
    if any(number > 255 for number in numbers):
        raise ParseError("PORT numbers go from 0 to 255")
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def format_pasv(host: str, port: int) -> str:
    """The text of a 227 reply: ``Entering Passive Mode (h1,h2,h3,h4,p1,p2).``"""
    numbers = host.split(".") + [str(port >> 8), str(port & 0xFF)]
    return f"Entering Passive Mode ({','.join(numbers)})."


#: EPRT's network protocol numbers (RFC 2428): 1 is IPv4, 2 is IPv6.
FAMILIES = {1: 4, 2: 6}


def parse_eprt(argument: str) -> tuple[int, str, int]:
    """``EPRT |2|::1|6275|`` -> (IP version 6, "::1", 6275).

    The first character is the delimiter, any of ASCII 33 to 126.
    """
    if len(argument) < 2 or not 33 <= ord(argument[0]) <= 126:
        raise ParseError("EPRT takes |protocol|address|port|")
    fields = argument.split(argument[0])
    if len(fields) != 5 or fields[0] or fields[4]:
        raise ParseError("EPRT takes |protocol|address|port|")
    protocol, host, port = fields[1:4]
    if not protocol.isdigit() or int(protocol) not in FAMILIES:
        raise ParseError("EPRT protocol must be 1 (IPv4) or 2 (IPv6)")
    version = FAMILIES[int(protocol)]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ParseError(f"EPRT: not an IP address: {host[:64]!r}") from None
    if address.version != version:
        raise ParseError(f"EPRT: {host} is not an IPv{version} address")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ParseError("EPRT: the port must be from 1 to 65535")
    return version, str(address), int(port)


def format_epsv(port: int) -> str:
    """The text of a 229 reply: ``Entering Extended Passive Mode (|||port|)``."""
    return f"Entering Extended Passive Mode (|||{port}|)"


def same_host(a: str, b: str) -> bool:
    """True if addresses *a* and *b* are one host (an IPv4-mapped IPv6
    address is its IPv4 address)."""

    def canonical(text: str):
        address = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        return mapped or address

    if a == b:
        return True  # the usual case (a data connection from the client's own address), without parsing
    try:
        return canonical(a) == canonical(b)
    except ValueError:
        return False


# -- other arguments -------------------------------------------------------------------------


def parse_rest(argument: str) -> int:
    """``REST 1024`` -> 1024 (RFC 3659 stream mode: a byte offset)."""
    text = argument.strip()
    if not text.isdigit() or not text.isascii():
        raise ParseError("REST takes a byte offset")
    value = int(text)
    if value > MAX_FILE_SIZE:
        raise ParseError("REST offset is too large")
    return value


def parse_type(argument: str) -> str:
    """``TYPE A``, ``A N``, ``I``, ``L 8`` -> "A" or "I"."""
    words = argument.upper().split()
    if words in (["A"], ["A", "N"]):
        return "A"
    if words in (["I"], ["L", "8"]):
        return "I"
    raise ParseError(f"TYPE {argument[:16]} is not supported: use A or I")


def split_list_options(argument: str) -> tuple[str, str]:
    """``LIST -la dir`` -> ("la", "dir"). Clients pass ls options; they are
    accepted and ignored, so a name starting with ``-`` cannot be listed."""
    options = ""
    rest = argument.strip()
    while rest.startswith("-"):
        word, _, rest = rest.partition(" ")
        options += word[1:]
        rest = rest.lstrip()
    return options, rest


_TIME_VAL = re.compile(r"^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.(\d{1,9}))?$")


def parse_time(text: str) -> float | None:
    """An RFC 3659 time-val (``YYYYMMDDHHMMSS[.sss]``, UTC) as seconds
    since the epoch; None if *text* is not one, or names no real time."""
    match = _TIME_VAL.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    try:
        # datetime checks the calendar (no 31 February), timegm does not.
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    except ValueError:
        return None
    fraction = match.group(7)
    # timestamp(), in C: calendar.timegm(timetuple()) was 8% of the server's
    # Python time in an lftp mirror, which sends an MFMT after every file.
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def format_time(seconds: float, fraction: bool = False) -> str:
    """*seconds* since the epoch as ``YYYYMMDDHHMMSS`` in UTC (RFC 3659
    time-val), with ``.sss`` if *fraction*."""
    text = time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))
    if fraction:
        text += f".{int(seconds * 1000) % 1000:03d}"
    return text
