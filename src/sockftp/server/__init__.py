"""The server side: listeners, sessions, commands, logins, quotas and limits.

The data path of the native protocol runs through
:mod:`~sockftp.server.listener` (accepting connections),
:mod:`~sockftp.server.handler` (a session's loop),
:mod:`~sockftp.server.commands` (one function per command) and
:mod:`~sockftp.server.quota` (the storage a user sees). See
docs/ARCHITECTURE.md for the whole map.
"""

__all__ = ["SockftpServer"]


def __getattr__(name):
    # Loaded on first use, not with the package: the command line imports
    # sockftp.server.config for its sizes and paths, and a client command
    # must not pay for the whole server (argon2, storage, every command).
    if name == "SockftpServer":
        from .listener import SockftpServer

        return SockftpServer
    raise AttributeError(name)
