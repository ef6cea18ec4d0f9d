"""``sockftp sync`` against an rsync daemon, whole commands side by side
(issue 21's targets): ``python -m bench --only sync``.

Each timed run is one whole command, Python's or rsync's start-up and the
login included: ``python -m sockftp sync up|down ... -q`` logged in by a
re-login token (``SOCKFTP_TOKEN``, from ``sockftp token new`` once at the
start), against ``rsync -a --stats`` to ``rsync://127.0.0.1:PORT/m/...``
of an ``rsync --daemon`` child process (no chroot, running as this user).
Both servers are child processes on 127.0.0.1 with roots of their own.

Workloads, each run ``--runs`` times (5 for the issue's figures),
interleaved (A B, then B A) after one untimed warm-up of each:

1. the first sync of FILES files of FILE_SIZE (default 1000 x 4 KiB), up
   into a new remote directory and down into a new local one; files/s;
2. a re-sync (up) of a tree of TREE files (default 10,000, 2 KiB each, in
   100 directories) with nothing changed; seconds;
3. the same with a tenth of the files changed (100 bytes of content, and
   mtime one second on), a different tenth each run; seconds;
4. one file of SIZE (default 1 GiB) with 1 MiB changed in the middle
   (of a file under 256 MiB, as with ``--quick``, 1/256 of it),
   re-synced up, then (changed again and synced up, untimed) down: the
   bytes the client sent up, or received down, on the wire (sockftp's
   from the ``in``/``out`` of its session's logout line in the server's
   audit log, rsync's from ``--stats``), as a percentage of the file, and
   seconds; rsync in its default delta mode;
5. a ``--checksum`` re-sync of SIZE in FILES files with nothing changed
   (``rsync -a --checksum``); seconds.

The page cache is never dropped (that needs root); the warm-up and the
interleaving stand in for it. Without ``rsync`` on the PATH the workload
is skipped with a note and no targets.

Beside each time: the CPU seconds of the command and of its server
(rsync's client and the daemon's child that served it), which a busy
machine disturbs far less. At least 5 runs (the issue's rule) unless
fewer than 3 are asked for. The commands get a byte-code cache of their
own (``PYTHONPYCACHEPREFIX``), as an installed package has one, even where
the environment sets ``PYTHONDONTWRITEBYTECODE``.

On its own, ``python -m bench.sync_rsync [--baseline SRC]``: with a
baseline (a source tree's ``src/``), a second sockftp, server and
commands imported from there, runs interleaved with the others, and the
notes give this tree's times and CPU over the baseline's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from itertools import count

from .common import Env, MiB, Samples, cpu_seconds, human_size, interleave
from .report import Check, Figure, Section, ratio, ratio_check
from .servers import _DIE_WITH_PARENT, PASSWORD, USER, SockftpServer

#: Seconds any one command may take before the bench fails instead of hanging.
COMMAND_TIMEOUT = 900
#: Interleaved runs of every variant at the least (issue 21: medians of 5), unless fewer than 3 are asked for.
RUNS = 5
OURS, BASELINE = "sockftp", "sockftp baseline"


class RsyncDaemon:
    """``rsync --daemon`` serving module ``m`` (read-write) from *path*, as this user."""

    name = "rsync daemon"

    def __init__(self, path: str, work: str):
        self.path = path
        os.makedirs(path, exist_ok=True)
        config = os.path.join(work, "rsyncd.conf")
        with open(config, "w") as f:
            f.write(f"use chroot = false\nuid = {os.getuid()}\ngid = {os.getgid()}\n")
            f.write(f"pid file = {os.path.join(work, 'rsyncd.pid')}\n")
            f.write(f"[m]\npath = {path}\nread only = false\n")
        self.log = open(os.path.join(work, "rsyncd.log"), "ab")
        # A free port, then bound by the daemon: rsync cannot report a port 0's.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        argv = ["rsync", "--daemon", "--no-detach", f"--config={config}", f"--port={self.port}"]
        # Guarded as the servers are (bench.servers): it dies with the bench, even a killed one.
        guarded = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), shutil.which("rsync"), *argv[1:]]
        self.proc = subprocess.Popen([*guarded, "--address=127.0.0.1"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while subprocess.run(["rsync", f"rsync://127.0.0.1:{self.port}/"], capture_output=True).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsync --daemon did not start on port {self.port}")
            time.sleep(0.05)

    def url(self, sub: str) -> str:
        return f"rsync://127.0.0.1:{self.port}/m/{sub}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Rsync:
    """rsync commands, each returning its seconds; the wire bytes of the
    last one, by its ``--stats``."""

    def __init__(self, daemon: RsyncDaemon):
        self.daemon = daemon
        self.sent = self.received = 0
        self.cpu = 0.0  # CPU seconds of the last command and of the daemon's child that served it

    def __call__(self, *args: str) -> float:
        client, server = _children_cpu(), _tree_cpu(self.daemon.proc.pid)
        started = time.perf_counter()
        done = subprocess.run(
            ["rsync", "-a", "--stats", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        seconds = time.perf_counter() - started
        client = _children_cpu() - client
        # The daemon's child that served it is counted once the daemon has reaped it.
        deadline = time.monotonic() + 2
        while (server_cpu := _tree_cpu(self.daemon.proc.pid) - server) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.cpu = client + server_cpu
        if done.returncode:
            raise RuntimeError(f"rsync {' '.join(args)} exited with {done.returncode}: {done.stderr.strip()}")
        self.sent = _stat(done.stdout, "Total bytes sent")
        self.received = _stat(done.stdout, "Total bytes received")
        return seconds


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended (the commands)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu(pid: int) -> float:
    """CPU seconds of process *pid* and of its children it has reaped."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _stat(text: str, name: str) -> int:
    match = re.search(rf"{name}: ([\d,.]+)", text)
    if match is None:
        raise RuntimeError(f"rsync --stats printed no {name!r}:\n{text}")
    return int(re.sub(r"[,.]", "", match.group(1)))


class Sockftp:
    """``python -m sockftp sync`` commands logged in by token, each
    returning its seconds; the wire bytes of the last one from its
    session's logout line in the audit log, read after the timing."""

    def __init__(self, server: SockftpServer, src: str | None = None):
        self.server = server
        self.audit = server.root.rstrip("/") + ".audit.log"
        self.env = dict(os.environ, SOCKFTP_USER=USER, SOCKFTP_PORT=str(server.port), SOCKFTP_HOST="127.0.0.1")
        if src is not None:  # the baseline: its commands import sockftp from *src*
            self.env["PYTHONPATH"] = os.path.abspath(src)
        # Byte-code cached as any installed or once-run Python package has it:
        # with PYTHONDONTWRITEBYTECODE in the environment (some containers set
        # it) every command would compile all it imports again, ~40 ms that no
        # user's command pays. Cached outside the source tree, one per server.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = server.root.rstrip("/") + ".pycache"
        self.env.pop("SOCKFTP_PASSWORD", None)
        self.env.pop("SOCKFTP_TLS", None)
        token = subprocess.run(
            [sys.executable, "-m", "sockftp", "token", "new"],
            env=dict(self.env, SOCKFTP_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        self.env["SOCKFTP_TOKEN"] = token.stdout.strip()
        self.sent = self.received = 0
        self.cpu = 0.0  # CPU seconds of the last command and of the server
        self._read = 0  # how far into the audit log logout lines were looked for

    def __call__(self, direction: str, source: str, target: str, *options: str) -> float:
        self._logouts()  # past what earlier commands logged
        argv = [sys.executable, "-m", "sockftp", "sync", direction, source, target, "-q", "--timeout", "600"]
        client, server = _children_cpu(), cpu_seconds(self.server.pid)
        started = time.perf_counter()
        done = subprocess.run([*argv, *options], env=self.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        seconds = time.perf_counter() - started
        client = _children_cpu() - client
        if done.returncode:
            raise RuntimeError(f"sockftp sync {direction} exited with {done.returncode}: {done.stderr.strip()}")
        # The server writes the logout line as it sees the connection close,
        # which may be just after the command has exited.
        deadline = time.monotonic() + 10
        while not (logouts := self._logouts()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no logout line in {self.audit} after the sync")
            time.sleep(0.01)
        # The server's in is what the client sent; its out, what it received.
        self.sent, self.received = logouts[-1]
        self.cpu = client + cpu_seconds(self.server.pid) - server  # the session has ended: all of its work
        return seconds

    def bare(self, *args: str) -> float:
        """``python -m sockftp ARGS`` with no server involved; its seconds."""
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sockftp", *args], env=self.env, capture_output=True, check=True)
        return time.perf_counter() - started

    def _logouts(self) -> list[tuple[int, int]]:
        """(in, out) of the logout lines written since the last call, whole lines only."""
        try:
            with open(self.audit, "rb") as f:
                f.seek(self._read)
                text = f.read()
        except FileNotFoundError:
            return []
        text = text[: text.rfind(b"\n") + 1]
        self._read += len(text)
        return [(int(a), int(b)) for a, b in re.findall(rb"event=logout .*?\bin=(\d+) out=(\d+)", text)]


def run(
    env: Env, files: int, file_size: int, tree: int, size: int, baseline: str | None = None
) -> tuple[Section, list[Check]]:
    """The workloads; with *baseline* (a source tree's ``src/``), also a
    second sockftp, server and commands imported from there, run
    interleaved with the others (its figures are context, never a target)."""
    title = "sockftp sync against an rsync daemon, whole commands with login (issue 21)"
    if shutil.which("rsync") is None:
        section = Section(f"{title}: skipped")
        section.notes.append("rsync is not installed (apt-get install rsync): no figures, no targets")
        return section, []
    section = Section(title)
    checks: list[Check] = []
    if env.runs >= 3:  # the rule: medians of 5 interleaved runs (not for --quick's single run)
        env = dataclasses.replace(env, runs=max(env.runs, RUNS))
    section.notes.append(f"medians of {env.runs} interleaved runs")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(SockftpServer(env.path("sync-sockftp")))
        daemon = stack.enter_context(RsyncDaemon(env.path("sync-rsync"), env.work))
        ours = {OURS: Sockftp(server)}
        if baseline is not None:
            with _imports_from(baseline):
                other = stack.enter_context(SockftpServer(env.path("sync-baseline")))
            ours[BASELINE] = Sockftp(other, baseline)
            section.notes.append(f"{BASELINE}: server and commands imported from {baseline}")
        rsync = Rsync(daemon)
        # Context for the small cases: what Python's start-up alone costs each sockftp command.
        for name, sockftp in ours.items():
            sockftp.bare("--version")  # untimed: fills the byte-code cache
            startup = [sockftp.bare("--version") for _ in range(env.runs)]
            section.add(f"start-up alone: python -m sockftp --version ({name})", Samples("s", startup))
        checks += _first(env, section, ours, rsync, daemon, files, file_size)
        checks += _resync(env, section, ours, rsync, daemon, tree)
        checks += _big(env, section, ours, rsync, daemon, size)
        checks += _checksum(env, section, ours, rsync, daemon, files, size)
    return section, checks


@contextlib.contextmanager
def _imports_from(src: str):
    """Server processes started meanwhile import sockftp from *src* (their PYTHONPATH)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.path.abspath(src)
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def _against_baseline(section: Section, workload: str, seconds: dict[str, list[float]]) -> None:
    """With a baseline, a note: this tree's time over the baseline's, of the medians."""
    if BASELINE in seconds:
        value, per_run = ratio(seconds[OURS], seconds[BASELINE])
        spread = f"{min(per_run):.2f}-{max(per_run):.2f}"
        section.notes.append(f"{workload}: sockftp / sockftp baseline seconds {value:.2f} ({spread})")


def _measure(env: Env, variants: dict, on_run=None) -> dict[str, list[float]]:
    """One untimed warm-up of every variant, then the interleaved runs."""
    for variant in variants.values():
        variant()
    return interleave(variants, env.runs, on_run)


def _with_cpu(variants: dict, ours: dict, rsync: Rsync, cpu: dict[str, list[float]]) -> dict:
    """*variants*, each also noting in *cpu* the CPU seconds its command and
    its server spent (a figure a busy machine disturbs far less than time)."""

    def owner(name: str):
        if name.startswith("rsync"):
            return rsync
        return ours[BASELINE] if name.startswith(BASELINE) else ours[OURS]

    def wrapped(name: str, variant):
        def run() -> float:
            seconds = variant()
            cpu.setdefault(name, []).append(owner(name).cpu)
            return seconds

        return run

    return {name: wrapped(name, variant) for name, variant in variants.items()}


def _cpu_rows(section: Section, workload: str, cpu: dict[str, list[float]], suffix: str = "") -> None:
    """Rows of the CPU seconds of each variant (the warm-up's left out), and a note of their ratio."""
    for name, values in cpu.items():
        section.add(f"{workload}: {name}{suffix} CPU, client + server", Samples("s", values[1:]))
    for name in cpu:
        if name.startswith(OURS) and not name.startswith(BASELINE):
            way = name[len(OURS) :]  # "", " up" or " down"
            for other in ("rsync", BASELINE):
                if other + way in cpu:
                    value, per_run = ratio(cpu[name][1:], cpu[other + way][1:])
                    spread = f"{min(per_run):.2f}-{max(per_run):.2f}"
                    what = f"{workload}{way}{suffix}: sockftp / {other} CPU seconds"
                    section.notes.append(f"{what} {value:.2f} ({spread})")


def _first(env, section, ours, rsync, daemon, files, file_size) -> list[Check]:
    """1: a first sync of *files* small files, up into a new directory and down into a new one."""
    source = env.fresh_dir("sync-first")
    make_tree(source, files, file_size, dirs=10)
    for sockftp in ours.values():
        sockftp("up", source, "/seed")
    rsync(source + "/", daemon.url("seed/"))
    numbers = count()

    def up(sockftp) -> float:
        env.prewarm(files * file_size)
        return sockftp("up", source, f"/first-{next(numbers)}")

    def up_rsync() -> float:
        env.prewarm(files * file_size)
        return rsync(source + "/", daemon.url(f"first-{next(numbers)}/"))

    def down(sockftp) -> float:
        env.prewarm(files * file_size)
        return sockftp("down", "/seed", env.path(f"sync-down-{next(numbers)}"))

    def down_rsync() -> float:
        env.prewarm(files * file_size)
        return rsync(daemon.url("seed/"), env.path(f"sync-down-{next(numbers)}") + "/")

    workload = f"first sync, {files} x {human_size(file_size)}"
    env.say(f"sync: {workload}, up and down, x {env.runs} runs")
    variants = {}
    for way, ours_fn, rsync_fn in (("up", up, up_rsync), ("down", down, down_rsync)):
        for name, sockftp in ours.items():
            variants[f"{name} {way}"] = lambda fn=ours_fn, sockftp=sockftp: fn(sockftp)
        variants[f"rsync {way}"] = rsync_fn
    cpu: dict[str, list[float]] = {}
    seconds = _measure(env, _with_cpu(variants, ours, rsync, cpu))
    _cpu_rows(section, workload, cpu)
    per_second = {name: [files / t for t in times] for name, times in seconds.items()}
    for name, values in per_second.items():
        section.add(f"{workload}: {name}", Samples("files/s", values))
    for way in ("up", "down"):
        _against_baseline(section, f"{workload} {way}", {name: seconds[f"{name} {way}"] for name in ours})
    return [
        ratio_check(
            f"sync {way}, {workload}",
            f"sync {way}: sockftp / rsync files/s",
            per_second[f"sockftp {way}"],
            per_second[f"rsync {way}"],
            1.0,
            True,
            unit="files/s",
            reference_name=f"rsync daemon, {way}",
        )
        for way in ("up", "down")
    ]


def _resync(env, section, ours, rsync, daemon, tree) -> list[Check]:
    """2 and 3: a re-sync of a tree of *tree* files, unchanged, then with a tenth changed."""
    source = env.fresh_dir("sync-tree")
    paths = make_tree(source, tree, 2048, dirs=100)
    for sockftp in ours.values():
        sockftp("up", source, "/tree")
    rsync(source + "/", daemon.url("tree/"))
    variants = {name: lambda sockftp=sockftp: sockftp("up", source, "/tree") for name, sockftp in ours.items()}
    variants["rsync"] = lambda: rsync(source + "/", daemon.url("tree/"))
    checks = []
    env.say(f"sync: re-sync of {tree:,} files, nothing changed, x {env.runs} runs")
    workload = f"re-sync up, {tree:,} files, nothing changed"
    cpu: dict[str, list[float]] = {}
    seconds = _measure(env, _with_cpu(variants, ours, rsync, cpu))
    _cpu_rows(section, workload, cpu)
    for name, values in seconds.items():
        section.add(f"{workload}: {name}", Samples("s", values))
    _against_baseline(section, workload, seconds)
    checks.append(_time_check(workload, seconds))

    # A different tenth before every run (the warm-up's too); both then sync the same change.
    changes = count()

    def change_tenth(_run=None) -> None:
        for path in paths[next(changes) % 10 :: 10]:
            change(path, 0, 100)

    change_tenth()
    env.say(f"sync: re-sync of {tree:,} files, 10% changed, x {env.runs} runs")
    workload = f"re-sync up, {tree:,} files, 10% changed"
    cpu = {}
    seconds = _measure_changed(env, _with_cpu(variants, ours, rsync, cpu), change_tenth)
    _cpu_rows(section, workload, cpu)
    for name, values in seconds.items():
        section.add(f"{workload}: {name}", Samples("s", values))
    _against_baseline(section, workload, seconds)
    checks.append(_time_check(workload, seconds))
    return checks


def _measure_changed(env: Env, variants: dict, change_fn) -> dict[str, list[float]]:
    """Warm-up and interleaved runs, with *change_fn* called before every
    pair (untimed), so that both variants of a run sync the same change."""
    names = list(variants)
    results: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # the warm-up, on the change made before
        variants[name]()
    os.sync()
    for run in range(env.runs):
        change_fn()
        for name in names if run % 2 == 0 else names[::-1]:
            results[name].append(variants[name]())
    return results


def _big(env, section, ours, rsync, daemon, size) -> list[Check]:
    """4: one file of *size* with 1 MiB changed in the middle, re-synced up, then down."""
    source = env.fresh_dir("sync-big")
    big = make_tree(source, 1, size, dirs=1)[0]
    # 1 MiB of 512 MiB or more; of a --quick file, as small a share of it (1/256 at most).
    changed = min(MiB, max(4096, size // 256))
    changes = count()

    def change_middle() -> None:
        # New bytes each time, near the middle, not aligned to any block.
        change(big, size // 2 - changed + next(changes) * 4099 % changed, changed)

    # The seeding syncs are the warm-up: they read the file and write both copies.
    for sockftp in ours.values():
        sockftp("up", source, "/big")
    rsync(source + "/", daemon.url("big/"))
    workload = f"{human_size(changed)} changed in a {human_size(size)} file"
    checks = []
    names = [*ours, "rsync"]
    for way in ("up", "down"):
        moved: dict[str, list[float]] = {name: [] for name in names}
        local = {name: env.path(f"sync-big-{name.replace(' ', '-')}") for name in names}
        if way == "down":
            for name, sockftp in ours.items():
                sockftp("down", "/big", local[name])
            rsync(daemon.url("big/"), local["rsync"] + "/")

        def one(name: str, way=way, moved=moved, local=local) -> float:
            env.prewarm(size)
            if name in ours:
                sockftp = ours[name]
                args = ("up", source, "/big") if way == "up" else ("down", "/big", local[name])
                seconds = sockftp(*args)
                moved[name].append(sockftp.sent if way == "up" else sockftp.received)
            else:
                args = (source + "/", daemon.url("big/")) if way == "up" else (daemon.url("big/"), local[name] + "/")
                seconds = rsync(*args)
                moved[name].append(rsync.sent if way == "up" else rsync.received)
            return seconds

        def change_for(way=way) -> None:
            change_middle()
            if way == "down":  # the change must be on the servers: sync it up, untimed
                for sockftp in ours.values():
                    sockftp("up", source, "/big")
                rsync(source + "/", daemon.url("big/"))

        variants = {name: lambda one=one, name=name: one(name) for name in names}
        env.say(f"sync: {workload}, {way}, x {env.runs} runs")
        cpu: dict[str, list[float]] = {}
        seconds = _measure_changed(env, _with_cpu(variants, ours, rsync, cpu), change_for)
        _cpu_rows(section, workload, cpu, f", {way}")
        for name in names:
            section.add(f"{workload}, {way}: {name}", Samples("s", seconds[name]))
            section.add(
                f"{workload}, {way}: {name} bytes {'sent' if way == 'up' else 'received'}",
                Samples("MB", [b / 1e6 for b in moved[name][1:]]),
            )
        _against_baseline(section, f"{workload}, {way}", seconds)
        # The warm-up's bytes are left out: the timed runs' only.
        mine, theirs = moved[OURS][1:], moved["rsync"][1:]
        percent = [100 * b / size for b in mine]
        what = "sent" if way == "up" else "received"
        checks.append(
            Check(
                f"sync {way}, {workload}",
                f"bytes {what} on the wire, % of the file",
                _median(percent),
                2.0,
                False,
                percent,
                unit="%",
                ours=Figure(_median(mine) / 1e6, "MB"),
                reference=Figure(_median(theirs) / 1e6, "MB"),
                reference_name=f"rsync daemon, {way}",
                context=f"rsync's: {100 * _median(theirs) / size:.2f}% of the file (its --stats)",
            )
        )
        checks.append(_time_check(f"sync {way}, {workload}", seconds))
    return checks


def _checksum(env, section, ours, rsync, daemon, files, size) -> list[Check]:
    """5: a --checksum re-sync of *size* in *files* files, nothing changed."""
    each = size // files
    source = env.fresh_dir("sync-sums")
    make_tree(source, files, each, dirs=10)
    for sockftp in ours.values():
        sockftp("up", source, "/sums")
    rsync(source + "/", daemon.url("sums/"))
    workload = f"--checksum re-sync up, {human_size(size)} in {files} files, nothing changed"
    env.say(f"sync: {workload}, x {env.runs} runs")
    variants = {
        name: lambda sockftp=sockftp: sockftp("up", source, "/sums", "--checksum") for name, sockftp in ours.items()
    }
    variants["rsync"] = lambda: rsync("--checksum", source + "/", daemon.url("sums/"))
    cpu: dict[str, list[float]] = {}
    seconds = _measure(env, _with_cpu(variants, ours, rsync, cpu))
    _cpu_rows(section, workload, cpu)
    for name, values in seconds.items():
        section.add(f"{workload}: {name}", Samples("s", values))
    _against_baseline(section, workload, seconds)
    return [_time_check(workload, seconds, target=0.5)]


def _time_check(workload: str, seconds: dict[str, list[float]], target: float = 1.0) -> Check:
    return ratio_check(
        workload,
        "sockftp / rsync seconds",
        seconds[OURS],
        seconds["rsync"],
        target,
        False,
        unit="s",
        reference_name="rsync daemon",
    )


def _median(values: list[float]) -> float:
    return statistics.median(values)


def make_tree(root: str, files: int, size: int, dirs: int) -> list[str]:
    """*files* files of *size* random bytes in *dirs* directories under *root*."""
    paths = []
    for i in range(files):
        path = os.path.join(root, f"d{i % dirs:03}", f"f{i:05}.bin")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(4 * MiB, left))
                f.write(chunk)
                left -= len(chunk)
        paths.append(path)
    return paths


def change(path: str, at: int, length: int) -> None:
    """Overwrite *length* bytes of *path* at *at*, and move its mtime one second on."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(os.urandom(length))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def main(argv=None) -> int:
    """``python -m bench.sync_rsync``: this workload alone, optionally against a baseline."""
    import argparse
    import shlex
    import tempfile

    from .common import Prewarm, describe_filesystem, parse_size
    from .report import Report

    parser = argparse.ArgumentParser(prog="python -m bench.sync_rsync", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="small files of the first sync (default 1000)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("4K"), help="each small file (4K)")
    parser.add_argument("--tree", type=int, default=10_000, help="files re-synced (default 10000)")
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"), help="the big file, --checksum set (1G)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of every variant (default {RUNS})")
    parser.add_argument("--dir", default=None, help="where the work directory goes (default: the temp dir)")
    parser.add_argument("--no-prewarm", action="store_true", help="skip the page-cache prewarm before each variant")
    parser.add_argument("--baseline", metavar="SRC", help="also a sockftp imported from SRC (a source tree's src/)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="sockftp-bench-", dir=args.dir)
    try:
        env = Env(work, args.runs, Prewarm(work, enabled=not args.no_prewarm))
        command = ["python", "-m", "bench.sync_rsync", *(sys.argv[1:] if argv is None else argv)]
        report = Report(
            [
                f"command: {shlex.join(command)}",
                f"{args.runs} runs of every variant, interleaved; medians (min-max); {os.cpu_count()} cores",
                f"work directory on {describe_filesystem(work)}",
            ]
        )
        section, checks = run(env, args.files, args.file_size, args.tree, args.size, args.baseline)
        report.sections.append(section)
        report.checks.extend(checks)
        print(report.render())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
