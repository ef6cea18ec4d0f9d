"""Server settings and where the server keeps its data.

The data directory (``--root``) holds the files clients see, each session
jailed to a subtree of it: ``anonymous/`` is the shared anonymous area.
Without ``--root`` it is the platform's per-user data directory, created
on first start, or ``$SOCKFTP_ROOT`` when set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import limits


def default_root() -> str:
    env = os.environ.get("SOCKFTP_ROOT")
    if env:
        return env
    import platformdirs

    return platformdirs.user_data_dir("sockftp", appauthor=False)


@dataclass
class ServerConfig:
    root: str = ""
    host: str = limits.DEFAULT_HOST
    port: int = limits.DEFAULT_PORT
    anonymous: bool = False
    max_sessions: int = limits.MAX_SESSIONS
    max_sessions_per_ip: int = limits.MAX_SESSIONS_PER_IP
    idle_timeout: float = limits.IDLE_TIMEOUT
    header_timeout: float = limits.HEADER_TIMEOUT
    shutdown_grace: float = limits.SHUTDOWN_GRACE
    fsync: bool = False  # fsync each upload before it becomes visible
    sendfile: bool = False  # zero-copy downloads (see Wire.use_sendfile)

    def __post_init__(self):
        if not self.root:
            self.root = default_root()
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not between 0 and 65535")
        for name in ("max_sessions", "max_sessions_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("idle_timeout", "header_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
