"""SQLite against PostgreSQL as the account store (issue 17), side by side
in one run on 127.0.0.1:

    python -m bench.stores                 # 300 logins, 1000 puts, 100 x 10 MiB, 3 runs
    python -m bench.stores --quick         # a seconds-long smoke run
    python -m bench.stores --pg-url postgresql://...   # an existing, empty database

Without ``--pg-url`` it starts a throwaway PostgreSQL cluster
(tests/pg_support.py: initdb and pg_ctl, 127.0.0.1 only, fsync off as in
the tests), so it needs the ``test`` extra and PostgreSQL installed.

Workloads, each against one ``sockftp serve`` child per store, the two
runs interleaved (A B, then B A) and repeated ``--runs`` times; medians:

* ``token logins``: N clients connecting and logging in by a re-login
  token at once (a barrier), until the last is in;
* ``small puts``: 1000 files of 4 KiB put over one session;
* ``crowd puts``: N clients each putting a 10 MiB file at once.

And the database's round trips per upload on the success path, counted by
the PostgreSQL store of a server run in the bench's own process (a
statement in autocommit is one round trip; a transaction adds its BEGIN
and COMMIT).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

from .common import interleave, make_file, raise_file_limit, timed
from .servers import PASSWORD, USER, ServerProcess

MiB = 1 << 20


def start_postgres():
    """A throwaway cluster (tests/pg_support.py) and a stop function."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import pg_support

    cluster = pg_support.start_cluster()

    def stop():
        cluster.stop("immediate")
        shutil.rmtree(cluster.base, ignore_errors=True)

    return cluster, stop


def new_database(cluster) -> str:
    import pg_support

    return pg_support.new_database(cluster)


class Node(ServerProcess):
    name = "sockftp"

    def __init__(self, root: str, db: str | None, sessions: int):
        from sockftp.accounts import Account, hash_password
        from sockftp.accounts.stores import open_store

        os.makedirs(root, exist_ok=True)
        with open_store(db, root) as store:
            if store.get(USER) is None:
                # A quota (1 TiB, never reached), so that the usage is kept
                # exact in the store and every upload takes a lease: the
                # path a shared quota costs. Without limits nothing is
                # reserved and the usage is never measured: no writes.
                store.add(Account(USER, hash_password(PASSWORD), quota_bytes=1 << 40))
        cap = str(sessions + 64)
        argv = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root, "--log-level", "warning"]
        argv += ["--max-sessions", cap, "--max-sessions-per-ip", cap, "--idle-timeout", "600"]
        argv += ["--db", db] if db else []
        super().__init__(argv, root.rstrip("/") + ".log")


def token_logins(port: int, count: int) -> float:
    from sockftp.client import Client

    first = Client("127.0.0.1", port, user=USER, password=PASSWORD, timeout=60)
    token = first.token
    barrier = threading.Barrier(count + 1)
    clients, errors = [], []

    def login():
        barrier.wait()
        try:
            clients.append(Client("127.0.0.1", port, user=USER, token=token, timeout=60))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=login) for _ in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for client in clients:
        client.close()
    first.close()
    if errors:
        raise RuntimeError(f"{len(errors)} token logins failed: {errors[0]!r}")
    return seconds


def small_puts(port: int, local: str, count: int, tag: str) -> float:
    from sockftp.client import Client

    client = Client("127.0.0.1", port, user=USER, password=PASSWORD, timeout=60)
    try:
        return timed(lambda: [client.put(local, f"{tag}-{i}", times=False) for i in range(count)])
    finally:
        client.close()


def crowd_puts(port: int, local: str, count: int, tag: str) -> float:
    from sockftp.client import Client

    first = Client("127.0.0.1", port, user=USER, password=PASSWORD, timeout=120)
    clients = [Client("127.0.0.1", port, user=USER, token=first.token, timeout=120) for _ in range(count)]
    barrier = threading.Barrier(count + 1)
    errors = []

    def put(client, index):
        barrier.wait()
        try:
            client.put(local, f"{tag}-{index}", times=False)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(c, i)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for client in clients:
        client.close()
    first.close()
    if errors:
        raise RuntimeError(f"{len(errors)} puts failed: {errors[0]!r}")
    return seconds


def round_trips_per_upload(root: str, db: str, local: str, count: int) -> float:
    """Round trips to PostgreSQL per small put, counted by the store
    (PostgresUserStore.round_trips) of a server run in this process for
    the purpose, after a warm-up put; the renewer and watchers are quiet
    meanwhile (their rounds come every 2 s and 20 s)."""
    from sockftp.client import Client
    from sockftp.server import SockftpServer
    from sockftp.server.config import ServerConfig

    server = SockftpServer(ServerConfig(root=root, port=0, db=db, host="127.0.0.1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client("127.0.0.1", server.port, user=USER, password=PASSWORD, timeout=60)
        client.put(local, "rt-warm", times=False)
        before = server.users.round_trips
        for i in range(count):
            client.put(local, f"rt-{i}", times=False)
        trips = server.users.round_trips - before
        client.close()
    finally:
        server.stop(1.0)
    return trips / count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="runs of each workload (default 3; 1 with --quick)")
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    logins, puts, crowd, crowd_size = (20, 100, 5, 1 * MiB) if args.quick else (300, 1000, 100, 10 * MiB)
    raise_file_limit(4 * (logins + crowd) + 256)
    work = args.dir or tempfile.mkdtemp(prefix="bench-stores-")
    stop_pg = None
    if args.pg_url:
        pg_url = args.pg_url
    else:
        cluster, stop_pg = start_postgres()
        pg_url = new_database(cluster)
    small = make_file(os.path.join(work, "small"), 4096)
    big = make_file(os.path.join(work, "big"), crowd_size)
    nodes = {}
    try:
        nodes["sqlite"] = Node(os.path.join(work, "sqlite-root"), None, max(logins, crowd))
        nodes["postgres"] = Node(os.path.join(work, "pg-root"), pg_url, max(logins, crowd))
        table = []
        for label, make in (
            (f"{logins} token logins at once", lambda n, r: token_logins(n.port, logins)),
            (f"{puts} puts of 4 KiB, one session", lambda n, r: small_puts(n.port, small, puts, f"s{r}")),
            (f"{crowd} clients x {crowd_size // MiB} MiB puts", lambda n, r: crowd_puts(n.port, big, crowd, "c")),
        ):
            counter = iter(range(10_000))
            print(f"{label} ...", file=sys.stderr, flush=True)
            measured = interleave(
                {
                    name: (lambda node=node, make=make, counter=counter: make(node, next(counter)))
                    for name, node in nodes.items()
                },
                runs,
            )
            medians = {name: statistics.median(values) for name, values in measured.items()}
            ratio = statistics.median(p / s for p, s in zip(measured["postgres"], measured["sqlite"], strict=True))
            table.append((label, medians["sqlite"], medians["postgres"], ratio, measured))
        trips = round_trips_per_upload(os.path.join(work, "pg-root"), pg_url, small, 200 if not args.quick else 50)
    finally:
        for node in nodes.values():
            node.stop()
        if stop_pg is not None:
            stop_pg()
    print(f"# SQLite vs PostgreSQL account store, {runs} interleaved run(s), medians (seconds)\n")
    print("| workload | SQLite | PostgreSQL | PostgreSQL / SQLite (median of per-run ratios) |")
    print("|---|---:|---:|---:|")
    for label, sqlite_s, pg_s, ratio, _ in table:
        print(f"| {label} | {sqlite_s:.3f} | {pg_s:.3f} | {ratio:.2f} |")
    print(f"\nPostgreSQL round trips per upload (success path, counted by the store): {trips:.2f}")
    for label, *_, measured in table:
        print(f"  {label}: " + ", ".join(f"{k} {[round(v, 3) for v in vs]}" for k, vs in measured.items()))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
