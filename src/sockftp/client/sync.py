"""Make a directory the same on both ends: Client.sync_up and Client.sync_down.

A sync lists both sides, compares them (:mod:`sockftp.client.sync_plan`,
pure) and then moves only what differs, in phases:

1. **Listing.** The server's side in one streamed ``tree`` request (with
   its stored checksums for ``checksum``), sent in the same write as a
   ``stat`` of the directory itself; servers without ``tree`` are walked
   with one ``ls`` per directory. The local side is walked meanwhile, in a
   thread: one ``lstat`` per entry. An unchanged tree costs nothing more.
2. **Removing and making directories**, pipelined on one connection
   (locally: plain system calls).
3. **Files.** Small ones pipelined on the main connection
   (``put_many``/``get_many``, in windows of :data:`SYNC_WINDOW`); big ones
   (from :data:`BIG_FILE`) on a second connection at the same time, so one
   big file does not stall the small ones, each resumable as ``put``/``get``.
4. **Times**: of files whose content matched, then of directories,
   deepest first, once their contents are in place (remotely with
   ``utime`` where the server has it).

A lost connection is retried (``retries`` of the client): the sync starts
over from the listing, and finds done what was done. Whatever else fails
for one file is noted in the summary and the sync goes on.
"""

from __future__ import annotations

import errno
import os
import socket
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from ..protocol.entries import DIRECTORY
from ..protocol.errors import ConnectionLost, NotFound, SockftpError
from .single import RESUME_THRESHOLD, partial_path
from .sync_delta import DELTA, TOUCHED, WHOLE, delta_down, delta_up, delta_worthwhile
from .sync_lists import fill_checksums, local_listing, remote_join, remote_listing
from .sync_plan import MODIFY_WINDOW, Excluder, FileChange, Plan, SyncSummary, make_plan

#: Requests in flight at once on a pipelined connection. Each reply the
#: client has not read yet waits in its socket buffer, and the server stops
#: reading requests once that is full: 256 replies of ~200 bytes stay well
#: inside the smallest default buffers, and 1000 small files cost 4 waits.
SYNC_WINDOW = 256

#: Files of at least this size go on the second connection, one at a time,
#: through the resumable put and get; smaller ones are pipelined.
BIG_FILE = RESUME_THRESHOLD

#: progress(done, total): bytes of the whole sync's files handled so far, and their total.
SyncProgress = Callable[[int, int], None]


class SyncTransfers:
    """sync_up and sync_down.

    Expects of the class it is mixed into: the connection's ``request``,
    ``_send_many``, ``_reply``, ``_wire``, ``close``, ``connect``,
    ``server_info`` and settings (``host``, ``port``, ``timeout``,
    ``retries``, ``user``, ``password``, ``token``, ``tls``...), ``iter_ls``
    and ``mkdir`` (:class:`~sockftp.client.files.FileOperations`), ``put``
    and ``get``, ``put_many`` and ``get_many``.
    """

    def sync_up(
        self,
        local_dir: str | os.PathLike,
        remote_dir: str,
        *,
        delete: bool = False,
        dry_run: bool = False,
        checksum: bool = False,
        exclude: Iterable[str] = (),
        progress: SyncProgress | None = None,
        modify_window: float = MODIFY_WINDOW,
    ) -> SyncSummary:
        """Make remote directory *remote_dir* (created if missing) hold
        what local directory *local_dir* holds, sending only what differs.

        Args:
            delete: also remove what *local_dir* lacks.
            dry_run: change nothing; the summary's ``changes`` say what would change.
            checksum: compare files of the same size by content (XXH3-128:
                the server's stored checksum, this side's computed), not time.
            exclude: shell patterns of names or relative paths to leave
                alone on both sides (see :class:`~sockftp.client.sync_plan.Excluder`).
            progress: ``progress(done, total)`` in bytes for the whole sync.
            modify_window: seconds two times may differ and still match.

        Returns a :class:`~sockftp.client.sync_plan.SyncSummary`; files that
        failed are in its ``failures``, the rest is done. Raises only when
        the sync cannot run at all: a source that is not a directory, a
        connection lost for good.
        """
        options = _Options(delete, dry_run, checksum, Excluder(exclude), modify_window)
        return _SyncRun(self, "up", os.fspath(local_dir), remote_dir, options, progress).run()

    def sync_down(
        self,
        remote_dir: str,
        local_dir: str | os.PathLike,
        *,
        delete: bool = False,
        dry_run: bool = False,
        checksum: bool = False,
        exclude: Iterable[str] = (),
        progress: SyncProgress | None = None,
        modify_window: float = MODIFY_WINDOW,
    ) -> SyncSummary:
        """Make local directory *local_dir* (created if missing) hold what
        remote directory *remote_dir* holds; the arguments as for
        :meth:`sync_up`. Nothing is ever written outside *local_dir*."""
        options = _Options(delete, dry_run, checksum, Excluder(exclude), modify_window)
        return _SyncRun(self, "down", os.fspath(local_dir), remote_dir, options, progress).run()

    # -- building blocks, also for the tests ---------------------------------------------

    def _pipeline(self, requests: list[dict], window: int = SYNC_WINDOW) -> Iterator[dict | SockftpError]:
        """Send one-reply *requests* pipelined, *window* at most unanswered;
        yield each reply, or the error it was answered with, in order. A
        lost connection ends it (ConnectionLost)."""
        sent = 0
        answered = 0
        try:
            while answered < len(requests):
                if sent < len(requests) and sent - answered <= window // 2:
                    batch = requests[sent : sent + max(window // 2, 1)]
                    if sent > answered and self._wire is None:
                        raise ConnectionLost(f"the connection closed with {sent - answered} requests unanswered")
                    self._send_many(batch)
                    sent += len(batch)
                try:
                    reply = self._reply()
                except ConnectionLost:
                    raise
                except SockftpError as exc:
                    reply = exc
                answered += 1
                yield reply
        finally:
            if answered < sent:
                self.close()  # left early: the replies still owed would answer the next requests

    def _sibling(self, retries: int | None = None):
        """A second connection to the same server, as the same user, by the
        token this one holds if any (no second password check)."""
        other = type(self)(
            self.host,
            self.port,
            timeout=self.timeout,
            retries=self.retries if retries is None else retries,
            connect=False,
            user=self.user,
            password=self.password,
            token=self.token,
            tls=self.tls,
            tls_ca=self.tls_ca,
            insecure=self.insecure,
        )
        other._spoke_plaintext = self._spoke_plaintext
        other.on_retry = self.on_retry
        other.connect()
        return other


class _Options:
    __slots__ = ("delete", "dry_run", "checksum", "excluded", "modify_window")

    def __init__(self, delete, dry_run, checksum, excluded, modify_window):
        if not isinstance(modify_window, (int, float)) or modify_window < 0:
            raise ValueError(f"modify_window must be a number of seconds >= 0, not {modify_window!r}")
        self.delete, self.dry_run, self.checksum = bool(delete), bool(dry_run), bool(checksum)
        self.excluded, self.modify_window = excluded, float(modify_window)


class _Cancelled(Exception):
    """Raised in the big-file thread's progress callback to stop it."""


class _FileProgress:
    """A put/get progress callback that feeds the whole sync's, and stops
    the transfer (raising _Cancelled) once the sync is cancelled."""

    __slots__ = ("_run", "_size", "seen")

    def __init__(self, run: _SyncRun, change: FileChange):
        self._run = run
        self._size = change.size
        self.seen = 0  # bytes of this file counted so far

    def __call__(self, done: int, _total: int) -> None:
        run = self._run
        if run._cancel.is_set():
            raise _Cancelled()
        done = min(max(done, 0), self._size)
        with run._lock:
            run._done += done - self.seen
            self.seen = done
            run._report()


class _SyncRun:
    """One sync_up or sync_down: the phases of the module docstring."""

    def __init__(self, client, direction: str, local: str, remote: str, options: _Options, progress):
        self.client = client
        self.up = direction == "up"
        self.local = os.path.abspath(local)
        self.remote = remote
        self.options = options
        self.summary = SyncSummary(direction, dry_run=options.dry_run)
        self._progress = progress
        self._done = 0
        self._total = 0
        self._lock = threading.Lock()  # the summary and the progress, from two threads
        self._cancel = threading.Event()

    def run(self) -> SyncSummary:
        started = time.monotonic()
        attempts = 0
        while True:
            self.summary.failures = []  # those that still fail are found again
            self._cancel = threading.Event()
            try:
                self._once()
                break
            except ConnectionLost as exc:
                if attempts >= self.client.retries:
                    raise
                lost = exc
            except (SockftpError, OSError):
                raise  # raised where the connection is in step
            except BaseException:
                # Ctrl-C, say, anywhere: replies may still be owed.
                self.client.close()
                raise
            attempts += 1
            self.client.pause_before_retry(attempts, lost)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    # -- one attempt ----------------------------------------------------------------

    def _once(self) -> None:
        options = self.options
        try:
            st = os.stat(self.local)
        except FileNotFoundError:
            if self.up:
                raise  # a missing source is an error, never an empty tree
            st = None  # a destination yet to make
        if st is not None and not statmod.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), self.local)
        # The local walk (system calls, which let go of the GIL) runs while
        # the server's listing arrives.
        walk = _Background(
            lambda: local_listing(self.local, options.excluded, strict_names=self.up) if st else ({}, [], [])
        )
        try:
            remote_root, remote = remote_listing(self.client, self.remote, options.excluded, options.checksum)
        finally:
            local, partials, walk_failures = walk.result()
        if self.up:
            source, dest = local, remote
            unreadable = [f for f in walk_failures if f[0] != "name"]
            self.summary.failures.extend((path, exc) for _why, path, exc in walk_failures)
        else:
            if remote_root is None:
                raise NotFound(f"no such directory: {self.remote}")
            source, dest = remote, local
            unreadable = []
            self.summary.failures.extend((path, exc) for _why, path, exc in walk_failures)
        if options.checksum and remote_root is not None:
            fill_checksums(self.client, source, dest, up=self.up, local_root=self.local, remote_root=remote_root)
        plan = make_plan(
            source,
            dest,
            # A source directory that could not be read would look empty:
            # never delete on the strength of that (rsync does the same).
            delete=options.delete and not unreadable,
            checksum=options.checksum,
            modify_window=options.modify_window,
        )
        self.summary.checked = plan.checked
        self.summary.changes = plan.changes
        if options.dry_run:
            # What would be done, counted as it would be.
            self.summary.transferred = len(plan.transfers)
            self.summary.bytes = sum(c.size for c in plan.transfers)
            self.summary.deleted = len(plan.remove)
            self.summary.dirs_created = len(plan.mkdirs)
            return
        if self.up:
            self._apply_up(plan, remote_root)
        else:
            self._apply_down(plan, remote_root, partials)

    # -- sync up ----------------------------------------------------------------------

    def _apply_up(self, plan: Plan, remote_root: str | None) -> None:
        client = self.client
        if remote_root is None:
            remote_root = client.mkdir(self.remote, parents=True)
            self.summary.dirs_created += 1
        blocked = self._remote_removals(plan, remote_root)
        requests = [{"cmd": "mkdir", "path": remote_join(remote_root, path), "parents": True} for path in plan.mkdirs]
        for path, reply in zip(plan.mkdirs, client._pipeline(requests), strict=True):
            self._count_dir(path, reply)
        has_utime = "utime" in client.server_info.get("commands", ())
        transfers = [c for c in plan.transfers if not _blocked(c.path, blocked)]
        if not has_utime:
            # Without utime, a put is the only way to set a file's time.
            transfers += plan.touch
        self._transfer(
            transfers,
            small=lambda changes: self._put_small(changes, remote_root),
            big=lambda other, change, progress: self._put_big(other, change, remote_root, progress),
        )
        if has_utime:
            times = [(c.path, c.mtime, False) for c in plan.touch]
            times += [(path, mtime, True) for path, mtime in plan.dir_times if not _blocked(path, blocked)]
            requests = [
                {"cmd": "utime", "path": remote_join(remote_root, path), "mtime": mtime} for path, mtime, _ in times
            ]
            for (path, _mtime, is_dir), reply in zip(times, client._pipeline(requests), strict=True):
                if isinstance(reply, SockftpError):
                    self._fail(path, reply)
                elif not is_dir:
                    self.summary.touched += 1

    def _remote_removals(self, plan: Plan, remote_root: str) -> set[str]:
        """Remove what the plan removes; returns the paths that stayed."""
        requests = [
            {"cmd": "rmdir" if kind == DIRECTORY else "rm", "path": remote_join(remote_root, path)}
            for path, kind in plan.remove
        ]
        blocked: set[str] = set()
        for (path, _kind), reply in zip(plan.remove, self.client._pipeline(requests), strict=True):
            if isinstance(reply, dict):
                self.summary.deleted += 1
            elif reply.code != "not_found":
                self._removal_failed(path, reply, blocked, plan)
        return blocked

    def _put_small(self, changes: list[FileChange], remote_root: str) -> None:
        order = iter(changes)

        def done(_local, _remote, result, error):
            self._settle(next(order), result.sent if result else 0, error)

        pairs = [(self._local_path(c.path), remote_join(remote_root, c.path)) for c in changes]
        try:
            self.client.put_many(pairs, window=SYNC_WINDOW, on_done=done)
        except ConnectionLost:
            raise
        except SockftpError:
            pass  # each failure was noted as it came

    def _put_big(self, client, change: FileChange, remote_root: str, progress) -> tuple[int, str]:
        local, remote = self._local_path(change.path), remote_join(remote_root, change.path)
        if delta_worthwhile(client, change.size, change.old_size):
            return delta_up(client, local, remote, progress)
        return client.put(local, remote, progress=progress).sent, WHOLE

    # -- sync down --------------------------------------------------------------------

    def _apply_down(self, plan: Plan, remote_root: str, partials: list[str]) -> None:
        if not os.path.isdir(self.local):
            os.makedirs(self.local)
            self.summary.dirs_created += 1
        if self.options.delete:
            # Partial downloads no transfer of this sync will resume.
            wanted = {partial_path(c.path) for c in plan.transfers}
            for path in partials:
                if path not in wanted:
                    try:
                        os.unlink(self._local_path(path))
                    except OSError:
                        pass  # (a partial is ours alone: nothing to report)
        blocked: set[str] = set()
        for path, kind in plan.remove:
            try:
                _remove_local(self._local_path(path), kind)
                self.summary.deleted += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                self._removal_failed(path, exc, blocked, plan)
        for path in plan.mkdirs:
            if _blocked(path, blocked):
                continue
            try:
                os.mkdir(self._local_path(path))
                self.summary.dirs_created += 1
            except FileExistsError:
                if not os.path.isdir(self._local_path(path)) or os.path.islink(self._local_path(path)):
                    self._fail(path, FileExistsError(errno.EEXIST, "exists and is not a directory"))
                    blocked.add(path)
            except OSError as exc:
                self._fail(path, exc)
                blocked.add(path)
        self._transfer(
            [c for c in plan.transfers if not _blocked(c.path, blocked)],
            small=lambda changes: self._get_small(changes, remote_root),
            big=lambda other, change, progress: self._get_big(other, change, remote_root, progress),
        )
        for change in plan.touch:
            if self._set_local_time(change.path, change.mtime):
                self.summary.touched += 1
        for path, mtime in plan.dir_times:
            if not _blocked(path, blocked):
                self._set_local_time(path, mtime)

    def _get_small(self, changes: list[FileChange], remote_root: str) -> None:
        order = iter(changes)

        def done(_remote, _local, result, error):
            self._settle(next(order), result.sent if result else 0, error)

        pairs = [(remote_join(remote_root, c.path), self._local_path(c.path)) for c in changes]
        try:
            self.client.get_many(pairs, window=SYNC_WINDOW, on_done=done)
        except ConnectionLost:
            raise
        except SockftpError:
            pass

    def _get_big(self, client, change: FileChange, remote_root: str, progress) -> tuple[int, str]:
        local, remote = self._local_path(change.path), remote_join(remote_root, change.path)
        if delta_worthwhile(client, change.size, change.old_size):
            return delta_down(client, remote, local, progress)
        return client.get(remote, local, progress=progress).sent, WHOLE

    def _set_local_time(self, path: str, mtime: float) -> bool:
        try:
            os.utime(self._local_path(path), ns=(time.time_ns(), round(mtime * 1e9)), follow_symlinks=False)
            return True
        except OSError as exc:
            self._fail(path, exc)
            return False

    # -- moving files, both ways --------------------------------------------------------

    def _transfer(self, changes: list[FileChange], *, small, big) -> None:
        """Small files through *small(changes)* on this connection; big ones
        through *big(client, change, progress)*, on a second connection
        while the small ones go, if there are both."""
        smalls = [c for c in changes if c.size < BIG_FILE]
        bigs = [c for c in changes if c.size >= BIG_FILE]
        with self._lock:
            self._done, self._total = 0, sum(c.size for c in changes)
            self._report()
        worker = None
        if smalls and bigs:
            try:
                # Without retries of its own: a put or get that retried by
                # itself would reconnect after a cancel, and go on while
                # this thread has given up (see _big_files).
                other = self.client._sibling(retries=0)
            except SockftpError:
                other = None  # (too many sessions, say): all on this connection, one after the other
            if other is not None:
                retries = self.client.retries
                worker = _Background(lambda: self._big_files(other, bigs, big, retries), closing=other)
        try:
            if smalls:
                self._guarded(lambda: small(smalls))
            if worker is None and bigs:
                self._big_files(self.client, bigs, big)
            if worker is not None:
                worker.result()  # raises what ended it early (a connection lost for good)
        except BaseException:
            # Ctrl-C (even while waiting for the worker), or a lost
            # connection: the big files stop too, now.
            if worker is not None:
                self._cancel.set()
                worker.abort()
                worker.wait(5.0)  # its own failure, if any, is this one's echo
            raise

    def _big_files(self, client, changes: list[FileChange], big, retries: int = 0) -> None:
        """The big files, one at a time on *client*; after a lost connection,
        reconnect and go on (the file resumes) up to *retries* times, unless
        the sync was cancelled meanwhile."""
        delay = 0.2
        for change in changes:
            while not self._cancel.is_set():
                progress = _FileProgress(self, change)
                try:
                    wire_bytes, how = big(client, change, progress)
                except _Cancelled:
                    return
                except ConnectionLost:
                    if retries <= 0 or self._cancel.wait(delay):
                        raise
                    retries -= 1
                    delay = min(delay * 2, 5.0)
                    with self._lock:
                        self._done -= progress.seen  # counted again as it resumes
                    continue
                except (SockftpError, OSError) as exc:
                    self._settle(change, 0, exc, progress.seen)
                else:
                    self._settle(change, wire_bytes, None, progress.seen, how)
                break

    def _guarded(self, action) -> None:
        """Run *action*, a pipelined batch: if anything interrupts it, even
        Ctrl-C, requests are left unanswered, so the connection goes."""
        try:
            action()
        except BaseException:
            self.client.close()
            raise

    # -- accounting -------------------------------------------------------------------

    def _settle(
        self, change: FileChange, wire_bytes: int, error: BaseException | None, seen: int = 0, how: str = WHOLE
    ) -> None:
        """*change* is done (*how*: WHOLE, DELTA or TOUCHED), or failed with
        *error*; *seen*: its bytes the progress has counted already."""
        with self._lock:
            if error is not None:
                self.summary.failures.append((change.path, error))
            elif how == TOUCHED:
                self.summary.touched += 1
            else:
                self.summary.transferred += 1
                self.summary.bytes += change.size
                self.summary.wire_bytes += wire_bytes
                self.summary.deltas += how == DELTA
            self._done += change.size - seen
            self._report()

    def _report(self) -> None:
        # (called with the lock held)
        if self._progress is not None:
            self._progress(self._done, self._total)

    def _fail(self, path: str, error: BaseException) -> None:
        with self._lock:
            self.summary.failures.append((path, error))

    def _removal_failed(self, path: str, error: BaseException, blocked: set[str], plan: Plan) -> None:
        blocked.add(path)  # nothing goes where it stays
        # A directory that the source lacks but that still holds something
        # excluded (or new) stays, quietly, as rsync leaves it; one that had
        # to make way for a file is a failure.
        not_empty = getattr(error, "code", None) == "not_empty" or getattr(error, "errno", None) == errno.ENOTEMPTY
        if not not_empty or path in plan.replaced:
            self._fail(path, error)

    def _count_dir(self, path: str, reply) -> None:
        if isinstance(reply, SockftpError):
            self._fail(path, reply)
        else:
            self.summary.dirs_created += 1

    # -- paths --------------------------------------------------------------------------

    def _local_path(self, path: str) -> str:
        return os.path.join(self.local, *path.split("/")) if path else self.local


def _remove_local(path: str, kind: str) -> None:
    if kind == DIRECTORY:
        os.rmdir(path)
    else:
        os.unlink(path)


def _blocked(path: str, blocked: set[str]) -> bool:
    """*path* is, or is inside, a path whose removal failed."""
    if not blocked:
        return False
    while path:
        if path in blocked:
            return True
        path = path.rpartition("/")[0]
    return False


class _Background:
    """Run *action* in a thread; :meth:`result` waits and returns or raises.
    *closing*: a client to quit (or, after a failure, close) once it is done."""

    def __init__(self, action, closing=None):
        self._closing = closing
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action) -> None:
        try:
            self._value = action()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc
        finally:
            if self._closing is not None:
                try:
                    if self._error is None:
                        self._closing.quit()
                except SockftpError:
                    pass
                finally:
                    self._closing.close()

    def abort(self) -> None:
        """Wake the thread if it waits on its connection (it then fails)."""
        wire = getattr(self._closing, "_wire", None)
        if wire is not None:
            try:
                wire.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def result(self):
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value
