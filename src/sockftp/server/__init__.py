"""The server side: listeners, sessions, commands, logins, quotas and limits.

The data path of the native protocol runs through
:mod:`~sockftp.server.listener` (accepting connections),
:mod:`~sockftp.server.handler` (a session's loop),
:mod:`~sockftp.server.commands` (one function per command) and
:mod:`~sockftp.server.quota` (the storage a user sees). See
docs/ARCHITECTURE.md for the whole map.
"""

from .listener import SockftpServer

__all__ = ["SockftpServer"]
