"""The audit log: who did what to which file, one line per event.

Events are logins, failed logins, logouts, token revocations (``revoke``),
transfers (``put``, ``get``), deletions (``rm``, ``rmdir``), renames
(``mv``) and ``mkdir``. Each line is ``key=value`` pairs after the time,
always starting with ``event=``::

    2026-11-27 10:00:00,123 event=login user=alice ip=127.0.0.1 method=password token_id=3f9a1c2b7d4e result=ok
    2026-11-27 10:00:01,456 event=put user=alice ip=127.0.0.1 path='/a.txt' bytes=123 result=ok
    2026-11-27 10:00:09,789 event=logout user=alice ip=127.0.0.1 in=187 out=412 duration=9.666

``result`` is ``ok`` or the error code the client got. Paths (``path``,
``target``) are always quoted; other values are quoted only when they hold
more than letters, digits and ``.:_@/+-``. Quoting is Python's ``repr``,
which escapes newlines and every other unprintable character, so no name a
client chooses can start a line of its own or look like another field.

The log is the ``sockftp.server.audit`` logger: by default its lines go to the
main log, whatever its level; :func:`configure` sends them to a file of
their own instead. That file is written directly, with one ``write`` per
line or per batch of lines (:class:`Held`) on a file opened for appending
(so lines from many sessions never mix), without the logging machinery,
which cost a quarter of the server's time per small file. This module
never logs a password, and no caller may hand it a request header whole.
Tokens appear only as their ``token_id``, a prefix of their hash that names
them without revealing them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time

from ..protocol import paths
from ..protocol.errors import SockftpError

log = logging.getLogger("sockftp.audit")

#: Commands that leave a line, and the request fields that hold their path
#: and, for a rename, their target (the first field present wins, as in
#: :mod:`sockftp.protocol.fields`).
AUDITED = {
    "put": (("path", "filename"), ()),
    "get": (("path", "filename"), ()),
    "rm": (("path",), ()),
    "rmdir": (("path",), ()),
    "mkdir": (("path",), ()),
    "mv": (("source", "from"), ("target", "to")),
}

_BARE = re.compile(r"[A-Za-z0-9._:@/+-]+")
_QUOTED_KEYS = frozenset({"path", "target"})


class _AuditFile:
    """Lines appended to a file, each with the main log's time stamp."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._second = -1
        self._stamp = ""
        self._lock = threading.Lock()  # for the stamp cache only; O_APPEND orders the writes

    def line(self, text: str) -> bytes:
        """*text* as a line of the file, stamped with the time now."""
        now = time.time()
        second = int(now)
        with self._lock:
            if second != self._second:
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            stamp = self._stamp
        return f"{stamp},{int((now - second) * 1000):03d} {text}\n".encode()

    def write(self, text: str) -> None:
        os.write(self.fd, self.line(text))

    def write_lines(self, lines: list[bytes]) -> None:
        # One write, so under O_APPEND the batch lands whole.
        os.write(self.fd, b"".join(lines))

    def close(self) -> None:
        # -1, not the old number: a session still holding lines for this
        # file must not write them into whatever reuses the descriptor.
        fd, self.fd = self.fd, -1
        os.close(fd)


_file: _AuditFile | None = None


def configure(path: str | None) -> None:
    """Send audit lines to the file *path* (appended to, UTF-8), or with
    None to the main log. Lines are written whatever the main log's level.

    Raises:
        OSError: the file cannot be opened.
    """
    global _file
    new = _AuditFile(path) if path is not None else None
    old, _file = _file, new
    if old is not None:
        old.close()
    log.setLevel(logging.INFO)


class Held:
    """One session's audit lines, held back while its replies are (the
    batch of a pipelining client) and written together just before those
    replies go out (:meth:`write`): one write per batch, not one per file.
    A line added before its reply is sent is in the file before the reply
    leaves. Lines that go to the main log are never held."""

    __slots__ = ("_lines", "_file")

    def __init__(self):
        self._lines: list[bytes] = []
        self._file: _AuditFile | None = None

    def add(self, target: _AuditFile, text: str) -> None:
        if self._file is not target:  # configured again meanwhile
            self.write()
            self._file = target
        self._lines.append(target.line(text))

    def write(self) -> None:
        """Write the lines held, if any."""
        if self._lines:
            lines, self._lines = self._lines, []
            _write(self._file.write_lines, lines)


def record(event: str, held: Held | None = None, **fields) -> None:
    """Write one audit line: ``event=EVENT`` and then *fields* in order.
    With *held*, the line waits there for its session's replies."""
    pairs = [f"event={_value('event', event)}"]
    pairs += [f"{key}={_value(key, value)}" for key, value in fields.items()]
    target = _file
    if target is None:
        log.info(" ".join(pairs))
    elif held is not None:
        held.add(target, " ".join(pairs))
    else:
        _write(target.write, " ".join(pairs))


def _write(write, what) -> None:
    try:
        write(what)
    except OSError as exc:  # a full disk must not fail the command that was audited
        log.error("cannot write the audit log: %s", exc.strerror or exc)


def login(user: str, ip: str, method: str, token_id: str | None = None) -> None:
    """A login by *method* (``password`` or ``token``). *token_id* names
    the token issued at this login, or the one it used."""
    record("login", user=user, ip=ip, method=method, token_id=token_id, result="ok")


def login_failed(user, ip: str, result: str, method: str, banned: bool = False) -> None:
    """A refused login. *user* is whatever name the client sent."""
    record("login-failed", user=user, ip=ip, method=method, result=result, banned="yes" if banned else "no")


def revoke(user: str, ip: str, count: int) -> None:
    """*count* of *user*'s tokens revoked by the ``revoke`` command."""
    record("revoke", user=user, ip=ip, count=count, result="ok")


def logout(session, bytes_in: int, bytes_out: int, seconds: float) -> None:
    """The end of *session*, if a user logged in to it (anonymous sessions
    never logged in, so they do not log out)."""
    identity = session.identity
    if identity is None or identity.anonymous:
        return
    record("logout", user=identity.name, ip=session.address, **{"in": bytes_in, "out": bytes_out}, duration=seconds)


def command(
    session, name: str, header: dict, cwd: paths.RemotePath, bytes_moved: int, result: str, held: Held | None = None
) -> None:
    """The line for command *name* if it is audited (see :data:`AUDITED`).

    *header* is the request, *cwd* the session's directory when the command
    started (a command may change it): paths are logged as absolute paths
    in the user's tree, or as sent if they are not valid. *held*: see
    :func:`record`.
    """
    fields = AUDITED.get(name)
    if fields is None:
        return
    path_fields, target_fields = fields
    pairs = {"user": session.user, "ip": session.address, "path": _path(header, path_fields, cwd)}
    if target_fields:
        pairs["target"] = _path(header, target_fields, cwd)
    if name in ("put", "get"):
        pairs["bytes"] = bytes_moved
    record(name, held, **pairs, result=result)


def _path(header: dict, names: tuple[str, ...], cwd: paths.RemotePath):
    raw = next((header[n] for n in names if n in header), None)
    if not isinstance(raw, str):
        return None  # missing, or not a path at all: logged as "-"
    try:
        return paths.to_text(paths.resolve(cwd, raw))
    except SockftpError:
        return raw


def _value(key: str, value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if key in _QUOTED_KEYS or not _BARE.fullmatch(text):
        return repr(text)
    return text


__all__ = ["AUDITED", "Held", "command", "configure", "login", "login_failed", "logout", "record", "revoke"]
