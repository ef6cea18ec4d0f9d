"""The ``sockftp`` command line: ``serve``, and the client commands."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from . import __version__, limits
from .config import ServerConfig, default_root


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sockftp")
def main() -> None:
    """sockftp: a fast, resumable, verified file-transfer server and client."""


@main.command()
@click.option("--host", default=limits.DEFAULT_HOST, show_default=True, help="Address to listen on (IPv4 or IPv6).")
@click.option("--port", default=limits.DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Data directory (created if missing). Default: $SOCKFTP_ROOT or the per-user data directory.")
@click.option("--anonymous", is_flag=True, help="Let clients that never log in read and write ROOT/anonymous.")
@click.option("--max-sessions", default=limits.MAX_SESSIONS, show_default=True, type=click.IntRange(1))
@click.option("--max-sessions-per-ip", default=limits.MAX_SESSIONS_PER_IP, show_default=True, type=click.IntRange(1))
@click.option("--idle-timeout", default=limits.IDLE_TIMEOUT, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a session may wait for its client.")
@click.option("--shutdown-grace", default=limits.SHUTDOWN_GRACE, show_default=True, type=click.FloatRange(min=0),
              help="Seconds running transfers get to finish on SIGTERM/SIGINT.")
@click.option("--fsync", is_flag=True, help="fsync every upload before it becomes visible (durable, slower).")
@click.option("--sendfile", is_flag=True, help="Send downloads with sendfile() instead of a buffered copy loop.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
def serve(host, port, root, anonymous, max_sessions, max_sessions_per_ip, idle_timeout, shutdown_grace, fsync,
          sendfile, log_level) -> None:
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


if __name__ == "__main__":  # pragma: no cover
    main()
