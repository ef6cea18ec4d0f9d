"""SQLite against PostgreSQL as the account store (issue 17), side by side
in one run on 127.0.0.1; a workload of ``python -m bench`` (``--only
stores``), whose rows go into the results table, and a command of its own:

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

from .common import Env, Samples, interleave, make_file, raise_file_limit, timed
from .report import Check, Figure, Section, ratio
from .servers import PASSWORD, USER, ServerProcess

MiB = 1 << 20


_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def postgres_missing() -> str | None:
    """Why no throwaway PostgreSQL cluster can run here, or None."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[postgres]')"
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)
    import pg_support

    if pg_support.pg_bin_dir() is None:
        return "no initdb (apt-get install postgresql)"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, with no postgres user to run it as"
    return None


def start_postgres():
    """A throwaway cluster (tests/pg_support.py) and a stop function."""
    if _TESTS not in sys.path:
        sys.path.insert(0, _TESTS)
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
    the purpose, after a warm-up put. The server's background rounds (the
    bans copied every second, the lease renewer and reaper, the account
    watcher) are stopped first: they are the store's round trips, not the
    upload's."""
    from sockftp.client import Client
    from sockftp.server import SockftpServer
    from sockftp.server.config import ServerConfig

    server = SockftpServer(ServerConfig(root=root, port=0, db=db, host="127.0.0.1"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = Client("127.0.0.1", server.port, user=USER, password=PASSWORD, timeout=60)
        client.put(local, "rt-warm", times=False)
        server.authenticator.bans.close()
        server.watcher.close()
        server.quotas.close()
        before = server.users.round_trips
        for i in range(count):
            client.put(local, f"rt-{i}", times=False)
        trips = server.users.round_trips - before
        client.close()
    finally:
        server.stop(1.0)
    return trips / count


def measure(work: str, pg_url: str, runs: int, logins: int, puts: int, crowd: int, crowd_size: int, say=None):
    """[(label, {"sqlite": seconds per run, "postgres": ...})], and the round
    trips per upload: both stores side by side, interleaved."""
    raise_file_limit(4 * (logins + crowd) + 256)
    small = make_file(os.path.join(work, "small"), 4096)
    big = make_file(os.path.join(work, "big"), crowd_size)
    nodes = {}
    table = []
    try:
        nodes["sqlite"] = Node(os.path.join(work, "sqlite-root"), None, max(logins, crowd))
        nodes["postgres"] = Node(os.path.join(work, "pg-root"), pg_url, max(logins, crowd))
        for label, make in (
            (f"{logins} token logins at once", lambda n, r: token_logins(n.port, logins)),
            (f"{puts} puts of 4 KiB, one session", lambda n, r: small_puts(n.port, small, puts, f"s{r}")),
            (f"{crowd} clients x {human(crowd_size)} puts", lambda n, r: crowd_puts(n.port, big, crowd, "c")),
        ):
            counter = iter(range(10_000))
            if say is not None:
                say(f"account stores: {label}, {runs} run(s)")
            measured = interleave(
                {
                    name: (lambda node=node, make=make, counter=counter: make(node, next(counter)))
                    for name, node in nodes.items()
                },
                runs,
            )
            table.append((label, measured))
    finally:
        for node in nodes.values():
            node.stop()
    trips = round_trips_per_upload(os.path.join(work, "pg-root"), pg_url, small, 50 if puts < 1000 else 200)
    return table, trips


def human(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // 1024} KiB"


#: The issue's target for the round trips of an upload's success path.
ROUND_TRIPS_TARGET = 2


def run(env: Env, logins: int, puts: int, crowd: int, crowd_size: int) -> tuple[Section, list[Check]]:
    """The workload of ``python -m bench``: its section, and its rows of the
    results table. The three timings are side by side only (the issue sets
    no target for them: PostgreSQL pays a network round trip where SQLite
    writes a local file, and the figure is what that costs); the round
    trips are held to the issue's target. Without PostgreSQL, one row says
    so."""
    section = Section("account store: PostgreSQL against SQLite (issue 17), seconds")
    missing = postgres_missing()
    if missing is not None:
        section.notes.append(f"PostgreSQL not available: {missing}")
        return section, [_trips_check(None, missing=f"not available ({missing})")]
    cluster, stop = start_postgres()
    try:
        table, trips = measure(
            env.fresh_dir("stores"), new_database(cluster), env.runs, logins, puts, crowd, crowd_size, env.say
        )
    finally:
        stop()
    checks = []
    for label, measured in table:
        for name, values in measured.items():
            section.add(f"{label}, {name}", Samples("s", values))
        value, per_run = ratio(measured["postgres"], measured["sqlite"])
        checks.append(
            Check(
                f"{label}, PostgreSQL account store",
                "PostgreSQL / SQLite seconds",
                value,
                None,
                False,
                per_run,
                ours=Figure(statistics.median(measured["postgres"]), "s"),
                reference=Figure(statistics.median(measured["sqlite"]), "s"),
                reference_name="SQLite",
            )
        )
    section.notes.append(f"PostgreSQL round trips per upload (success path, counted by the store): {trips:.2f}")
    checks.append(_trips_check(trips))
    return section, checks


def _trips_check(trips: float | None, missing: str = "") -> Check:
    return Check(
        "one put, PostgreSQL account store",
        "database round trips per upload",
        trips,
        ROUND_TRIPS_TARGET,
        False,
        unit="round trips",
        ours=None if trips is None else Figure(trips, "round trips"),
        reference_name="PostgreSQL",
        context=""
        if missing
        else "counted by the store (a statement in autocommit is one; a transaction adds its BEGIN "
        "and COMMIT) over many puts after a warm-up; the three timings above are side by side, with no "
        "target: the issue sets none",
        missing=missing,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="runs of each workload (default 3; 1 with --quick)")
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    logins, puts, crowd, crowd_size = (20, 100, 5, 1 * MiB) if args.quick else (300, 1000, 100, 10 * MiB)
    work = args.dir or tempfile.mkdtemp(prefix="bench-stores-")
    stop_pg = None
    if args.pg_url:
        pg_url = args.pg_url
    else:
        cluster, stop_pg = start_postgres()
        pg_url = new_database(cluster)
    try:
        table, trips = measure(
            work, pg_url, runs, logins, puts, crowd, crowd_size, lambda m: print(m, file=sys.stderr, flush=True)
        )
    finally:
        if stop_pg is not None:
            stop_pg()
    print(f"# SQLite vs PostgreSQL account store, {runs} interleaved run(s), medians (seconds)\n")
    print("| workload | SQLite | PostgreSQL | PostgreSQL / SQLite (median of per-run ratios) |")
    print("|---|---:|---:|---:|")
    for label, measured in table:
        per_run = statistics.median(p / s for p, s in zip(measured["postgres"], measured["sqlite"], strict=True))
        sqlite_s, pg_s = statistics.median(measured["sqlite"]), statistics.median(measured["postgres"])
        print(f"| {label} | {sqlite_s:.3f} | {pg_s:.3f} | {per_run:.2f} |")
    print(f"\nPostgreSQL round trips per upload (success path, counted by the store): {trips:.2f}")
    for label, measured in table:
        print(f"  {label}: " + ", ".join(f"{k} {[round(v, 3) for v in vs]}" for k, vs in measured.items()))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
