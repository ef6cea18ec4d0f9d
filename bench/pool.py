"""Many clients at once: sessions spread over worker processes, one thread
per session.

Why processes and threads: a single Python process would put all clients
behind one GIL, so every chunk that each client receives, hashes and
writes would wait for one core, while the server under test is also Python
and also wants a core. One worker process per core lets the client side
use the whole machine if it needs to. Inside a worker, one thread per
session keeps each session blocked in the kernel (recv_into, sendall,
os.write and hashing all release the GIL) rather than waiting for Python.
Each run reports the CPU time that the clients and the server used, so the
reader can see which side was busy (see :class:`RunResult`).

The coordinator (the bench process) talks to each worker over a pipe:

* ``open``: connect (and log in) sessions to one server, untimed, and keep
  them. The sessions of each server are kept side by side, so runs against
  the two servers can be interleaved;
* ``prepare`` then ``go``: each worker starts one thread per session that
  takes part, all waiting on one event, and ``go`` releases them at once.
  The worker answers when its threads are done, with the
  ``time.monotonic()`` of its last one (one clock for every process on
  Linux);
* ``close``, ``exit``.

Every wait has a timeout, so a stuck server fails the bench and never hangs it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from dataclasses import dataclass

from .clients import open_session
from .common import CLIENT_TIMEOUT, own_cpu_seconds

#: Seconds the coordinator waits for any worker's answer.
REPLY_TIMEOUT = 900.0


@dataclass
class RunResult:
    """One timed run of a task in many sessions at once."""

    seconds: float  # from "go" to the last session done
    client_cpu: float  # CPU seconds all worker processes used meanwhile


class ClientPool:
    """Client sessions in *processes* worker processes."""

    def __init__(self, processes: int = 2):
        context = multiprocessing.get_context("spawn")
        self._pipes = []
        self._workers = []
        for index in range(processes):
            ours, theirs = context.Pipe()
            worker = context.Process(target=_worker_main, args=(index, theirs), daemon=True)
            worker.start()
            theirs.close()
            self._pipes.append(ours)
            self._workers.append(worker)
        #: Sessions held, per kind ("sockftp", "pyftpdlib").
        self.held: dict[str, int] = {}

    @property
    def processes(self) -> int:
        return len(self._pipes)

    def _shares(self, count: int) -> list[int]:
        """*count* sessions split over the workers, as evenly as can be."""
        base, extra = divmod(count, len(self._pipes))
        return [base + (1 if i < extra else 0) for i in range(len(self._pipes))]

    def _ask_all(self, messages: list[tuple]) -> list:
        for pipe, message in zip(self._pipes, messages, strict=True):
            pipe.send(message)
        answers = [self._answer(pipe) for pipe in self._pipes]
        failures = [value for status, value in answers if status == "error"]
        if failures:
            raise RuntimeError(f"a client worker failed:\n{failures[0]}")
        return [value for _, value in answers]

    @staticmethod
    def _answer(pipe) -> tuple[str, object]:
        if not pipe.poll(REPLY_TIMEOUT):
            raise RuntimeError(f"a client worker did not answer within {REPLY_TIMEOUT:g} s")
        return pipe.recv()

    def open(self, kind: str, port: int, count: int, parallel: int = 8, **options) -> float:
        """Open *count* sessions of *kind* to *port* (untimed; *parallel*
        connects at a time per worker), replacing the sessions of *kind*
        held before. Returns the seconds it took."""
        start = time.perf_counter()
        self._ask_all([("open", kind, port, share, parallel, options) for share in self._shares(count)])
        self.held[kind] = count
        return time.perf_counter() - start

    def run(self, task: str, count: int, kind: str, **args) -> RunResult:
        """Run *task* in *count* sessions of *kind* at once.

        Tasks: ``get`` (args: remote, local_dir), ``put`` (local, prefix),
        ``rm`` (prefix), each in the first *count* sessions held; and
        ``connect`` (port, options), which opens *count* new sessions as
        the timed action and holds them until :meth:`close_sessions`.
        """
        if task != "connect" and count > self.held.get(kind, 0):
            raise ValueError(f"{count} {kind} sessions wanted, {self.held.get(kind, 0)} open")
        self._ask_all([("prepare", task, share, kind, args) for share in self._shares(count)])
        started = time.monotonic()
        done = self._ask_all([("go",)] * len(self._pipes))
        return RunResult(max(end for end, _ in done) - started, sum(cpu for _, cpu in done))

    def close_sessions(self) -> None:
        """Close every session held, of every kind."""
        self._ask_all([("close",)] * len(self._pipes))
        self.held = {}

    def stop(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for worker in self._workers:
            worker.join(30)
            if worker.is_alive():
                worker.terminate()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- the worker process --------------------------------------------------------------


class _Worker:
    def __init__(self, index: int):
        self.index = index
        self.sessions: dict[str, list] = {}  # kind -> sessions
        self.extra: list = []  # sessions opened by "connect" runs
        self.threads: list[threading.Thread] = []
        self.go = threading.Event()
        self.errors: list[str] = []
        self.finished: list[float] = []

    def name(self, prefix: str, session: int) -> str:
        """A file name unique to this worker and session."""
        return f"{prefix}-w{self.index}-s{session}.bin"

    def open(self, kind: str, port: int, count: int, parallel: int, options: dict) -> None:
        for session in self.sessions.pop(kind, []):
            session.close()
        slots: list = [None] * count
        try:
            _in_threads(count, parallel, lambda i: slots.__setitem__(i, open_session(kind, port, **options)))
        finally:
            self.sessions[kind] = [session for session in slots if session is not None]

    def prepare(self, task: str, count: int, kind: str, args: dict) -> None:
        self.go.clear()
        self.errors, self.finished = [], []
        action = getattr(self, f"task_{task}")
        self.threads = [
            threading.Thread(target=self._session_thread, args=(action, kind, i, args), daemon=True)
            for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _session_thread(self, action, kind: str, session: int, args: dict) -> None:
        if not self.go.wait(REPLY_TIMEOUT):
            return
        try:
            action(kind, session, **args)
        except Exception:  # noqa: BLE001 - reported to the coordinator
            self.errors.append(traceback.format_exc())
        self.finished.append(time.monotonic())

    def run(self) -> tuple[float, float]:
        cpu = own_cpu_seconds()
        self.go.set()
        deadline = time.monotonic() + REPLY_TIMEOUT
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self.threads):
            raise RuntimeError("sessions still running after the timeout")
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} sessions failed; the first:\n{self.errors[0]}")
        return max(self.finished, default=time.monotonic()), own_cpu_seconds() - cpu

    # Each task is what one session does in a timed run.

    def task_get(self, kind: str, session: int, remote: str, local_dir: str) -> None:
        local = os.path.join(local_dir, self.name(f"get-{kind}", session))
        self.sessions[kind][session].get(remote, local)

    def task_put(self, kind: str, session: int, local: str, prefix: str) -> None:
        self.sessions[kind][session].put(local, self.name(prefix, session))

    def task_rm(self, kind: str, session: int, prefix: str) -> None:
        self.sessions[kind][session].rm(self.name(prefix, session))

    def task_connect(self, kind: str, session: int, port: int, options: dict) -> None:
        opened = open_session(kind, port, **options)
        self.extra.append(opened)  # list.append is atomic under the GIL

    def close(self) -> None:
        for session in [s for sessions in self.sessions.values() for s in sessions] + self.extra:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.sessions, self.extra = {}, []


def _in_threads(count: int, parallel: int, action) -> None:
    """``action(i)`` for i in range(count), *parallel* at a time; re-raises
    the first failure."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    indices = iter(range(count))

    def loop():
        while not errors:
            with lock:
                i = next(indices, None)
            if i is None:
                return
            try:
                action(i)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(min(parallel, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REPLY_TIMEOUT)
    if errors:
        raise errors[0]


def _worker_main(index: int, pipe) -> None:
    worker = _Worker(index)
    commands = {"open": worker.open, "prepare": worker.prepare, "go": worker.run, "close": worker.close}
    while pipe.poll(REPLY_TIMEOUT + CLIENT_TIMEOUT):  # else the coordinator is gone
        command, *args = pipe.recv()
        if command == "exit":
            break
        try:
            pipe.send(("ok", commands[command](*args)))
        except Exception:  # noqa: BLE001 - reported to the coordinator
            pipe.send(("error", traceback.format_exc()))
    worker.close()
