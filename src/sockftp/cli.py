"""The ``sockftp`` command line: ``serve``, and the client commands.

Each client command connects, does one thing and exits. Success is status
0; a failure prints exactly one line, ``sockftp: MESSAGE``, on stderr and
exits with a status that says which side failed (the ``EXIT_*`` constants).
The transfer and listing helpers below are shared with :mod:`sockftp.shell`.
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
import sys
import threading
import time

import click

from . import __version__, limits
from .config import ServerConfig, default_root
from .errors import ConnectionLost, NotADirectory, NotFound, SockftpError, Timeout
from .progress import TransferDisplay, bars_wanted, describe_transfer, human_size
from .storage.base import DIRECTORY, FILE, LINK, Entry

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
@click.option("--anonymous", is_flag=True, help="Let clients that never log in read and write ROOT/anonymous.")
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
@click.option("--fsync", is_flag=True, help="fsync every upload before it becomes visible (durable, slower).")
@click.option("--sendfile", is_flag=True, help="Send downloads with sendfile() instead of a buffered copy loop.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def serve(
    host,
    port,
    root,
    anonymous,
    max_sessions,
    max_sessions_per_ip,
    idle_timeout,
    header_timeout,
    shutdown_grace,
    fsync,
    sendfile,
    log_level,
) -> None:
    """Run a server until SIGINT or SIGTERM."""
    from .server import SockftpServer

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    config = ServerConfig(
        root=root or default_root(),
        host=host,
        port=port,
        anonymous=anonymous,
        max_sessions=max_sessions,
        max_sessions_per_ip=max_sessions_per_ip,
        idle_timeout=idle_timeout,
        header_timeout=header_timeout,
        shutdown_grace=shutdown_grace,
        fsync=fsync,
        sendfile=sendfile,
    )
    try:
        server = SockftpServer(config)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    def on_signal(signum, _frame):
        logging.getLogger("sockftp").info("received %s, shutting down", signal.Signals(signum).name)
        # stop() waits for serve_forever to return, so it cannot run on the
        # main thread, which is the one inside serve_forever.
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    click.echo(f"sockftp {__version__}: data directory {config.root}")
    if anonymous:
        click.echo(f"anonymous access is on: clients share {config.root}/anonymous")
    else:
        click.echo(
            "anonymous access is off and no accounts exist yet: clients can only ping.\n"
            "Restart with --anonymous to share ROOT/anonymous with every client."
        )
    click.echo(f"sockftp listening on {server.display_address}", nl=True)
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
    if isinstance(exc, (ConnectionLost, Timeout)):
        return EXIT_CONNECTION
    if isinstance(exc, OSError) or getattr(exc, "code", None) == "local_error":
        return EXIT_LOCAL
    return EXIT_SERVER_ERROR


# -- options shared by the client commands ---------------------------------------------------


class ServerAddress:
    """Where the client commands connect, from --host, --port and --timeout."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host = host
        self.port = port
        self.timeout = timeout

    def connect(self):
        # Imported here: the client library is not needed for --help or serve.
        from .client import Client

        return Client(self.host, self.port, timeout=self.timeout, retries=TRANSFER_RETRIES)


def client_command(func):
    """Give a command --host, --port and --timeout (passed on as a
    :class:`ServerAddress` named *server*), and turn its failures into one
    line on stderr and an ``EXIT_*`` status. Put it right above the ``def``,
    so that these options come last in the help."""

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
    @functools.wraps(func)
    def run(host, port, timeout, **kwargs):
        try:
            return func(ServerAddress(host, port, timeout), **kwargs)
        except (SockftpError, OSError) as exc:
            raise Failure(error_message(exc), exit_status(exc)) from None

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


if __name__ == "__main__":  # pragma: no cover
    main()
