"""``sockftp shell``: an interactive session on one connection, like sftp.

Built on :class:`cmd.Cmd`: one ``do_*`` method per command, whose docstring
is its help (first line: usage). Arguments are split like a POSIX shell
(``shlex``), so ``put "my file.txt"`` works. Remote paths are relative to
the remote working directory, local ones to the process's own (``lcd``
changes it). An error ends the command, never the shell; a lost connection
is re-opened by the next command that needs the server.

With a terminal, the prompt shows the remote directory, Tab completes
remote and local names, and history is kept in ``~/.sockftp_history``. With
a pipe, commands are read one per line, silently, and the exit status is 1
if any of them failed.

The shell reuses what the one-shot commands do (:mod:`sockftp.cli.files`),
so both behave alike. Nothing but the package ``__init__`` may import this
module: it sits on top of the others, and an import back would be a cycle.
"""

from __future__ import annotations

import cmd
import os
import re
import shlex
import sys

import click

from ..protocol.entries import DIRECTORY, FILE, LINK, OTHER, Entry
from ..protocol.errors import FATAL_CODES, ConnectionLost, SockftpError, Timeout
from .base import Interrupted, client_command, display_options, error_message, main, make_display
from .files import download, move, stat_lines, upload
from .format import format_entry, format_quota

HISTORY_FILE = "~/.sockftp_history"
HISTORY_LENGTH = 1000


class UsageError(Exception):
    """A command was given the wrong arguments."""


class Shell(cmd.Cmd):
    """The interactive session. *client* is a connected :class:`~sockftp.client.Client`.

    Args:
        interactive: prompt and complete (default: stdin is a terminal).
        quiet, force_progress: as ``-q`` and ``--progress`` of put and get.
    """

    def __init__(
        self, client, *, stdin=None, stdout=None, stderr=None, interactive=None, quiet=False, force_progress=False
    ):
        super().__init__(stdin=stdin, stdout=stdout)
        self.client = client
        self.stderr = stderr or sys.stderr
        self.interactive = (stdin or sys.stdin).isatty() if interactive is None else interactive
        # cmd reads with input() only if use_rawinput; from a pipe it must
        # read self.stdin, and show no prompt.
        self.use_rawinput = self.interactive
        self.quiet = quiet
        self.force_progress = force_progress
        self.cwd = client.pwd()
        self.lost = False  # the connection broke: reconnect before the next request
        self.failed = False  # some command failed
        self._update_prompt()

    # -- the loop ---------------------------------------------------------------------

    def onecmd(self, line: str) -> bool:
        try:
            return bool(super().onecmd(line))
        except Interrupted as exc:
            # A transfer cut short (Ctrl-C, a lost connection): its line says
            # how far it got and which command resumes it. The stream may be
            # out of step, or gone: a new connection for the next command.
            self.client.close()
            self.lost = True
            self.failed = True
            print(exc.message, file=self.stderr, flush=True)
        except (SockftpError, OSError, UsageError, click.ClickException) as exc:
            if isinstance(exc, (ConnectionLost, Timeout)) or getattr(exc, "code", None) in FATAL_CODES:
                self.lost = True
            message = exc.format_message() if isinstance(exc, click.ClickException) else error_message(exc)
            self._error(message)
        except KeyboardInterrupt:
            # A transfer may be half way: the stream is out of step.
            self.client.close()
            self.lost = True
            self._error("interrupted")
        return False

    def postcmd(self, stop: bool, line: str) -> bool:
        self._update_prompt()
        return stop

    def get_names(self) -> list[str]:
        # EOF is how cmd sees Ctrl-D, not a command to list or complete.
        return [name for name in super().get_names() if name != "do_EOF"]

    def emptyline(self) -> bool:
        return False  # cmd's default repeats the last command: never for rm

    def default(self, line: str) -> None:
        raise UsageError(f"unknown command: {line.split()[0]} (type help)")

    def _update_prompt(self) -> None:
        self.prompt = f"sockftp:{self.cwd}> " if self.interactive else ""

    def _error(self, message: str) -> None:
        self.failed = True
        print(f"error: {message}", file=self.stderr, flush=True)

    def _print(self, line: str) -> None:
        print(line, file=self.stdout)

    def _remote(self):
        """The client, reconnected first if the connection was lost."""
        if self.lost:
            self.client.connect()  # says hello and returns to the remote cwd
            self.lost = False
        return self.client

    def _display(self):
        return make_display(self.quiet, self.force_progress, out=self.stdout)

    def _args(self, command: str, arg: str, least: int, most: int, flags: str = "") -> tuple[set[str], list[str]]:
        """Split *arg*; returns the single-letter *flags* given, and the
        other words, of which there must be *least* to *most*."""
        try:
            words = shlex.split(arg)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(str(exc)) from None
        given = set()
        while words and words[0].startswith("-") and len(words[0]) > 1:
            word = words.pop(0)
            if word == "--":
                break
            if not set(word[1:]) <= set(flags):
                raise UsageError(f"unknown option {word}; usage: {self._usage(command)}")
            given |= set(word[1:])
        if not least <= len(words) <= most:
            raise UsageError(f"usage: {self._usage(command)}")
        return given, words

    def _usage(self, command: str) -> str:
        return getattr(self, f"do_{command}").__doc__.splitlines()[0]

    # -- leaving ----------------------------------------------------------------------

    def do_quit(self, arg: str) -> bool:
        """quit\n\nEnd the session."""
        return True

    def do_exit(self, arg: str) -> bool:
        """exit\n\nEnd the session."""
        return True

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - the name cmd gives end of input
        """EOF\n\nEnd the session (Ctrl-D)."""
        if self.interactive:
            self._print("")
        return True

    # -- remote directories -----------------------------------------------------------

    def do_cd(self, arg: str) -> None:
        """cd [PATH]\n\nChange the remote directory (default: /)."""
        _, words = self._args("cd", arg, 0, 1)
        self.cwd = self._remote().cd(words[0] if words else "/")

    def do_pwd(self, arg: str) -> None:
        """pwd\n\nShow the remote directory."""
        self._args("pwd", arg, 0, 0)
        self._print(self._remote().pwd())

    def do_ls(self, arg: str) -> None:
        """ls [PATH]\n\nList a remote directory, like ls -l."""
        _, words = self._args("ls", arg, 0, 1)
        for entry in self._remote().ls(words[0] if words else ""):
            self._print(format_entry(entry))

    def do_mkdir(self, arg: str) -> None:
        """mkdir [-p] PATH\n\nCreate a remote directory (-p: and its parents, no error if it exists)."""
        flags, words = self._args("mkdir", arg, 1, 1, flags="p")
        self._remote().mkdir(words[0], parents="p" in flags)

    def do_rmdir(self, arg: str) -> None:
        """rmdir PATH\n\nRemove an empty remote directory."""
        _, words = self._args("rmdir", arg, 1, 1)
        client = self._remote()
        client.rmdir(words[0])
        # Removing the working directory moves the server's session to the
        # parent, but not the client's memory of it, which a reconnect
        # would cd back into: follow the server.
        cwd = client.pwd()
        if cwd != self.cwd:
            self.cwd = client.cd(cwd)

    def do_rm(self, arg: str) -> None:
        """rm PATH\n\nRemove a remote file."""
        _, words = self._args("rm", arg, 1, 1)
        self._remote().rm(words[0])

    def do_mv(self, arg: str) -> None:
        """mv SOURCE TARGET\n\nRename a remote file or directory, or move it into TARGET if that is a directory."""
        _, words = self._args("mv", arg, 2, 2)
        move(self._remote(), words[0], words[1])

    def do_stat(self, arg: str) -> None:
        """stat [-c] PATH\n\nShow a remote file's type, size and time (-c: and checksum)."""
        flags, words = self._args("stat", arg, 1, 1, flags="c")
        for line in stat_lines(self._remote(), words[0], "c" in flags, cwd=self.cwd):
            self._print(line)

    def do_quota(self, arg: str) -> None:
        """quota\n\nShow how much you store and your limits."""
        self._args("quota", arg, 0, 0)
        for line in format_quota(self._remote().quota()):
            self._print(line)

    # -- transfers --------------------------------------------------------------------

    def do_put(self, arg: str) -> None:
        """put [-r] LOCAL [REMOTE]\n\nUpload a file (-r: a directory), by default to its name here."""
        flags, words = self._args("put", arg, 1, 2, flags="r")
        remote = words[1] if len(words) > 1 else None
        again = _command_line("put", flags, words)
        upload(
            self._remote(), words[0], remote, recursive="r" in flags, display=self._display(), cwd=self.cwd, again=again
        )

    def do_get(self, arg: str) -> None:
        """get [-r] REMOTE [LOCAL]\n\nDownload a file (-r: a directory), by default to its name here."""
        flags, words = self._args("get", arg, 1, 2, flags="r")
        local = words[1] if len(words) > 1 else None
        again = _command_line("get", flags, words)
        download(
            self._remote(), words[0], local, recursive="r" in flags, display=self._display(), cwd=self.cwd, again=again
        )

    # -- the local side ---------------------------------------------------------------

    def do_lcd(self, arg: str) -> None:
        """lcd [DIR]\n\nChange the local directory (default: home)."""
        _, words = self._args("lcd", arg, 0, 1)
        os.chdir(os.path.expanduser(words[0] if words else "~"))

    def do_lpwd(self, arg: str) -> None:
        """lpwd\n\nShow the local directory."""
        self._args("lpwd", arg, 0, 0)
        self._print(os.getcwd())

    def do_lls(self, arg: str) -> None:
        """lls [DIR]\n\nList a local directory, like ls."""
        _, words = self._args("lls", arg, 0, 1)
        with os.scandir(os.path.expanduser(words[0] if words else ".")) as entries:
            for item in sorted(entries, key=lambda e: e.name):
                self._print(format_entry(_local_entry(item)))

    # -- completion -------------------------------------------------------------------
    # cmd calls complete_NAME(text, line, begidx, endidx) for the argument
    # under the cursor; text is line[begidx:endidx], split at whitespace
    # only (see run_shell), so it holds the whole path typed so far.

    def complete_cd(self, text, line, begidx, endidx):
        return self._complete(line, begidx, endidx, remote=True, dirs_only=True)

    def complete_put(self, text, line, begidx, endidx):
        # put LOCAL REMOTE
        return self._complete(line, begidx, endidx, remote=_argument_index(line, begidx) > 0)

    def complete_get(self, text, line, begidx, endidx):
        # get REMOTE LOCAL
        return self._complete(line, begidx, endidx, remote=_argument_index(line, begidx) == 0)

    def complete_lcd(self, text, line, begidx, endidx):
        return self._complete(line, begidx, endidx, remote=False, dirs_only=True)

    def complete_lls(self, text, line, begidx, endidx):
        return self._complete(line, begidx, endidx, remote=False, dirs_only=True)

    def _complete_remote(self, text, line, begidx, endidx):
        return self._complete(line, begidx, endidx, remote=True)

    complete_ls = complete_mv = complete_rm = complete_rmdir = complete_stat = complete_mkdir = _complete_remote

    def _complete(self, line: str, begidx: int, endidx: int, remote: bool, dirs_only: bool = False) -> list[str]:
        # readline splits at every space, but a\ b is one argument: find
        # where it starts, complete it whole, and return what goes after begidx.
        start = _argument_start(line, begidx)
        typed = line[start:endidx]
        partial = _unescape(typed)
        directory, _, prefix = partial.rpartition("/")
        if partial.startswith("/") and not directory:
            directory = "/"
        listing = directory if not directory or directory.endswith("/") else directory + "/"
        try:
            names = self._remote_names(listing) if remote else _local_names(listing)
        except (SockftpError, OSError):
            return []
        already = line[start:begidx]
        matches = []
        for name, is_dir in names:
            if name.startswith(prefix) and (is_dir or not dirs_only):
                candidate = _escape(listing + name) + ("/" if is_dir else "")
                if candidate.startswith(already):
                    matches.append(candidate[len(already) :])
        return sorted(matches)

    def _remote_names(self, directory: str) -> list[tuple[str, bool]]:
        if self.lost:
            return []  # do not reconnect in the middle of typing
        return [(e.name, e.type == DIRECTORY) for e in self.client.ls(directory)]


# -- the command: sockftp shell ---------------------------------------------------------------


@main.command()
@display_options
@client_command
def shell(server, quiet, force_progress) -> None:
    """Interactive session: cd, ls, put, get, lcd, ... (type help).

    Commands may also come from a pipe, one per line.
    """
    with server.connect() as client:
        status = run_shell(client, quiet=quiet, force_progress=force_progress)
    click.get_current_context().exit(status)


def run_shell(client, *, quiet: bool = False, force_progress: bool = False) -> int:
    """Run a shell on stdin until quit or end of input. Returns the exit status."""
    shell = Shell(client, quiet=quiet, force_progress=force_progress)
    readline = _setup_readline() if shell.interactive else None
    try:
        while True:
            try:
                shell.cmdloop()
                break
            except KeyboardInterrupt:
                # Ctrl-C at the prompt drops the line, as in bash.
                shell.stdout.write("^C\n")
    finally:
        if readline is not None:
            try:
                readline.write_history_file(os.path.expanduser(HISTORY_FILE))
            except OSError:
                pass  # a read-only home must not turn a good session into a failure
    return 1 if shell.failed and not shell.interactive else 0


def _setup_readline():
    try:
        import readline
    except ImportError:  # not every Python has it; the shell works without
        return None
    # Split words at whitespace only, so a path is completed as one word.
    readline.set_completer_delims(" \t\n")
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(os.path.expanduser(HISTORY_FILE))
    except OSError:
        pass
    return readline


# -- helpers --------------------------------------------------------------------------


def _command_line(command: str, flags: set[str], words: list[str]) -> str:
    """A shell command line that runs *command* with *flags* and *words* again."""
    options = [f"-{''.join(sorted(flags))}"] if flags else []
    if any(word.startswith("-") for word in words):
        options.append("--")
    return shlex.join([command, *options, *words])


def _argument_start(line: str, begidx: int) -> int:
    """Where the argument that readline's word at *begidx* belongs to begins."""
    start = begidx
    while start >= 2 and line[start - 1] == " " and line[start - 2] == "\\":
        start = line.rfind(" ", 0, start - 2) + 1
    return start


def _argument_index(line: str, begidx: int) -> int:
    """Which argument (0 = the first after the command and its flags) is at *begidx*."""
    try:
        words = shlex.split(line[: _argument_start(line, begidx)])[1:]
    except ValueError:
        return 0
    return len([w for w in words if not w.startswith("-")])


_SPECIAL = re.compile(r"""([\s\\'"])""")


def _escape(name: str) -> str:
    return _SPECIAL.sub(r"\\\1", name)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _local_names(directory: str) -> list[tuple[str, bool]]:
    with os.scandir(os.path.expanduser(directory) or ".") as entries:
        return [(e.name, e.is_dir()) for e in entries]


def _local_entry(item: os.DirEntry) -> Entry:
    st = item.stat(follow_symlinks=False)
    if item.is_symlink():
        kind = LINK
    elif item.is_dir(follow_symlinks=False):
        kind = DIRECTORY
    elif item.is_file(follow_symlinks=False):
        kind = FILE
    else:
        kind = OTHER
    return Entry(item.name, kind, st.st_size, st.st_mtime)
