"""Uploads and downloads: byte-identical, verified, resumable, never half-visible."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from conftest import (
    disk_held,
    encode_frame,
    partials_in,
    recv_exact,
    recv_frame,
    reserves_blocks,
    round_trip,
    send_frame,
    wait_until,
)

import sockftp
from sockftp.client import RESUME_THRESHOLD, Client, partial_path
from sockftp.protocol import checksum

pytestmark = pytest.mark.usefixtures("no_server_errors")

MiB = 1024 * 1024


def visible_names(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".sockftp-part-"))


def start_raw_upload(srv, path: str, data: bytes, sent: int, trailer: bool = True) -> socket.socket:
    """A raw upload of *data* to *path* of which only the first *sent* bytes are sent."""
    sock = srv.raw(timeout=10)
    round_trip(sock)  # the session is running before the upload starts
    header = {"cmd": "put", "path": path, "size": len(data)}
    if trailer:
        header["checksum"] = "trailer"
    send_frame(sock, header, data[:sent])
    return sock


def wait_for_partial(srv, directory, size: int) -> None:
    wait_until(
        lambda: any(p.stat().st_size == size for p in partials_in(directory)),
        what=f"a partial of {size} bytes in {directory}",
    )


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 3 * MiB + 17, 21 * MiB + 3], ids=["empty", "1B", "4KiB", "3MiB", "21MiB"])
def test_put_get_round_trip_is_byte_identical(srv, files, tmp_path, size):
    data = os.urandom(size)
    local = files("data.bin", data)
    with srv.client() as c:
        up = c.put(local, "data.bin")
        down = c.get("data.bin", tmp_path / "back.bin")
    assert (srv.anon_dir / "data.bin").read_bytes() == data
    assert (tmp_path / "back.bin").read_bytes() == data
    expected = checksum.of_bytes(data)
    assert (up.size, up.sent, up.resumed_from, up.checksum) == (size, size, 0, expected)
    assert (down.size, down.sent, down.resumed_from, down.checksum) == (size, size, 0, expected)
    assert not os.path.exists(partial_path(str(tmp_path / "back.bin")))
    assert partials_in(srv.anon_dir) == []


@pytest.mark.parametrize("overrides", [{"sendfile": False}, {"fsync": True}], ids=["copy-loop", "fsync"])
def test_round_trip_with_the_copy_loop_and_fsync(server, files, tmp_path, overrides):
    srv = server(**overrides)
    data = os.urandom(2 * MiB + 5)
    with srv.client() as c:
        c.put(files("x.bin", data), "x.bin")
        result = c.get("x.bin", tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == data
    assert result.checksum == checksum.of_bytes(data)


def test_get_reply_carries_the_xxh3_128_checksum_of_the_file(srv):
    data = os.urandom(100_000)
    (srv.anon_dir / "f.bin").write_bytes(data)
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "get", "path": "f.bin"})
        reply = recv_frame(sock)
        body = recv_exact(sock, reply["filesize"])
    assert reply["checksum"] == checksum.of_bytes(data)
    assert reply["checksum"].startswith("xxh3-128:") and len(reply["checksum"]) == 9 + 32
    assert (reply["size"], reply["offset"], reply["filesize"]) == (len(data), 0, len(data))
    assert body == data


def test_get_with_offset_sends_the_tail(srv):
    data = os.urandom(10_000)
    (srv.anon_dir / "f.bin").write_bytes(data)
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "get", "path": "f.bin", "offset": 6000})
        reply = recv_frame(sock)
        assert (reply["size"], reply["offset"], reply["filesize"]) == (10_000, 6000, 4000)
        assert recv_exact(sock, 4000) == data[6000:]
        send_frame(sock, {"cmd": "get", "path": "f.bin", "offset": 10_001})
        reply = recv_frame(sock)
        assert reply["error"] == "offset_mismatch" and reply["size"] == 10_000
        round_trip(sock)


def test_get_of_missing_file_or_directory_fails_and_creates_nothing_locally(srv, tmp_path):
    (srv.anon_dir / "d").mkdir()
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.get("missing", tmp_path / "out")
        with pytest.raises(sockftp.IsADirectory):
            c.get("d", tmp_path / "out")
        c.ping()
    assert sorted(os.listdir(tmp_path)) == []


def test_put_replaces_an_existing_file(srv, files):
    (srv.anon_dir / "f").write_bytes(b"old" * 1000)
    with srv.client() as c:
        c.put(files("f", b"new"), "f")
        assert c.stat("f").size == 3
    assert (srv.anon_dir / "f").read_bytes() == b"new"


def test_put_and_get_report_progress_to_the_end(srv, files, tmp_path):
    data = os.urandom(2 * MiB)
    seen_up, seen_down = [], []
    with srv.client() as c:
        c.put(files("p.bin", data), "p.bin", progress=lambda done, total: seen_up.append((done, total)))
        c.get("p.bin", tmp_path / "p.bin", progress=lambda done, total: seen_down.append((done, total)))
    assert seen_up[-1] == (len(data), len(data))
    assert seen_down[-1] == (len(data), len(data))
    assert [d for d, _ in seen_down] == sorted(d for d, _ in seen_down)


# --- interrupted uploads ------------------------------------------------------------------------


def test_put_resumes_after_client_disconnect(srv, files):
    data = os.urandom(2 * MiB + 123)
    half = len(data) // 2
    sock = start_raw_upload(srv, "big.bin", data, half)
    sock.close()  # killed mid-upload
    srv.wait_idle()
    # Nothing visible under the name: not on disk, not in a listing.
    assert not (srv.anon_dir / "big.bin").exists()
    assert [p.stat().st_size for p in partials_in(srv.anon_dir)] == [half]
    with srv.client() as c:
        assert c.ls("/") == []
        assert not c.exists("big.bin")
        result = c.put(files("big.bin", data), "big.bin")
        assert c.checksum("big.bin") == checksum.of_bytes(data)
    assert result.resumed_from == half
    assert result.sent == len(data) - half
    assert result.checksum == checksum.of_bytes(data)
    assert (srv.anon_dir / "big.bin").read_bytes() == data
    assert partials_in(srv.anon_dir) == []


def test_an_upload_reserves_blocks_ahead_and_a_kept_partial_holds_only_its_bytes(srv, files):
    # The server reserves disk a window ahead of a large upload's writes
    # (sockftp.disk.prealloc); one that stops short must give that back, or every
    # abandoned partial would hold disk its bytes never filled.
    if not reserves_blocks(srv.anon_dir):
        pytest.skip("this filesystem reserves no blocks with fallocate")
    data = os.urandom(40 * MiB)
    sent = 6 * MiB
    sock = start_raw_upload(srv, "big.bin", data, sent)
    wait_for_partial(srv, srv.anon_dir, sent)
    (partial,) = partials_in(srv.anon_dir)
    assert disk_held(partial) >= sent + 8 * MiB  # reserved ahead while the upload runs
    sock.close()
    srv.wait_idle()
    assert partial.stat().st_size == sent
    assert disk_held(partial) <= sent + 256 * 1024
    with srv.client() as c:
        assert c.put(files("big.bin", data), "big.bin").resumed_from == sent
    assert (srv.anon_dir / "big.bin").read_bytes() == data


def test_resume_command_reports_what_the_server_holds(srv):
    data = os.urandom(300_000)
    sock = start_raw_upload(srv, "r.bin", data, 100_000)
    sock.close()
    srv.wait_idle()
    with srv.client() as c:
        assert c.request({"cmd": "resume", "path": "r.bin", "size": len(data)})["offset"] == 100_000
        # Another announced size is another upload: nothing to resume.
        assert c.request({"cmd": "resume", "path": "r.bin", "size": len(data) + 1})["offset"] == 0
        assert c.request({"cmd": "resume", "path": "other.bin", "size": 5})["offset"] == 0


def test_resume_of_a_different_file_of_the_same_size_restarts_and_stores_the_new_file(srv, files):
    old = os.urandom(RESUME_THRESHOLD + 4096)
    new = os.urandom(len(old))
    sock = start_raw_upload(srv, "same.bin", old, len(old) // 2)
    sock.close()
    srv.wait_idle()
    with srv.client() as c:
        result = c.put(files("same.bin", new), "same.bin")
    assert result.resumed_from == 0
    assert (srv.anon_dir / "same.bin").read_bytes() == new


def test_put_without_resume_starts_over(srv, files):
    data = os.urandom(RESUME_THRESHOLD + 10)
    sock = start_raw_upload(srv, "nr.bin", data, 1000)
    sock.close()
    srv.wait_idle()
    with srv.client() as c:
        result = c.put(files("nr.bin", data), "nr.bin", resume=False)
    assert result.resumed_from == 0
    assert (srv.anon_dir / "nr.bin").read_bytes() == data


def test_raw_put_resume_with_offset_completes_the_file(srv):
    data = os.urandom(50_000)
    sock = start_raw_upload(srv, "o.bin", data, 20_000, trailer=False)
    sock.close()
    srv.wait_idle()
    with srv.raw() as sock:
        header = {"cmd": "put", "path": "o.bin", "size": len(data), "offset": 20_000}
        send_frame(sock, {**header, "checksum": checksum.of_bytes(data)}, data[20_000:])
        reply = recv_frame(sock)
    assert reply["ok"] is True and reply["checksum"] == checksum.of_bytes(data)
    assert (srv.anon_dir / "o.bin").read_bytes() == data


def test_raw_put_resume_past_what_is_held_is_offset_mismatch_and_drained(srv):
    data = os.urandom(50_000)
    sock = start_raw_upload(srv, "o.bin", data, 20_000, trailer=False)
    sock.close()
    srv.wait_idle()
    with srv.raw() as sock:
        rest = data[30_000:]
        send_frame(sock, {"cmd": "put", "path": "o.bin", "size": len(data), "offset": 30_000}, rest)
        reply = recv_frame(sock)
        assert reply["error"] == "offset_mismatch"
        assert reply["offset"] == 20_000  # what the server really holds
        round_trip(sock)
    assert not (srv.anon_dir / "o.bin").exists()


def test_pipelined_put_and_get_in_one_write(srv):
    data = os.urandom(5000)
    with srv.raw() as sock:
        sock.sendall(
            encode_frame({"cmd": "put", "path": "p.bin", "size": len(data)})
            + data
            + encode_frame({"cmd": "get", "path": "p.bin"})
            + encode_frame({"cmd": "ping"})
        )
        assert recv_frame(sock)["ok"] is True
        reply = recv_frame(sock)
        assert recv_exact(sock, reply["filesize"]) == data
        assert recv_frame(sock) == {"ok": True}


def test_many_sessions_transfer_at_once_without_mixing_bytes(srv, files, tmp_path):
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            data = os.urandom(20_000 + i * 3001)
            local = files(f"w{i}.bin", data)
            with Client(srv.host, srv.port, timeout=20) as c:
                c.mkdir(f"w{i}")
                for round_ in range(3):
                    c.put(local, f"w{i}/f{round_}")
                    c.get(f"w{i}/f{round_}", tmp_path / f"w{i}-{round_}.bin")
                    assert (tmp_path / f"w{i}-{round_}.bin").read_bytes() == data
                assert [e.name for e in c.ls(f"w{i}")] == ["f0", "f1", "f2"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


# --- damage in transit ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "trailer"])
def test_corrupted_byte_in_transit_is_detected_and_never_committed(srv, where):
    data = os.urandom(200_000)
    damaged = bytearray(data)
    damaged[123_456] ^= 0x01
    (srv.anon_dir / "keep.bin").write_bytes(b"unrelated")
    with srv.raw() as sock:
        if where == "header":
            header = {"cmd": "put", "path": "c.bin", "size": len(data), "checksum": checksum.of_bytes(data)}
            send_frame(sock, header, bytes(damaged))
        else:
            header = {"cmd": "put", "path": "c.bin", "size": len(data), "checksum": "trailer"}
            send_frame(sock, header, bytes(damaged) + encode_frame({"checksum": checksum.of_bytes(data)}))
        reply = recv_frame(sock)
        assert reply["ok"] is False and reply["error"] == "checksum_mismatch"
        assert reply["checksum"] == checksum.of_bytes(bytes(damaged))
        round_trip(sock)  # the stream is still in step
    assert not (srv.anon_dir / "c.bin").exists()
    assert partials_in(srv.anon_dir) == []  # damaged bytes are dropped, not kept for a resume
    assert visible_names(srv.anon_dir) == ["keep.bin"]


def test_corrupted_upload_over_an_existing_file_leaves_the_old_file(srv):
    (srv.anon_dir / "c.bin").write_bytes(b"the old content")
    data = os.urandom(1000)
    with srv.raw() as sock:
        header = {"cmd": "put", "path": "c.bin", "size": len(data), "checksum": checksum.of_bytes(data)}
        send_frame(sock, header, data[:-1] + bytes([data[-1] ^ 0x80]))
        assert recv_frame(sock)["error"] == "checksum_mismatch"
    assert (srv.anon_dir / "c.bin").read_bytes() == b"the old content"


# --- interrupted downloads ---------------------------------------------------------------------


def test_get_resumes_from_a_local_partial(srv, tmp_path):
    data = os.urandom(3 * MiB + 1)
    (srv.anon_dir / "g.bin").write_bytes(data)
    local = tmp_path / "g.bin"
    half = len(data) // 2
    with open(partial_path(str(local)), "wb") as f:
        f.write(data[:half])
    with srv.client() as c:
        result = c.get("g.bin", local)
    assert result.resumed_from == half
    assert result.sent == len(data) - half
    assert result.checksum == checksum.of_bytes(data)
    assert local.read_bytes() == data
    assert not os.path.exists(partial_path(str(local)))


def test_get_with_a_mismatched_local_partial_restarts_from_zero(srv, tmp_path):
    data = os.urandom(2 * MiB)
    (srv.anon_dir / "g.bin").write_bytes(data)
    local = tmp_path / "g.bin"
    with open(partial_path(str(local)), "wb") as f:
        f.write(os.urandom(MiB))  # not the start of the remote file
    with srv.client() as c:
        result = c.get("g.bin", local)
    assert result.resumed_from == 0
    assert result.checksum == checksum.of_bytes(data)
    assert local.read_bytes() == data
    assert not os.path.exists(partial_path(str(local)))


def test_get_with_a_local_partial_longer_than_the_remote_file_restarts(srv, tmp_path):
    data = os.urandom(1000)
    (srv.anon_dir / "g.bin").write_bytes(data)
    local = tmp_path / "g.bin"
    with open(partial_path(str(local)), "wb") as f:
        f.write(os.urandom(5000))
    with srv.client() as c:
        result = c.get("g.bin", local)
    assert result.resumed_from == 0
    assert local.read_bytes() == data


def test_get_into_a_directory_uses_the_remote_name(srv, tmp_path):
    (srv.anon_dir / "sub").mkdir()
    (srv.anon_dir / "sub" / "n.txt").write_bytes(b"n")
    with srv.client() as c:
        c.get("sub/n.txt", tmp_path)
    assert (tmp_path / "n.txt").read_bytes() == b"n"


# --- concurrency ----------------------------------------------------------------------------------


def test_second_upload_of_a_name_in_progress_is_busy(srv, files):
    a = os.urandom(100_000)
    b = os.urandom(50_000)
    sock = start_raw_upload(srv, "both.bin", a, 40_000)
    wait_for_partial(srv, srv.anon_dir, 40_000)
    with srv.client() as c:
        with pytest.raises(sockftp.Busy):
            c.put(files("b.bin", b), "both.bin")
        c.ping()  # the refused bytes were drained
    sock.sendall(a[40_000:] + encode_frame({"checksum": checksum.of_bytes(a)}))
    assert recv_frame(sock)["ok"] is True
    sock.close()
    assert (srv.anon_dir / "both.bin").read_bytes() == a


def test_concurrent_uploads_of_one_name_never_interleave(srv, files):
    inputs = [os.urandom(RESUME_THRESHOLD + 300_000), os.urandom(RESUME_THRESHOLD + 100_000)]
    locals_ = [files(f"in{i}.bin", data) for i, data in enumerate(inputs)]
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def uploader(i: int) -> None:
        with Client(srv.host, srv.port, timeout=20) as c:
            start.wait()
            for _ in range(4):
                try:
                    c.put(locals_[i], "shared.bin")
                    result = "ok"
                except sockftp.Busy:
                    result = "busy"
                except Exception as exc:  # noqa: BLE001 - recorded and checked below
                    result = f"{type(exc).__name__}: {exc}"
                with lock:
                    outcomes.append(result)

    threads = [threading.Thread(target=uploader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 8
    assert set(outcomes) <= {"ok", "busy"}, outcomes
    assert "ok" in outcomes
    final = (srv.anon_dir / "shared.bin").read_bytes()
    assert final in inputs
    assert partials_in(srv.anon_dir) == []


class _ClientRacedAfterResume(Client):
    """A client that lets another upload finish between its resume query and its put."""

    between = None

    def request(self, header):
        reply = super().request(header)
        if header.get("cmd") == "resume" and self.between is not None:
            self.between()
        return reply


def test_put_restarts_when_its_resume_offset_went_stale(srv, files):
    data = os.urandom(RESUME_THRESHOLD + 200_000)
    held = 300_000
    sock = start_raw_upload(srv, "stale.bin", data, held)
    wait_for_partial(srv, srv.anon_dir, held)

    def other_upload_finishes():
        sock.sendall(data[held:] + encode_frame({"checksum": checksum.of_bytes(data)}))
        assert recv_frame(sock)["ok"] is True

    client = _ClientRacedAfterResume(srv.host, srv.port, timeout=10)
    srv._clients.append(client)
    client.between = other_upload_finishes
    result = client.put(files("stale.bin", data), "stale.bin")  # resume said 300000; now nothing is held
    assert result.resumed_from == 0
    assert (srv.anon_dir / "stale.bin").read_bytes() == data


def test_reader_during_an_upload_sees_the_old_file_whole(srv, tmp_path):
    old = os.urandom(300_000)
    new = os.urandom(400_000)
    (srv.anon_dir / "doc.bin").write_bytes(old)
    sock = start_raw_upload(srv, "doc.bin", new, 200_000)
    wait_for_partial(srv, srv.anon_dir, 200_000)
    with srv.client() as c:
        result = c.get("doc.bin", tmp_path / "during.bin")
        assert c.stat("doc.bin").size == len(old)
    assert (tmp_path / "during.bin").read_bytes() == old
    assert result.checksum == checksum.of_bytes(old)
    sock.sendall(new[200_000:] + encode_frame({"checksum": checksum.of_bytes(new)}))
    assert recv_frame(sock)["ok"] is True
    sock.close()
    with srv.client() as c:
        c.get("doc.bin", tmp_path / "after.bin")
    assert (tmp_path / "after.bin").read_bytes() == new


def test_reader_during_the_first_upload_of_a_name_sees_nothing(srv, tmp_path):
    data = os.urandom(100_000)
    sock = start_raw_upload(srv, "fresh.bin", data, 60_000)
    wait_for_partial(srv, srv.anon_dir, 60_000)
    with srv.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.get("fresh.bin", tmp_path / "x")
        assert c.ls() == []
    sock.sendall(data[60_000:] + encode_frame({"checksum": checksum.of_bytes(data)}))
    assert recv_frame(sock)["ok"] is True
    sock.close()


def test_download_in_progress_keeps_its_content_when_the_file_is_replaced(srv, files):
    old = os.urandom(8 * MiB)
    new = os.urandom(1000)
    (srv.anon_dir / "r.bin").write_bytes(old)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(10)
    sock.connect((srv.host, srv.port))
    srv._sockets.append(sock)
    send_frame(sock, {"cmd": "get", "path": "r.bin"})
    reply = recv_frame(sock)
    first = recv_exact(sock, 1000)
    with srv.client() as c:
        c.put(files("r.bin", new), "r.bin")
    rest = recv_exact(sock, reply["filesize"] - 1000)
    assert first + rest == old
    assert (srv.anon_dir / "r.bin").read_bytes() == new


def test_trees_at_the_root_are_the_root_whatever_the_cwd(srv, tmp_path):
    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha")
    (tree / "inner" / "b.txt").write_bytes(b"beta")
    with srv.client() as client:
        client.mkdir("elsewhere")
        client.cd("elsewhere")
        client.put_tree(tree, "/")
        client.get_tree("/", tmp_path / "back")
    assert (srv.anon_dir / "a.txt").read_bytes() == b"alpha"
    assert (srv.anon_dir / "inner" / "b.txt").read_bytes() == b"beta"
    assert not (srv.anon_dir / "elsewhere" / "a.txt").exists()
    assert (tmp_path / "back" / "inner" / "b.txt").read_bytes() == b"beta"
