"""Accounts from the command line: ``sockftp user ...`` and ``sockftp token ...``.

``sockftp user`` administers the account database of a data directory
directly, on the server's machine, with no server running.
``sockftp token`` asks a server, as a client, for a re-login token or to
revoke them. Neither ever takes a password on the command line, nor
prints one, nor writes a token anywhere but stdout.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import click

from ..protocol.errors import NotFound, SockftpError
from ..server.config import MAX_SIZE, default_root, parse_size
from .base import EXIT_LOCAL, EXIT_SERVER_ERROR, Failure, client_command, error_message, exit_status, main
from .format import echo_table
from .progress import human_size

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
    """Give a ``sockftp user`` command the same --root, --db and --config as
    serve (passed on as *root*, never None, and *db*), and turn its
    failures into one line on stderr: status 1 when the account database
    refuses (no such user, exists), 4 when a local file or the database
    itself fails. As for serve, --db wins over the config file's ``db``,
    which wins over $SOCKFTP_DB; the same for --root and ``root``."""

    @click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="The server's TOML config file, for its root and db (see docs/CONFIG.md).",
    )
    @click.option(
        "--root",
        type=click.Path(file_okay=False),
        default=None,
        help="The server's data directory. Default: $SOCKFTP_ROOT or the per-user data directory.",
    )
    @click.option(
        "--db",
        metavar="URL|FILE",
        default=None,
        help="The account database: postgresql://... or a SQLite file. Default: $SOCKFTP_DB or ROOT/.sockftp/users.db.",
    )
    @functools.wraps(func)
    def run(root, db, config_file, **kwargs):
        import sqlite3

        from ..accounts import StoreError
        from ..accounts.stores import describe
        from ..server.config import ConfigError, load_config

        if config_file is not None:
            try:
                config = load_config(config_file, {"root": root, "db": db})
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from None
            root, db = config.root, config.db  # the file's, unless given here; then $SOCKFTP_DB
        root = root or default_root()
        db = db or os.environ.get("SOCKFTP_DB") or None
        try:
            return func(root=root, db=db, **kwargs)
        except (SockftpError, OSError) as exc:
            raise Failure(error_message(exc), exit_status(exc)) from None
        except (sqlite3.Error, StoreError) as exc:
            where = describe(db, root) if db else f"in {root}"
            raise Failure(f"account database {where}: {exc}", EXIT_LOCAL) from None
        except ImportError as exc:  # a postgresql:// URL without the postgres extra
            raise Failure(str(exc), EXIT_LOCAL) from None

    return run


def storage_option(func):
    """``--storage``: where the homes are, as ``serve --storage`` takes it."""
    return click.option(
        "--storage",
        metavar="s3://BUCKET/PREFIX",
        envvar="SOCKFTP_STORAGE",
        default=None,
        help="The server's --storage, if its files are in an S3 bucket.  [env var: SOCKFTP_STORAGE]",
    )(func)


class _Accounts:
    """The account store of data directory *root*, opened on entry (and
    created only if *create*) and closed on exit."""

    def __init__(self, root: str, db: str | None = None, create: bool = False):
        self.root = root
        self.db = db
        self.create = create
        self.store = None

    def __enter__(self):
        from ..accounts.stores import is_url, open_store, sqlite_path

        # A SQLite file is created only by a command that adds; a database
        # server is always there to ask.
        if self.create or is_url(self.db) or os.path.exists(sqlite_path(self.db, self.root)):
            self.store = open_store(self.db, self.root)
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

    def usage(self, name: str):
        """*name*'s stored usage (a StoredUsage), or None."""
        return self.store.usage(name) if self.store is not None else None


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
def user_add(root, db, name, quota, max_files, read_only, password_stdin) -> None:
    """Add user NAME, whose files live in ROOT/users/NAME.

    The password is asked for twice on a terminal, or read from stdin with
    --password-stdin (e.g. from a secrets manager). It never goes on the
    command line.
    """
    from ..accounts import Account, hash_password

    with _Accounts(root, db, create=True) as accounts:
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
@storage_option
@admin_command
def user_del(root, db, name, delete_files, storage) -> None:
    """Delete user NAME. Their files stay, unless --delete-files.

    Sessions already logged in as NAME go on until they end.
    """
    import shutil

    if storage and delete_files:
        raise click.UsageError("--delete-files cannot delete a home in an S3 bucket yet: delete its keys there")
    home = home_directory(root, name)
    with _Accounts(root, db) as accounts:
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
@click.option("--measure", is_flag=True, help="Read every home for its usage, instead of the stored figures.")
@storage_option
@admin_command
def user_list(root, db, as_json, measure, storage) -> None:
    """List the users with their limits and what they store.

    Usage comes from the account database, which the server keeps exact as
    files come and go, so listing costs nothing per file. A home whose
    usage was never measured (a new account, or a store just migrated) is
    read, partial uploads included; so is every home with --measure.
    """
    with _Accounts(root, db) as accounts:
        users = accounts.list()
        stored = [None if measure else accounts.usage(account.name) for account in users]
        if not users:
            if not as_json:
                click.echo(f"no users in {root}; add one with: sockftp user add NAME", err=True)
            return
        usages = _usages(root, storage, accounts.store, users, stored)
    if as_json:
        for account, (used_bytes, used_files, source) in zip(users, usages, strict=True):
            record = {
                "name": account.name,
                "quota_bytes": account.quota_bytes,
                "max_files": account.max_files,
                "read_only": account.read_only,
                "disabled": account.disabled,
                "used_bytes": used_bytes,
                "used_files": used_files,
                "usage": source,
            }
            click.echo(json.dumps(record))
        return
    rows = [("NAME", "QUOTA", "USED", "FILES", "MAX FILES", "FLAGS")]
    for account, (used_bytes, used_files, _source) in zip(users, usages, strict=True):
        quota = "unlimited" if account.quota_bytes is None else human_size(account.quota_bytes)
        max_files = "unlimited" if account.max_files is None else str(account.max_files)
        flags = ",".join(f for f, on in (("read-only", account.read_only), ("disabled", account.disabled)) if on) or "-"
        rows.append((account.name, quota, human_size(used_bytes), str(used_files), max_files, flags))
    echo_table(rows)


def _usages(root, storage, store, users, stored) -> list[tuple[int, int, str]]:
    """(bytes, files, "stored" or "measured") for each of *users*: the
    stored usage where there is one, else what their home holds now, in
    the data directory *root* or the ``s3://`` URL *storage*."""
    from ..server.config import user_home
    from ..server.rescan import open_homes

    homes = None
    result = []
    try:
        for account, usage in zip(users, stored, strict=True):
            if usage is not None and usage.used_bytes is not None and usage.used_files is not None:
                result.append((usage.used_bytes, usage.used_files, "stored"))
                continue
            if homes is None:
                homes = open_homes(root, storage, store)
            measured = homes.usage(user_home(account.name))
            result.append((measured.bytes, measured.files, "measured"))
    finally:
        if homes is not None:
            homes.close()
    return result


@user.command("passwd")
@name_argument
@password_stdin_option
@admin_command
def user_passwd(root, db, name, password_stdin) -> None:
    """Change the password of user NAME.

    The new password is asked for twice on a terminal, or read from stdin
    with --password-stdin. Sessions already logged in go on; the old
    password and every re-login token of NAME stop working at once.
    """
    from ..accounts import hash_password

    with _Accounts(root, db) as accounts:
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
def user_set(root, db, name, quota, max_files, read_only, disabled) -> None:
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
    with _Accounts(root, db) as accounts:
        accounts.get(name)
        account = accounts.store.update(name, **changes)
    click.echo(f"user {name}: {describe_limits(account)}")


@user.command("tokens")
@name_argument
@admin_command
def user_tokens(root, db, name) -> None:
    """List the live re-login tokens of user NAME.

    Each is shown by its id (as the audit log names it), never by its
    value, which the server does not know.
    """
    from ..accounts import token_id

    with _Accounts(root, db) as accounts:
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
def user_revoke_tokens(root, db, name) -> None:
    """Revoke every re-login token of user NAME.

    Their next login needs the password. Sessions already logged in go on.
    """
    with _Accounts(root, db) as accounts:
        accounts.get(name)
        count = accounts.store.revoke_tokens(name)
    click.echo(f"revoked {count} token{'' if count == 1 else 's'} of {name}")


# -- re-login tokens, asked of a server: sockftp token ... ------------------------------------


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


def _check_optional_user_name(ctx, param, value):
    return None if value is None else _check_user_name(ctx, param, value)


@user.command("rescan")
@click.argument("name", required=False, callback=_check_optional_user_name)
@click.option("--all", "everyone", is_flag=True, help="Every user.")
@storage_option
@admin_command
def user_rescan(root, db, name, everyone, storage) -> None:
    """Measure what NAME's home holds (every user's with --all) and store
    it as their usage.

    The server keeps each account's usage in the account database and
    never walks a home at login. Run this after files in a home were
    changed behind its back, or after a power cut. A running server takes
    the new figure at the user's next login with none of their sessions
    open. Run it while the user is idle: what they change during the
    measure may be missed.
    """
    from ..server.rescan import rescan_root

    if (name is None) == (not everyone):
        raise click.UsageError("give a user NAME, or --all")
    measured = 0
    for result in rescan_root(root, name, db, storage):
        click.echo(result.describe())
        measured += 1
    if everyone and not measured:
        click.echo(f"no users in {root}; add one with: sockftp user add NAME", err=True)
