"""The FTP commands: one small function each, in an explicit registry.

A command gets the :class:`Context` of its control connection and its
argument, and returns its final :class:`~sockftp.ftp.replies.Reply`. It
reaches files only through the session's storage (the logged-in user's,
with their quota), paths only through the session (their jail and cwd),
logins only through the session's authenticator (bans, failure delays, the
dummy hash): the same objects the native protocol uses, so both front
doors enforce the same rules.

Decisions are taken here: who may do what before logging in, RFC 2577's
limits on PORT and EPRT and on failed logins, where an interrupted upload
resumes, what SIZE answers. Sockets are not: a command that needs the
data connection asks the :class:`Link` (the server's handler, or a test's
stand-in) and moves bytes through the :class:`~sockftp.ftp.data.DataConnection`
it gets back. So every command can be tested without a network.

One module per kind of command, so a verb is found by what it does:

* ``base.py``: the registry, :class:`Context` and :func:`dispatch`;
* ``login.py``: USER, PASS, QUIT and TLS (AUTH, PBSZ, PROT);
* ``session.py``: NOOP, SYST, CLNT, FEAT, OPTS, HELP, STAT, TYPE, MODE,
  STRU, ALLO, ACCT, ABOR;
* ``files.py``: PWD, CWD, CDUP, MKD, RMD, DELE, RNFR, RNTO, SIZE, MDTM,
  MLST, HASH (names in the tree, no data connection);
* ``channels.py``: PASV, EPSV, PORT, EPRT, and opening a data connection;
* ``listings.py``: LIST, NLST, MLSD;
* ``transfers.py``: REST, RETR, STOR, APPE.

Importing this package imports every one of them, so :data:`COMMANDS` is
complete after ``import sockftp.ftp.commands`` alone. The verb modules
import ``base``, never this package, which would be a cycle.
"""

# Importing a verb module registers its commands; the order does not show
# (HELP sorts the names, FEAT lists its features sorted).
from . import channels, files, listings, login, session, transfers
from .base import (
    COMMANDS,
    DEFAULT_HASH,
    HASHES,
    NONE,
    OPTIONAL,
    REQUIRED,
    Context,
    Handler,
    Link,
    Refusal,
    Settings,
    State,
    Verb,
    command,
    dispatch,
)
from .login import MAX_LOGIN_FAILURES
from .transfers import open_upload

__all__ = [
    "COMMANDS",
    "DEFAULT_HASH",
    "HASHES",
    "MAX_LOGIN_FAILURES",
    "NONE",
    "OPTIONAL",
    "REQUIRED",
    "Context",
    "Handler",
    "Link",
    "Refusal",
    "Settings",
    "State",
    "Verb",
    "channels",
    "command",
    "dispatch",
    "files",
    "listings",
    "login",
    "open_upload",
    "session",
    "transfers",
]
