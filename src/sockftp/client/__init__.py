"""The Python client library: one method per command, resumable verified transfers.

    from sockftp import Client

    with Client("127.0.0.1", 9999) as ftp:
        ftp.put("report.pdf", "inbox/report.pdf")
        for entry in ftp.ls("inbox"):
            print(entry.name, entry.size)
        ftp.get("inbox/report.pdf", "copy.pdf")

Every failure is a :class:`~sockftp.protocol.errors.SockftpError` subclass carrying the
server's code and message (``NotFound``, ``PathRefused``, ...), or
:class:`~sockftp.protocol.errors.ConnectionLost` when the connection broke.

Transfers are verified end to end with the checksum the protocol carries,
and resumed automatically: an interrupted ``put`` continues from what the
server holds, an interrupted ``get`` from the local partial file
(``.NAME.sockftp-part`` beside the target), which becomes the target only
once complete and verified.
"""

from __future__ import annotations

# Client is put together from one class per job, each in the module named
# for it: connection.py (connect, login, requests), files.py (the
# one-request file operations), single.py (put and get), pipelined.py
# (put_many, get_many), tree.py (put_tree, walk, get_tree) and sync.py
# (sync_up, sync_down, over sync_lists.py, sync_delta.py and sync_plan.py). The names
# imported "as" themselves stay importable from here, as before the split,
# though not in __all__; stays_on_this_machine is looked up in
# sockftp.client.connection: replace it there (a test does), not here.
from ..protocol.entries import Entry
from ..protocol.errors import Exists
from .connection import TOKEN_MARGIN as TOKEN_MARGIN
from .connection import Connection
from .connection import stays_on_this_machine as stays_on_this_machine
from .files import FileOperations
from .pipelined import PipelinedTransfers
from .single import PARTIAL_SUFFIX as PARTIAL_SUFFIX
from .single import RESUME_THRESHOLD as RESUME_THRESHOLD
from .single import Progress, SingleTransfers, TransferResult, partial_path
from .sync import SyncTransfers
from .sync_plan import SyncSummary
from .tree import TreeTransfers


class Client(SyncTransfers, TreeTransfers, PipelinedTransfers, SingleTransfers, FileOperations, Connection):
    """A connection to a sockftp server.

    Args:
        host, port: the server.
        timeout: seconds any wait for the server may last.
        retries: times a transfer reconnects and resumes after the connection
            breaks, before giving up.
        connect: connect now (else at the first request).
        user, password, token: log in as *user* after every connect (so a
            reconnect logs in again), with *password* or a re-login
            *token*, or both (the token first; the password if the token
            is refused). The library never prompts for a password.
            With a password, if the server has the ``tokens`` feature, the
            first login asks for a token (:attr:`token`), and later logins
            (reconnects, retries) use it instead of the password, so they
            cost the server no argon2 check.
        keep_token: a token the client asked for itself is revoked by
            :meth:`quit` (and so when a ``with`` block ends), since nobody
            else knows it. With *keep_token*, it stays valid until it
            expires, for the caller to pass on (``Client(user=, token=)``).
        tls, tls_ca, insecure: speak TLS, verifying the server's certificate
            against the system's CAs, or against *tls_ca* (a PEM file); with
            *insecure*, not at all.

    Attributes:
        token: the re-login token in use (given, or issued at the first
            login), or None.
        token_expires: when it expires (Unix time, the server's clock), or
            None if unknown.

    Raises:
        ValueError: *user* without *password* or *token*, or the other way round.
        AuthFailed, Banned: when connecting, if the login is refused.
    """


__all__ = ["Client", "Entry", "Exists", "Progress", "SyncSummary", "TransferResult", "partial_path"]
