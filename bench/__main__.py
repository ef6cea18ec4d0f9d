"""The benchmark of issue 4: sockftp against the machine's raw limits and
against pyftpdlib, side by side in one run on 127.0.0.1.

    python -m bench                      # everything, with the issue's sizes
    python -m bench --quick              # a seconds-long smoke run (CI)
    python -m bench --size 512M --clients 100 --idle-sessions 1000

Workloads, each in its own module:

* ``big_file``: one big file over one session, put and get, plain and TLS,
  pyftpdlib STOR and RETR, and the raw loopback limits;
* ``fresh_get`` (``--only fresh-get``): a seed-style get of a freshly
  seed-style uploaded file to a client that only drains, against
  pyftpdlib's RETR of a freshly STORed one;
* ``replace``: a seed-style put of the big file over the name it was last
  put to, against the same put to a new name;
* ``crowd``: N clients each getting, then each putting, a 10 MiB file;
* ``small_files``: 1000 files of 4 KiB put, then got, over one session;
* ``logins``: N simultaneous connects with login, by password and by
  re-login token, and argon2's cost;
* ``idle``: server memory with many idle logged-in sessions, and a new
  client's wait.
* ``ftp``: sockftp's FTP front door against pyftpdlib, on the big file,
  small files, logins and many clients, with the same ftplib client.
* ``home``: many clients each connecting, logging in and getting a small
  file, against a home of no files and of a million (issue 16: a login
  must not walk the home); p50 and p99 latency.
* ``ftp_parallel`` (``--only ftp-parallel``): lftp ``mirror -R`` of the
  small files over 1 connection and over 4, sockftp's FTP front door
  against vsftpd (issue 21): two targets, 4 connections at least as fast
  as 1 and as vsftpd's 4 (rows that say why when lftp or vsftpd is missing).
* ``http`` (``--only http``): curl's GET and PUT of the big file through
  the HTTP door, against the native get and put and the raw limits (issue 20).
* ``stores`` (``--only stores``): PostgreSQL against SQLite as the account
  store: the logins, the small files over one session and the crowd's
  puts, and the database round trips per upload (issue 17). Without
  PostgreSQL, its round-trip row says so.
* ``s3``: ``sockftp serve --storage s3://...`` on a SeaweedFS against boto3
  straight to it: the big file put and got, many clients, small files,
  RSS with uploads in flight (issue 18).

Variants are interleaved (A B, then B A) and each is run ``--runs`` times;
the table gives medians with the min-max spread, then every target of the
issue as a ratio, marked met or missed. Progress goes to stderr, the table
to stdout. The exit status is 1 if any workload failed.

Then the results table (``bench.results``), in Markdown: printed on stdout
by every run, and written between the markers at the top of
docs/BENCHMARKS.md by the run of record only. A run is of record when it
was launched without ``--quick``, ``--only``, ``--no-prewarm`` or
``--no-record``, with the issue's sizes (the defaults; ``--runs`` 3 or
more, ``--dir`` and the like are free), from a checkout whose src/,
bench/ and pyproject.toml are committed and whose sockftp is the one
imported; did not fail; and measured code that the document's run of
record did not. So a re-launch of the same code never replaces it
(``--replace-record`` does, for a run of record that measured nothing,
e.g. on a broken machine). Whether the run is of record, and if not why,
is said at its start.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import (
    big_file,
    big_home,
    crowd,
    fresh_get,
    ftp_front,
    ftp_parallel,
    http,
    idle,
    logins,
    replace,
    results,
    s3,
    small_files,
    stores,
    sync_rsync,
)
from .common import Env, Prewarm, describe_filesystem, parse_size, raise_file_limit
from .pool import ClientPool
from .report import Report, Section

WORKLOADS = (
    "big",
    "fresh-get",
    "replace",
    "small",
    "logins",
    "crowd",
    "idle",
    "ftp",
    "home",
    "sync",
    "ftp-parallel",
    "http",
    "stores",
    "s3",
)

#: The options that size the workloads: a run of record keeps their defaults, the issue's sizes.
SIZING = (
    "size",
    "clients",
    "crowd_size",
    "files",
    "file_size",
    "logins",
    "idle_sessions",
    "home_files",
    "home_clients",
    "home_seconds",
    "sync_tree",
    "sync_size",
    "s3_in_flight",
)

#: --quick: every workload, tiny, once. Seconds in all.
QUICK = {
    "size": parse_size("8M"),
    "runs": 1,
    "clients": [4],
    "crowd_size": parse_size("1M"),
    "files": 20,
    "logins": 4,
    "idle_sessions": [10],
    "probes": 1,
    "settle": 0.2,
    "home_files": [0, 2000],
    "home_clients": 4,
    "home_seconds": 1.0,
    "sync_tree": 200,
    "sync_size": parse_size("32M"),
    "s3_in_flight": 4,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="the big file (default 1G)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every variant (default 3)")
    parser.add_argument("--clients", type=_counts, default=[100, 300], help="client counts, e.g. 100,300")
    parser.add_argument("--crowd-size", type=parse_size, default=parse_size("10M"), help="each client's file")
    parser.add_argument("--files", type=int, default=1000, help="small files over one session (default 1000)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("4K"), help="each small file")
    parser.add_argument("--logins", type=int, default=300, help="simultaneous connects with login (default 300)")
    parser.add_argument("--idle-sessions", type=_counts, default=[1000, 10000], help="e.g. 1000,10000")
    parser.add_argument("--probes", type=int, default=5, help="new clients timed while idle sessions are held")
    parser.add_argument(
        "--settle", type=float, default=idle.SETTLE, help="seconds before a server's RSS is read (default 1)"
    )
    parser.add_argument(
        "--home-files", type=_file_counts, default=[0, 1_000_000], help="files in the big home, e.g. 0,1000000"
    )
    parser.add_argument("--home-clients", type=int, default=50, help="clients at once against the big home")
    parser.add_argument("--home-seconds", type=float, default=10.0, help="seconds of each big-home run")
    parser.add_argument("--sync-tree", type=int, default=10_000, help="files re-synced against rsync (default 10000)")
    parser.add_argument(
        "--sync-size", type=parse_size, default=parse_size("1G"), help="sync's big file and --checksum set (1G)"
    )
    parser.add_argument("--s3-in-flight", type=int, default=50, help="S3 uploads in flight for the RSS (default 50)")
    parser.add_argument("--client-procs", type=int, default=os.cpu_count() or 2, help="client worker processes")
    parser.add_argument("--only", type=_workloads, default=list(WORKLOADS), help=f"some of {','.join(WORKLOADS)}")
    parser.add_argument("--no-prewarm", action="store_true", help="skip the page-cache prewarm before each variant")
    parser.add_argument("--dir", default=None, help="where the work directory goes (default: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run: tiny sizes, 1 run")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="never write the results table into docs/BENCHMARKS.md (it is printed anyway)",
    )
    parser.add_argument(
        "--replace-record",
        action="store_true",
        help="let this run replace a run of record of the same code (only if that one measured nothing)",
    )
    return parser


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad counts {text!r} (try 100,300)") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"bad counts {text!r}")
    return counts


def _file_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.replace(" ", ",").replace("_", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad counts {text!r} (try 0,1000000)") from None
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError(f"bad counts {text!r}")
    return counts


def _workloads(text: str) -> list[str]:
    names = [part for part in text.split(",") if part]
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown workloads {sorted(unknown)}; choose from {','.join(WORKLOADS)}")
    return names


def command_line(argv) -> str:
    return shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])


def header(args, argv, work: str) -> list[str]:
    from importlib.metadata import version

    command = command_line(argv)
    return [
        f"sockftp benchmark (issue 4), {time.strftime('%Y-%m-%d %H:%M')}, 127.0.0.1, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, sockftp {version('sockftp')}, pyftpdlib {version('pyftpdlib')}",
        f"command: {command}",
        f"{args.runs} run{'s' if args.runs != 1 else ''} of every variant, interleaved (A B, then B A); "
        f"medians (min-max); page-cache prewarm {'off' if args.no_prewarm else 'on'}",
        f"work directory on {describe_filesystem(work)}",
    ]


def idle_counts_within_limits(counts: list[int], limit: int, env: Env) -> list[int]:
    """The idle counts that *limit* open files per process can hold (the
    server needs one per session, and a little more)."""
    fitting = [n for n in counts if n + 256 <= limit]
    if fitting != counts:
        env.say(f"open-file limit {limit}: idle counts {sorted(set(counts) - set(fitting))} skipped (ulimit -Hn)")
    return fitting


def not_of_record(args, parser: argparse.ArgumentParser, code: results.Code, recorded: str | None) -> str | None:
    """Why this run is not the run of record, decided before it starts; None if it is."""
    import sockftp

    if args.no_record:
        return "--no-record"
    if args.quick:
        return "--quick"
    if set(args.only) != set(WORKLOADS):
        return "--only: not every workload"
    changed = [f"--{name.replace('_', '-')}" for name in SIZING if getattr(args, name) != parser.get_default(name)]
    if changed:
        return f"{', '.join(changed)}: not the issue's sizes"
    if args.no_prewarm:
        return "--no-prewarm"
    if args.runs < parser.get_default("runs"):
        return f"--runs {args.runs}: fewer than {parser.get_default('runs')}"
    if code.commit is None or code.code_commit is None:
        return "not run from a git checkout"
    if code.dirty:
        return f"uncommitted changes under {', '.join(results.CODE_PATHS)}"
    imported = Path(sockftp.__file__).resolve()
    if not imported.is_relative_to(results.REPO / "src"):
        return f"sockftp imported from {imported.parent}, not this checkout's src/"
    if recorded == code.code_commit and not args.replace_record:
        return f"a re-launch: {results.DOC.name} already holds the run of record of this code"
    return None


def main(argv=None) -> int:
    parser = build_parser()
    args = parse_args(argv, parser)
    try:
        import pyftpdlib  # noqa: F401
    except ImportError:
        print("python -m bench needs pyftpdlib: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="sockftp-bench-", dir=args.dir)
    env = Env(work, args.runs, Prewarm(work, enabled=not args.no_prewarm), quiet=args.quiet)
    report = Report(header(args, argv, work))
    started_at = time.strftime("%Y-%m-%d %H:%M")
    code = results.code_state()
    machine = results.machine(work)
    failed: list[str] = []
    # Servers, client workers and this process all inherit it: a session
    # costs a server one descriptor, a pyftpdlib transfer three.
    limit = raise_file_limit(2 * max(args.idle_sessions) + 3 * max(args.clients) + 1024)
    idle_counts = idle_counts_within_limits(args.idle_sessions, limit, env) if "idle" in args.only else []
    why_not = not_of_record(args, parser, code, results.recorded_code())
    if why_not is None and idle_counts != args.idle_sessions:
        why_not = "idle counts skipped for the open-file limit"
    if why_not is None:
        env.say(f"the run of record: its results table goes into {results.DOC}")
    else:
        env.say(f"not a run of record ({why_not}): its results table is printed, not written")
    pool = ClientPool(args.client_procs) if {"logins", "crowd", "idle", "ftp"} & set(args.only) else None
    workloads = {
        "big": lambda: big_file.run(env, args.size),
        "fresh-get": lambda: fresh_get.run(env, args.size),
        "replace": lambda: replace.run(env, args.size),
        "small": lambda: small_files.run(env, args.files, args.file_size),
        "logins": lambda: logins.run(env, pool, args.logins),
        "crowd": lambda: crowd.run(env, pool, args.clients, args.crowd_size),
        "idle": lambda: idle.run(env, pool, idle_counts, args.probes, args.settle),
        "ftp": lambda: ftp_front.run(
            env, pool, args.size, args.files, args.file_size, args.logins, args.clients, args.crowd_size
        ),
        "home": lambda: big_home.run(env, args.home_files, args.home_clients, args.home_seconds),
        "sync": lambda: sync_rsync.run(env, args.files, args.file_size, args.sync_tree, args.sync_size),
        "ftp-parallel": lambda: ftp_parallel.run(env, args.files, args.file_size),
        "http": lambda: http.run(env, args.size),
        "stores": lambda: stores.run(env, args.logins, args.files, min(args.clients), args.crowd_size),
        "s3": lambda: s3.run(
            env, args.size, min(args.clients), args.crowd_size, args.files, args.s3_in_flight, 8 * args.settle
        ),
    }
    started = time.monotonic()
    try:
        for name in WORKLOADS:
            if name not in args.only or (name == "idle" and not idle_counts):
                continue
            try:
                section, checks = workloads[name]()
            except Exception:  # noqa: BLE001 - report it, and go on with the others
                failed.append(name)
                traceback.print_exc()
                section, checks = Section(f"{name}: FAILED"), []
                section.notes.append(traceback.format_exc().strip().splitlines()[-1])
            report.sections.append(section)
            report.checks += checks
    finally:
        if pool is not None:
            pool.stop()
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    report.header.append(f"took {took:.0f} s")
    print(report.render())
    if failed and why_not is None:
        why_not = "a workload failed"
    run = results.Run(started_at, command_line(argv), args.runs, took, code, machine, why_not, tuple(failed))
    block = results.render(run, report.checks)
    print(f"\n== results table (Markdown{', written into ' + str(results.DOC) if why_not is None else ''}) ==")
    print(block, end="")
    if why_not is None:
        results.write(block)
        env.say(f"wrote the results table into {results.DOC}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
