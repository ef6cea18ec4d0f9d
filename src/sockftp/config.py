"""Server settings and where the server keeps its data.

The data directory (``--root``) holds the files clients see, each session
jailed to a subtree of it: ``anonymous/`` is the shared anonymous area and
``users/NAME/`` is the home of user NAME. The server's own state (the
account database) lives in ``.sockftp/``, a name no client can reach.
Without ``--root`` it is the platform's per-user data directory, created
on first start, or ``$SOCKFTP_ROOT`` when set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import limits

#: The server's own files inside the data directory.
STATE_DIR = limits.RESERVED_PREFIX
USERS_DIR = "users"


def users_db(root: str) -> str:
    return os.path.join(root, STATE_DIR, "users.db")


def user_home(name: str) -> tuple[str, ...]:
    """The storage path of user *name*'s home."""
    return (USERS_DIR, name)


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
    log_level: str = "info"
    # -- TLS: both or neither
    tls_cert: str | None = None
    tls_key: str | None = None
    # -- bandwidth, bytes per second; None for no limit
    session_rate: int | None = None  # each session
    user_rate: int | None = None  # all sessions of one user together
    # -- brute-force defence
    login_failure_delay: float = limits.LOGIN_FAILURE_DELAY
    ban_failures: int = limits.BAN_FAILURES  # failed logins from one address...
    ban_window: float = limits.BAN_WINDOW  # ...within this many seconds...
    ban_time: float = limits.BAN_TIME  # ...refuse it for this many seconds
    # -- audit log: a file, or None for the main log
    audit_log: str | None = None

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
