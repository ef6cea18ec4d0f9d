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
it back (``from . import ...``), or the import would be a cycle.
"""

from __future__ import annotations

from ..server.config import parse_size
from . import accounts, files, serve, shell, sync  # noqa: F401  (imported to register their commands on main)
from .base import ServerAddress, main

__all__ = ["ServerAddress", "main", "parse_size"]

if __name__ == "__main__":  # pragma: no cover
    main()
