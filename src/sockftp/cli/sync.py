"""``sockftp sync up LOCAL REMOTE`` and ``sockftp sync down REMOTE LOCAL``.

Both make the target directory hold what the source holds, moving only
what differs (:meth:`sockftp.client.Client.sync_up`, ``sync_down``;
docs/SYNC.md says how they decide). A run shows one progress bar for the
whole sync on a terminal and prints one summary line; ``--dry-run`` prints
one line per change instead of making it.

Exit statuses are those of put and get (:mod:`sockftp.cli.base`): 0 when
everything is in place. A file that fails does not stop the others: each
failure gets one line on stderr, and the status is that of the first. A
sync cut short by Ctrl-C says so in one line and exits 130; one whose
connection broke for good exits 3. Run the same command again to finish
it: a sync resumes by comparing again.
"""

from __future__ import annotations

import posixpath

import click

from ..client.sync_plan import MODIFY_WINDOW, SyncSummary
from ..protocol.errors import SockftpError
from .base import (
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    Interrupted,
    ServerAddress,
    client_command,
    display_options,
    error_message,
    exit_status,
    main,
    make_display,
)
from .format import printable
from .progress import TransferDisplay, human_size


@main.group()
def sync() -> None:
    """Make a directory the same on both ends, moving only what differs.

    A file is unchanged when its size and modification time match (or,
    with --checksum, its size and content). Times are kept both ways. An
    interrupted sync finishes when run again.
    """


def sync_options(func):
    """--delete, --dry-run, --checksum, --exclude and --modify-window."""
    options = [
        click.option("--delete", is_flag=True, help="Also remove what the source lacks (never excluded names)."),
        click.option("-n", "--dry-run", is_flag=True, help="Change nothing; print what would change, one line each."),
        click.option(
            "-c",
            "--checksum",
            is_flag=True,
            help="Compare files of the same size by content (XXH3-128), not by time. The server answers from"
            " the checksums it keeps; this side reads its files.",
        ),
        click.option(
            "--exclude",
            "exclude",
            multiple=True,
            metavar="PATTERN",
            help="Leave alone, on both sides, the names or relative paths matching this shell pattern"
            " (e.g. '*.tmp', 'build/', 'docs/draft'). A trailing / matches directories only. Repeatable.",
        ),
        click.option(
            "--modify-window",
            type=click.FloatRange(min=0),
            default=MODIFY_WINDOW,
            show_default=True,
            metavar="SECONDS",
            help="Times this close count as the same (2 for a FAT filesystem, which keeps even seconds).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@sync.command("up")
@click.argument("local", type=click.Path(file_okay=False))
@click.argument("remote")
@sync_options
@display_options
@client_command
def up(server, local, remote, delete, dry_run, checksum, exclude, modify_window, quiet, force_progress) -> None:
    """Make remote directory REMOTE (created if missing) the same as local directory LOCAL."""
    run_sync(
        server,
        "up",
        local,
        remote,
        display=make_display(quiet, force_progress),
        delete=delete,
        dry_run=dry_run,
        checksum=checksum,
        exclude=exclude,
        modify_window=modify_window,
    )


@sync.command("down")
@click.argument("remote")
@click.argument("local", type=click.Path(file_okay=False))
@sync_options
@display_options
@client_command
def down(server, remote, local, delete, dry_run, checksum, exclude, modify_window, quiet, force_progress) -> None:
    """Make local directory LOCAL (created if missing) the same as remote directory REMOTE."""
    run_sync(
        server,
        "down",
        remote,
        local,
        display=make_display(quiet, force_progress),
        delete=delete,
        dry_run=dry_run,
        checksum=checksum,
        exclude=exclude,
        modify_window=modify_window,
    )


def run_sync(
    server: ServerAddress, direction: str, source: str, target: str, *, display: TransferDisplay, **options
) -> SyncSummary:
    """Connect to *server* and sync *direction* ("up" or "down") from
    *source* to *target* with *display*'s bar, then print what it did;
    exit with the status of the first failure, if any."""
    what = f"sync {direction} {source} -> {target}"
    connected = False
    try:
        with server.connect() as client:
            connected = True
            method = client.sync_up if direction == "up" else client.sync_down
            with display:
                # The bar's label: the display shows what follows the last "/".
                display.start_file(f"sync {direction} {posixpath.basename(source.rstrip('/')) or 'root'}")
                summary = method(source, target, progress=display, **options)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {what}; run the same command to resume", EXIT_INTERRUPTED) from None
    except SockftpError as exc:
        if not connected or exit_status(exc) != EXIT_CONNECTION:
            raise  # (could not connect at all: said as every command says it)
        message = f"interrupted ({error_message(exc)}): {what}; run the same command to resume"
        raise Interrupted(message, EXIT_CONNECTION) from None
    if summary.dry_run:
        for mark, path in summary.changes:
            click.echo(f"{mark} {printable(path)}")
    for path, exc in summary.failures:
        click.echo(f"sockftp: {printable(path) or '.'}: {error_message(exc)}", err=True)
    display.summary(describe_sync(summary))
    if summary.failures:
        raise click.exceptions.Exit(exit_status(summary.failures[0][1]))
    return summary


def describe_sync(summary: SyncSummary) -> str:
    """The line printed after a sync, e.g.::

    sync up: 1000 files checked, 3 sent (12.0 MiB, 4.1 MiB on the wire with deltas), 2 deleted, 0 failed in 1.2 s
    sync down (dry run): 1000 files checked, 3 to receive (12.0 MiB), 2 to delete
    """
    s = summary
    checked = f"{s.checked} file{'' if s.checked == 1 else 's'} checked"
    if s.dry_run:
        verb = "to send" if s.direction == "up" else "to receive"
        parts = [checked, f"{s.transferred} {verb} ({human_size(s.bytes)})", f"{s.deleted} to delete"]
        return f"sync {s.direction} (dry run): " + ", ".join(parts)
    moved = f"{s.transferred} {'sent' if s.direction == 'up' else 'received'}"
    if s.transferred:
        detail = human_size(s.bytes)
        if s.deltas:
            detail += f", {human_size(s.wire_bytes)} on the wire with deltas"
        elif s.wire_bytes < s.bytes:
            detail += f", {human_size(s.wire_bytes)} on the wire after resuming"
        moved += f" ({detail})"
    parts = [checked, moved]
    if s.touched:
        parts.append(f"{s.touched} with only the time to set")
    parts += [f"{s.deleted} deleted", f"{s.failed} failed"]
    return f"sync {s.direction}: " + ", ".join(parts) + f" in {s.seconds:.2f} s"
