"""Syncs against a server with ``tree``, ``utime`` and deltas: what crosses the wire."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest
from conftest import encode_frame, recv_frame
from test_sync import CountingClient, assert_times_match, build, times_of, tree_of

import sockftp
from sockftp.client import Client
from sockftp.protocol.limits import DELTA_BLOCK
from sockftp.protocol.tree_pack import TreeBatch

MiB = 1024 * 1024


def audited_bytes(audit_file: Path, event: str) -> int:
    """Raw bytes the server's audit log counts for *event* (put or get)."""
    text = audit_file.read_text(encoding="utf-8")
    return sum(int(n) for n in re.findall(rf"event={event} .*?bytes=(\d+)", text))


def change_in_the_middle(path: Path, count: int = MiB, at: int | None = None) -> None:
    """Overwrite *count* bytes in the middle of *path* (not on a block
    boundary), keeping its size; the time moves on by a second."""
    st = path.stat()
    at = st.st_size // 2 + 12345 if at is None else at
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(os.urandom(count))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


@pytest.fixture
def big(tmp_path):
    """A local 64 MiB file beside 20 small ones, in tmp_path/source."""
    files = {f"small/{i:02}": os.urandom(1000) for i in range(20)}
    files["disk.img"] = os.urandom(64 * MiB)
    return build(tmp_path / "source", files, dirs=[])


def test_sync_up_of_a_1_mib_change_in_64_mib_sends_about_1_mib(srv, big, audit_file):
    with srv.client() as client:
        client.sync_up(big, "backup")
        before = audited_bytes(audit_file, "put")
        change_in_the_middle(big / "disk.img")
        summary = client.sync_up(big, "backup")
    assert (summary.transferred, summary.deltas, summary.failed) == (1, 1, 0)
    assert summary.bytes == 64 * MiB
    assert summary.wire_bytes <= 2 * DELTA_BLOCK  # the change straddles two blocks
    assert audited_bytes(audit_file, "put") - before <= 2 * DELTA_BLOCK
    remote = srv.anon_dir / "backup" / "disk.img"
    assert remote.read_bytes() == (big / "disk.img").read_bytes()
    assert_times_match(times_of(srv.anon_dir / "backup", dirs=False), times_of(big, dirs=False))


def test_sync_down_of_a_1_mib_change_in_64_mib_fetches_about_1_mib(srv, big, tmp_path, audit_file):
    with srv.client() as client:
        client.sync_up(big, "backup")
        client.sync_down("backup", tmp_path / "copy")
        change_in_the_middle(big / "disk.img")
        client.sync_up(big, "backup")
        before = audited_bytes(audit_file, "get")
        summary = client.sync_down("backup", tmp_path / "copy")
    assert (summary.transferred, summary.deltas, summary.failed) == (1, 1, 0)
    assert summary.wire_bytes <= 2 * DELTA_BLOCK
    assert audited_bytes(audit_file, "get") - before <= 2 * DELTA_BLOCK
    assert (tmp_path / "copy" / "disk.img").read_bytes() == (big / "disk.img").read_bytes()
    assert_times_match(times_of(tmp_path / "copy"), times_of(srv.anon_dir / "backup"))
    assert not list((tmp_path / "copy").glob(".*sockftp-part"))


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_big_file_whose_content_is_the_same_only_gets_its_time(srv, big, tmp_path, direction, audit_file):
    with srv.client() as client:
        client.sync_up(big, "backup")
        client.sync_down("backup", tmp_path / "copy")
        side = big if direction == "up" else srv.anon_dir / "backup"
        st = (side / "disk.img").stat()
        os.utime(side / "disk.img", ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
        before = audited_bytes(audit_file, "put") + audited_bytes(audit_file, "get")
        if direction == "up":
            summary = client.sync_up(big, "backup")
        else:
            summary = client.sync_down("backup", tmp_path / "copy")
    assert (summary.touched, summary.transferred, summary.wire_bytes) == (1, 0, 0)
    assert audited_bytes(audit_file, "put") + audited_bytes(audit_file, "get") == before
    source, target = (
        (big, srv.anon_dir / "backup") if direction == "up" else (srv.anon_dir / "backup", tmp_path / "copy")
    )
    assert_times_match(times_of(target, dirs=False), times_of(source, dirs=False))


class ChangingClient(Client):
    """A client whose ``blocks`` request is followed, before the delta
    goes, by another client replacing the file on the server."""

    replacement: bytes = b""
    changed: list = []

    def blocks(self, path):
        listing = super().blocks(path)
        with Client(self.host, self.port) as other:
            local = Path(os.environ["SYNC_TEST_DIR"]) / "replacement"
            local.write_bytes(self.replacement)
            other.put(local, path)
        self.changed.append(path)
        return listing


@pytest.mark.parametrize("direction", ["up", "down"])
def test_a_delta_whose_old_file_changed_meanwhile_falls_back_to_a_whole_transfer(
    srv, big, tmp_path, monkeypatch, direction
):
    monkeypatch.setenv("SYNC_TEST_DIR", str(tmp_path))
    with srv.client() as client:
        client.sync_up(big, "backup")
        client.sync_down("backup", tmp_path / "copy")
    change_in_the_middle(big / "disk.img")
    with srv.client() as client:
        client.sync_up(big, "backup")  # the server's version moves on by a delta
    replacement = os.urandom(64 * MiB)
    ChangingClient.replacement, ChangingClient.changed = replacement, []
    with ChangingClient(srv.host, srv.port) as client:
        if direction == "up":
            change_in_the_middle(big / "disk.img", at=3 * MiB)
            summary = client.sync_up(big, "backup")
            expected = (big / "disk.img").read_bytes()
            result = (srv.anon_dir / "backup" / "disk.img").read_bytes()
        else:
            summary = client.sync_down("backup", tmp_path / "copy")
            expected = replacement  # what the server holds by the time the ranges are read
            result = (tmp_path / "copy" / "disk.img").read_bytes()
    assert ChangingClient.changed == ["/backup/disk.img"]
    assert summary.failed == 0, summary.failures
    assert (summary.transferred, summary.deltas) == (1, 0)  # whole, after the delta was refused
    assert summary.wire_bytes >= 64 * MiB
    assert result == expected
    assert not list((tmp_path / "copy").glob(".*sockftp-part"))


def test_a_delta_download_cut_short_leaves_the_old_file_and_finishes_when_run_again(srv, big, tmp_path):
    with srv.client() as client:
        client.sync_up(big, "backup")
        client.sync_down("backup", tmp_path / "copy")
        old = (tmp_path / "copy" / "disk.img").read_bytes()
        for at in range(8 * MiB, 60 * MiB, 8 * MiB):
            change_in_the_middle(big / "disk.img", count=4096, at=at)
        client.sync_up(big, "backup")
        calls = []

        def cancel(done, total):
            calls.append(done)
            if done > total // 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            client.sync_down("backup", tmp_path / "copy", progress=cancel)
        assert (tmp_path / "copy" / "disk.img").read_bytes() == old  # untouched until complete
        summary = client.sync_down("backup", tmp_path / "copy")
        assert (summary.transferred, summary.deltas, summary.failed) == (1, 1, 0)
    assert (tmp_path / "copy" / "disk.img").read_bytes() == (big / "disk.img").read_bytes()
    assert not list((tmp_path / "copy").glob(".*sockftp-part"))


# -- the listing, and times, with tree and utime ------------------------------------------------


def test_comparing_an_unchanged_tree_costs_one_stat_and_one_tree_in_one_write(srv, tmp_path):
    source = build(tmp_path / "source", {f"d{i % 50}/f{i:05}": b"x" * (i % 7) for i in range(10_000)}, dirs=[])
    with srv.client() as client:
        client.sync_up(source, "backup")
        client.sync_down("backup", tmp_path / "copy")
    for checksum in (False, True):
        with CountingClient(srv.host, srv.port) as client:
            start = len(client.sent)
            assert client.sync_up(source, "backup", checksum=checksum).transferred == 0
            assert client.sync_down("backup", tmp_path / "copy", checksum=checksum).transferred == 0
            # The server answered --checksum from the checksums it keeps: no stat checksum, no hashing.
            assert client.sent[start:] == ["stat", "tree", "stat", "tree"]


def test_directory_times_are_kept_on_the_server_too(srv, tmp_path):
    source = build(tmp_path / "source", {"a/b/c.txt": b"c", "a/d.txt": b"d"}, dirs=["e/f"])
    for i, directory in enumerate(sorted({p for p in source.rglob("*") if p.is_dir()} | {source}, reverse=True)):
        os.utime(directory, ns=(0, (1_500_000_000 + i) * 10**9 + 7))
    with srv.client() as client:
        client.sync_up(source, "backup")
        assert_times_match(times_of(srv.anon_dir / "backup"), times_of(source))
        assert srv.anon_dir.joinpath("backup").stat().st_mtime_ns // 1000 == source.stat().st_mtime_ns // 1000
        (source / "a" / "new.txt").write_bytes(b"new")  # a's time moves; it goes back once synced
        os.utime(source / "a", ns=(0, 1_400_000_000 * 10**9))
        client.sync_up(source, "backup")
    assert_times_match(times_of(srv.anon_dir / "backup"), times_of(source))


# -- a hostile server ---------------------------------------------------------------------------


def fake_server(tree_entries: list[dict], packed: bool = False):
    """A server on a real socket that answers hello (with ``tree``, and
    ``tree-packed`` if *packed*), stat and tree with *tree_entries*; returns
    its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            while True:
                request = recv_frame(conn)
                cmd = request.get("cmd")
                body = b""
                if cmd == "hello":
                    features = ["tree", "pipelining"] + (["tree-packed"] if packed else [])
                    reply = {"ok": True, "version": 1, "features": features, "commands": []}
                elif cmd == "stat":
                    reply = {"ok": True, "path": "/x", "name": "x", "type": "dir", "size": 0, "mtime": 1.0}
                elif cmd == "tree" and request.get("packed"):
                    batch = TreeBatch(request.get("checksums", False))
                    for e in tree_entries:
                        path = e["path"]
                        batch.add(path, len(path.encode()), e["type"], e.get("size", 0), e.get("mtime", 0.0))
                    body = batch.body()
                    reply = {"ok": True, "path": "/x", "count": len(batch), "body": len(body), "more": False}
                elif cmd == "tree":
                    reply = {"ok": True, "path": "/x", "entries": tree_entries, "more": False}
                else:
                    reply = {"ok": True}
                conn.sendall(encode_frame(reply) + body)
        except (EOFError, OSError):
            pass
        finally:
            conn.close()
            listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


@pytest.mark.parametrize("packed", [False, True], ids=["json", "packed"])
@pytest.mark.parametrize(
    "entries",
    [
        [{"path": "../escaped", "type": "file", "size": 1, "mtime": 1.0}],
        [{"path": "ok/../../escaped", "type": "file", "size": 1, "mtime": 1.0}],
        [{"path": "/etc/escaped", "type": "file", "size": 1, "mtime": 1.0}],
        [{"path": "link/escaped", "type": "file", "size": 1, "mtime": 1.0}],  # no directory "link" listed
        [{"path": "f", "type": "file", "size": 1, "mtime": 1.0}, {"path": "f/escaped", "type": "file"}],
        [{"path": "a\\..\\escaped", "type": "file", "size": 1, "mtime": 1.0}],
    ],
    ids=["dotdot", "dotdot-inside", "absolute", "unlisted-parent", "file-as-parent", "backslash"],
)
def test_a_hostile_listing_is_refused_and_nothing_is_written(tmp_path, entries, packed):
    local = tmp_path / "local"
    local.mkdir()
    (local / "link").symlink_to(tmp_path)
    port = fake_server(entries, packed)
    with Client("127.0.0.1", port) as client, pytest.raises(sockftp.PathRefused):
        client.sync_down("x", local, delete=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local"]
    assert tree_of(local) == {"link": ("link",)}
