"""lftp ``mirror -R`` of many small files, one connection against four:
sockftp's FTP front door against vsftpd (issue 21, item 5).

    python -m bench.ftp_parallel                      # 1000 files of 4 KiB, 5 runs
    python -m bench.ftp_parallel --files 200 --runs 3
    python -m bench --only ftp-parallel               # with the bench's --files, --file-size, --runs
    python -m bench.ftp_parallel --baseline /tmp/main/src   # and another sockftp, e.g. before a change

Each variant is one ``lftp mirror -R [--parallel=4] SOURCE TARGET``
process, timed from its start to its exit: connecting, logging in, the
target's listing, every file, and quitting. That is what a user waits
for. Each run mirrors into a fresh remote directory, which is checked
(every file there, at its size) and removed after the run, untimed. Next
to files/s, each row gives the server's CPU time per 1000 files: its
process's user and system time (for vsftpd, which runs a process per
session, also that of the session processes it reaped).

The servers, each a child process on 127.0.0.1:

* sockftp: ``sockftp serve --ftp-port 0``; lftp logs in as ``bench`` by
  password, on every connection. One untimed login comes first: it costs
  an argon2id check (~0.1 s), and the timed runs' logins are then
  remembered (``password_cache_time``, five minutes), as for anyone who
  used lftp in the last five minutes. Without it, the first run of the
  bench would pay that 0.1 s alone; a user's first mirror pays it once,
  whether over 1 connection or 4.
* vsftpd (Debian package ``vsftpd``: ``apt-get install vsftpd``, which
  the bench needs and CI does not install, since CI runs only the bench's
  quick smoke test): run as the launching user (``run_as_launching_user``,
  no chroot, no system service), with a generated config file, on a port
  of its own, anonymous uploads enabled (an anonymous login costs
  nothing). Where vsftpd is not installed, or does not start, its rows are
  left out with a note saying why. Its transfer log is on, as sockftp's
  audit log is.

With ``--baseline SRC`` (a sockftp source tree, for instance ``git
archive main src | tar -x -C /tmp/main``), a second sockftp server,
importing sockftp from SRC, runs the same variants in the same run, so a
change is measured against what it changes side by side.

Variants are interleaved (A B C D, then D C B A). The notes give the
ratios of the medians, with their range run by run, against the targets:
sockftp's four connections at least as fast as its one, and at least as
fast as vsftpd's four; ``python -m bench`` puts both in its results table.
Without lftp (``apt-get install lftp``) the whole workload is skipped, and
without vsftpd its target: their rows say why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from itertools import count

from .common import Env, Prewarm, Samples, human_size, interleave, parse_size
from .report import Section, missing_check, ratio, ratio_check
from .servers import PASSWORD, USER, ServerProcess, SockftpServer
from .small_files import _make_sources

#: Connections of the parallel variant (lftp ``mirror --parallel=N``).
PARALLEL = 4

#: Runs of every variant when run on its own (``python -m bench.ftp_parallel``).
RUNS = 5

#: Seconds one lftp mirror may take before the bench gives up on it.
MIRROR_TIMEOUT = 600.0

VSFTPD = "/usr/sbin/vsftpd"

OURS, THEIRS, BASELINE = "sockftp FTP", "vsftpd", "sockftp FTP baseline"


def run(env: Env, files: int, file_size: int, baseline: str | None = None) -> tuple[Section, list]:
    section = Section(
        f"lftp mirror -R of {files} files of {human_size(file_size)}: 1 connection against {PARALLEL} "
        f"(files/s; server CPU per 1000 files)"
    )
    lftp = shutil.which("lftp")
    if lftp is None:
        why = "lftp is not installed (apt-get install lftp)"
        section.notes.append(f"skipped: {why}")
        workload = _workload(files, file_size)
        return section, [missing_check(workload, measure, 1.0, True, name, why) for measure, name in _TARGETS]
    sources = _make_sources(env.fresh_dir("ftpp-sources"), files, file_size)
    source_dir = os.path.dirname(sources[0])
    try:
        with contextlib.ExitStack() as servers:
            ours = servers.enter_context(SockftpServer(env.path("ftpp-sockftp"), ftp=True))
            targets = {OURS: Target(ours, ours.ftp_port, (USER, PASSWORD), ours.home(), _process_cpu)}
            if baseline is not None:
                with _imports_from(baseline):
                    theirs = servers.enter_context(SockftpServer(env.path("ftpp-baseline"), ftp=True))
                targets[BASELINE] = Target(theirs, theirs.ftp_port, (USER, PASSWORD), theirs.home(), _process_cpu)
                section.notes.append(f"{BASELINE}: sockftp imported from {baseline}")
            vsftpd, why_not = start_vsftpd(env.path("ftpp-vsftpd"))
            if vsftpd is not None:
                servers.enter_context(vsftpd)
                targets[THEIRS] = Target(vsftpd, vsftpd.port, ("anonymous", "bench@"), vsftpd.home(), _tree_cpu)
            else:
                section.notes.append(f"vsftpd left out: {why_not}")
            for target in targets.values():
                _log_in(lftp, target)
            checks = measure(env, section, targets, lftp, source_dir, files, file_size)
            if vsftpd is None:
                measure_name, reference = _TARGETS[1]
                checks.append(missing_check(_workload(files, file_size), measure_name, 1.0, True, reference, why_not))
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)
    return section, checks


#: The targets of issue 21 (the measure, and the reference's name):
#: sockftp's 4 connections against its 1, and against vsftpd's 4.
_TARGETS = (
    (f"{OURS}: {PARALLEL} connections / 1", f"{OURS}, 1 connection"),
    (f"{OURS} / {THEIRS}, {PARALLEL} connections", f"vsftpd through lftp, {PARALLEL} connections"),
)


def _workload(files: int, file_size: int) -> str:
    return f"lftp mirror -R --parallel={PARALLEL} of {files:,} x {human_size(file_size)} to the FTP door"


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


class Target:
    """A server to mirror to: its process, FTP port, login and home on disk,
    and how to read its CPU time."""

    def __init__(self, server: ServerProcess, port: int, login: tuple[str, str], home: str, cpu):
        self.server = server
        self.port = port
        self.login = login
        self.home = home
        self.cpu = lambda: cpu(server.pid)


def measure(env: Env, section: Section, targets: dict, lftp: str, source_dir: str, files: int, size: int) -> list:
    """Time every (server, connections) variant, add its rows, and the ratios
    as notes; return the targets' checks (vsftpd's only if it ran)."""
    runs = count()
    cpu: dict[str, list[float]] = {}
    variants = {}
    for name, target in targets.items():
        for connections in (1, PARALLEL):
            label = f"{name}, {_connections(connections)}"
            cpu[label] = []
            variants[label] = _variant(env, lftp, target, source_dir, files, size, connections, runs, cpu[label])
    env.say(f"lftp mirror -R, {files} files of {human_size(size)}: {len(variants)} variants x {env.runs} runs")
    seconds = interleave(variants, env.runs)
    rates = {label: [files / t for t in times] for label, times in seconds.items()}
    for label, values in rates.items():
        per_1000 = Samples("s", [c * 1000 / files for c in cpu[label]])
        section.add(label, Samples("files/s", values), f"server CPU {per_1000.spread()} s per 1000 files")
    serial, parallel = (f"{OURS}, {_connections(n)}" for n in (1, PARALLEL))
    section.notes.append(_ratio(f"{OURS}: {PARALLEL} connections / 1", rates[parallel], rates[serial], 1.0))
    workload = _workload(files, size)
    cpu_text = "; ".join(
        f"{label} {statistics.median(c) * 1000 / files:.2f} s"
        for label, c in cpu.items()
        if c and not label.startswith(BASELINE)
    )
    (own_measure, own_reference), (their_measure, their_reference) = _TARGETS
    checks = [
        ratio_check(
            workload,
            own_measure,
            rates[parallel],
            rates[serial],
            1.0,
            True,
            unit="files/s",
            reference_name=own_reference,
            context=f"server CPU per 1000 files: {cpu_text}",
        )
    ]
    if BASELINE in targets:
        base_serial, base_parallel = (f"{BASELINE}, {_connections(n)}" for n in (1, PARALLEL))
        section.notes.append(
            _ratio(f"{BASELINE}: {PARALLEL} connections / 1", rates[base_parallel], rates[base_serial], 1.0)
        )
        for connections, ours_label, base_label in ((1, serial, base_serial), (PARALLEL, parallel, base_parallel)):
            what = f"{OURS} / {BASELINE}, {_connections(connections)}"
            section.notes.append(_ratio(what, rates[ours_label], rates[base_label]))
    if THEIRS in targets:
        their_serial, their_parallel = (f"{THEIRS}, {_connections(n)}" for n in (1, PARALLEL))
        section.notes.append(
            _ratio(f"{THEIRS}: {PARALLEL} connections / 1", rates[their_parallel], rates[their_serial])
        )
        section.notes.append(
            _ratio(f"{OURS} / {THEIRS}, {PARALLEL} connections", rates[parallel], rates[their_parallel], 1.0)
        )
        their_speedup, _ = ratio(rates[their_parallel], rates[their_serial])
        checks.append(
            ratio_check(
                workload,
                their_measure,
                rates[parallel],
                rates[their_parallel],
                1.0,
                True,
                unit="files/s",
                reference_name=their_reference,
                context=f"vsftpd's {PARALLEL} connections / its 1, files/s: {their_speedup:.2f}",
            )
        )
        section.notes.append(_ratio(f"{OURS} / {THEIRS}, 1 connection", rates[serial], rates[their_serial]))
    section.notes.append(
        f"each run: lftp -e 'mirror -R [--parallel={PARALLEL}] SOURCE TARGET' from start to exit, "
        "login and listing included; sockftp logs in by password, vsftpd anonymously"
    )
    return checks


def _connections(n: int) -> str:
    return "1 connection" if n == 1 else f"{n} connections"


def _ratio(what: str, numerator: list[float], denominator: list[float], target: float | None = None) -> str:
    """``WHAT files/s: 1.23 (1.01-1.40)``, and against *target* if there is one."""
    value, per_run = ratio(numerator, denominator)
    text = f"{what}, files/s: {value:.2f}"
    if len(per_run) > 1:
        text += f" ({min(per_run):.2f}-{max(per_run):.2f})"
    if target is not None:
        text += f"; target >= {target:g}: {'met' if value >= target else 'MISSED'}"
    return text


def _variant(env: Env, lftp: str, target: Target, source_dir: str, files: int, size: int, connections: int, runs, cpu):
    """One lftp mirror into a fresh directory: its seconds (the server's
    CPU seconds go to *cpu*). The directory is checked and removed after."""

    def variant() -> float:
        name = f"mirror-{next(runs)}"
        env.prewarm(files * size)
        before = target.cpu()
        elapsed = mirror(lftp, target.port, target.login, source_dir, name, connections)
        target.server.check_alive()
        cpu.append(_settled(target.cpu) - before)
        landed = os.path.join(target.home, name)
        got = [entry for entry in os.scandir(landed) if entry.is_file() and entry.stat().st_size == size]
        if len(got) != files:
            raise RuntimeError(f"{landed}: {len(got)} files of {size} bytes, {files} expected")
        shutil.rmtree(landed)
        return elapsed

    return variant


def _log_in(lftp: str, target: Target) -> None:
    """One login and listing, untimed (see the module's docstring)."""
    _lftp(lftp, target.port, target.login, "ls")


def mirror(lftp: str, port: int, login: tuple[str, str], source: str, target: str, connections: int) -> float:
    """Run ``lftp mirror -R`` of *source* into remote *target*; its seconds.
    Raises RuntimeError if lftp fails."""
    parallel = f"--parallel={connections} " if connections > 1 else ""
    started = time.perf_counter()
    _lftp(lftp, port, login, f"mirror -R {parallel}{shlex.quote(source)} {shlex.quote(target)}")
    return time.perf_counter() - started


def _lftp(lftp: str, port: int, login: tuple[str, str], command: str) -> None:
    """Run lftp *command* against 127.0.0.1:*port*. Raises RuntimeError if it fails."""
    # A failure ends lftp with an error, instead of retries that would be timed.
    script = f"set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 60; {command}; bye"
    argv = [lftp, "-u", ",".join(login), "-p", str(port), "127.0.0.1", "-e", script]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=MIRROR_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"lftp exited with {done.returncode}: {(done.stdout + done.stderr).strip()[-500:]}")


# -- server CPU ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its ')'.
        return f.read().rsplit(")", 1)[1].split()


def _process_cpu(pid: int) -> float:
    """User plus system time of *pid*, all its threads."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """User plus system time of *pid* and of the children it has reaped
    (vsftpd's session processes, once their sessions have ended)."""
    fields = _stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def _settled(read, wait: float = 0.2, timeout: float = 5.0) -> float:
    """*read()* once it has stopped changing: lftp has quit, but a server may
    still be closing the sessions, and vsftpd reaps its session processes
    only then."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(wait)
        now = read()
        if now == last:
            return now
        last = now
    return last


# -- vsftpd ----------------------------------------------------------------------------


class VsftpdServer(ServerProcess):
    """vsftpd as a child process: anonymous uploads into ``root``, on
    127.0.0.1 and a port of its own, with a config file of its own."""

    name = "vsftpd"

    def __init__(self, directory: str, start_timeout: float = 10.0):
        self.directory = directory
        self.root = os.path.join(directory, "root")
        os.makedirs(self.root, exist_ok=True)
        empty = os.path.join(directory, "empty")  # vsftpd insists on an empty directory for its chroots
        os.makedirs(empty, exist_ok=True)
        self._port = _free_port()
        self.config = os.path.join(directory, "vsftpd.conf")
        with open(self.config, "w") as f:
            f.write(_vsftpd_config(self._port, self.root, empty, os.path.join(directory, "xfer.log")))
        super().__init__([VSFTPD, self.config], os.path.join(directory, "vsftpd.log"), start_timeout)

    def _wait_for_ports(self, timeout: float, count: int) -> list[int]:
        """vsftpd prints nothing when it is ready: wait until its port answers.
        What it prints (``500 OOPS: ...``) goes to its log."""
        copier = threading.Thread(target=self._copy_stdout, name="vsftpd stdout", daemon=True)
        copier.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=1.0) as probe:
                    if probe.recv(64).startswith(b"220"):
                        return [self._port]
            except OSError:
                time.sleep(0.05)
        exited = self.proc.poll() is not None
        self.proc.kill()
        copier.join(2.0)  # what it said on its way out, into the log
        said = self.log_tail().strip() or "no output"
        self.stop()
        if exited:  # vsftpd says nothing of a bad config; its exit status is all there is
            raise RuntimeError(f"vsftpd exited with {self.proc.returncode} (config {self.config}): {said}")
        raise RuntimeError(f"vsftpd did not answer within {timeout:g} s: {said}")

    def _copy_stdout(self) -> None:
        for line in self.proc.stdout:
            try:
                self._log.write(line.encode())
                self._log.flush()
            except ValueError:  # the log was closed: vsftpd is being stopped
                return

    def home(self, anonymous: bool = True) -> str:
        return self.root


def _vsftpd_config(port: int, root: str, empty: str, xfer_log: str) -> str:
    settings = {
        "listen": "YES",
        "listen_ipv6": "NO",
        "listen_address": "127.0.0.1",
        "listen_port": port,
        "background": "NO",
        # No root needed, no system account, no chroot: the bench's own user.
        "run_as_launching_user": "YES",
        "secure_chroot_dir": empty,
        "anonymous_enable": "YES",
        "no_anon_password": "YES",
        "anon_root": root,
        "local_enable": "NO",
        "write_enable": "YES",
        "anon_upload_enable": "YES",
        "anon_mkdir_write_enable": "YES",
        "anon_other_write_enable": "YES",
        "anon_umask": "022",
        # Sandboxes a container may not allow; they guard against vsftpd's
        # own bugs, not the workload.
        "seccomp_sandbox": "NO",
        "isolate": "NO",
        "isolate_network": "NO",
        "connect_from_port_20": "NO",
        "pasv_enable": "YES",
        "pasv_address": "127.0.0.1",
        "max_clients": 0,
        "max_per_ip": 0,
        "idle_session_timeout": 300,
        "xferlog_enable": "YES",
        "vsftpd_log_file": xfer_log,
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_vsftpd(directory: str) -> tuple[VsftpdServer | None, str]:
    """vsftpd started in *directory*, or None and why not."""
    if not os.access(VSFTPD, os.X_OK):
        return None, f"{VSFTPD} is not installed (Debian: apt-get install vsftpd)"
    try:
        return VsftpdServer(directory), ""
    except (OSError, RuntimeError) as exc:
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


# -- on its own ------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ftp_parallel", description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="files to mirror (default 1000)")
    parser.add_argument("--file-size", type=parse_size, default=parse_size("4K"), help="each file (default 4K)")
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs of every variant (default {RUNS})")
    parser.add_argument("--dir", default=None, help="where the work directory goes (default: the temp dir)")
    parser.add_argument("--no-prewarm", action="store_true", help="skip the page-cache prewarm before each variant")
    parser.add_argument("--baseline", metavar="SRC", help="also a sockftp imported from SRC (a source tree's src/)")
    args = parser.parse_args(argv)
    import tempfile

    from .common import describe_filesystem
    from .report import Report

    work = tempfile.mkdtemp(prefix="sockftp-bench-", dir=args.dir)
    try:
        env = Env(work, args.runs, Prewarm(work, enabled=not args.no_prewarm))
        command = ["python", "-m", "bench.ftp_parallel", *(sys.argv[1:] if argv is None else argv)]
        report = Report(
            [
                f"command: {shlex.join(command)}",
                f"{args.runs} runs of every variant, interleaved; medians (min-max); {os.cpu_count()} cores",
                f"work directory on {describe_filesystem(work)}",
            ]
        )
        section, _ = run(env, args.files, args.file_size, args.baseline)
        report.sections.append(section)
        print(report.render())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
