"""The ``sockftp`` command line: ``serve``, and the client commands.

One module per group of commands, each registering on the ``main`` group
of :mod:`.base` when imported here:

- :mod:`.base`: ``main``, exit statuses, failures, the client options;
- :mod:`.format`: text for people (listings, stat and quota fields, tables);
- :mod:`.files`: put, get, ls, stat, mkdir, rmdir, rm, mv, ping, quota;
- :mod:`.serve`: serve;
- :mod:`.accounts`: ``user ...`` (administration) and ``token ...``;
- :mod:`.shell`: the interactive shell;
- :mod:`.sync`: ``sync up`` and ``sync down``;
- :mod:`.progress`: progress bars and summary lines.

This package's ``__init__`` only gathers them: no module here may import
it back (``from . import ...``), or the import would be a cycle. Command
modules are imported when their command runs, not here
(:data:`.base.COMMAND_MODULES`): start-up is part of every command's time.
"""

from __future__ import annotations

from .base import ServerAddress, main

__all__ = ["ServerAddress", "main", "parse_size"]


def __getattr__(name: str):
    # parse_size lives with the server's config, which a client command never loads.
    if name == "parse_size":
        from ..server.config import parse_size

        return parse_size
    raise AttributeError(name)


if __name__ == "__main__":  # pragma: no cover
    main()
