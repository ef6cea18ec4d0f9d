"""pyftpdlib's async FTPServer for the benchmark, as a child process.

    python -m bench.ftpd --home DIR --user NAME --password PW

Listens on 127.0.0.1, port 0, and prints ``pyftpdlib listening on
127.0.0.1:PORT``. pyftpdlib's defaults are kept (sendfile() for RETR on,
64 KiB data-channel buffers), except what a benchmark of many sessions
needs and sockftp gets too: logging at WARNING (sockftp runs with
``--log-level warning``), a listen backlog of 1024 (sockftp's; pyftpdlib's
100 would drop SYNs in a burst of 300 connects and add 1 s retransmits),
and room for as many sessions as the workload opens.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--max-cons", type=int, default=512)
    parser.add_argument("--timeout", type=float, default=300.0, help="idle seconds before a session is closed")
    args = parser.parse_args(argv)

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, args.password, args.home, perm="elradfmwMT")
    handler = type("BenchHandler", (FTPHandler,), {"authorizer": authorizer, "timeout": args.timeout})
    server = FTPServer(("127.0.0.1", 0), handler, backlog=1024)
    server.max_cons = args.max_cons
    print(f"pyftpdlib listening on 127.0.0.1:{server.address[1]}", flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
