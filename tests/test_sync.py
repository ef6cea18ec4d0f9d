"""Client.sync_up and Client.sync_down against a real server, on real trees."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import partials_in, wait_until

import sockftp
from sockftp.client import Client
from sockftp.client.sync import SYNC_WINDOW
from sockftp.server import SockftpServer
from sockftp.server.config import ServerConfig

MiB = 1024 * 1024
T0 = 1_600_000_000  # a time in the past, whole seconds, for files made by the tests

#: Names that test the edges: Unicode (composed and not), spaces, a name of
#: 255 bytes, a deep path.
DEEP = "/".join(f"d{i}" for i in range(40))
TREE = {
    "plain.txt": b"plain",
    "with space/and more spaces.txt": b"spaces",
    "unicodé/ñandú 🦤.bin": os.urandom(3000),
    "unicodé/decomposed-e\u0301": b"nfd",
    "x" * 255: b"long name",
    f"{DEEP}/bottom.txt": b"deep",
    "empty.bin": b"",
    "sub/big.bin": os.urandom(2 * MiB + 7),
}
EMPTY_DIRS = ["empty dir", "sub/nested empty/inner"]


def build(root: Path, files: dict[str, bytes] = TREE, dirs=EMPTY_DIRS, mtime: int = T0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, data) in enumerate(sorted(files.items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(0, (mtime + i) * 10**9 + 123_456_789))
    for name in dirs:
        (root / name).mkdir(parents=True, exist_ok=True)
    return root


def tree_of(root: Path) -> dict[str, tuple]:
    """What *root* holds, by relative path: ("dir",), ("link",) or ("file", bytes).
    The server's hidden files and our partial downloads are left out."""
    out = {}
    for path in root.rglob("*"):
        if path.name.startswith(".sockftp") or path.name.endswith(".sockftp-part"):
            continue
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link",)
        elif path.is_dir():
            out[rel] = ("dir",)
        else:
            out[rel] = ("file", path.read_bytes())
    return out


def times_of(root: Path, dirs: bool = True) -> dict[str, int]:
    return {
        path.relative_to(root).as_posix(): path.lstat().st_mtime_ns
        for path in root.rglob("*")
        if not path.name.startswith(".sockftp") and (dirs or not path.is_dir())
    }


def assert_times_match(a: dict[str, int], b: dict[str, int]) -> None:
    """Times travel as JSON numbers: equal to within a microsecond."""
    assert a.keys() == b.keys()
    off = {path: (a[path], b[path]) for path in a if abs(a[path] - b[path]) > 1000}
    assert not off, off


class CountingClient(Client):
    """A client that records the command of every request it sends."""

    def __init__(self, *args, **kwargs):
        self.sent: list[str] = []
        super().__init__(*args, **kwargs)

    def _send(self, header, payload=b""):
        self.sent.append(header.get("cmd", "trailer"))
        return super()._send(header, payload)

    def _send_many(self, headers):
        self.sent.extend(h.get("cmd") for h in headers)
        return super()._send_many(headers)

    def _send_frames(self, frames):
        self.sent.extend(h.get("cmd") for h, _ in frames)
        return super()._send_frames(frames)


# -- round trips -----------------------------------------------------------------------------


def test_sync_up_then_down_gives_the_same_tree_unicode_spaces_deep_paths_empty_dirs(srv, tmp_path):
    source = build(tmp_path / "source")
    with srv.client() as client:
        up = client.sync_up(source, "/backup")
        assert up.failed == 0, up.failures
        assert up.transferred == len(TREE) and up.bytes == sum(map(len, TREE.values()))
        down = client.sync_down("/backup", tmp_path / "copy")
        assert down.failed == 0, down.failures
    remote = srv.anon_dir / "backup"
    assert tree_of(remote) == tree_of(source) == tree_of(tmp_path / "copy")
    assert_times_match(times_of(remote, dirs=False), times_of(source, dirs=False))
    assert_times_match(times_of(tmp_path / "copy", dirs=False), times_of(source, dirs=False))


def test_a_second_sync_of_an_unchanged_tree_sends_nothing_but_the_listing(srv, tmp_path):
    source = build(tmp_path / "source")
    with srv.client() as client:
        client.sync_up(source, "backup")
        client.sync_down("backup", tmp_path / "copy")
    with CountingClient(srv.host, srv.port) as client:
        again = client.sync_up(source, "backup")
        back = client.sync_down("backup", tmp_path / "copy")
        assert (again.transferred, again.deleted, again.failed) == (0, 0, 0)
        assert (back.transferred, back.deleted, back.failed) == (0, 0, 0)
        # Only listing requests: no transfer, no change, no time set.
        assert set(client.sent) - {"hello"} <= {"stat", "ls", "tree"}, client.sent


def test_times_are_kept_both_ways_directories_included(srv, tmp_path):
    source = build(tmp_path / "source")
    for i, directory in enumerate(sorted({p for p in source.rglob("*") if p.is_dir()}, reverse=True)):
        os.utime(directory, ns=(0, (T0 - 1000 - i) * 10**9 + 5))
    with srv.client() as client:
        client.sync_up(source, "backup")
        client.sync_down("backup", tmp_path / "copy")
    remote = srv.anon_dir / "backup"
    assert_times_match(times_of(tmp_path / "copy"), times_of(remote))
    assert_times_match(times_of(remote, dirs=False), times_of(source, dirs=False))


def test_a_file_replaced_by_a_directory_and_the_reverse_both_ways(srv, tmp_path):
    source = build(tmp_path / "source", {"a": b"file a", "b/inner/x": b"x", "c": b"c"}, dirs=[])
    with srv.client() as client:
        client.sync_up(source, "backup")
        client.sync_down("backup", tmp_path / "copy")
        # a becomes a directory, b a file.
        (source / "a").unlink()
        (source / "a" / "deeper").mkdir(parents=True)
        (source / "a" / "deeper" / "y").write_bytes(b"y")
        for path in sorted((source / "b").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (source / "b").rmdir()
        (source / "b").write_bytes(b"now a file")
        up = client.sync_up(source, "backup")
        assert up.failed == 0, up.failures
        assert tree_of(srv.anon_dir / "backup") == tree_of(source)
        down = client.sync_down("backup", tmp_path / "copy")
        assert down.failed == 0, down.failures
    assert tree_of(tmp_path / "copy") == tree_of(source)


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["up", "down"])
def test_delete_removes_what_the_source_lacks_and_only_with_delete(srv, tmp_path, direction):
    files = {"keep": b"k", "old/deep/gone.txt": b"g", "old/also": b"a", "gone.txt": b"x"}
    source_dir, target_dir = (tmp_path / "local", srv.anon_dir / "remote")
    if direction == "down":
        source_dir, target_dir = target_dir, source_dir
    build(target_dir, files, dirs=["old/empty"])
    build(source_dir, {"keep": b"k"}, dirs=[])
    with srv.client() as client:
        sync = client.sync_up if direction == "up" else client.sync_down
        args = [tmp_path / "local", "remote"] if direction == "up" else ["remote", tmp_path / "local"]
        kept = sync(*args)
        assert kept.deleted == 0 and "gone.txt" in tree_of(target_dir)
        done = sync(*args, delete=True)
        assert done.deleted == 6 and done.failed == 0, done.failures
    assert tree_of(target_dir) == tree_of(source_dir) == {"keep": ("file", b"k")}


@pytest.mark.parametrize("direction", ["up", "down"])
def test_dry_run_changes_nothing_and_lists_every_change(srv, tmp_path, direction):
    local, remote = tmp_path / "local", srv.anon_dir / "remote"
    source_dir, target_dir = (local, remote) if direction == "up" else (remote, local)
    build(source_dir, {"new": b"n", "changed": b"new content", "dir/x": b"x"}, dirs=["made"])
    build(target_dir, {"changed": b"old", "extra": b"e", "dir": b"a file in the way"}, dirs=[])
    before = (tree_of(target_dir), times_of(target_dir))
    with srv.client() as client:
        if direction == "up":
            summary = client.sync_up(local, "remote", dry_run=True, delete=True)
        else:
            summary = client.sync_down("remote", local, dry_run=True, delete=True)
    assert (tree_of(target_dir), times_of(target_dir)) == before
    assert summary.changes == [
        ("~", "changed"),
        ("-", "dir"),
        ("d", "dir/"),
        ("+", "dir/x"),
        ("-", "extra"),
        ("d", "made/"),
        ("+", "new"),
    ]
    assert (summary.transferred, summary.deleted, summary.dirs_created) == (3, 2, 2)


def test_excluded_names_are_neither_sent_nor_deleted(srv, tmp_path):
    source = build(tmp_path / "source", {"a.txt": b"a", "a.tmp": b"t", "build/out.o": b"o", "src/b.tmp": b"t"}, [])
    build(srv.anon_dir / "remote", {"old.tmp": b"kept", "build/old.o": b"kept"}, dirs=[])
    with srv.client() as client:
        summary = client.sync_up(source, "remote", delete=True, exclude=["*.tmp", "build/"])
    assert summary.failed == 0, summary.failures
    assert tree_of(srv.anon_dir / "remote") == {
        "a.txt": ("file", b"a"),
        "src": ("dir",),
        "old.tmp": ("file", b"kept"),
        "build": ("dir",),
        "build/old.o": ("file", b"kept"),
    }


@pytest.mark.parametrize("size", [100, 200 * 1024], ids=["small", "with-a-stored-checksum"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_change_that_keeps_size_and_time_is_found_only_with_checksum(srv, tmp_path, direction, size):
    source = build(tmp_path / "source", {"same": os.urandom(size), "other": os.urandom(size)}, dirs=[])
    with srv.client() as client:
        client.sync_up(source, "remote")
        client.sync_down("remote", tmp_path / "copy")
        # Changed on this side, same size, same time to the nanosecond.
        side = source if direction == "up" else tmp_path / "copy"
        st = (side / "other").stat()
        (side / "other").write_bytes(os.urandom(size))
        os.utime(side / "other", ns=(st.st_atime_ns, st.st_mtime_ns))

        def sync(**options):
            if direction == "up":
                return client.sync_up(source, "remote", **options)
            return client.sync_down("remote", tmp_path / "copy", **options)

        assert sync().transferred == 0
        found = sync(checksum=True)
        assert (found.transferred, found.changes) == (1, [("~", "other")])
        assert sync(checksum=True).transferred == 0
    assert tree_of(srv.anon_dir / "remote") == tree_of(side)


# -- how files travel ----------------------------------------------------------------------------


def test_a_thousand_small_new_files_go_pipelined_in_large_windows(srv, tmp_path):
    source = build(tmp_path / "source", {f"f{i:04}": os.urandom(4096) for i in range(1000)}, dirs=[])
    in_flight = []
    writes = []  # files per write

    class Watching(Client):
        outstanding = 0

        def _send(self, header, payload=b""):
            self._count([header])
            return super()._send(header, payload)

        def _send_frames(self, frames):
            self._count([header for header, _ in frames])
            writes.append(len(frames))
            return super()._send_frames(frames)

        def _count(self, headers):
            for header in headers:
                if header.get("cmd") == "put":
                    self.outstanding += 1
                    in_flight.append(self.outstanding)

        def _reply(self):
            reply = super()._reply()
            if "checksum" in reply:
                self.outstanding -= 1
            return reply

    with Watching(srv.host, srv.port) as client:
        summary = client.sync_up(source, "many")
    assert summary.transferred == 1000 and summary.failed == 0
    assert max(in_flight) >= SYNC_WINDOW // 2
    # Many small files to a write, not one each.
    assert sum(writes) == 1000 and len(writes) <= 1000 // 16
    assert tree_of(srv.anon_dir / "many") == tree_of(source)


def test_big_files_go_on_a_second_connection_while_the_small_ones_go(srv, tmp_path):
    files = {f"small/{i:03}": os.urandom(2000) for i in range(300)}
    files["big.bin"] = os.urandom(24 * MiB)
    source = build(tmp_path / "source", files, dirs=[])
    sessions = []
    reports = []

    def progress(done, total):
        reports.append((done, total))
        sessions.append(srv.session_count)

    with srv.client() as client:
        summary = client.sync_up(source, "mixed", progress=progress)
        assert summary.failed == 0, summary.failures
        assert max(sessions) == 2
        down = client.sync_down("mixed", tmp_path / "copy", progress=progress)
        assert down.failed == 0, down.failures
    total = sum(map(len, files.values()))
    assert reports[-1] == (total, total)
    assert all(done <= total for done, _ in reports)
    assert tree_of(tmp_path / "copy") == tree_of(source)
    srv.wait_idle()  # the second connection was closed


def test_a_file_that_fails_is_reported_and_the_rest_is_synced(srv, tmp_path):
    # The server refuses names it keeps for itself: that one file fails.
    source = build(tmp_path / "source", {"ok.txt": b"ok", ".sockftp-mine": b"no", "sub/fine": b"f"}, dirs=[])
    with srv.client() as client:
        summary = client.sync_up(source, "remote")
        assert [path for path, _ in summary.failures] == [".sockftp-mine"]
        assert summary.failures[0][1].code == "path_refused"
        assert summary.transferred == 2
        assert client.pwd() == "/"
    assert (srv.anon_dir / "remote" / "sub" / "fine").read_bytes() == b"f"


def test_a_missing_source_is_an_error_not_an_empty_tree(srv, tmp_path):
    build(srv.anon_dir / "remote", {"precious": b"p"}, dirs=[])
    with srv.client() as client:
        with pytest.raises(FileNotFoundError):
            client.sync_up(tmp_path / "no-such-dir", "remote", delete=True)
        with pytest.raises(sockftp.NotFound):
            client.sync_down("no-such-remote", tmp_path / "local", delete=True)
        (tmp_path / "a-file").write_bytes(b"")
        with pytest.raises(NotADirectoryError):
            client.sync_up(tmp_path / "a-file", "remote", delete=True)
        with pytest.raises(sockftp.NotADirectory):
            client.sync_down("remote/precious", tmp_path / "local")
        assert client.pwd() == "/"
    assert (srv.anon_dir / "remote" / "precious").exists()
    assert not (tmp_path / "local").exists()


def test_sync_down_never_writes_through_a_local_link(srv, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    build(srv.anon_dir / "remote", {"a/x": b"remote x", "b": b"remote b"}, dirs=[])
    local = tmp_path / "local"
    local.mkdir()
    (local / "a").symlink_to(outside)  # where the server has a directory
    (local / "b").symlink_to(outside / "b-target")  # where it has a file
    with srv.client() as client:
        summary = client.sync_down("remote", local)
    assert summary.failed == 0, summary.failures
    assert list(outside.iterdir()) == []
    assert tree_of(local) == {"a": ("dir",), "a/x": ("file", b"remote x"), "b": ("file", b"remote b")}


# -- interruptions ---------------------------------------------------------------------------------


def test_a_sync_cut_by_a_server_stop_resumes_to_the_same_tree(server, tmp_path):
    files = {f"s/{i:03}": os.urandom(1000) for i in range(200)}
    files["big.bin"] = os.urandom(48 * MiB)
    source = build(tmp_path / "source", files, dirs=["empty"])
    root = tmp_path / "server-root"
    first = server(root=root)
    stopping = threading.Event()

    def stop_once_part_is_stored():
        # Once the server holds part of the big file (under load it may
        # lag well behind what the client has read).
        def held():
            return any(p.stat().st_size > MiB for p in partials_in(root / "anonymous" / "backup"))

        wait_until(lambda: held() or not first.thread.is_alive(), timeout=20, what="a partial upload")
        first.stop()

    def stop_midway(done, total):
        if done > total // 3 and not stopping.is_set():
            stopping.set()
            threading.Thread(target=stop_once_part_is_stored, daemon=True).start()

    with first.client(retries=0) as client, pytest.raises(sockftp.ConnectionLost):
        client.sync_up(source, "backup", progress=stop_midway)
    wait_until(lambda: first.stopped and not first.thread.is_alive(), what="the first server to stop")
    second = server(root=root)
    with second.client() as client:
        summary = client.sync_up(source, "backup")
        assert summary.failed == 0, summary.failures
        # The big file went on from what the first server held.
        assert summary.wire_bytes < summary.bytes
        assert client.sync_up(source, "backup").transferred == 0
    assert tree_of(second.anon_dir / "backup") == tree_of(source)


def test_a_client_with_retries_finishes_a_sync_across_a_server_restart(server, tmp_path):
    files = {f"s/{i:03}": os.urandom(1000) for i in range(300)}
    files["big.bin"] = os.urandom(32 * MiB)
    source = build(tmp_path / "source", files, dirs=[])
    root = tmp_path / "server-root"
    first = server(root=root)
    restarted = []

    def restart():
        first.stop()
        # On the same port (conftest's servers take a new one each).
        again = SockftpServer(ServerConfig(root=str(root), host=first.host, port=first.port, anonymous=True))
        threading.Thread(target=again.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        restarted.append(again)

    def restart_midway(done, total):
        if done > total // 3 and not restarted and not first.stopped:
            threading.Thread(target=restart, daemon=True).start()

    try:
        with Client(first.host, first.port, retries=3, timeout=10) as client:
            summary = client.sync_up(source, "backup", progress=restart_midway)
            assert summary.failed == 0, summary.failures
            assert restarted, "the server was not restarted during the sync"
    finally:
        for again in restarted:
            again.stop(0)
    assert tree_of(root / "anonymous" / "backup") == tree_of(source)


def test_ctrl_c_stops_the_second_connection_at_once_and_nothing_is_retried(srv, tmp_path):
    files = {f"s/{i}": b"small" for i in range(5)}
    files["big.bin"] = os.urandom(96 * MiB)
    source = build(tmp_path / "source", files, dirs=[])
    calls = []
    interrupted = threading.Event()

    def progress(done, total):
        calls.append(done)
        if done > total // 4 and threading.current_thread() is not threading.main_thread():
            if not interrupted.is_set():
                interrupted.set()
                # Ctrl-C, delivered to the main thread, which by now waits for the big file.
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    with srv.client() as client:
        with pytest.raises(KeyboardInterrupt):
            client.sync_up(source, "remote", progress=progress)
        seen = len(calls)
        srv.wait_idle(0)  # both connections closed, not left to run on
        time.sleep(0.3)
        assert len(calls) == seen  # nothing moved after Ctrl-C
    assert not (srv.anon_dir / "remote" / "big.bin").exists()


def test_an_interrupted_sync_leaves_the_client_usable_and_a_rerun_finishes_it(srv, tmp_path):
    files = {f"f{i:03}": os.urandom(3000) for i in range(400)}
    files["big"] = os.urandom(6 * MiB)
    build(srv.anon_dir / "remote", files, dirs=["e"])
    calls = []

    def cancel(done, total):
        calls.append(done)
        if len(calls) == 50:
            raise KeyboardInterrupt

    with srv.client() as client:
        with pytest.raises(KeyboardInterrupt):
            client.sync_down("remote", tmp_path / "local", progress=cancel)
        assert client.pwd() == "/"
        summary = client.sync_down("remote", tmp_path / "local")
        assert summary.failed == 0 and 0 < summary.transferred < len(files)
    assert tree_of(tmp_path / "local") == tree_of(srv.anon_dir / "remote")


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_directory_that_must_make_way_for_a_file_but_cannot_is_reported(srv, tmp_path, direction):
    # The target's directory "x" holds an excluded file, so it cannot go; the
    # source's file "x" then cannot be put in its place: a failure to say,
    # not a directory quietly left, as for one that --delete would remove.
    local, remote = tmp_path / "local", srv.anon_dir / "remote"
    source_dir, target_dir = (local, remote) if direction == "up" else (remote, local)
    build(source_dir, {"x": b"a file now", "ok": b"ok"}, dirs=[])
    build(target_dir, {"x/keep.tmp": b"excluded", "gone/keep.tmp": b"excluded"}, dirs=[])
    with srv.client() as client:
        if direction == "up":
            summary = client.sync_up(local, "remote", delete=True, exclude=["*.tmp"])
        else:
            summary = client.sync_down("remote", local, delete=True, exclude=["*.tmp"])
    assert [path for path, _ in summary.failures] == ["x"]
    assert (target_dir / "ok").read_bytes() == b"ok"
    assert (target_dir / "x" / "keep.tmp").read_bytes() == b"excluded"
    assert (target_dir / "gone" / "keep.tmp").read_bytes() == b"excluded"  # kept, quietly


def test_a_pipeline_left_early_leaves_no_reply_for_the_next_request(srv):
    with srv.client() as client:
        replies = client._pipeline([{"cmd": "ping"}] * 10 + [{"cmd": "pwd"}], window=8)
        assert next(replies) == {"ok": True}
        replies.close()  # (as when the loop over it ends by an exception)
        assert client.pwd() == "/"


class OlderServerClient(CountingClient):
    """A client that takes the server for one from before sync's additions:
    no ``tree``, ``delta`` or ``utime`` (as its hello would have said)."""

    def _connect(self, login):
        info = super()._connect(login)
        info["features"] = [f for f in info.get("features", ()) if f not in ("tree", "delta")]
        info["commands"] = [c for c in info.get("commands", ()) if c not in ("tree", "blocks", "utime")]
        return info


def test_against_an_older_server_without_tree_delta_or_utime(srv, tmp_path):
    files = dict(TREE)
    files["sub/image.bin"] = os.urandom(6 * MiB)
    source = build(tmp_path / "source", files)
    with OlderServerClient(srv.host, srv.port) as client:
        assert client.sync_up(source, "backup").failed == 0
        assert client.sync_down("backup", tmp_path / "copy").failed == 0
        assert "tree" not in client.sent and "ls" in client.sent
        # Changes both ways, with a big file changed in place, and --delete.
        with open(source / "sub" / "image.bin", "r+b") as f:
            f.seek(3 * MiB)
            f.write(b"changed")
        (source / "plain.txt").unlink()
        up = client.sync_up(source, "backup", delete=True)
        assert (up.transferred, up.deltas, up.deleted, up.failed) == (1, 0, 1, 0)
        down = client.sync_down("backup", tmp_path / "copy", delete=True)
        assert (down.transferred, down.deltas, down.deleted, down.failed) == (1, 0, 1, 0)
        assert not {"tree", "blocks", "utime"} & set(client.sent)
        # Without tree, --checksum asks for each candidate's checksum.
        before = len(client.sent)
        assert client.sync_up(source, "backup", checksum=True).transferred == 0
        assert client.sent[before:].count("stat") == 1 + len(files) - 1  # the root, then each file left
    assert tree_of(tmp_path / "copy") == tree_of(source) == tree_of(srv.anon_dir / "backup")
    assert_times_match(times_of(tmp_path / "copy", dirs=False), times_of(source, dirs=False))
