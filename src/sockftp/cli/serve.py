"""``sockftp serve``: run a server (and its FTP and HTTP fronts, if asked) until SIGINT or SIGTERM.

Only the command line of the server lives here: its options, the settings
they override, the start-up lines, and the signals that stop it. What the
server does belongs to :mod:`sockftp.server`; this module must never
reach into a running server beyond starting and stopping it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click

from .. import __version__
from ..protocol import limits
from .base import main


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
    "--db",
    metavar="URL|FILE",
    default=None,
    help="The account database: postgresql://... (shared by every node on it) or a SQLite file."
    "  [default: $SOCKFTP_DB, or ROOT/.sockftp/users.db]",
)
@click.option(
    "--storage",
    metavar="s3://BUCKET/PREFIX",
    default=None,
    help="Keep files in an S3 bucket instead of ROOT (endpoint and credentials from AWS_ENDPOINT_URL,"
    " AWS_ACCESS_KEY_ID... as for any AWS tool). See docs/DEPLOY.md.",
)
@click.option(
    "--s3-part-size",
    metavar="SIZE",
    default=None,
    help="Part size of S3 multipart uploads (at least 5M).  [default: 8M]",
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
    "--drain-grace",
    "shutdown_grace",
    default=limits.SHUTDOWN_GRACE,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds running transfers get to finish on SIGTERM/SIGINT (the node drains: it stops accepting at once).",
)
@click.option(
    "--fsync/--no-fsync",
    default=False,
    help="fsync every upload before it becomes visible (durable, slower).  [default: no]",
)
@click.option(
    "--min-free",
    metavar="SIZE|N%",
    default=None,
    help="Disk space kept free: uploads that would eat into it are refused at once (2G, 5%).  "
    "[default: the smaller of 1% and 1G]",
)
@click.option(
    "--lease-time",
    metavar="SECONDS",
    type=click.FloatRange(min=0.3),
    default=60.0,
    show_default=True,
    help="How long an upload's reservation outlives a server that died (renewed every third of it).",
)
@click.option(
    "--partial-ttl",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=limits.PARTIAL_TTL,
    show_default=True,
    help="Remove partial uploads untouched for this long.",
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
    "--password-cache-time",
    default=limits.PASSWORD_CACHE_TIME,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a verified password lets the same login again skip argon2; 0: check every login.",
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
@click.option(
    "--proxy-protocol/--no-proxy-protocol",
    default=False,
    help="Behind a balancer: every connection (native, FTP and HTTP) must start with a PROXY v2 header, "
    "which gives the client's real address.  [default: no]",
)
@click.option(
    "--proxy-trusted",
    metavar="CIDR,...",
    default=None,
    help="The balancers' addresses: only they may connect while --proxy-protocol is on.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes on the same ports (SO_REUSEPORT), one per core; they share the account store as nodes do.",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also serve HTTP on this port (0 picks a free one): the file API, tus uploads and the browser UI."
    " See docs/HTTP.md.  [default: no HTTP]",
)
@click.option("--http-host", default=None, help="Address the HTTP port listens on.  [default: --host]")
@click.option(
    "--tus-expiry",
    default=24 * 3600.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an unfinished tus upload is kept (its Upload-Expires).",
)
def serve(config_file, **settings) -> None:
    """Run a server until SIGINT or SIGTERM.

    Settings come from the defaults, then the --config file, then the
    options given here.
    """

    from ..server import audit
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

    # Several workers write one log: each line says which (its process id).
    tag = " [%(process)d]" if config.workers > 1 else ""
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s",
        stream=sys.stderr,
    )
    try:
        audit.configure(config.audit_log)
    except OSError as exc:
        raise click.ClickException(f"cannot open audit log {config.audit_log}: {exc.strerror or exc}") from None
    if config.workers == 1:
        _run(config, announce=True)
        return
    from .workers import reserve_port, supervise

    try:
        config.port, native = reserve_port(config.host, config.port)
        kept = [native]
        if config.ftp_port is not None:
            config.ftp_port, ftp_socket = reserve_port(config.ftp_host or config.host, config.ftp_port)
            kept.append(ftp_socket)
        if config.http_port is not None:
            config.http_port, http_socket = reserve_port(config.http_host or config.host, config.http_port)
            kept.append(http_socket)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None

    listening = []  # set in the parent once all listen: a worker started again later says nothing

    def worker(index: int, ready) -> int:
        try:
            _run(config, announce=index == 0 and not listening, ready=ready)  # one banner for all
            return 0
        except click.ClickException as exc:
            exc.show()
            return 1

    def all_listening() -> None:
        where = f"{config.host}:{{}}" if ":" not in config.host else f"[{config.host}]:{{}}"
        click.echo(f"{config.workers} workers")
        click.echo(f"sockftp listening on {where.format(config.port)}")
        if config.ftp_port is not None:
            click.echo(f"sockftp FTP listening on {(config.ftp_host or config.host)}:{config.ftp_port}")
        if config.http_port is not None:
            click.echo(f"sockftp HTTP listening on {(config.http_host or config.host)}:{config.http_port}")
        sys.stdout.flush()
        listening.append(True)

    status = supervise(config.workers, worker, kept, all_listening)
    if status == 0:
        click.echo("sockftp stopped")
    sys.exit(status)


def _run(config, announce: bool, ready=None) -> None:
    """Serve until a signal ends it: one process (of --workers'), its native,
    FTP and HTTP doors. *announce*: print the start-up lines. *ready*: called
    once it listens, instead of printing where (a worker's parent does)."""
    import shlex

    from .. import ftp, http
    from ..accounts import StoreError
    from ..protocol.tls import TlsSetupError
    from ..server import SockftpServer

    say = click.echo if announce else _silent
    try:
        server = SockftpServer(config)
    except TlsSetupError as exc:
        raise click.ClickException(str(exc)) from None
    except StoreError as exc:
        raise click.ClickException(f"cannot open the account database: {exc}") from None
    except ImportError as exc:  # a postgresql:// URL without the postgres extra
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    try:
        ftp_server = ftp.start(server)
    except OSError as exc:
        server.stop(0)
        where = f"{config.ftp_host or config.host}:{config.ftp_port}"
        raise click.ClickException(f"cannot listen for FTP on {where}: {exc.strerror or exc}") from None
    try:
        http_server = http.start(server)
    except OSError as exc:
        server.stop(0)
        where = f"{config.http_host or config.host}:{config.http_port}"
        raise click.ClickException(f"cannot listen for HTTP on {where}: {exc.strerror or exc}") from None

    def on_signal(signum, _frame):
        logging.getLogger("sockftp").info("received %s, shutting down", signal.Signals(signum).name)
        # stop() waits for serve_forever to return, so it cannot run on the
        # main thread, which is the one inside serve_forever.
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    say(f"sockftp {__version__}: data directory {config.root}")
    if config.storage:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the AWS endpoint"
        say(f"files in {config.storage} at {endpoint}")
    if config.db:
        from ..accounts.stores import describe

        say(f"accounts in {describe(config.db, config.root)}")  # a URL's password left out
    users = server.users.count()
    accounts = f"{users} user{'' if users == 1 else 's'}"
    if config.anonymous:
        also = f"; {accounts} can log in" if users else ""
        say(f"anonymous access is on: clients share {config.root}/anonymous{also}")
    elif users:
        say(f"{accounts}; clients must log in (anonymous access is off)")
    else:
        say(
            f"no users yet: add one with  sockftp user add NAME --root {shlex.quote(config.root)}"
            f"  (or restart with --anonymous to share {config.root}/anonymous)"
        )
    if config.audit_log:
        say(f"audit log: {config.audit_log}")
    if ready is None:
        say(f"sockftp listening on {server.display_address}", nl=True)
        if ftp_server is not None:
            say(f"sockftp FTP listening on {ftp_server.display_address}")
        if http_server is not None:
            say(f"sockftp HTTP listening on {http_server.display_address}")
    sys.stdout.flush()
    if ready is not None:
        ready()
    server.serve_forever()
    # serve_forever returns once stop() has begun; wait for it to finish.
    for thread in threading.enumerate():
        if thread.name == "shutdown":
            thread.join()
    if ready is None:  # (the parent of workers says it once for all)
        say("sockftp stopped")


def _silent(*_args, **_kwargs) -> None:
    """click.echo for the workers that do not announce."""
