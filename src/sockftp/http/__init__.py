"""The HTTP front door: the file API for scripts, tus uploads, and the browser UI's routes.

A third listener (``sockftp serve --http-port PORT``) that speaks HTTP/1.1
over the same :class:`~sockftp.server.session.Session`, storage, quotas,
bans, bandwidth limits, TLS certificate and audit log as the native
protocol and FTP. docs/HTTP.md documents the paths and shows curl.

One module per step:

* ``conn.py``: one connection's bytes through h11 (the parser), its
  limits (head size and time, keep-alive, idle), 100-continue, sendfile;
* ``router.py``: method + path prefix to handler; Request and Response;
* ``auth.py``: Basic (TLS or loopback), Bearer tokens, the cookie hook;
* ``files.py``: ``/files/``, ``/api/quota``, ``/healthz``;
* ``tus.py``: ``/tus/``;
* ``ui.py``: the browser UI's page (``static/``) and its logins,
  ``websession.py``: their cookies and CSRF tokens;
* ``shares.py``: share links, ``/shares/`` and ``/s/SECRET/``;
* ``server.py``: the listener and the handler of a connection.
"""

from .router import FileBody, HttpError, Request, Response, Router, json_response, text_response
from .server import ROUTE_MODULES, HttpServer, start

__all__ = [
    "ROUTE_MODULES",
    "FileBody",
    "HttpError",
    "HttpServer",
    "Request",
    "Response",
    "Router",
    "json_response",
    "start",
    "text_response",
]
