"""S3 storage (issue 18): sockftp over a SeaweedFS, against boto3 straight
to the same SeaweedFS, side by side in one run on 127.0.0.1.

    python -m bench --only s3                 # with the issue's sizes
    python -m bench.s3 --size 256M --runs 3   # this workload alone

One ``weed mini`` (bench/seaweed.py) serves both. sockftp runs as
``sockftp serve --storage s3://BUCKET/PREFIX`` with its default part size
(8 MiB); its client is the library's verified put and get. boto3 uses
``upload_file`` and ``download_file`` with their defaults (8 MiB parts, 10
threads), the way a user of the store moves a file without sockftp.

* the big file (1 GiB): put and get, GB/s, interleaved runs; targets
  sockftp >= 0.8 x boto3, both ways;
* 100 clients, one 10 MiB file each, put at once: wall time, sockftp
  clients (one session each, in threads of this process) against boto3
  ``upload_file`` in as many threads;
* 1000 small files (4 KiB) put over one session (pipelined), against
  boto3 ``put_object`` one after the other;
* the server's RSS with 50 uploads in flight (each paced to stay in
  flight), and what that adds per upload: parts wait on disk, not in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from itertools import count

from . import seaweed as weed
from .common import Env, MiB, Prewarm, Samples, human_size, interleave, make_file, parse_size
from .report import Check, Section, ratio_check
from .servers import PASSWORD, USER, SockftpServer

PUT, GET = "put", "get"


def run(
    env: Env,
    size: int,
    clients: int = 100,
    client_size: int = 10 * MiB,
    files: int = 1000,
    in_flight: int = 50,
    settle: float = 8.0,
) -> tuple[Section, list[Check]]:
    try:
        import boto3  # noqa: F401
    except ImportError:
        raise RuntimeError("the s3 workload needs boto3: pip install -e '.[s3]'") from None
    store = weed.start()
    saved = {name: os.environ.get(name) for name in store.env()}
    os.environ.update(store.env())  # for this process's boto3 and the server's
    try:
        return _run(env, store, size, clients, client_size, files, in_flight, settle)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        weed.remove(store)


def _run(env: Env, store, size, clients, client_size, files, in_flight, settle) -> tuple[Section, list[Check]]:
    from boto3.s3.transfer import TransferConfig

    s3 = store.client()
    transfer = TransferConfig()  # boto3's defaults: 8 MiB parts, 10 threads
    source = make_file(env.path("s3-source.bin"), size)
    got = env.path("s3-got.bin")
    section = Section(f"S3 storage on SeaweedFS: sockftp against boto3 straight to the store ({human_size(size)})")
    checks: list[Check] = []
    extra = ("--storage", f"s3://{weed.BUCKET}/sockftp")
    with SockftpServer(env.path("s3-sockftp"), sessions=max(clients, in_flight) + 8, extra=extra) as server:
        client = _client(server.port)
        try:
            names = count()

            def sockftp_put() -> float:
                env.prewarm(size)
                start = time.perf_counter()
                client.put(source, "big.bin", resume=False)
                return time.perf_counter() - start

            def boto_put() -> float:
                env.prewarm(size)
                start = time.perf_counter()
                s3.upload_file(source, weed.BUCKET, f"direct/big-{next(names)}.bin", Config=transfer)
                return time.perf_counter() - start

            env.say(f"s3: a {human_size(size)} put, sockftp and boto3: 2 variants x {env.runs} runs")
            puts = interleave({"sockftp put": sockftp_put, "boto3 upload_file": boto_put}, env.runs)
            s3.upload_file(source, weed.BUCKET, "direct/big.bin", Config=transfer)

            def sockftp_get() -> float:
                start = time.perf_counter()
                client.get("big.bin", got, resume=False)
                elapsed = time.perf_counter() - start
                os.unlink(got)
                return elapsed

            def boto_get() -> float:
                start = time.perf_counter()
                s3.download_file(weed.BUCKET, "direct/big.bin", got, Config=transfer)
                elapsed = time.perf_counter() - start
                os.unlink(got)
                return elapsed

            env.say(f"s3: a {human_size(size)} get, sockftp and boto3: 2 variants x {env.runs} runs")
            gets = interleave({"sockftp get": sockftp_get, "boto3 download_file": boto_get}, env.runs)
            server.check_alive()
        finally:
            client.close()
        for name, times in (*puts.items(), *gets.items()):
            section.add(name, Samples("GB/s", [size / t / 1e9 for t in times]))
        for verb, ours, theirs in ((PUT, puts["sockftp put"], puts["boto3 upload_file"]), (GET, *gets.values())):
            checks.append(
                ratio_check(
                    f"{verb} a {human_size(size)} file, S3 storage",
                    f"sockftp / boto3 {'upload_file' if verb == PUT else 'download_file'}",
                    [size / t / 1e9 for t in ours],
                    [size / t / 1e9 for t in theirs],
                    0.8,
                    True,
                    unit="GB/s",
                    reference_name="boto3 straight to SeaweedFS",
                )
            )
        os.unlink(source)
        if clients:
            _crowd(env, section, server, s3, transfer, clients, client_size)
        if files:
            _small(env, section, server, s3, files)
    if in_flight:
        # A server of its own: the crowd's sessions left the other one's
        # buffer pools grown.
        with SockftpServer(env.path("s3-rss"), sessions=in_flight + 8, extra=extra) as server:
            _rss(env, section, server, in_flight, settle)
    section.notes.append(
        "sockftp: the library's verified put and get through `sockftp serve --storage s3://...` (8 MiB parts); "
        "boto3: upload_file / download_file / put_object with their defaults, to the same SeaweedFS"
    )
    return section, checks


def _client(port: int):
    from sockftp import Client

    return Client("127.0.0.1", port, user=USER, password=PASSWORD, timeout=120)


def _crowd(env: Env, section: Section, server, s3, transfer, clients: int, size: int) -> None:
    source = make_file(env.path("s3-crowd.bin"), size)
    sessions = [_client(server.port) for _ in range(clients)]
    try:
        for session in sessions:
            session.ls()  # connected and logged in before the clock starts

        def together(action) -> float:
            barrier = threading.Barrier(clients + 1)
            failures: list[BaseException] = []

            def one(index: int) -> None:
                barrier.wait()
                try:
                    action(index)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
            for thread in threads:
                thread.start()
            barrier.wait()
            start = time.perf_counter()
            for thread in threads:
                thread.join()
            if failures:
                raise failures[0]
            return time.perf_counter() - start

        env.say(f"s3: {clients} clients x {human_size(size)} put at once, sockftp and boto3: 2 x {env.runs} runs")
        seconds = interleave(
            {
                f"{clients} clients x {human_size(size)} put, sockftp (s)": lambda: together(
                    lambda i: sessions[i].put(source, f"crowd-{i}.bin", resume=False)
                ),
                f"{clients} clients x {human_size(size)} put, boto3 (s)": lambda: together(
                    lambda i: s3.upload_file(source, weed.BUCKET, f"direct/crowd-{i}.bin", Config=transfer)
                ),
            },
            env.runs,
        )
        for name, values in seconds.items():
            section.add(name, Samples("s", values))
    finally:
        for session in sessions:
            session.close()
        os.unlink(source)


def _small(env: Env, section: Section, server, s3, files: int) -> None:
    directory = env.fresh_dir("s3-small")
    sources = []
    for i in range(files):
        path = os.path.join(directory, f"f{i:04}")
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        sources.append(path)
    client = _client(server.port)
    runs = count()
    try:

        def sockftp_small() -> float:
            prefix = f"small-{next(runs)}"
            client.mkdir(prefix)
            start = time.perf_counter()
            client.put_many((source, f"{prefix}/{os.path.basename(source)}") for source in sources)
            return time.perf_counter() - start

        def boto_small() -> float:
            prefix = f"direct/small-{next(runs)}"
            start = time.perf_counter()
            for source in sources:
                with open(source, "rb") as f:
                    s3.put_object(Bucket=weed.BUCKET, Key=f"{prefix}/{os.path.basename(source)}", Body=f.read())
            return time.perf_counter() - start

        env.say(f"s3: {files} files of 4 KiB put, sockftp (pipelined) and boto3 put_object: 2 x {env.runs} runs")
        seconds = interleave(
            {f"{files} x 4 KiB put, sockftp pipelined (s)": sockftp_small, f"{files} x 4 KiB, boto3 (s)": boto_small},
            env.runs,
        )
        for name, values in seconds.items():
            section.add(name, Samples("s", values))
    finally:
        client.close()


def _rss(env: Env, section: Section, server, uploads: int, settle: float) -> None:
    """The server's RSS with *uploads* uploads in flight, each of a 64 MiB
    file paced by its client so that all are mid-way at once, *settle*
    seconds after they start."""
    size = 64 * MiB
    source = make_file(env.path("s3-rss.bin"), size)
    baseline = server.rss()
    stop = threading.Event()
    sessions = [_client(server.port) for _ in range(uploads)]

    def paced(session, index: int) -> None:
        def progress(done, total):
            if stop.is_set():
                raise KeyboardInterrupt  # the client lets go mid-transfer
            time.sleep(0.05)

        try:
            session.put(source, f"rss-{index}.bin", resume=False, progress=progress)
        except BaseException:  # noqa: BLE001 - cut on purpose
            pass

    threads = [threading.Thread(target=paced, args=(s, i), daemon=True) for i, s in enumerate(sessions)]
    for thread in threads:
        thread.start()
    time.sleep(settle)
    held = server.rss()
    stop.set()
    for thread in threads:
        thread.join(60)
    for session in sessions:
        session.close()
    os.unlink(source)
    section.add("server RSS, idle (MiB)", Samples("MiB", [baseline / MiB]))
    section.add(f"server RSS, {uploads} uploads in flight (MiB)", Samples("MiB", [held / MiB]))
    section.notes.append(
        f"RSS: {(held - baseline) / uploads / MiB:.2f} MiB per upload in flight "
        "(each upload's parts wait in spool files on disk)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--client-size", type=parse_size, default=parse_size("10M"))
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--settle", type=float, default=8.0, help="seconds before the RSS with uploads in flight")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--resume", action="store_true", help="only what a cut and a resume cost, in this process")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="sockftp-s3-bench-", dir=args.dir)
    if args.resume:
        import shutil
        import statistics

        try:
            results = resume_cost(work, args.size, args.runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        cut = f"{human_size(args.size)} + 3 MiB"
        print(f"S3Storage on SeaweedFS, a cut {cut} into an upload; {args.runs} runs, medians (min-max)")
        for name, values in results.items():
            print(f"  {name:24} {statistics.median(values):.3f}  ({min(values):.3f}-{max(values):.3f})")
        return 0
    env = Env(work, args.runs, Prewarm(work, enabled=True))
    section, checks = run(env, args.size, args.clients, args.client_size, args.files, args.in_flight, args.settle)
    from .report import Report

    report = Report([f"python -m bench.s3 {' '.join(sys.argv[1:] if argv is None else argv)}"])
    report.sections.append(section)
    report.checks += checks
    print(report.render())
    return 0


# -- what a resume costs: python -m bench.s3 --resume --------------------------------------


def resume_cost(work: str, size: int, runs: int) -> dict[str, list[float]]:
    """Seconds, per run, of what S3Storage does around a cut (in this
    process, without a server or a socket): an upload of *size* bytes and 3
    MiB more written whole; the keep of the tail (under a part) after a
    cut there; a resume's read-back of the held bytes (the prefix check);
    and the rest of the resumed upload (the store's copy of the whole parts,
    the tail sent again from the spool, the commit)."""
    from sockftp.accounts.sqlite import SqliteUserStore
    from sockftp.protocol import checksum
    from sockftp.storage.s3 import S3Storage

    store = weed.start()
    state = SqliteUserStore(os.path.join(work, "users.db"))
    spool = os.path.join(work, "spool")
    storage = S3Storage(weed.BUCKET, "resume", state=state, client=store.client(), spool_dir=spool)
    cut = size + 3 * MiB
    chunk = os.urandom(4 * MiB)
    results: dict[str, list[float]] = {"upload (s)": [], "keep at the cut (s)": [], "read-back (s)": [], "rest (s)": []}
    try:
        for run in range(runs):
            path = (f"f{run}",)
            start = time.perf_counter()
            up = storage.open_upload(path, cut + 1)
            for offset in range(0, cut, len(chunk)):
                up.write(memoryview(chunk)[: cut - offset])
            kept = time.perf_counter()
            up.keep()
            resumed = time.perf_counter()
            up = storage.open_upload(path, cut + 1, offset=cut)
            hasher = checksum.Hasher()
            up.hash_existing(hasher)
            read_back = time.perf_counter()
            up.write(b"!")
            up.commit(None)
            done = time.perf_counter()
            storage.remove(path)
            measured = (kept - start, resumed - kept, read_back - resumed, done - read_back)
            for name, value in zip(results, measured, strict=True):
                results[name].append(value)
    finally:
        state.close()
        weed.remove(store)
    return results


if __name__ == "__main__":
    sys.exit(main())
