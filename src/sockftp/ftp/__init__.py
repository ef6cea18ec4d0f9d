"""The FTP front door: standard FTP clients on sockftp's accounts, storage and limits.

A second listener (``sockftp serve --ftp-port PORT``) that speaks FTP
(RFC 959, 2389, 2428, 3659, 4217 and 2640, and the HASH draft) over the
same :class:`~sockftp.server.session.Session`, storage, quotas, bans, bandwidth
limits and audit log as the native protocol. docs/FTP.md says what is
supported and how it maps onto sockftp.

The data path, one module per step:

* ``parser.py``: bytes of the control connection to command lines and
  arguments (pure);
* ``replies.py``: replies to bytes, and sockftp's errors to reply codes (pure);
* ``listing.py``: storage entries to LIST, NLST and MLSD lines (pure);
* ``commands/``: one function per command, over a session and its
  storage, one module per kind of command; every decision (logins,
  RFC 2577 checks, resume) is taken here, and none of it touches a socket;
* ``control.py``: the control connection's socket, TLS included;
* ``data.py``: data connections, passive and active, TLS, timeouts, and
  the loops that move file bytes;
* ``server.py``: the listener and the handler of a control connection.
"""

from .server import FtpServer, start

__all__ = ["FtpServer", "start"]
