"""Server settings and where the server keeps its data.

The data directory (``--root``) holds the files clients see, each session
jailed to a subtree of it: ``anonymous/`` is the shared anonymous area and
``users/NAME/`` is the home of user NAME. The server's own state (the
account database) lives in ``.sockftp/``, a name no client can reach.
Without ``--root`` it is the platform's per-user data directory, created
on first start, or ``$SOCKFTP_ROOT`` when set.

Settings (:class:`ServerConfig`) come from three places, each overriding
the one before: the defaults, a TOML file (``serve --config FILE``, keys
named like the fields) and the command line. :func:`load_config` merges
them and checks every value, so that an unknown key or a bad value stops
the server at start-up with a :class:`ConfigError` that names the key and
where it came from. This module reads the config file and nothing else:
it never opens a socket. docs/CONFIG.md documents every key.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, fields
from decimal import Decimal

from ..protocol import limits

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
    #: The account database: a postgresql:// URL, or a SQLite file; None:
    #: $SOCKFTP_DB, else ROOT/.sockftp/users.db (see accounts.stores).
    db: str | None = None
    #: Where files live: None for the data directory, or an S3 bucket as
    #: ``s3://BUCKET/PREFIX`` (storage/s3.py; docs/DEPLOY.md).
    storage: str | None = None
    #: Bytes per part of an S3 multipart upload; None: 8 MiB.
    s3_part_size: int | None = None
    host: str = limits.DEFAULT_HOST
    port: int = limits.DEFAULT_PORT
    anonymous: bool = False
    max_sessions: int = limits.MAX_SESSIONS
    max_sessions_per_ip: int = limits.MAX_SESSIONS_PER_IP
    idle_timeout: float = limits.IDLE_TIMEOUT
    header_timeout: float = limits.HEADER_TIMEOUT
    shutdown_grace: float = limits.SHUTDOWN_GRACE
    fsync: bool = False  # fsync each upload before it becomes visible
    #: Disk space kept free: bytes, or a share of the disk (0.01 for "1%");
    #: None for the smaller of 1% and 1 GiB (see storage.space).
    min_free: int | float | None = None
    #: Seconds an upload's reservation outlives its server (see server.leases).
    lease_time: float = 60.0
    partial_ttl: float = limits.PARTIAL_TTL  # seconds before an untouched partial is removed
    sendfile: bool = True  # zero-copy downloads without TLS (see Wire.use_sendfile)
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
    password_cache_time: float = limits.PASSWORD_CACHE_TIME  # seconds; 0: argon2 at every login
    # -- re-login tokens
    token_lifetime: float = limits.TOKEN_LIFETIME  # seconds; 0: no tokens at all
    max_tokens_per_user: int = limits.MAX_TOKENS_PER_USER
    # -- audit log: a file, or None for the main log
    audit_log: str | None = None
    # -- the FTP front door (docs/FTP.md): off without ftp_port
    ftp_port: int | None = None
    ftp_host: str | None = None  # None: the same as host
    ftp_passive_ports: tuple[int, int] | None = None  # None: any free port
    ftp_masquerade: str | None = None  # the IPv4 address PASV announces
    ftp_require_tls: bool | None = None  # None: yes once TLS is configured
    ftp_data_timeout: float = limits.FTP_DATA_TIMEOUT
    # -- behind a load balancer (docs/DEPLOY.md): the PROXY protocol v2
    proxy_protocol: bool = False  # every connection must start with a PROXY header
    proxy_trusted: tuple[str, ...] | None = None  # CIDRs of the balancers allowed to send it
    #: Server processes on the same ports (SO_REUSEPORT), see cli/workers.py.
    workers: int = 1
    # -- the HTTP front door (docs/HTTP.md): off without http_port
    http_port: int | None = None
    http_host: str | None = None  # None: the same as host
    tus_expiry: float = 24 * 3600.0  # seconds a tus upload may stay unfinished

    def __post_init__(self):
        if not self.root:
            self.root = default_root()
        if not self.db:
            self.db = os.environ.get("SOCKFTP_DB") or None
        for name in ("session_rate", "user_rate"):
            if getattr(self, name) == 0:  # 0 is how a file says "no limit"
                setattr(self, name, None)
        for name, setting in SETTINGS.items():
            value = getattr(self, name, None)
            if value is not None:
                setting.check_range(name, value)
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            raise ConfigError(f"{given} is set but {missing} is not: TLS needs both a certificate and its key")
        for name, parse in (("ftp_passive_ports", parse_port_range), ("ftp_masquerade", parse_ipv4)):
            if getattr(self, name) is not None:
                try:
                    setattr(self, name, parse(getattr(self, name)))
                except ConfigError as exc:
                    raise ConfigError(f"{name}: {exc}") from None
        if self.proxy_trusted is not None:
            try:
                self.proxy_trusted = parse_networks(self.proxy_trusted)
            except ConfigError as exc:
                raise ConfigError(f"proxy_trusted: {exc}") from None
        if self.proxy_protocol and not self.proxy_trusted:
            raise ConfigError("proxy_protocol is on but proxy_trusted is empty: name the balancers' addresses (CIDRs)")
        if self.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
            raise ConfigError("workers above 1 need SO_REUSEPORT, which this system lacks")
        if self.ftp_require_tls and self.tls_cert is None:
            raise ConfigError("ftp_require_tls is set but there is no certificate: set tls_cert and tls_key")


# -- sizes --------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtp])(?:i?b)?|b)?$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

#: The largest size: accounts keep sizes as signed 64-bit integers (SQL BIGINT).
MAX_SIZE = (1 << 63) - 1


def parse_size(text: str | int) -> int:
    """The number of bytes *text* names: ``123``, ``64K``, ``10M``, ``1.5G``, ``2TiB``.

    Units are binary (``K`` is 1024, then ``M``, ``G``, ``T``, ``P``) and
    case-insensitive, and may be followed by ``B`` or ``iB``. A fraction of
    a unit is rounded down to whole bytes; a number of bytes must be whole.
    An ``int`` is taken as bytes. Shared by the config file and every
    command-line option that takes a size.

    Raises:
        ValueError: *text* is not a size, is negative, or is larger than
            :data:`MAX_SIZE`.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    elif isinstance(text, str) and (match := _SIZE.match(text.strip())):
        number, unit = match.groups()
        exact = Decimal(number) * _SIZE_UNITS[unit.lower() if unit else None]
        if unit is None and exact != int(exact):
            raise ValueError(f"not a size: {text!r} (a number of bytes must be whole)")
        value = int(exact)
    else:
        raise ValueError(f"not a size: {text!r} (a number of bytes, or with a unit: 64K, 10M, 1.5G, 2T)")
    if value < 0:
        raise ValueError(f"a size cannot be negative: {text!r}")
    if value > MAX_SIZE:
        raise ValueError(f"size {text!r} is too large (at most {MAX_SIZE} bytes)")
    return value


def parse_port_range(value) -> tuple[int, int]:
    """``"50000-50100"`` or ``[50000, 50100]`` -> (50000, 50100): a range of
    TCP ports, first to last inclusive. Raises ConfigError."""
    if isinstance(value, str):
        first, sep, last = value.strip().partition("-")
        parts = [first.strip(), last.strip()] if sep else []
        numbers = [int(part) for part in parts if part.isdigit()]
    elif isinstance(value, list | tuple) and not any(isinstance(v, bool) for v in value):
        numbers = [v for v in value if isinstance(v, int)]
        parts = value
    else:
        numbers, parts = [], []
    if len(parts) != 2 or len(numbers) != 2:
        raise ConfigError(f'expected a port range such as "50000-50100", got {_show(value)}')
    first, last = numbers
    if not 1 <= first <= last <= 65535:
        raise ConfigError(f"expected ports from 1 to 65535, the first no higher than the last, got {first}-{last}")
    return first, last


def parse_ipv4(value) -> str:
    """An IPv4 address, as written; PASV can announce nothing else. Raises ConfigError."""
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(value.strip() if isinstance(value, str) else value))
    except ValueError:
        raise ConfigError(f"expected an IPv4 address such as 203.0.113.7, got {_show(value)}") from None


def parse_networks(value) -> tuple[str, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` or a list of them -> the networks, each
    written as a CIDR. Raises ConfigError."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f'expected CIDRs such as "10.0.0.0/8,127.0.0.1", got {_show(value)}')
    try:
        return tuple(str(ipaddress.ip_network(item.strip(), strict=False)) for item in items if item.strip())
    except ValueError as exc:
        raise ConfigError(f"not an address or a CIDR: {exc}") from None


def parse_reserve(value: str | int) -> int | float:
    """Disk space to keep free: a size (``"1G"``, bytes as an int) or a
    share of the disk (``"1%"``, returned as the fraction 0.01)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            share = float(value.strip()[:-1])
        except ValueError:
            share = -1.0
        if not (0 <= share < 100) or not math.isfinite(share):
            raise ValueError(f"expected a share of the disk from 0% to 99%, got {_show(value)}")
        return share / 100
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected a size such as "1G" or a share such as "1%", got {_show(value)}')
    return parse_size(value)


# -- the config file ---------------------------------------------------------------------


class ConfigError(ValueError):
    """A setting that cannot be used. The message is one line that names
    the setting and where it came from (the file, or the command-line
    option in *option*)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass(frozen=True)
class Setting:
    """How one ServerConfig field is read from a file or a flag, and its valid range."""

    # "str", "int", "seconds", "bool", "size", "reserve", "path", "file", "choice", "ports", "ipv4", "db", "storage"
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False  # the minimum itself is not allowed
    choices: tuple[str, ...] = ()

    def convert(self, value, base_dir: str | None):
        """*value* (from TOML or click) as the field's value. Raises ValueError
        whose message says what was expected."""
        kind = self.kind
        if kind in ("int", "seconds"):
            ok_types = (int,) if kind == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok_types) or not math.isfinite(value):
                raise ValueError(f"expected {self.describe()}, got {_show(value)}")
            self.check_range(None, value)
            return value if kind == "int" else float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"expected true or false, got {_show(value)}")
            return value
        if kind == "ports":
            return parse_port_range(value)
        if kind == "networks":
            return parse_networks(value)
        if kind == "ipv4":
            return parse_ipv4(value)
        if kind == "reserve":
            return parse_reserve(value)
        if kind == "db":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"expected a postgresql:// URL or a SQLite file, got {_show(value)}")
            if value.split(":", 1)[0].lower() in ("postgresql", "postgres"):
                return value  # a URL: as written
            kind = "path"  # a SQLite file, taken from the config file's directory
        if kind == "storage":
            if not isinstance(value, str) or not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", value):
                raise ValueError(f"expected s3://BUCKET/PREFIX, got {_show(value)}")
            return value
        if kind == "size":
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f'expected a size (bytes, or a string such as "10M"), got {_show(value)}')
            return parse_size(value) or None  # 0: no limit
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {self.describe()}, got {_show(value)}")
        if kind == "choice":
            if value.lower() not in self.choices:
                raise ValueError(f"expected {self.describe()}, got {_show(value)}")
            return value.lower()
        if kind in ("path", "file"):
            value = os.path.expanduser(value)
            if base_dir is not None:
                value = os.path.join(base_dir, value)  # an absolute value stays as it is
            value = os.path.abspath(value)
            if kind == "file" and not os.path.isfile(value):
                raise ValueError(f"no such file: {value}")
        return value

    def check_range(self, name: str | None, value) -> None:
        if self.choices and value not in self.choices:
            raise ConfigError(f"{name}: expected {self.describe()}, got {_show(value)}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return
        low_ok = self.minimum is None or (value > self.minimum if self.above else value >= self.minimum)
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and high_ok):
            message = f"expected {self.describe()}, got {_show(value)}"
            raise ConfigError(f"{name}: {message}" if name else message)

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(f'"{c}"' for c in self.choices)
        if self.kind in ("path", "file"):
            return "a path (a string)"
        if self.kind == "str":
            return "a non-empty string"
        what = "an integer" if self.kind == "int" else "a number of seconds"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} from {_number(self.minimum)} to {_number(self.maximum)}"
        if self.minimum is not None:
            return f"{what} {'above' if self.above else 'of at least'} {_number(self.minimum)}"
        return what


#: Every setting, by ServerConfig field name (which is also its key in the
#: file and, with "-" for "_", its command-line option). A field missing
#: here is read by the type of its default (see _setting_for).
SETTINGS: dict[str, Setting] = {
    "root": Setting("path"),
    "db": Setting("db"),
    "storage": Setting("storage"),
    "s3_part_size": Setting("size", 5 * 1024 * 1024, 5 * 1024 * 1024 * 1024),
    "host": Setting("str"),
    "port": Setting("int", 0, 65535),
    "anonymous": Setting("bool"),
    "max_sessions": Setting("int", 1),
    "max_sessions_per_ip": Setting("int", 1),
    "idle_timeout": Setting("seconds", 0, above=True),
    "header_timeout": Setting("seconds", 0, above=True),
    "shutdown_grace": Setting("seconds", 0),
    "fsync": Setting("bool"),
    "min_free": Setting("reserve"),
    "lease_time": Setting("seconds", 0.3),
    "partial_ttl": Setting("seconds", 0, above=True),
    "sendfile": Setting("bool"),
    "log_level": Setting("choice", choices=("debug", "info", "warning", "error")),
    "tls_cert": Setting("file"),
    "tls_key": Setting("file"),
    "session_rate": Setting("size"),
    "user_rate": Setting("size"),
    "login_failure_delay": Setting("seconds", 0),
    "ban_failures": Setting("int", 1),
    "ban_window": Setting("seconds", 0, above=True),
    "ban_time": Setting("seconds", 0),
    "password_cache_time": Setting("seconds", 0),
    "token_lifetime": Setting("seconds", 0),
    "max_tokens_per_user": Setting("int", 1),
    "audit_log": Setting("path"),
    "ftp_port": Setting("int", 0, 65535),
    "ftp_host": Setting("str"),
    "http_port": Setting("int", 0, 65535),
    "http_host": Setting("str"),
    "tus_expiry": Setting("seconds", 0, above=True),
    "ftp_passive_ports": Setting("ports"),
    "ftp_masquerade": Setting("ipv4"),
    "ftp_require_tls": Setting("bool"),
    "ftp_data_timeout": Setting("seconds", 0, above=True),
    "proxy_protocol": Setting("bool"),
    "proxy_trusted": Setting("networks"),
    "workers": Setting("int", 1, 64),
}

#: Other names a key may be given by in a file (and its option on the
#: command line): the name an operator of a cluster looks for.
ALIASES = {"drain_grace": "shutdown_grace"}


def _setting_for(name: str) -> Setting:
    if name in SETTINGS:
        return SETTINGS[name]
    default = next(f.default for f in fields(ServerConfig) if f.name == name)
    kind = {bool: "bool", int: "int", float: "seconds"}.get(type(default), "str")
    return Setting(kind)


def load_config(path: str | None = None, overrides: dict | None = None) -> ServerConfig:
    """The server's settings: the defaults, then the TOML file *path* (if
    any), then *overrides* (command-line values by field name; None values
    are ignored).

    Relative paths in the file are taken from the file's directory, those
    in *overrides* from the current directory. A size may be an integer
    (bytes) or a string such as ``"10M"``; a rate of 0 means no limit.

    Raises:
        ConfigError: the file cannot be read or is not TOML, it has an
            unknown key, or a value has the wrong type or is out of range.
            The message names the file or the option and the key.
    """
    names = [f.name for f in fields(ServerConfig)]
    values = {}
    if path is not None:
        for key, value in _read_toml(path).items():
            key = ALIASES.get(key, key)
            if key not in names:
                raise ConfigError(f"{path}: {_unknown_key(key, value, names)}")
            try:
                values[key] = _setting_for(key).convert(value, os.path.dirname(os.path.abspath(path)))
            except ValueError as exc:
                raise ConfigError(f"{path}: {key}: {exc}") from None
    for key, value in (overrides or {}).items():
        option = "--" + key.replace("_", "-")
        if key not in names:
            raise ConfigError(f"{option}: no such setting", option=option)
        if value is None:
            continue
        try:
            values[key] = _setting_for(key).convert(value, None)
        except ValueError as exc:
            raise ConfigError(f"{option}: {exc}", option=option) from None
    try:
        return ServerConfig(**values)
    except ConfigError:
        raise
    except ValueError as exc:  # pragma: no cover - every field is checked above
        raise ConfigError(str(exc)) from None


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _unknown_key(key: str, value, names: list[str]) -> str:
    if isinstance(value, dict):
        flat = [f"{key}_{sub}" for sub in value if f"{key}_{sub}" in names]
        hint = f", e.g. {flat[0]} = ..." if flat else ""
        return f"unknown section [{key}]: settings are top-level keys{hint}"
    wanted = key.replace("-", "_")
    swapped = [name for name in names if sorted(name) == sorted(wanted)]  # "prot" for "port"
    close = swapped or difflib.get_close_matches(wanted, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


def _show(value) -> str:
    """*value* as it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string, on one line
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)
