"""Small helpers for a session's socket, shared by the listener, the session
handler and the FTP front end: how a peer is named in the logs, and how a
socket is closed.

They only name and close sockets: they must never read or write a frame,
nor import anything of sockftp, so that any module of the server (and
sockftp.ftp) can use them without an import cycle.
"""

from __future__ import annotations

import socket


def _peer(address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _close(sock: socket.socket) -> None:
    """Half-close and close, as socketserver's shutdown_request does."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
