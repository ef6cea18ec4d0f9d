"""The client commands on remote files: put, get, ls, stat, mkdir, rmdir, rm, mv, plus ping and quota.

Each connects, does one thing and exits (see :mod:`sockftp.cli.base`). The
helpers that do the work (:func:`upload`, :func:`download`, :func:`move`,
:func:`stat_lines`) are shared with :mod:`sockftp.cli.shell`, so a command
behaves the same in both. They report only through the display they are
given and fail by raising, never by exiting: the shell goes on after a
failure. A transfer cut short by Ctrl-C or a lost connection raises
:class:`~sockftp.cli.base.Interrupted`, whose line says how far it got and
how to resume it (the command given as *again*).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import time
from contextlib import contextmanager

import click

from ..protocol.entries import DIRECTORY, FILE
from ..protocol.errors import NotADirectory, NotFound, SockftpError
from .base import (
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    Interrupted,
    client_command,
    command_line,
    display_options,
    error_message,
    is_connection_failure,
    main,
    make_display,
    recursive_option,
)
from .format import format_entry, format_quota, format_stat, remote_absolute, remote_join, remote_name
from .progress import TransferDisplay, describe_interruption, describe_transfer

# -- what the commands do, shared with the shell -------------------------------------------------


def is_remote_directory(client, path: str) -> bool:
    try:
        return client.stat(path).type == DIRECTORY
    except NotFound:
        return False


def upload(
    client,
    local: str,
    remote: str | None,
    *,
    recursive: bool,
    display: TransferDisplay,
    cwd: str = "/",
    again: str = "the same command",
):
    """Put file *local* to *remote*: by default its name in the remote cwd;
    inside *remote* if that is a directory or ends with ``/``. With
    *recursive*, put directory *local* as directory *remote* (by default its
    name), creating it or adding to it. Prints a summary on *display*.
    Raises Interrupted, which names *again* as the command that resumes."""
    if recursive:
        if not os.path.isdir(local):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), local)
        target = remote or os.path.basename(os.path.abspath(local))
        display.counter, display.files = True, count_local_files(local)
        started = time.monotonic()
        with reported("put", local, remote_absolute(cwd, target), display, again, tree=True), display:
            results = client.put_tree(local, target, progress=display, on_file=display.start_file)
    else:
        if os.path.isdir(local):
            raise IsADirectoryError(errno.EISDIR, "Is a directory (use -r)", local)
        name = os.path.basename(local)
        target = remote if remote is not None else name
        if remote is not None and (remote.endswith("/") or is_remote_directory(client, remote)):
            target = remote_join(remote, name)
        started = time.monotonic()
        with reported("put", local, remote_absolute(cwd, target), display, again, tree=False), display:
            display.start_file(local)
            results = [client.put(local, target, progress=display)]
    seconds = time.monotonic() - started
    display.summary(describe_transfer("put", local, remote_absolute(cwd, target), results, seconds))
    return results


def download(
    client,
    remote: str,
    local: str | None,
    *,
    recursive: bool,
    display: TransferDisplay,
    cwd: str = "/",
    again: str = "the same command",
):
    """Get file *remote* to *local*: by default its name in the local
    directory; inside *local* if that is a directory. With *recursive*, get
    directory *remote* as directory *local* (by default its name). Prints a
    summary on *display*. Raises Interrupted, which names *again* as the
    command that resumes."""
    source = remote_absolute(cwd, remote)
    if recursive:
        if client.stat(remote).type != DIRECTORY:
            raise NotADirectory(f"not a directory: {source}")
        target = local or posixpath.basename(source)
        if not target:
            raise click.UsageError("name the local directory to get the root directory into")
        display.counter = True
        started = time.monotonic()
        with reported("get", source, target, display, again, tree=True), display:
            results = client.get_tree(remote, target, progress=display, on_file=display.start_file)
    else:
        started = time.monotonic()
        with reported("get", source, local_target(remote, local), display, again, tree=False), display:
            display.start_file(remote)
            results = [client.get(remote, local, progress=display)]
        source, target = results[0].path, results[0].local
    seconds = time.monotonic() - started
    display.summary(describe_transfer("get", source, target, results, seconds))
    return results


@contextmanager
def reported(verb: str, source: str, target: str, display: TransferDisplay, again: str, *, tree: bool):
    """Turn Ctrl-C or a lost connection inside into Interrupted: one line
    that says how far the transfer got, by *display*'s count, and that
    *again* resumes it. Put it outside the display's own ``with``, so that
    the bars are gone before the line is written."""
    try:
        yield
    except KeyboardInterrupt:
        line = describe_interruption(verb, source, target, display, tree=tree)
        raise Interrupted(f"{line}; run the same command to resume: {again}", EXIT_INTERRUPTED) from None
    except (SockftpError, OSError) as exc:
        if not is_connection_failure(exc):
            raise
        line = describe_interruption(verb, source, target, display, tree=tree, reason=error_message(exc))
        raise Interrupted(f"{line}; run the same command to resume: {again}", EXIT_CONNECTION) from None


def local_target(remote: str, local: str | None) -> str:
    """Where get puts file *remote*, as Client.get chooses (its name, or inside *local* if that is a directory)."""
    name = remote.rstrip("/").rsplit("/", 1)[-1]
    if local is None:
        return name
    return os.path.join(local, name) if os.path.isdir(local) else local


def move(client, source: str, target: str) -> None:
    """Rename *source* to *target*, or into *target* if it is a directory."""
    if target.endswith("/") or is_remote_directory(client, target):
        target = remote_join(target, remote_name(source))
    client.mv(source, target)


def count_local_files(directory: str) -> int:
    """The files put_tree will send from *directory* (it follows no
    directory links, as os.walk does not)."""
    return sum(os.path.isfile(os.path.join(root, name)) for root, _dirs, files in os.walk(directory) for name in files)


def stat_lines(client, path: str, checksum: bool, cwd: str = "/") -> list[str]:
    entry = client.stat(path)
    # Client.stat drops the checksum from its reply, so ask for it apart.
    value = client.checksum(path) if checksum and entry.type == FILE else None
    return format_stat(remote_absolute(cwd, path), entry, value)


# -- the client commands ---------------------------------------------------------------------


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
        upload(
            client,
            local,
            remote,
            recursive=recursive,
            display=make_display(quiet, force_progress),
            again=command_line(),
        )


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
        download(
            client,
            remote,
            local,
            recursive=recursive,
            display=make_display(quiet, force_progress),
            again=command_line(),
        )


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
