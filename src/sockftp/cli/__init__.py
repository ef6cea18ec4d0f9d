"""The ``sockftp`` command line: ``serve``, and the client commands.

Each client command connects, does one thing and exits. Success is status
0; a failure prints exactly one line, ``sockftp: MESSAGE``, on stderr and
exits with a status that says which side failed (the ``EXIT_*`` constants).
The transfer and listing helpers below are shared with :mod:`sockftp.cli.shell`.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import posixpath
import re
import signal
import ssl
import sys
import threading
import time

import click

from .. import __version__
from ..protocol import limits
from ..protocol.entries import DIRECTORY, FILE, LINK, Entry
from ..protocol.errors import ConnectionLost, NotADirectory, NotFound, SockftpError, Timeout
from ..server.config import MAX_SIZE, default_root, parse_size
from .progress import TransferDisplay, bars_wanted, describe_transfer, human_size

EXIT_SERVER_ERROR = 1  # the server refused: not found, exists, not empty...
EXIT_USAGE = 2  # click's status for a bad command line
EXIT_CONNECTION = 3  # could not connect, or the connection broke
EXIT_LOCAL = 4  # a local file could not be read or written

#: Attempts a transfer makes to reconnect and resume after the connection breaks.
TRANSFER_RETRIES = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sockftp")
def main() -> None:
    """sockftp: a fast, resumable, verified file-transfer server and client."""


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of settings, keys named like these options (max_sessions = 100). "
    "Options given here override it. See docs/CONFIG.md.",
)
@click.option("--host", default=limits.DEFAULT_HOST, show_default=True, help="Address to listen on (IPv4 or IPv6).")
@click.option(
    "--port",
    default=limits.DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory (created if missing). Default: $SOCKFTP_ROOT or the per-user data directory.",
)
@click.option(
    "--anonymous/--no-anonymous",
    default=False,
    help="Let clients that never log in read and write ROOT/anonymous.  [default: no]",
)
@click.option("--max-sessions", default=limits.MAX_SESSIONS, show_default=True, type=click.IntRange(1))
@click.option("--max-sessions-per-ip", default=limits.MAX_SESSIONS_PER_IP, show_default=True, type=click.IntRange(1))
@click.option(
    "--idle-timeout",
    default=limits.IDLE_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a session may wait for its client.",
)
@click.option(
    "--header-timeout",
    default=limits.HEADER_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a request header may take to arrive once started.",
)
@click.option(
    "--shutdown-grace",
    default=limits.SHUTDOWN_GRACE,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds running transfers get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--fsync/--no-fsync",
    default=False,
    help="fsync every upload before it becomes visible (durable, slower).  [default: no]",
)
@click.option(
    "--sendfile/--no-sendfile",
    default=True,
    help="Send plaintext downloads with sendfile() (zero-copy) rather than a buffered copy loop.  [default: yes]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False),
    default=None,
    help="Serve TLS with this certificate (PEM, chain after it); needs --tls-key.  [default: no TLS]",
)
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="The private key (PEM) of --tls-cert.")
@click.option(
    "--session-rate",
    metavar="SIZE",
    default=None,
    help="Bandwidth of each session, bytes per second: 500K, 10M, 1.5G; 0 for no limit.  [default: no limit]",
)
@click.option(
    "--user-rate",
    metavar="SIZE",
    default=None,
    help="Bandwidth of all of one user's sessions together, as --session-rate.  [default: no limit]",
)
@click.option(
    "--login-failure-delay",
    default=limits.LOGIN_FAILURE_DELAY,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a failed login waits before its answer.",
)
@click.option(
    "--ban-failures",
    default=limits.BAN_FAILURES,
    show_default=True,
    type=click.IntRange(1),
    help="Ban an address after this many failed logins...",
)
@click.option(
    "--ban-window",
    default=limits.BAN_WINDOW,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="...within this many seconds...",
)
@click.option(
    "--ban-time",
    default=limits.BAN_TIME,
    show_default=True,
    type=click.FloatRange(min=0),
    help="...for this many seconds.",
)
@click.option(
    "--token-lifetime",
    default=limits.TOKEN_LIFETIME,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a re-login token is valid; 0 turns tokens off.",
)
@click.option(
    "--max-tokens-per-user",
    default=limits.MAX_TOKENS_PER_USER,
    show_default=True,
    type=click.IntRange(1),
    help="Live tokens per user; a new one drops the oldest past this.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append the audit log (logins, transfers, deletions, renames) to this file.  [default: the main log]",
)
@click.option(
    "--ftp-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve FTP on this port (0 picks a free one), on the same accounts and storage. See docs/FTP.md."
    "  [default: no FTP]",
)
@click.option("--ftp-host", default=None, help="Address the FTP port listens on.  [default: --host]")
@click.option(
    "--ftp-passive-ports",
    metavar="FIRST-LAST",
    default=None,
    help="Ports for FTP passive data connections, e.g. 50000-50100.  [default: any free port]",
)
@click.option(
    "--ftp-masquerade",
    metavar="IPV4",
    default=None,
    help="The address FTP's PASV announces (behind NAT).  [default: the server's address]",
)
@click.option(
    "--ftp-require-tls/--no-ftp-require-tls",
    default=None,
    help="Refuse FTP logins and data connections without TLS (AUTH TLS, PROT P).  [default: yes with --tls-cert]",
)
@click.option(
    "--ftp-data-timeout",
    default=limits.FTP_DATA_TIMEOUT,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an FTP data connection may wait for the client.",
)
def serve(config_file, **settings) -> None:
    """Run a server until SIGINT or SIGTERM.

    Settings come from the defaults, then the --config file, then the
    options given here.
    """
    import shlex

    from .. import ftp
    from ..protocol.tls import TlsSetupError
    from ..server import SockftpServer, audit
    from ..server.config import ConfigError, load_config

    ctx = click.get_current_context()
    given = {
        name: value
        for name, value in settings.items()
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    try:
        config = load_config(config_file, given)
    except ConfigError as exc:
        if exc.option:  # a bad value on the command line
            raise click.UsageError(str(exc), ctx) from None
        raise click.ClickException(str(exc)) from None

    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        audit.configure(config.audit_log)
    except OSError as exc:
        raise click.ClickException(f"cannot open audit log {config.audit_log}: {exc.strerror or exc}") from None
    try:
        server = SockftpServer(config)
    except TlsSetupError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    try:
        ftp_server = ftp.start(server)
    except OSError as exc:
        server.stop(0)
        where = f"{config.ftp_host or config.host}:{config.ftp_port}"
        raise click.ClickException(f"cannot listen for FTP on {where}: {exc.strerror or exc}") from None

    def on_signal(signum, _frame):
        logging.getLogger("sockftp").info("received %s, shutting down", signal.Signals(signum).name)
        # stop() waits for serve_forever to return, so it cannot run on the
        # main thread, which is the one inside serve_forever.
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    click.echo(f"sockftp {__version__}: data directory {config.root}")
    users = server.users.count()
    accounts = f"{users} user{'' if users == 1 else 's'}"
    if config.anonymous:
        also = f"; {accounts} can log in" if users else ""
        click.echo(f"anonymous access is on: clients share {config.root}/anonymous{also}")
    elif users:
        click.echo(f"{accounts}; clients must log in (anonymous access is off)")
    else:
        click.echo(
            f"no users yet: add one with  sockftp user add NAME --root {shlex.quote(config.root)}"
            f"  (or restart with --anonymous to share {config.root}/anonymous)"
        )
    if config.audit_log:
        click.echo(f"audit log: {config.audit_log}")
    click.echo(f"sockftp listening on {server.display_address}", nl=True)
    if ftp_server is not None:
        click.echo(f"sockftp FTP listening on {ftp_server.display_address}")
    sys.stdout.flush()
    server.serve_forever()
    # serve_forever returns once stop() has begun; wait for it to finish.
    for thread in threading.enumerate():
        if thread.name == "shutdown":
            thread.join()
    click.echo("sockftp stopped")


# -- failures ------------------------------------------------------------------------


class Failure(click.ClickException):
    """A failed client command: one line on stderr, and its exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"sockftp: {self.message}", err=True)


def error_message(exc: BaseException) -> str:
    """*exc* as one line of text for people."""
    if isinstance(exc, SockftpError):
        message = exc.message
    elif isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc)
    return " ".join(message.split())  # exactly one line, whatever the server sent


def exit_status(exc: BaseException) -> int:
    if isinstance(exc, (ConnectionLost, Timeout, ssl.SSLError)):  # SSLError is an OSError, but not a local one
        return EXIT_CONNECTION
    if isinstance(exc, OSError) or getattr(exc, "code", None) == "local_error":
        return EXIT_LOCAL
    return EXIT_SERVER_ERROR


# -- options shared by the client commands ---------------------------------------------------


class ServerAddress:
    """Where and how the client commands connect: --host, --port, --timeout,
    --user (with a re-login token from ``SOCKFTP_TOKEN``, else the password
    from ``SOCKFTP_PASSWORD`` or a prompt), --tls, --tls-ca and --insecure.

    Tokens are never cached on disk: a token is a bearer secret that logs
    in without the password, and a file of them would be one more
    credential at rest for every user, readable by anything that runs as
    them and copied by their backups. ``sockftp token new`` prints one for
    whoever wants it, to keep where they keep their other secrets
    (``export SOCKFTP_TOKEN=...`` for a shell's commands, a secrets manager
    for a script). Without one, a command costs one password check, 0.1 s.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        user: str | None = None,
        tls: bool = False,
        tls_ca: str | None = None,
        insecure: bool = False,
    ):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.user = user
        self.tls = tls or tls_ca is not None or insecure  # either one means TLS
        self.tls_ca = tls_ca
        self.insecure = insecure
        self._password: str | None = None
        #: A re-login token to log in with, from $SOCKFTP_TOKEN (with --user only).
        self.token = (os.environ.get("SOCKFTP_TOKEN") or None) if user is not None else None

    def password(self) -> str | None:
        """The password of --user (asked for at most once), or None without --user."""
        if self.user is not None and self._password is None:
            self._password = read_password(self.user, f"{self.host}:{self.port}")
        return self._password

    def connect(self, by_password: bool = False, keep_token: bool = False):
        """A connected, logged-in Client: with the token if there is one
        (and the password from $SOCKFTP_PASSWORD, if set, should the token
        be refused; nothing is asked for), else with the password. With
        *by_password*, with the password only."""
        # Imported here: the client library is not needed for --help or serve.
        from ..client import Client

        token = None if by_password else self.token
        if token is not None:
            password = os.environ.get("SOCKFTP_PASSWORD") or None
        else:
            password = self.password()
        return Client(
            self.host,
            self.port,
            timeout=self.timeout,
            retries=TRANSFER_RETRIES,
            user=self.user,
            password=password,
            token=token,
            keep_token=keep_token,
            tls=self.tls,
            tls_ca=self.tls_ca,
            insecure=self.insecure,
        )


def read_password(user: str, where: str) -> str:
    """The password of *user*: ``$SOCKFTP_PASSWORD``, else asked for without
    echo when stdin is a terminal. Never an option: a command line is
    visible to every local user (``ps``) and lands in shell history."""
    password = os.environ.get("SOCKFTP_PASSWORD")
    if password:
        return password
    if sys.stdin.isatty():
        return click.prompt(f"Password for {user} at {where}", hide_input=True, err=True)
    raise Failure(f"no password for {user}: set SOCKFTP_PASSWORD or run interactively", EXIT_USAGE)


def client_command(func):
    """Give a command --host, --port, --timeout, --user, --tls, --tls-ca and
    --insecure (passed on as a :class:`ServerAddress` named *server*), and
    turn its failures into one line on stderr and an ``EXIT_*`` status. Put
    it right above the ``def``, so that these options come last in the help."""

    @click.option(
        "--host",
        envvar="SOCKFTP_HOST",
        show_envvar=True,
        default=limits.DEFAULT_HOST,
        show_default=True,
        help="Server address.",
    )
    @click.option(
        "--port",
        envvar="SOCKFTP_PORT",
        show_envvar=True,
        default=limits.DEFAULT_PORT,
        show_default=True,
        type=click.IntRange(1, 65535),
        help="Server port.",
    )
    @click.option(
        "--timeout",
        default=60.0,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds to wait for the server at any step.",
    )
    @click.option(
        "--user",
        "-u",
        envvar="SOCKFTP_USER",
        show_envvar=True,
        help="Log in as USER, with the token in $SOCKFTP_TOKEN (see: sockftp token new), or else the password"
        " from $SOCKFTP_PASSWORD, or asked for on a terminal.",
    )
    @click.option(
        "--tls", is_flag=True, envvar="SOCKFTP_TLS", show_envvar=True, help="Speak TLS, verifying the server."
    )
    @click.option(
        "--tls-ca",
        envvar="SOCKFTP_TLS_CA",
        show_envvar=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Trust the CA certificates in this PEM file (a private CA). Implies --tls.",
    )
    @click.option(
        "--insecure", is_flag=True, help="TLS without checking the server's certificate (anyone can pose as it)."
    )
    @functools.wraps(func)
    def run(host, port, timeout, user, tls, tls_ca, insecure, **kwargs):
        if insecure and tls_ca is not None:
            raise click.UsageError("--insecure and --tls-ca contradict each other: choose one")
        try:
            return func(ServerAddress(host, port, timeout, user, tls, tls_ca, insecure), **kwargs)
        except (SockftpError, OSError) as exc:
            message = error_message(exc)
            if getattr(exc, "code", None) == "auth_required":
                message = "this server needs a login: use --user NAME or set SOCKFTP_USER"
            elif getattr(exc, "code", None) == "auth_failed" and os.environ.get("SOCKFTP_TOKEN") and user:
                message += "; get a new token with: sockftp token new (or unset SOCKFTP_TOKEN)"
            raise Failure(message, exit_status(exc)) from None

    return run


def display_options(func):
    """-q/--quiet and --progress, for commands that transfer files."""
    func = click.option(
        "--progress", "force_progress", is_flag=True, help="Show progress bars even when not on a terminal."
    )(func)
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary line.")(func)


def make_display(quiet: bool, force_progress: bool, out=None) -> TransferDisplay:
    return TransferDisplay(bars=bars_wanted(quiet, force_progress), quiet=quiet, force_terminal=force_progress, out=out)


# -- remote paths (for display and for choosing targets; the server resolves them) ------------


def remote_join(directory: str, name: str) -> str:
    if not directory:
        return name
    return (directory if directory.endswith("/") else directory + "/") + name


def remote_name(path: str) -> str:
    """The last name in *path*."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def remote_absolute(cwd: str, path: str) -> str:
    """*path* as seen from remote directory *cwd*, as an absolute path."""
    parts = [] if path.startswith("/") else cwd.split("/")
    for name in path.split("/"):
        if name == "..":
            if parts:
                parts.pop()
        elif name not in ("", "."):
            parts.append(name)
    return "/" + "/".join(p for p in parts if p)


def is_remote_directory(client, path: str) -> bool:
    try:
        return client.stat(path).type == DIRECTORY
    except NotFound:
        return False


# -- what the commands do, shared with the shell -------------------------------------------------


def upload(client, local: str, remote: str | None, *, recursive: bool, display: TransferDisplay, cwd: str = "/"):
    """Put file *local* to *remote*: by default its name in the remote cwd;
    inside *remote* if that is a directory or ends with ``/``. With
    *recursive*, put directory *local* as directory *remote* (by default its
    name), creating it or adding to it. Prints a summary on *display*."""
    if recursive:
        if not os.path.isdir(local):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), local)
        target = remote or os.path.basename(os.path.abspath(local))
        display.counter, display.files = True, count_local_files(local)
        started = time.monotonic()
        with display:
            results = client.put_tree(local, target, progress=display, on_file=display.start_file)
    else:
        if os.path.isdir(local):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (use -r)", local)
        name = os.path.basename(local)
        target = remote if remote is not None else name
        if remote is not None and (remote.endswith("/") or is_remote_directory(client, remote)):
            target = remote_join(remote, name)
        started = time.monotonic()
        with display:
            display.start_file(local)
            results = [client.put(local, target, progress=display)]
    seconds = time.monotonic() - started
    display.summary(describe_transfer("put", local, remote_absolute(cwd, target), results, seconds))
    return results


def download(client, remote: str, local: str | None, *, recursive: bool, display: TransferDisplay, cwd: str = "/"):
    """Get file *remote* to *local*: by default its name in the local
    directory; inside *local* if that is a directory. With *recursive*, get
    directory *remote* as directory *local* (by default its name). Prints a
    summary on *display*."""
    if recursive:
        source = remote_absolute(cwd, remote)
        if client.stat(remote).type != DIRECTORY:
            raise NotADirectory(f"not a directory: {source}")
        target = local or posixpath.basename(source)
        if not target:
            raise click.UsageError("name the local directory to get the root directory into")
        display.counter = True
        started = time.monotonic()
        with display:
            results = client.get_tree(remote, target, progress=display, on_file=display.start_file)
    else:
        started = time.monotonic()
        with display:
            display.start_file(remote)
            results = [client.get(remote, local, progress=display)]
        source, target = results[0].path, results[0].local
    seconds = time.monotonic() - started
    display.summary(describe_transfer("get", source, target, results, seconds))
    return results


def move(client, source: str, target: str) -> None:
    """Rename *source* to *target*, or into *target* if it is a directory."""
    if target.endswith("/") or is_remote_directory(client, target):
        target = remote_join(target, remote_name(source))
    client.mv(source, target)


def count_local_files(directory: str) -> int:
    """The files put_tree will send from *directory* (it follows no
    directory links, as os.walk does not)."""
    return sum(os.path.isfile(os.path.join(root, name)) for root, _dirs, files in os.walk(directory) for name in files)


_TYPE_CHARS = {DIRECTORY: "d", FILE: "-", LINK: "l"}

# Names come from the server's disk: never let one move the cursor or
# recolour the terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def format_entry(entry: Entry) -> str:
    """One ``ls -l``-like line: ``d     4.0 KiB 2024-05-01 12:00 docs/``."""
    name = _UNPRINTABLE.sub("?", entry.name) + ("/" if entry.type == DIRECTORY else "")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime))
    return f"{_TYPE_CHARS.get(entry.type, '?')} {human_size(entry.size):>10} {when} {name}"


def format_stat(path: str, entry: Entry, checksum: str | None = None) -> list[str]:
    fields = [
        ("path", _UNPRINTABLE.sub("?", path)),
        ("type", entry.type),
        ("size", f"{entry.size} ({human_size(entry.size)})"),
        ("mtime", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.mtime))),
    ]
    if checksum is not None:
        fields.append(("checksum", checksum))
    return [f"{key + ':':<10}{value}" for key, value in fields]


def format_quota(reply: dict) -> list[str]:
    """The ``quota`` reply for people: what is used, and the limits."""
    quota, max_files = reply.get("quota_bytes"), reply.get("max_files")
    used, files = reply.get("used_bytes", 0), reply.get("used_files", 0)
    if quota is None:
        limit = "unlimited"
    else:
        share = f"{used / quota:.0%} used" if quota else "nothing may be stored"
        limit = f"{human_size(quota)} ({share}, {human_size(max(quota - used, 0))} free)"
    fields = [
        ("user", _UNPRINTABLE.sub("?", str(reply.get("user")))),
        ("used", f"{human_size(used)} in {files} file{'' if files == 1 else 's'}"),
        ("quota", limit),
        ("max files", "unlimited" if max_files is None else f"{max_files} ({max(max_files - files, 0)} more allowed)"),
    ]
    return [f"{key + ':':<11}{value}" for key, value in fields]


def stat_lines(client, path: str, checksum: bool, cwd: str = "/") -> list[str]:
    entry = client.stat(path)
    # Client.stat drops the checksum from its reply, so ask for it apart.
    value = client.checksum(path) if checksum and entry.type == FILE else None
    return format_stat(remote_absolute(cwd, path), entry, value)


# -- the client commands ---------------------------------------------------------------------


recursive_option = click.option("-r", "--recursive", is_flag=True, help="Transfer a directory and all it holds.")


@main.command()
@click.argument("local")
@click.argument("remote", required=False)
@recursive_option
@display_options
@client_command
def put(server, local, remote, recursive, quiet, force_progress) -> None:
    """Upload file LOCAL to REMOTE (default: its name, in /).

    If REMOTE is a directory or ends with "/", the file goes inside it.
    With -r, upload directory LOCAL as REMOTE (default: its name), adding
    to it if it exists. An interrupted upload resumes when run again.
    """
    with server.connect() as client:
        upload(client, local, remote, recursive=recursive, display=make_display(quiet, force_progress))


@main.command()
@click.argument("remote")
@click.argument("local", required=False)
@recursive_option
@display_options
@client_command
def get(server, remote, local, recursive, quiet, force_progress) -> None:
    """Download file REMOTE to LOCAL (default: its name, here).

    If LOCAL is a directory, the file goes inside it. With -r, download
    directory REMOTE as LOCAL (default: its name). An interrupted download
    resumes when run again.
    """
    with server.connect() as client:
        download(client, remote, local, recursive=recursive, display=make_display(quiet, force_progress))


@main.command()
@click.argument("path", default="/")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry and line.")
@client_command
def ls(server, path, as_json) -> None:
    """List directory PATH (default: /), sorted by name, like ls -l."""
    with server.connect() as client:
        for entry in client.ls(path):
            click.echo(json.dumps(entry.to_wire()) if as_json else format_entry(entry))


@main.command()
@click.argument("path")
@click.option("--checksum", is_flag=True, help="Include the file's checksum (the server reads the whole file).")
@client_command
def stat(server, path, checksum) -> None:
    """Show the type, size and time of PATH."""
    with server.connect() as client:
        for line in stat_lines(client, path, checksum):
            click.echo(line)


@main.command()
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="Create missing parents; no error if PATH exists.")
@client_command
def mkdir(server, path, parents) -> None:
    """Create directory PATH."""
    with server.connect() as client:
        client.mkdir(path, parents=parents)


@main.command()
@click.argument("path")
@client_command
def rmdir(server, path) -> None:
    """Remove empty directory PATH."""
    with server.connect() as client:
        client.rmdir(path)


@main.command()
@click.argument("path")
@client_command
def rm(server, path) -> None:
    """Remove file PATH."""
    with server.connect() as client:
        client.rm(path)


@main.command()
@click.argument("source")
@click.argument("target")
@client_command
def mv(server, source, target) -> None:
    """Rename SOURCE to TARGET, or move it into TARGET if that is a directory."""
    with server.connect() as client:
        move(client, source, target)


@main.command()
@client_command
def ping(server) -> None:
    """Check that the server answers, and how fast."""
    with server.connect() as client:
        started = time.perf_counter()
        client.ping()
        elapsed = time.perf_counter() - started
        name = client.server_info.get("server", "unknown server")
        click.echo(f"{server.host}:{server.port}: {name}, round trip {elapsed * 1000:.2f} ms")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="The server's reply as one JSON object.")
@client_command
def quota(server, as_json) -> None:
    """Show how much you store and your limits."""
    with server.connect() as client:
        reply = client.quota()
    if as_json:
        click.echo(json.dumps({key: value for key, value in reply.items() if key != "ok"}))
    else:
        for line in format_quota(reply):
            click.echo(line)


@main.group()
def token() -> None:
    """Re-login tokens: log in without the password for a while.

    \b
        export SOCKFTP_TOKEN=$(sockftp token new --user alice)
        sockftp ls --user alice      # no password asked, no password check
        sockftp token revoke --user alice

    A token works until it expires (a day, by default: the server decides)
    or is revoked; changing the password revokes them all. Anyone who has
    it can log in as you: keep it as you would the password.
    """


@token.command("new")
@client_command
def token_new(server) -> None:
    """Print a new token for --user (logging in with the password).

    The token goes to stdout, alone on its line; when it expires, to
    stderr. It is never written anywhere else.
    """
    if server.user is None:
        raise click.UsageError("a token is for a user: give --user NAME or set SOCKFTP_USER")
    with server.connect(by_password=True, keep_token=True) as client:
        if client.token is None:
            raise Failure(f"{server.host}:{server.port} does not issue re-login tokens", EXIT_SERVER_ERROR)
        click.echo(client.token)
        if client.token_expires is not None:
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(client.token_expires))
            click.echo(f"token for {server.user} at {server.host}:{server.port}, valid until {until}", err=True)


@token.command("revoke")
@click.option("--all", "everything", is_flag=True, help="Revoke every token of the user, everywhere.")
@client_command
def token_revoke(server, everything) -> None:
    """Revoke the token in $SOCKFTP_TOKEN, or with --all every token of
    --user (which logs in with the password then, if it must)."""
    if server.user is None:
        raise click.UsageError("tokens are a user's: give --user NAME or set SOCKFTP_USER")
    if not everything and server.token is None:
        raise click.UsageError("no token to revoke: set SOCKFTP_TOKEN, or give --all")
    with server.connect() as client:
        count = client.revoke_all_tokens() if everything else client.revoke_token(server.token)
    if everything:
        click.echo(f"revoked {count} token{'' if count == 1 else 's'} of {server.user}")
    else:
        click.echo("revoked the token" if count else "the token was not live (expired, or revoked already)")


@main.command()
@display_options
@client_command
def shell(server, quiet, force_progress) -> None:
    """Interactive session: cd, ls, put, get, lcd, ... (type help).

    Commands may also come from a pipe, one per line.
    """
    from .shell import run_shell

    with server.connect() as client:
        status = run_shell(client, quiet=quiet, force_progress=force_progress)
    click.get_current_context().exit(status)


# -- administration: sockftp user ... ----------------------------------------------------------
# These change the account database in the data directory directly, so they
# run on the server's machine and need no server. A running server sees the
# changes from each user's next login. A password is read from a terminal
# without echo or from stdin, never from the command line, and never printed.
# SIZE arguments are read by config.parse_size, as the config file's are.

#: The value of ``--quota none`` and ``--max-files none``: take the limit away.
NO_LIMIT = "none"


class Limit(click.ParamType):
    """A limit: parsed by *parse*, or ``none`` for no limit (:data:`NO_LIMIT`)."""

    def __init__(self, name: str, parse):
        self.name = name
        self.parse = parse

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        if value.strip().lower() in (NO_LIMIT, "unlimited"):
            return NO_LIMIT
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _parse_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if not 0 <= count <= MAX_SIZE:
        raise ValueError(f"{text!r} is not between 0 and {MAX_SIZE}")
    return count


def _limit_value(value):
    """A --quota or --max-files value as an account stores it."""
    return None if value == NO_LIMIT else value


def _check_user_name(ctx, param, value: str) -> str:
    from ..accounts import check_user_name

    try:
        return check_user_name(value)
    except SockftpError as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


def admin_command(func):
    """Give a ``sockftp user`` command the same --root as serve (passed on
    as *root*, never None), and turn its failures into one line on stderr:
    status 1 when the account database refuses (no such user, exists), 4
    when a local file or the database itself fails."""

    @click.option(
        "--root",
        type=click.Path(file_okay=False),
        default=None,
        help="The server's data directory. Default: $SOCKFTP_ROOT or the per-user data directory.",
    )
    @functools.wraps(func)
    def run(root, **kwargs):
        import sqlite3

        from ..accounts import StoreError

        root = root or default_root()
        try:
            return func(root=root, **kwargs)
        except (SockftpError, OSError) as exc:
            raise Failure(error_message(exc), exit_status(exc)) from None
        except (sqlite3.Error, StoreError) as exc:
            raise Failure(f"account database in {root}: {exc}", EXIT_LOCAL) from None

    return run


class _Accounts:
    """The account store of data directory *root*, opened on entry (and
    created only if *create*) and closed on exit."""

    def __init__(self, root: str, create: bool = False):
        self.root = root
        self.create = create
        self.store = None

    def __enter__(self):
        from ..accounts import SqliteUserStore
        from ..server.config import users_db

        path = users_db(self.root)
        if self.create or os.path.exists(path):
            self.store = SqliteUserStore(path)
        return self

    def __exit__(self, *exc) -> None:
        if self.store is not None:
            self.store.close()

    def get(self, name: str):
        """The account *name*. Raises NotFound."""
        account = self.store.get(name) if self.store is not None else None
        if account is None:
            raise NotFound(f"no such user: {name} (in {self.root})")
        return account

    def list(self) -> list:
        return self.store.list() if self.store is not None else []


def home_directory(root: str, name: str) -> str:
    """Where user *name*'s files are on disk."""
    from ..server.config import user_home

    return os.path.join(root, *user_home(name))


def read_new_password(from_stdin: bool) -> str:
    """A new password: one line of stdin (without its line ending) with
    *from_stdin*, else typed twice without echo on a terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt="Repeat the password", err=True)
    else:
        raise click.UsageError("no terminal to ask for the password on: use --password-stdin")
    if not password:
        raise click.UsageError("refusing an empty password")
    return password


def describe_limits(account) -> str:
    """An account's limits and flags, in a few words."""
    quota = "unlimited" if account.quota_bytes is None else human_size(account.quota_bytes)
    files = "unlimited" if account.max_files is None else str(account.max_files)
    access = "read-only" if account.read_only else "read-write"
    return f"quota {quota}, max files {files}, {access}{', disabled' if account.disabled else ''}"


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin instead of asking."
)
quota_option = click.option(
    "--quota",
    type=Limit("SIZE", parse_size),
    help="Most bytes the user may store: 500M, 2G, 1.5G, 10k (K = 1024) or none.",
)
max_files_option = click.option(
    "--max-files", type=Limit("N", _parse_count), help="Most files the user may store, or none."
)
name_argument = click.argument("name", callback=_check_user_name)


@main.group()
def user() -> None:
    """Manage user accounts: add, del, list, passwd, set, tokens, revoke-tokens.

    These change the account database in the server's data directory
    (--root) directly, so run them on the server's machine. No server needs
    to run; a running one sees the changes at each user's next login.
    """


@user.command("add")
@name_argument
@quota_option
@max_files_option
@click.option("--read-only", is_flag=True, help="The user may read but not change anything.")
@password_stdin_option
@admin_command
def user_add(root, name, quota, max_files, read_only, password_stdin) -> None:
    """Add user NAME, whose files live in ROOT/users/NAME.

    The password is asked for twice on a terminal, or read from stdin with
    --password-stdin (e.g. from a secrets manager). It never goes on the
    command line.
    """
    from ..accounts import Account, hash_password

    with _Accounts(root, create=True) as accounts:
        if accounts.store.get(name) is not None:
            raise Failure(f"user {name} already exists (in {root})", EXIT_SERVER_ERROR)
        password = read_new_password(password_stdin)
        home = home_directory(root, name)
        existed = os.path.isdir(home)
        os.makedirs(home, exist_ok=True)
        account = Account(name, hash_password(password), _limit_value(quota), _limit_value(max_files), read_only)
        accounts.store.add(account)
    click.echo(f"added user {name}: {describe_limits(account)}")
    click.echo(f"home: {home}{' (already there; its files are kept)' if existed else ''}")


@user.command("del")
@name_argument
@click.option("--delete-files", is_flag=True, help="Also delete the user's home and every file in it.")
@admin_command
def user_del(root, name, delete_files) -> None:
    """Delete user NAME. Their files stay, unless --delete-files.

    Sessions already logged in as NAME go on until they end.
    """
    import shutil

    home = home_directory(root, name)
    with _Accounts(root) as accounts:
        accounts.get(name)
        accounts.store.delete(name)
    if not os.path.lexists(home):
        click.echo(f"deleted user {name} (they had no home directory)")
    elif delete_files:
        shutil.rmtree(home)  # refuses a symbolic link
        click.echo(f"deleted user {name} and their files ({home})")
    else:
        click.echo(f"deleted user {name}; their files stay in {home} (--delete-files removes them)")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user and line.")
@admin_command
def user_list(root, as_json) -> None:
    """List the users with their limits and what they store.

    Usage is measured by reading each home, partial uploads included.
    """
    from ..server.config import user_home
    from ..storage import LocalStorage

    with _Accounts(root) as accounts:
        users = accounts.list()
    if not users:
        if not as_json:
            click.echo(f"no users in {root}; add one with: sockftp user add NAME", err=True)
        return
    storage = LocalStorage(root)
    try:
        usages = [storage.usage(user_home(account.name)) for account in users]
    finally:
        storage.close()
    if as_json:
        for account, usage in zip(users, usages, strict=True):
            record = {
                "name": account.name,
                "quota_bytes": account.quota_bytes,
                "max_files": account.max_files,
                "read_only": account.read_only,
                "disabled": account.disabled,
                "used_bytes": usage.bytes,
                "used_files": usage.files,
            }
            click.echo(json.dumps(record))
        return
    rows = [("NAME", "QUOTA", "USED", "FILES", "MAX FILES", "FLAGS")]
    for account, usage in zip(users, usages, strict=True):
        quota = "unlimited" if account.quota_bytes is None else human_size(account.quota_bytes)
        max_files = "unlimited" if account.max_files is None else str(account.max_files)
        flags = ",".join(f for f, on in (("read-only", account.read_only), ("disabled", account.disabled)) if on) or "-"
        rows.append((account.name, quota, human_size(usage.bytes), str(usage.files), max_files, flags))
    echo_table(rows)


def echo_table(rows: list[tuple[str, ...]]) -> None:
    """*rows* (the first one the headings) in left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@user.command("passwd")
@name_argument
@password_stdin_option
@admin_command
def user_passwd(root, name, password_stdin) -> None:
    """Change the password of user NAME.

    The new password is asked for twice on a terminal, or read from stdin
    with --password-stdin. Sessions already logged in go on; the old
    password and every re-login token of NAME stop working at once.
    """
    from ..accounts import hash_password

    with _Accounts(root) as accounts:
        accounts.get(name)
        password = read_new_password(password_stdin)
        accounts.store.update(name, password_hash=hash_password(password))
    click.echo(f"changed the password of {name}")


@user.command("set")
@name_argument
@quota_option
@max_files_option
@click.option("--read-only/--read-write", default=None, help="Whether the user may change anything.")
@click.option(
    "--disabled/--enabled",
    default=None,
    help="Whether the user may log in at all. Disabling revokes their tokens too.",
)
@admin_command
def user_set(root, name, quota, max_files, read_only, disabled) -> None:
    """Change the limits or access of user NAME.

    Give any of --quota, --max-files (none for no limit), --read-only,
    --read-write, --disabled or --enabled; the others stay as they are.
    Sessions already logged in go on.
    """
    changes = {}
    if quota is not None:
        changes["quota_bytes"] = _limit_value(quota)
    if max_files is not None:
        changes["max_files"] = _limit_value(max_files)
    if read_only is not None:
        changes["read_only"] = read_only
    if disabled is not None:
        changes["disabled"] = disabled
    if not changes:
        raise click.UsageError(
            "nothing to change: give --quota, --max-files, --read-only, --read-write, --disabled or --enabled"
        )
    with _Accounts(root) as accounts:
        accounts.get(name)
        account = accounts.store.update(name, **changes)
    click.echo(f"user {name}: {describe_limits(account)}")


@user.command("tokens")
@name_argument
@admin_command
def user_tokens(root, name) -> None:
    """List the live re-login tokens of user NAME.

    Each is shown by its id (as the audit log names it), never by its
    value, which the server does not know.
    """
    from ..accounts import token_id

    with _Accounts(root) as accounts:
        accounts.get(name)
        records = accounts.store.tokens(name, time.time())
    if not records:
        click.echo(f"{name} has no live tokens")
        return

    def when(seconds) -> str:
        return "never" if seconds is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))

    rows = [("ID", "CREATED", "EXPIRES", "LAST USED")]
    rows += [(token_id(r.token_hash), when(r.created), when(r.expires), when(r.last_used)) for r in records]
    echo_table(rows)


@user.command("revoke-tokens")
@name_argument
@admin_command
def user_revoke_tokens(root, name) -> None:
    """Revoke every re-login token of user NAME.

    Their next login needs the password. Sessions already logged in go on.
    """
    with _Accounts(root) as accounts:
        accounts.get(name)
        count = accounts.store.revoke_tokens(name)
    click.echo(f"revoked {count} token{'' if count == 1 else 's'} of {name}")


if __name__ == "__main__":  # pragma: no cover
    main()
