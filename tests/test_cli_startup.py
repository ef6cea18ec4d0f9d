"""What a client command loads: a command's start-up is part of its time
(``sockftp sync`` is measured whole against rsync), so ``sync`` and
``--version`` must import only what they run: no server, no account
store, no argon2, no TLS on a plaintext connection, no other command."""

from __future__ import annotations

import os
import subprocess
import sys

import click

import sockftp
from sockftp.cli import main
from sockftp.cli.base import COMMAND_MODULES

#: Never loaded by a plaintext client command (the server's side, and
#: modules slow to import that a sync does not need).
SERVER_SIDE = (
    "sockftp.server",
    "sockftp.storage",
    "sockftp.accounts",
    "sockftp.ftp",
    "sockftp.cli.accounts",
    "sockftp.cli.serve",
    "sockftp.cli.shell",
    "sockftp.cli.files",
    "argon2",
    "sqlite3",
    "ssl",
    "certifi",
    "ctypes",
    "encodings.idna",  # a host name given as str to getaddrinfo
)

#: Run in a fresh interpreter: the command, then the modules it loaded.
_CHILD = """
import sys
from sockftp.cli import main
try:
    main(sys.argv[1:], prog_name="sockftp")
except SystemExit as exc:
    if exc.code:
        raise
print("MODULES", " ".join(sorted(sys.modules)))
"""


def loaded_by(*args: str) -> set[str]:
    """The modules a real ``sockftp ARGS`` process loaded, this checkout's sockftp first on its path."""
    src = os.path.dirname(os.path.dirname(sockftp.__file__))
    env = dict(os.environ, PYTHONPATH=src)
    env.pop("SOCKFTP_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    line = done.stdout.splitlines()[-1]
    assert line.startswith("MODULES "), done.stdout
    return set(line.split()[1:])


def server_side(modules: set[str]) -> list[str]:
    # Startup hooks of the environment (a .pth file) may load some of these
    # before sockftp runs; only what the command itself loads counts, which
    # a bare interpreter tells apart.
    return sorted(m for m in modules - _BARE if m.startswith(SERVER_SIDE))


def _bare_modules() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; print(' '.join(sys.modules))"], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


_BARE = _bare_modules()


def test_a_plaintext_sync_up_loads_neither_the_server_nor_tls(anonymous_server, tmp_path):
    source = tmp_path / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f.txt").write_bytes(b"x" * 100)
    modules = loaded_by("sync", "up", str(source), "/dst", "-q", "--port", str(anonymous_server.port))
    assert "sockftp.client.sync" in modules  # it did run the sync
    assert server_side(modules) == []
    modules = loaded_by("sync", "down", "/dst", str(tmp_path / "copy"), "-q", "--port", str(anonymous_server.port))
    assert (tmp_path / "copy" / "d" / "f.txt").read_bytes() == b"x" * 100
    assert server_side(modules) == []


def test_version_loads_no_command_and_no_client():
    modules = loaded_by("--version")
    assert server_side(modules) == []
    assert not {m for m in modules if m.startswith(("sockftp.client", "sockftp.cli.sync"))}


def test_every_command_is_in_the_table_of_lazy_commands():
    # Importing every command module registers all the commands on main:
    # the table that imports them on demand must name exactly those.
    for module in set(COMMAND_MODULES.values()):
        __import__(f"sockftp.cli.{module}")
    assert set(main.commands) == set(COMMAND_MODULES)
    with click.Context(main) as ctx:
        assert main.list_commands(ctx) == sorted(COMMAND_MODULES)
        for name, module in COMMAND_MODULES.items():
            assert main.get_command(ctx, name).callback.__module__ == f"sockftp.cli.{module}"
