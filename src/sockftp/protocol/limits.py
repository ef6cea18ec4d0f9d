"""Named limits of the protocol and the server, with the reasons for their values.

Protocol limits (the first group) are part of the wire contract: a client
may rely on them and ``hello`` reports them. Server defaults (the second
group) are settings an operator may change.
"""

# --- protocol ---------------------------------------------------------------

#: Protocol versions this implementation speaks; ``hello`` picks the highest
#: one both sides know.
PROTOCOL_VERSIONS = (1,)
PROTOCOL_VERSION = max(PROTOCOL_VERSIONS)

#: Size of the little-endian length prefix in front of every header.
LENGTH_PREFIX_SIZE = 4

#: Largest header (JSON bytes, excluding the prefix), in both directions.
#: Requests are a few hundred bytes; only listings come near this, and the
#: server splits those into several frames. HTTP servers cap a request head
#: at 8 KiB (nginx, tomcat) to 80 KiB (node.js); 64 KiB leaves room for long
#: paths while bounding what a hostile peer makes us buffer per session.
MAX_HEADER_SIZE = 64 * 1024

#: Longest path a client may send, in UTF-8 bytes. Linux's PATH_MAX.
MAX_PATH_LENGTH = 4096

#: Longest single name (one path component), in UTF-8 bytes. Linux's NAME_MAX;
#: the storage keeps its partial uploads under fixed-length names, so a name
#: of this length still works.
MAX_NAME_LENGTH = 255

#: Deepest path, in components. Bounds the directory walk of one request.
MAX_PATH_DEPTH = 256

#: Largest file the protocol will announce: 2**62 bytes, far beyond any disk,
#: and small enough that every JSON parser handles it exactly... except
#: those that use doubles, so clients in such languages must use int64.
MAX_FILE_SIZE = 2**62

#: Entries per listing frame at most; the frame also stays under
#: MAX_HEADER_SIZE whatever the names.
LIST_BATCH_ENTRIES = 500

#: Name prefix reserved for the server's own files (partial uploads).
#: Clients cannot create, see or address such names.
RESERVED_PREFIX = ".sockftp"

#: The block of block-level deltas (``blocks``, delta ``put``): fixed
#: blocks, not content-defined chunks, because the files deltas are for
#: (VM images, databases, video edits) change in place, which fixed blocks
#: match exactly with no rolling hash on either side. 1 MiB keeps a block
#: list at 16 bytes of hex per MiB (a 1 GiB file's list fits one frame)
#: while a change of a few bytes costs at most 1 MiB on the wire.
DELTA_BLOCK = 1024 * 1024

#: Files of at least this many bytes get their block list kept as they
#: are uploaded, and are worth a delta: below it, a whole transfer costs
#: about as much as the block list and the extra round trip.
DELTA_MIN = 4 * 1024 * 1024

#: Most ops in one delta ``put`` (the header's 64 KiB bound them anyway):
#: a client whose changes are more scattered merges neighbouring ops, or
#: sends the whole file.
DELTA_MAX_OPS = 8192

# --- server defaults ----------------------------------------------------------

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9999

#: Listen backlog. socketserver's default of 5 drops SYNs under a burst of
#: connects (1000 connects measured at 159 s with 5, 0.2 s with 1024). The
#: kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 1024

#: Sessions at once, in total and per client address. Past either, a new
#: connection gets a ``too_many_sessions`` error and is closed.
MAX_SESSIONS = 4096
MAX_SESSIONS_PER_IP = 256

#: Seconds a session may wait for the peer (no byte in either direction)
#: before it is closed with a ``timeout`` error.
IDLE_TIMEOUT = 300.0

#: Seconds from the first byte of a header to its last. Stops a peer from
#: holding a session by trickling a header one byte at a time.
HEADER_TIMEOUT = 30.0

#: Transfer buffer, both directions. 1 MiB receive buffers move about 4x what
#: 64 KiB buffers move on loopback (5.6 vs 1.35 GB/s measured), and 4 MiB
#: beat 1 MiB by 15% to 2x in a receiver that hashes and writes to a file.
TRANSFER_BUFFER_SIZE = 4 * 1024 * 1024

#: A file of at most this many bytes is small: a get sends it in the same
#: write as its reply, hashed from memory. Storage keeps its checksum all
#: the same (a tree's listing reports only kept ones): in the binary form
#: that fits in the inode, 7 us of a 100 us commit on a journaled ext4
#: (bench/sync_server.py, keep), where the text form of old took a disk
#: block of its own.
SMALL_FILE = 64 * 1024

#: On an error after an upload header, the server reads and discards the
#: announced bytes to keep the stream in sync, up to this many; past it, it
#: answers and closes instead.
MAX_DRAIN = 64 * 1024 * 1024

#: Seconds a graceful shutdown waits for sessions before closing them.
SHUTDOWN_GRACE = 5.0

#: Seconds a failed login waits before its answer.
LOGIN_FAILURE_DELAY = 1.0

#: After BAN_FAILURES failed logins from one address within BAN_WINDOW
#: seconds, that address is refused for BAN_TIME seconds (vsftpd and
#: ProFTPD default to similar counts; fail2ban's default ban is 10 minutes).
BAN_FAILURES = 5
BAN_WINDOW = 300.0
BAN_TIME = 900.0

#: Seconds a re-login token is valid, from the login that asked for it. A
#: working day and a night: long enough that a client's reconnects, and a
#: token kept in the environment for a day's commands, never meet the
#: password check; short enough that a stolen token is soon worthless.
#: The expiry is fixed at issue: using a token does not extend it.
TOKEN_LIFETIME = 86400.0

#: Seconds a verified password is remembered, as a keyed hash in memory, so
#: that the same user logging in again with it skips the argon2 check. FTP
#: clients open a control connection per parallel transfer (lftp ``mirror
#: --parallel=4``, FileZilla, rclone), each with its own PASS, and scripts
#: run a connection per command: at 0.1 s of CPU per check, lftp's three
#: extra connections cost the server nearly as much CPU as the 1000 small
#: files it then uploads through them (issue 21). Five minutes, as Apache's
#: mod_authn_socache: long enough for a burst of connections and a script's
#: commands, short enough that memory holds few such hashes at a time. The
#: lifetime starts at the argon2 check; using it does not extend it.
PASSWORD_CACHE_TIME = 300.0

#: Live tokens one user may have. Past it, the oldest is dropped when a
#: new one is issued, so a client that logs in again and again cannot grow
#: the table (the oldest is also the one most likely forgotten). Each
#: library client holds one while it runs, so this must exceed the clients
#: one account runs at once: a client whose token was dropped falls back
#: to its password after a failed login, and a crowd of such failures gets
#: their address banned. Each token costs its issuer an argon2 check, so
#: filling the cap is slow; a row is about 150 bytes.
MAX_TOKENS_PER_USER = 1024

#: Seconds an FTP data connection may wait for the client: to connect to a
#: passive port, to accept an active connect, and between any two bytes of a
#: transfer. Shorter than the control connection's idle timeout, because a
#: data connection is only ever opened for a transfer the client just asked
#: for (pyftpdlib waits 30 s to connect, vsftpd 60 s; both 300 s idle).
FTP_DATA_TIMEOUT = 60.0

#: Per-thread stack size for session threads. Python's default thread stack
#: is 8 MiB of address space; sessions need far less.
SESSION_STACK_SIZE = 512 * 1024

#: Seconds a session waits for its next request holding its thread, before
#: it parks (its socket watched by the server's selector, its thread freed).
#: Clients that send their next request sooner, as most do, never pay the
#: hand-over; sessions that idle longer cost no thread.
PARK_AFTER = 0.5

#: Seconds an idle worker thread waits for another session before it ends.
WORKER_LINGER = 1.0

#: Seconds a partial upload may sit untouched before the janitor removes it
#: (a week, as a client that lost its connection on Friday resumes on
#: Monday); until then it counts against its owner's quota.
PARTIAL_TTL = 7 * 24 * 3600.0
