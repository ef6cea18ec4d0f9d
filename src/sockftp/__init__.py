"""sockftp: a concurrent, multi-user file-transfer server, client library and command line.

The data path, by module: :mod:`~sockftp.wire` moves bytes on a socket,
:mod:`~sockftp.frames` turns them into headers, :mod:`~sockftp.commands`
acts on them for a :mod:`~sockftp.session`, :mod:`~sockftp.storage` keeps
the files. :mod:`~sockftp.server` runs sessions; :mod:`~sockftp.client`
is the other end.
"""

__version__ = "0.1.0"

from .errors import *  # noqa: E402,F401,F403 - the exception classes are part of the API
from .errors import ErrorCode, SockftpError  # noqa: E402


def __getattr__(name):
    # The client pulls in more than the server needs; load it on first use.
    if name in ("Client", "Entry"):
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
