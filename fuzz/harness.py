"""One in-process sockftp server, and one session with it per fuzz input.

:class:`Target` starts a :class:`~sockftp.server.listener.SockftpServer` on
127.0.0.1, port 0, through its public API only (``SockftpServer(config)``,
``serve_forever`` in a thread, ``stop``), and drives it over real TCP
connections. For each input it connects, sends the input's byte stream (in
the chunks given), half-closes, reads every reply until the server closes,
and then checks the oracles. Anything an oracle does not like raises
:class:`Finding`, which the fuzzer reports as a crash with the input that
caused it.

Oracles, after every input:

* the server logged nothing at ERROR level (a ``session ... failed``
  traceback, an ``internal`` reply, a failed write), and no ``storage error``
  warning (an OS error that storage maps to no protocol code);
* no log line holds a line break (a client could forge log lines);
* the replies parse as frames: a valid length, a JSON object with a
  boolean ``ok``, a known error code, and not ``internal``, ``io_error`` or
  ``timeout`` (the client sent everything and closed, so the server has
  nothing to wait for); a complete ``get`` download matches its checksum;
* no reply carries the secret kept outside the server's root, nor a
  password hash from the account database;
* nothing appeared, or changed, outside the jails: around the root, in the
  root itself and in the process's working directory;
* the session ended within seconds of the client's end of stream, and the
  server thread is alive.

Every :data:`HEALTH_EVERY` inputs a health check also asks, on a fresh
connection, for ``ping`` and ``quota`` (anonymous and as a user): the
server must answer, no quota reservation may outlive its upload, and the
process must not have gained file descriptors or threads.

Each input starts from the same tree (:func:`build_tree`) in both homes
and from its own client address (127.x.y.z), so that per-address state
(failed logins, bans) of one input never leaks into the next: an input
that fails, fails again when it is replayed alone.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import selectors
import shutil
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import xxhash

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.accounts import passwords as _passwords
from sockftp.protocol.errors import ErrorCode
from sockftp.protocol.limits import MAX_HEADER_SIZE
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig, user_home, users_db
from sockftp.server.session import ANONYMOUS_HOME
from sockftp.storage.local import partial_name

#: The accounts of the fuzzed server. ``auth`` with these succeeds.
USER, PASSWORD = "fuzz", "fuzz-password"
READER, READER_PASSWORD = "reader", "reader-password"  # read-only
#: Small limits, so that inputs of a few KiB reach quota_exceeded.
USER_QUOTA_BYTES, USER_MAX_FILES = 4096, 12

#: Seconds after the client's end of stream within which the server must
#: close. The server has nothing left to wait for by then; generous, since
#: the machine is shared.
HANG_SECONDS = 20.0
#: The server's timeouts: short, and still far above what an input needs.
IDLE_TIMEOUT, HEADER_TIMEOUT = 10.0, 5.0
#: Seconds between the chunks of one input, so that they arrive in separate reads.
CHUNK_PAUSE = 0.001
HEALTH_EVERY = 64
#: File descriptors and threads the process may hold above what it held at
#: the first health check. The SQLite store's pool opens its connections
#: (two descriptors each, up to 32 of them) as logins first need them, so
#: the count settles a few dozen higher (docs/FUZZING.md); a real leak
#: grows without bound.
FD_MARGIN, THREAD_MARGIN = 100, 8
#: Reply bytes kept per input, at most (a download of a fuzzed file is small).
MAX_REPLY = 16 * 1024 * 1024

_KNOWN_CODES = frozenset(code.value for code in ErrorCode)
#: Codes that no input may produce. The client sent everything and closed,
#: so a timeout means the server waited for nothing.
_BAD_CODES = frozenset({ErrorCode.INTERNAL, ErrorCode.IO_ERROR, ErrorCode.TIMEOUT})
#: Characters that end a line for str.splitlines (and for some log viewers).
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class Finding(Exception):
    """An oracle failed: the fuzzer reports the input as a crash."""


def cheap_password_hashing():
    """Make argon2 cheap in this process (the only non-public hook), and
    return a function that undoes it.

    A real argon2id check costs about 0.15 s and 64 MiB here, and every
    ``auth`` frame, right or wrong, pays it: inputs with an ``auth`` would
    run a hundred times slower than the rest. The fuzzer is not testing
    argon2, so hashes made and checked here use the smallest parameters.
    The code paths are the same; only the cost parameters differ.
    """
    from argon2 import PasswordHasher

    names = ("_hasher", "_DUMMY_HASH")
    for name in names:
        if not hasattr(_passwords, name):
            raise RuntimeError(f"sockftp.accounts.passwords.{name} is gone: update fuzz/harness.py")
    saved = {name: getattr(_passwords, name) for name in names}
    _passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    _passwords._DUMMY_HASH = _passwords._hasher.hash("sockftp fuzz: no such user")
    return lambda: [setattr(_passwords, name, value) for name, value in saved.items()]


# -- the files every input starts from ---------------------------------------------------

#: Bytes of the partial upload of "big.bin" that every home holds, and the
#: size it was announced with: ``put big.bin offset=10 size=20`` resumes it.
PARTIAL_BYTES, PARTIAL_SIZE = b"0123456789", 20
_UPLOAD_SIZE_XATTR = "user.sockftp.upload-size"


def build_tree(home: Path, outside: Path) -> None:
    """Files, a directory tree, symbolic links in and out, a FIFO, a name
    that is not UTF-8 and partial uploads: what every input starts from."""
    home.mkdir(parents=True)
    (home / "a.txt").write_bytes(b"hello sockftp\n")
    (home / "empty.txt").write_bytes(b"")
    (home / "dir" / "sub").mkdir(parents=True)
    (home / "dir" / "b.bin").write_bytes(bytes(range(256)))
    (home / "emptydir").mkdir()
    os.symlink("dir", home / "link-in")
    os.symlink("a.txt", home / "link-file")
    os.symlink(os.path.relpath(outside, home), home / "link-out")
    os.symlink(outside, home / "link-abs")
    os.symlink("no-such-target", home / "link-dangling")
    os.mkfifo(home / "fifo")
    (home / os.fsdecode(b"bad\xff")).write_bytes(b"not utf-8\n")
    for held in (home / partial_name("big.bin"), home / "partials" / partial_name("gone.bin")):
        # An upload to resume, and one that left a directory otherwise empty.
        held.parent.mkdir(exist_ok=True)
        held.write_bytes(PARTIAL_BYTES)
        try:
            os.setxattr(held, _UPLOAD_SIZE_XATTR, str(PARTIAL_SIZE).encode())
        except OSError:
            pass  # a filesystem without user xattrs: the server does without too


@dataclass
class Sandbox:
    """Where the fuzzed server lives. Only ``jail`` is in ``top``; only
    ``root``, ``outside`` and ``cwd`` are in ``jail``. Nothing may change
    outside ``root``."""

    top: Path
    jail: Path
    root: Path
    outside: Path
    cwd: Path
    secret: bytes

    @classmethod
    def create(cls, top: Path) -> Sandbox:
        jail = top / "jail"
        root, outside, cwd = jail / "root", jail / "outside", jail / "cwd"
        for directory in (root, outside / "dir", cwd):
            directory.mkdir(parents=True)
        secret = os.urandom(16).hex().encode()
        (outside / "secret.txt").write_bytes(b"secret " + secret + b"\n")
        return cls(top, jail, root, outside, cwd, secret)


# -- the log -----------------------------------------------------------------------------


class LogWatch(logging.Handler):
    """Collects what the server logs that an oracle forbids."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.problems: list[str] = []
        self._problems_lock = threading.Lock()
        self._formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        problem = None
        if record.levelno >= logging.ERROR:
            problem = "server logged an error"
        elif record.levelno >= logging.WARNING and message.startswith("storage error"):
            problem = "storage error with no protocol code"
        elif _LINE_BREAKS.intersection(message):
            problem = "log line holds a line break (a client can forge log lines)"
        if problem is not None:
            with self._problems_lock:
                self.problems.append(f"{problem}:\n{self._formatter.format(record)}")

    def take(self) -> list[str]:
        with self._problems_lock:
            problems, self.problems = self.problems, []
        return problems


# -- the target ----------------------------------------------------------------------------


class Target:
    """The server under test and the oracles around it."""

    def __init__(self, top: Path, artifact_prefix: str | None = None):
        self._undo = [cheap_password_hashing()]
        self.sandbox = Sandbox.create(top)
        self.artifact_prefix = artifact_prefix
        self._undo.append(partial(os.chdir, os.getcwd()))
        os.chdir(self.sandbox.cwd)  # a relative path the server wrongly used would land here
        root = self.sandbox.root
        store = SqliteUserStore(users_db(str(root)))
        try:
            store.add(Account(USER, hash_password(PASSWORD), USER_QUOTA_BYTES, USER_MAX_FILES))
            store.add(Account(READER, hash_password(READER_PASSWORD), read_only=True))
            #: Password hashes: no reply may ever carry one.
            self.hashes = [store.get(name).password_hash.rsplit("$", 1)[-1].encode() for name in (USER, READER)]
        finally:
            store.close()
        self.homes = [root.joinpath(*ANONYMOUS_HOME), root.joinpath(*user_home(USER))]
        for home in [*self.homes, root.joinpath(*user_home(READER))]:
            build_tree(home, self.sandbox.outside)
        self.outside_state = _snapshot(self.sandbox.outside)

        self.log = LogWatch()
        logger = logging.getLogger("sockftp")
        self._undo += [partial(logger.removeHandler, self.log), partial(logger.setLevel, logger.level)]
        self._undo.append(partial(setattr, logger, "propagate", logger.propagate))
        logger.addHandler(self.log)
        logger.setLevel(logging.INFO)
        logger.propagate = False

        config = ServerConfig(
            root=str(root),
            host="127.0.0.1",
            port=0,
            anonymous=True,
            idle_timeout=IDLE_TIMEOUT,
            header_timeout=HEADER_TIMEOUT,
            shutdown_grace=0.5,
            login_failure_delay=0,
            ban_failures=3,  # reachable within one input; addresses differ per input
            ban_window=60,
            ban_time=60,
        )
        self.server = SockftpServer(config)
        self.address = self.server.server_address[:2]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="sockftp server", daemon=True
        )
        self.thread.start()
        self.inputs = 0
        self.recent: deque[bytes] = deque(maxlen=HEALTH_EVERY)
        self.root_names = set(os.listdir(root))
        self.state_names = set(os.listdir(root / ".sockftp")) | {"users.db-wal", "users.db-shm"}
        self.baseline_fds = self.baseline_threads = None
        self.health_check()

    def stop(self) -> None:
        """Stop the server and undo what the constructor changed in this process."""
        self.server.stop(0)
        self.thread.join(5)
        for undo in reversed(self._undo):
            undo()

    # -- one input ------------------------------------------------------------------------

    def run(self, chunks: list[bytes]) -> None:
        """One session that sends *chunks*, then every oracle. Raises Finding."""
        self.inputs += 1
        self.recent.append(b"".join(chunks))
        for home in self.homes:
            shutil.rmtree(home)
            build_tree(home, self.sandbox.outside)
        source = _client_address(self.inputs)
        replies, ending = exchange(self.address, chunks, source)
        problems = []
        if ending == "hung":
            problems.append(f"the server neither answered nor closed for {HANG_SECONDS:g} s after the client's end")
        if not self._wait_sessions_end():
            problems.append(f"the session did not end within {HANG_SECONDS:g} s of the client's end of stream")
        problems += self.log.take()
        problems += check_replies(replies, ending == "closed")
        problems += self._leaks(replies)
        problems += self._tree_problems()
        if not self.thread.is_alive():
            problems.append("the server thread died")
        if problems:
            raise Finding("\n\n".join(problems) + _show_replies(replies))
        if self.inputs % HEALTH_EVERY == 0:
            self.health_check()

    def _wait_sessions_end(self) -> bool:
        deadline = time.monotonic() + HANG_SECONDS
        while len(self.server.sessions):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)
        return True

    def _leaks(self, replies: bytes) -> list[str]:
        problems = []
        if self.sandbox.secret in replies:
            problems.append("a reply carries the secret kept outside the server's root")
        for digest in self.hashes:
            if digest in replies:
                problems.append("a reply carries a password hash from the account database")
        return problems

    def _tree_problems(self) -> list[str]:
        box = self.sandbox
        problems = []
        expected = {
            box.top: {"jail"},
            box.jail: {"root", "outside", "cwd"},
            box.cwd: set(),
            box.root: self.root_names,
            box.root / "users": {USER, READER},
        }
        for directory, names in expected.items():
            found = set(os.listdir(directory))
            if found != names:
                problems.append(f"{directory} holds {sorted(found)}, expected {sorted(names)}")
        state = set(os.listdir(box.root / ".sockftp"))
        if not state <= self.state_names:
            problems.append(f"new files in the server's state directory: {sorted(state - self.state_names)}")
        if _snapshot(box.outside) != self.outside_state:
            problems.append(f"{box.outside}, outside the server's root, changed")
        return problems

    # -- every HEALTH_EVERY inputs ------------------------------------------------------------

    def health_check(self) -> None:
        """The server answers a fresh connection, keeps no reservation after
        its uploads ended, and holds no more descriptors or threads than before."""
        requests = [
            {"cmd": "ping"},
            {"cmd": "quota"},
            {"cmd": "auth", "user": USER, "password": PASSWORD},
            {"cmd": "quota"},
            {"cmd": "quit"},
        ]
        stream = b"".join(frame(r) for r in requests)
        replies, _ = exchange(self.address, [stream], "127.0.0.1")
        problems = []
        headers = [header for header, _ in iter_replies(replies)]
        if len(headers) != len(requests) or not all(isinstance(h, dict) and h.get("ok") is True for h in headers):
            problems.append(f"health check: the server did not answer as expected: {headers}")
        else:
            for name, quota in (("anonymous", headers[1]), (USER, headers[3])):
                if quota.get("reserved_bytes") != 0:
                    problems.append(f"health check: a reservation outlived its upload for {name}: {quota}")
        self._wait_sessions_end()
        problems += self.log.take()
        if self.inputs:  # the first check, before any input, only sees that the server answers
            fds, threads = self._settle()
            if self.baseline_fds is None:
                self.baseline_fds, self.baseline_threads = fds + FD_MARGIN, threads + THREAD_MARGIN
            if fds > self.baseline_fds:
                problems.append(f"file descriptors leak: {fds} open, at most {self.baseline_fds} expected")
            if threads > self.baseline_threads:
                problems.append(f"threads leak: {threads} alive, at most {self.baseline_threads} expected")
        if problems:
            saved = self._save_recent()
            raise Finding("\n".join(problems) + f"\nthe last {len(self.recent)} inputs are in {saved}")

    def _settle(self, timeout: float = 2.0) -> tuple[int, int]:
        """Open descriptors and live threads, once closing sockets have closed."""
        gc.collect()
        deadline = time.monotonic() + timeout
        while True:
            counts = len(os.listdir("/proc/self/fd")), threading.active_count()
            if self.baseline_fds is None or time.monotonic() > deadline:
                return counts
            if counts[0] <= self.baseline_fds and counts[1] <= self.baseline_threads:
                return counts
            time.sleep(0.01)

    def _save_recent(self) -> Path | None:
        if self.artifact_prefix is None:
            return None
        directory = Path(f"{self.artifact_prefix}health-{os.getpid()}-{self.inputs}")
        directory.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(self.recent):
            (directory / f"input-{i:03d}").write_bytes(data)
        return directory


def _snapshot(directory: Path) -> list[tuple]:
    return sorted((p.name, p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir())


def _client_address(n: int) -> str:
    """A loopback address of its own for input *n* (127.1.1.1, 127.1.1.2, ...),
    never 127.0.0.1, which the health check uses."""
    n %= 253**3
    return f"127.{n // 253**2 + 1}.{n // 253 % 253 + 1}.{n % 253 + 1}"


# -- the wire --------------------------------------------------------------------------------


def frame(header, prefix: str = "<I") -> bytes:
    """A frame of *header* (any JSON value, or ready-made JSON bytes).
    *prefix* ``"i"`` builds it as the seed's clients did: ``struct.pack('i', n)``."""
    payload = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack(prefix, len(payload)) + payload


def exchange(address, chunks: list[bytes], source: str) -> tuple[bytes, str]:
    """Connect from *source*, send *chunks* (pausing between them), half-close,
    and read until the server closes. Returns what arrived, and how the
    connection ended: ``"closed"``, ``"reset"`` or ``"hung"`` (the server
    neither sent nor closed for HANG_SECONDS).

    Sending and reading interleave, so a server that answers while the
    client is still sending never deadlocks with it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    received = bytearray()
    try:
        sock.bind((source, 0))
        sock.settimeout(HANG_SECONDS)
        sock.connect(address)
        sock.setblocking(False)
        pending = [memoryview(c) for c in chunks if c]
        with selectors.DefaultSelector() as selector:
            events = selectors.EVENT_READ
            selector.register(sock, events)
            resume_at = 0.0
            deadline = time.monotonic() + HANG_SECONDS
            while True:
                now = time.monotonic()
                if now > deadline:
                    return bytes(received), "hung"
                if pending is not None and not pending:
                    _shutdown_write(sock)
                    pending = None
                wanted = selectors.EVENT_READ
                if pending and now >= resume_at:
                    wanted |= selectors.EVENT_WRITE
                if wanted != events:
                    selector.modify(sock, wanted)
                    events = wanted
                wait = deadline - now if not pending or now >= resume_at else resume_at - now
                for _, ready in selector.select(wait):
                    if ready & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 16)
                        except BlockingIOError:
                            data = None
                        except ConnectionResetError:
                            return bytes(received), "reset"
                        if data == b"":
                            return bytes(received), "closed"
                        if data:
                            if len(received) < MAX_REPLY:
                                received += data
                            deadline = time.monotonic() + HANG_SECONDS
                    if ready & selectors.EVENT_WRITE and pending:
                        try:
                            sent = sock.send(pending[0])
                        except BlockingIOError:
                            continue
                        except (BrokenPipeError, ConnectionResetError):
                            pending.clear()  # the server closed: read what it said
                            continue
                        pending[0] = pending[0][sent:]
                        if not pending[0]:
                            pending.pop(0)
                            resume_at = time.monotonic() + CHUNK_PAUSE
    finally:
        sock.close()


def _shutdown_write(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno not in (errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET):
            raise


def iter_replies(stream: bytes):
    """(header, raw bytes) for each reply frame in *stream*; a header that
    does not parse comes as (Finding message, b''), and ends the walk."""
    pos = 0
    while pos < len(stream):
        if len(stream) - pos < 4:
            yield f"{len(stream) - pos} stray bytes after the last frame", b""
            return
        (length,) = struct.unpack_from("<I", stream, pos)
        if not 0 < length <= MAX_HEADER_SIZE:
            yield f"a reply frame with length prefix {length}", b""
            return
        payload = stream[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if len(payload) < length:
            yield f"a reply frame cut off after {len(payload)} of {length} bytes", b""
            return
        try:
            header = json.loads(payload.decode("utf-8"))
        except ValueError as exc:
            yield f"a reply frame that is not UTF-8 JSON ({exc}): {payload[:200]!r}", b""
            return
        raw = b""
        if isinstance(header, dict) and header.get("ok") is True and isinstance(header.get("filesize"), int):
            raw = stream[pos : pos + header["filesize"]]
            pos += len(raw)
        yield header, raw


def check_replies(stream: bytes, closed_cleanly: bool) -> list[str]:
    """What is wrong with the server's side of one session."""
    problems = []
    for header, raw in iter_replies(stream):
        if isinstance(header, str):
            # A cut-off frame or download is fine when the connection was
            # reset: the kernel may drop what the server sent last.
            if closed_cleanly:
                problems.append(header)
            break
        if not isinstance(header, dict) or not isinstance(header.get("ok"), bool):
            problems.append(f"a reply that is not an object with a boolean 'ok': {header!r:.300}")
            continue
        if header["ok"] is False:
            code = header.get("error")
            if code not in _KNOWN_CODES or not isinstance(header.get("message"), str):
                problems.append(f"an error reply with an unknown code or no message: {header!r:.300}")
            elif code in _BAD_CODES:
                problems.append(f"the server answered {code}: {header!r:.500}")
        elif "filesize" in header:
            problems += _check_download(header, raw, closed_cleanly)
    return problems


def _check_download(header: dict, raw: bytes, closed_cleanly: bool) -> list[str]:
    count = header["filesize"]
    if len(raw) < count:
        # Only a failure on the server's side cuts a download short (it
        # closes, having no way to say why), and nothing here should fail.
        return [f"a download cut short at {len(raw)} of {count} bytes: {header!r:.300}"] if closed_cleanly else []
    checksum, offset, size = header.get("checksum"), header.get("offset"), header.get("size")
    if offset == 0 and size == count and isinstance(checksum, str):
        actual = "xxh3-128:" + xxhash.xxh3_128_hexdigest(raw)
        if actual != checksum:
            return [f"a download does not match its checksum: {header!r:.300}, got {actual}"]
    return []


def _show_replies(stream: bytes) -> str:
    lines = ["", "", "replies:"]
    for header, raw in iter_replies(stream):
        text = header if isinstance(header, str) else json.dumps(header, ensure_ascii=False)
        lines.append("  " + text[:300] + (f" + {len(raw)} raw bytes" if raw else ""))
        if len(lines) > 40:
            lines.append("  ...")
            break
    return "\n".join(lines)
