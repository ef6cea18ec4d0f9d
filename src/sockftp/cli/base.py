"""What every ``sockftp`` command shares: the ``main`` group, exit statuses, failures and client options.

A client command connects, does one thing and exits. Success is status
0; a failure prints exactly one line, ``sockftp: MESSAGE``, on stderr and
exits with a status that says which side failed (the ``EXIT_*`` constants).
A transfer cut short by Ctrl-C or a lost connection prints one line too,
:class:`Interrupted`: how far it got and the command that resumes it.
The command modules and :mod:`sockftp.cli.shell` build on this one; it must
never import any of them (they import it, to register on ``main``).
"""

from __future__ import annotations

import functools
import importlib
import os
import shlex
import sys

import click

from .. import __version__
from ..protocol import limits
from ..protocol.errors import ConnectionLost, SockftpError, Timeout
from .progress import TransferDisplay, bars_wanted

EXIT_SERVER_ERROR = 1  # the server refused: not found, exists, not empty...
EXIT_USAGE = 2  # click's status for a bad command line
EXIT_CONNECTION = 3  # could not connect, or the connection broke
EXIT_LOCAL = 4  # a local file could not be read or written
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports a process it ended

#: Attempts a transfer makes to reconnect and resume after the connection
#: breaks (--retries): behind a balancer, enough to outlast a node's death.
TRANSFER_RETRIES = 5


#: Each command of ``main`` and the module of this package that defines it.
#: A command's module is imported only when that command runs (or ``--help``
#: lists them all): ``sockftp sync`` must not pay for the server's config,
#: argon2 or the shell, since a whole command's start-up is part of its time.
COMMAND_MODULES = {
    "get": "files",
    "ls": "files",
    "mkdir": "files",
    "mv": "files",
    "ping": "files",
    "put": "files",
    "quota": "files",
    "rm": "files",
    "rmdir": "files",
    "stat": "files",
    "serve": "serve",
    "shell": "shell",
    "sync": "sync",
    "token": "accounts",
    "user": "accounts",
}


class LazyGroup(click.Group):
    """A group whose commands are registered by their module, imported on first use (:data:`COMMAND_MODULES`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            # The module registers its commands on main as it is imported.
            importlib.import_module(f"{__package__}.{module}")
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sockftp")
def main() -> None:
    """sockftp: a fast, resumable, verified file-transfer server and client."""


# -- failures ------------------------------------------------------------------------


class Failure(click.ClickException):
    """A failed client command: one line on stderr, and its exit status."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"sockftp: {self.message}", err=True)


class Interrupted(Failure):
    """A transfer cut short by Ctrl-C (status 130) or a lost connection
    (status 3): its one line says how far it got and how to resume it."""

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def is_connection_failure(exc: BaseException) -> bool:
    """The connection broke or went silent (SSLError is an OSError, but not a local one)."""
    # ssl is not imported for a plaintext command (it costs start-up time);
    # if it is not loaded, no SSLError can have been raised.
    ssl = sys.modules.get("ssl")
    return isinstance(exc, (ConnectionLost, Timeout)) or (ssl is not None and isinstance(exc, ssl.SSLError))


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
    if is_connection_failure(exc):
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
        retries: int = TRANSFER_RETRIES,
    ):
        self.retries = retries
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
        client = Client(
            self.host,
            self.port,
            timeout=self.timeout,
            retries=self.retries,
            user=self.user,
            password=password,
            token=token,
            keep_token=keep_token,
            tls=self.tls,
            tls_ca=self.tls_ca,
            insecure=self.insecure,
        )
        client.on_retry = report_retry
        return client


def report_retry(attempt: int, retries: int, delay: float, error: SockftpError) -> None:
    """One line on stderr for each reconnect of a transfer (or a request a
    draining server turned away)."""
    click.echo(
        f"sockftp: {error_message(error)}; reconnecting in {delay:g} s (attempt {attempt} of {retries})", err=True
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
    @click.option(
        "--retries",
        envvar="SOCKFTP_RETRIES",
        show_envvar=True,
        default=TRANSFER_RETRIES,
        show_default=True,
        type=click.IntRange(0, 100),
        help="Times a transfer reconnects and resumes after its connection breaks (each said on one line); 0: never.",
    )
    @functools.wraps(func)
    def run(host, port, timeout, user, tls, tls_ca, insecure, retries, **kwargs):
        if insecure and tls_ca is not None:
            raise click.UsageError("--insecure and --tls-ca contradict each other: choose one")
        try:
            return func(ServerAddress(host, port, timeout, user, tls, tls_ca, insecure, retries), **kwargs)
        except KeyboardInterrupt:
            # Not click's "Aborted!" and status 1: a transfer says more itself (Interrupted).
            raise Failure("interrupted", EXIT_INTERRUPTED) from None
        except (SockftpError, OSError) as exc:
            message = error_message(exc)
            if getattr(exc, "code", None) == "auth_required":
                message = "this server needs a login: use --user NAME or set SOCKFTP_USER"
            elif getattr(exc, "code", None) == "auth_failed" and os.environ.get("SOCKFTP_TOKEN") and user:
                message += "; get a new token with: sockftp token new (or unset SOCKFTP_TOKEN)"
            raise Failure(message, exit_status(exc)) from None

    return run


def command_line() -> str:
    """The client command running now, as a shell line that runs it again:
    ``sockftp``, the command, the options given on its command line (those
    from the environment or defaults apply again by themselves), then its
    arguments, each quoted as the shell needs."""
    ctx = click.get_current_context()
    options, arguments = [], []
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            if value is not None:
                arguments.append(str(value))
        elif ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE and value is not None:
            if param.is_flag:
                if value:
                    options.append(param.opts[0])
            else:
                options += [param.opts[0], str(value)]
    if any(argument.startswith("-") for argument in arguments):
        arguments.insert(0, "--")  # or an argument would read as an option
    return shlex.join(["sockftp", ctx.info_name, *options, *arguments])


def display_options(func):
    """-q/--quiet and --progress, for commands that transfer files."""
    func = click.option(
        "--progress", "force_progress", is_flag=True, help="Show progress bars even when not on a terminal."
    )(func)
    return click.option("-q", "--quiet", is_flag=True, help="No progress bars and no summary line.")(func)


def make_display(quiet: bool, force_progress: bool, out=None) -> TransferDisplay:
    return TransferDisplay(bars=bars_wanted(quiet, force_progress), quiet=quiet, force_terminal=force_progress, out=out)


recursive_option = click.option("-r", "--recursive", is_flag=True, help="Transfer a directory and all it holds.")
