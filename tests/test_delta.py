"""Block-level deltas on the server: block lists kept as uploads arrive and
answered by ``blocks``, ranged ``get``, and the delta ``put`` that builds a
new version of a file from its old blocks and the ones sent, verified,
within the quota, and atomically."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import add_user, assert_closed, login, partials_in, recv_exact, recv_frame, send_frame, wait_until

import sockftp
from sockftp.accounts import SqliteUserStore
from sockftp.protocol import checksum
from sockftp.protocol.blocks import BlockList, delta_ops, expand_ops, file_blocks
from sockftp.protocol.limits import DELTA_BLOCK, DELTA_MAX_OPS, MAX_DRAIN
from sockftp.server.config import users_db
from sockftp.storage import LocalStorage
from sockftp.storage import blocks as sidecars

MiB = 1024 * 1024
WHEN = 1_234_567_890.25


def _fresh_blocks(path) -> tuple[bytes, str]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return file_blocks(fd)
    finally:
        os.close(fd)


def _kept(path) -> tuple[str, bytes] | None:
    """The block list kept beside the file at *path*, if valid for it now."""
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sidecars.read(dir_fd, path.name, os.stat(path))
    finally:
        os.close(dir_fd)


def _sidecars(directory) -> list:
    return sorted(directory.glob(".sockftp-blocks-*"))


def _ping(sock) -> None:
    send_frame(sock, {"cmd": "ping"})
    assert recv_frame(sock) == {"ok": True}


def _delta_put(sock, path, size, base, ops, literals: bytes, final: str | None, **extra) -> dict:
    """Send a delta put (header, *literals*, trailer) and return the reply."""
    header = {
        "cmd": "put",
        "path": path,
        "size": size,
        "checksum": "trailer",
        "delta": {"base": base, "block_size": DELTA_BLOCK, "ops": ops},
        **extra,
    }
    send_frame(sock, header, literals)
    send_frame(sock, {"checksum": final or checksum.of_bytes(b"")})
    return recv_frame(sock)


# -- block lists -------------------------------------------------------------------------


def test_block_lists_kept_as_uploads_arrive_equal_a_fresh_computation(srv, files):
    data = os.urandom(9 * MiB + 12345)  # a short last block
    local = files("big.bin", data)
    with srv.client() as client:
        client.put(local, "big.bin")
        # Kept at the commit, before anyone asked: no read of the file after it.
        assert _kept(srv.anon_dir / "big.bin") == (checksum.of_bytes(data), _fresh_blocks(local)[0])
        listing = client.blocks("big.bin")
    assert listing == BlockList(
        len(data), pytest.approx(os.stat(local).st_mtime), checksum.of_bytes(data), MiB, _fresh_blocks(local)[0]
    )
    assert listing.count == 10 and len(listing.hexes()) == 10 and all(len(h) == 16 for h in listing.hexes())

    # A resumed upload hashes the blocks of the part it held too.
    resumed = os.urandom(6 * MiB + 7)
    sock = srv.raw()
    send_frame(sock, {"cmd": "put", "path": "resumed.bin", "size": len(resumed)}, resumed[: 3 * MiB + 5])
    sock.close()
    wait_until(lambda: [p.stat().st_size for p in partials_in(srv.anon_dir)] == [3 * MiB + 5], what="the partial")
    wait_until(lambda: srv.session_count == 0, what="the cut session to end")
    with srv.client() as client:
        result = client.put(files("resumed.bin", resumed), "resumed.bin")
        assert result.resumed_from == 3 * MiB + 5
    assert _kept(srv.anon_dir / "resumed.bin") == (
        checksum.of_bytes(resumed),
        _fresh_blocks(files.dir / "resumed.bin")[0],
    )
    # Small files get none: below DELTA_MIN a whole transfer is as cheap.
    with srv.client() as client:
        client.put(files("small.bin", os.urandom(MiB)), "small.bin")
    assert len(_sidecars(srv.anon_dir)) == 2


def test_blocks_of_a_file_without_a_kept_list_computes_it_once_and_keeps_it(srv):
    data = os.urandom(5 * MiB)
    (srv.anon_dir).mkdir(parents=True, exist_ok=True)
    (srv.anon_dir / "placed.bin").write_bytes(data)  # put there without sockftp
    with srv.client() as client:
        assert [e.checksum for e in client.tree("", checksums=True)] == [None]
        listing = client.blocks("placed.bin")
        assert (listing.checksum, listing.digests) == (
            checksum.of_bytes(data),
            _fresh_blocks(srv.anon_dir / "placed.bin")[0],
        )
        assert _kept(srv.anon_dir / "placed.bin") == (listing.checksum, listing.digests)
        assert [e.checksum for e in client.tree("", checksums=True)] == [listing.checksum]
        # Changed behind the server's back: the kept list is not trusted.
        with open(srv.anon_dir / "placed.bin", "r+b") as f:
            f.seek(2 * MiB)
            f.write(b"changed")
        changed = (srv.anon_dir / "placed.bin").read_bytes()
        assert _kept(srv.anon_dir / "placed.bin") is None
        again = client.blocks("placed.bin")
        assert (again.checksum, again.digests) == (
            checksum.of_bytes(changed),
            _fresh_blocks(srv.anon_dir / "placed.bin")[0],
        )
        assert again.digests[:16] == listing.digests[:16] and again.digests[16:24] != listing.digests[16:24]


def test_blocks_streams_a_long_list_in_frames_and_refuses_what_is_not_a_file(srv, files):
    size = 3500 * MiB
    srv.anon_dir.mkdir(parents=True, exist_ok=True)
    with open(srv.anon_dir / "sparse.bin", "wb") as f:  # 3500 blocks, no disk used
        f.truncate(size)
    # Its list, kept beside it as if it had been uploaded: answered without a read.
    digests = b"".join(i.to_bytes(8, "big") for i in range(3500))
    kept = checksum.of_bytes(b"as kept")
    dir_fd = os.open(srv.anon_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sidecars.write(dir_fd, "sparse.bin", os.stat(srv.anon_dir / "sparse.bin"), kept, digests)
    finally:
        os.close(dir_fd)
    with srv.client() as client:
        sock = client.wire.sock
        send_frame(sock, {"cmd": "blocks", "path": "sparse.bin"})
        frames = [recv_frame(sock)]
        while frames[-1]["more"]:
            frames.append(recv_frame(sock))
        assert len(frames) >= 2
        starts = [sum(len(f["blocks"]) for f in frames[:i]) for i in range(len(frames))]
        assert [f["first"] for f in frames] == starts
        assert [b for f in frames for b in f["blocks"]] == [f"{i:016x}" for i in range(3500)]
        assert all(f["size"] == size and f["block_size"] == DELTA_BLOCK and f["path"] == "/sparse.bin" for f in frames)
        assert all(f["checksum"] == kept for f in frames)
        assert client.blocks("sparse.bin").digests == digests
        client.mkdir("dir")
        with pytest.raises(sockftp.IsADirectory):
            client.blocks("dir")
        with pytest.raises(sockftp.NotFound):
            client.blocks("missing")
        client.put(files("empty", b""), "empty")
        assert client.blocks("empty").count == 0


def test_block_lists_follow_renames_and_go_with_removes(srv, files):
    with srv.client() as client:
        client.mkdir("d")
        for name in ("a.bin", "b.bin", "c.bin"):
            client.put(files(name, os.urandom(5 * MiB)), f"d/{name}")
        home = srv.anon_dir / "d"
        assert len(_sidecars(home)) == 3
        client.mv("d/a.bin", "d/moved.bin")
        assert _kept(home / "moved.bin") is not None and len(_sidecars(home)) == 3
        client.mv("d/moved.bin", "d/b.bin")  # over a file that had one
        assert _kept(home / "b.bin")[0] == checksum.of_bytes((files.dir / "a.bin").read_bytes())
        assert len(_sidecars(home)) == 2
        client.mkdir("e")
        client.mv("d/c.bin", "e/c.bin")
        assert _kept(srv.anon_dir / "e" / "c.bin") is not None and len(_sidecars(home)) == 1
        client.put(files("small", b"small now"), "d/b.bin")  # replaced by a file too small for one
        assert _sidecars(home) == []
        client.rm("e/c.bin")
        assert _sidecars(srv.anon_dir / "e") == []
        # A list whose file went behind the server's back does not keep its directory.
        client.put(files("gone.bin", os.urandom(5 * MiB)), "e/gone.bin")
        (srv.anon_dir / "e" / "gone.bin").unlink()
        assert client.ls("e") == [] and len(_sidecars(srv.anon_dir / "e")) == 1
        client.rmdir("e")
        assert not (srv.anon_dir / "e").exists()


def test_usage_and_quotas_do_not_count_block_lists(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    data = os.urandom(6 * MiB)
    upload = storage.open_upload(("f.bin",), len(data))
    upload.write(data)
    upload.set_blocks(DELTA_BLOCK, _fresh_blocks_of(data))
    upload.commit(checksum.of_bytes(data))
    assert len(_sidecars(tmp_path / "root")) == 1
    assert (storage.usage(()).bytes, storage.usage(()).files) == (len(data), 1)


def _fresh_blocks_of(data: bytes) -> bytes:
    from sockftp.protocol.blocks import BlockHasher

    hasher = BlockHasher()
    hasher.update(data)
    return hasher.digests()


# -- ranged get -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1000, 3 * MiB + 17])
def test_ranged_get_returns_exactly_the_range(srv, files, size):
    data = os.urandom(size)
    with srv.client() as client:
        client.put(files("f.bin", data), "f.bin")
        sock = client.wire.sock
        for offset, length in [(0, 10), (100, 500), (size - 5, 100), (size, 7), (3, 0), (0, size + 1)]:
            send_frame(sock, {"cmd": "get", "path": "f.bin", "offset": offset, "length": length})
            reply = recv_frame(sock)
            count = max(0, min(length, size - offset))
            assert (reply["size"], reply["offset"], reply["filesize"]) == (size, offset, count)
            assert reply["checksum"] == checksum.of_bytes(data)
            assert recv_exact(sock, count) == data[offset : offset + count]
            _ping(sock)  # exactly the range came: the next frame is the ping's reply
        for bad in (-1, "10", 1.5, True):
            send_frame(sock, {"cmd": "get", "path": "f.bin", "length": bad})
            assert recv_frame(sock)["error"] == "bad_request"
        send_frame(sock, {"cmd": "get", "path": "f.bin", "offset": size + 1, "length": 1})
        assert recv_frame(sock)["error"] == "offset_mismatch"
        _ping(sock)


def test_get_ranges_fetches_ranges_pipelined_and_notices_a_change_between_them(srv, files):
    data = os.urandom(6 * MiB)
    with srv.client() as client:
        client.put(files("f.bin", data), "f.bin")
        got = bytearray(len(data))

        def write(position, chunk):
            got[position : position + len(chunk)] = chunk

        ranges = [(i * MiB, MiB) for i in range(0, 6, 2)] + [(6 * MiB - 10, 100)]
        result = client.get_ranges("f.bin", ranges, write, window=2)
        assert (result.size, result.checksum, result.received) == (len(data), checksum.of_bytes(data), 3 * MiB + 10)
        for offset, length in ranges:
            assert got[offset : offset + length] == data[offset : offset + length]
        assert client.get_ranges("f.bin", [], write).size == len(data)

        other = srv.client()
        replaced = []

        def write_and_replace(position, chunk):
            if not replaced:  # the file changes while the ranges come
                replaced.append(other.put(files("new.bin", os.urandom(len(data))), "f.bin"))

        with pytest.raises(sockftp.DeltaBaseChanged):
            client.get_ranges("f.bin", ranges, write_and_replace, window=1)
        client.ping()


# -- delta put -------------------------------------------------------------------------


def test_a_delta_put_sends_only_the_changed_mebibyte_of_64(srv, files):
    old = bytearray(os.urandom(64 * MiB))
    local = files("big.bin", bytes(old))
    with srv.client() as client:
        client.put(local, "big.bin")
        base = client.blocks("big.bin")
        new = bytearray(old)
        new[32 * MiB : 33 * MiB] = os.urandom(MiB)
        local.write_bytes(new)
        os.utime(local, (WHEN, WHEN))
        sent_before = client.wire.bytes_out
        result = client.put_delta(local, "big.bin", base, fallback=False)
        on_the_wire = client.wire.bytes_out - sent_before
    assert result.sent == MiB
    assert on_the_wire < MiB + 4096
    stored = srv.anon_dir / "big.bin"
    assert stored.read_bytes() == new
    assert result.checksum == checksum.of_bytes(bytes(new))
    assert os.stat(stored).st_mtime == pytest.approx(WHEN)
    assert partials_in(srv.anon_dir) == []
    assert _kept(stored) == (checksum.of_bytes(bytes(new)), _fresh_blocks(local)[0])


def test_a_delta_put_is_atomic_while_it_runs_and_leaves_the_old_file_when_cut(srv, files):
    old = os.urandom(8 * MiB)
    with srv.client() as client:
        client.put(files("f.bin", old), "f.bin")
        base = client.blocks("f.bin")
    new = old[: 4 * MiB] + os.urandom(2 * MiB) + old[6 * MiB :]
    ops = [[0, 4], [-1, 2 * MiB], [6, 2]]
    header = {
        "cmd": "put",
        "path": "f.bin",
        "size": len(new),
        "checksum": "trailer",
        "delta": {"base": base.checksum, "block_size": DELTA_BLOCK, "ops": ops},
    }
    sock = srv.raw()
    send_frame(sock, header, new[4 * MiB : 5 * MiB])  # half the literals, then silence
    time.sleep(0.3)
    assert (srv.anon_dir / "f.bin").read_bytes() == old
    with srv.client() as client:
        assert [e.name for e in client.ls()] == ["f.bin"]
    sock.close()  # cut
    wait_until(lambda: srv.session_count == 0 and partials_in(srv.anon_dir) == [], what="the partial to go")
    assert (srv.anon_dir / "f.bin").read_bytes() == old
    with srv.client() as client:
        assert client.request({"cmd": "resume", "path": "f.bin", "size": len(new)})["offset"] == 0
        sock = client.wire.sock
        reply = _delta_put(sock, "f.bin", len(new), base.checksum, ops, new[4 * MiB : 6 * MiB], checksum.of_bytes(new))
        assert reply["ok"] is True and reply["checksum"] == checksum.of_bytes(new)
    assert (srv.anon_dir / "f.bin").read_bytes() == new


def test_a_delta_that_does_not_verify_stores_nothing(srv, files):
    old = os.urandom(5 * MiB)
    with srv.client() as client:
        client.put(files("f.bin", old), "f.bin")
        base = client.blocks("f.bin")
        sock = client.wire.sock
        reply = _delta_put(
            sock, "f.bin", 5 * MiB, base.checksum, [[0, 4], [-1, MiB]], os.urandom(MiB), checksum.of_bytes(b"x")
        )
        assert reply["error"] == "checksum_mismatch"
        _ping(sock)
    assert (srv.anon_dir / "f.bin").read_bytes() == old
    assert partials_in(srv.anon_dir) == []


def test_a_delta_can_copy_any_block_and_the_short_last_one(srv, files):
    old = os.urandom(5 * MiB + 300)
    with srv.client() as client:
        client.put(files("f.bin", old), "f.bin")
        base = client.blocks("f.bin")
        literal = os.urandom(1000)
        new = old[5 * MiB :] + old[MiB : 3 * MiB] + literal + old[:MiB]
        ops = [[5, 1], [1, 2], [-1, 1000], [0, 1]]
        reply = _delta_put(client.wire.sock, "f.bin", len(new), base.checksum, ops, literal, checksum.of_bytes(new))
        assert reply["ok"] is True
        assert (srv.anon_dir / "f.bin").read_bytes() == new
        # The new file's blocks, though the copies were not block-aligned in it.
        assert client.blocks("f.bin").digests == _fresh_blocks(srv.anon_dir / "f.bin")[0]


def test_delta_ops_rebuild_the_target_whatever_moved(tmp_path):
    base = os.urandom(7 * MiB + 5)
    target = os.urandom(MiB) + base[2 * MiB : 5 * MiB] + base[:MiB] + os.urandom(10) + base[7 * MiB :]
    ops = delta_ops(_fresh_blocks_of(base), len(base), _fresh_blocks_of(target), len(target))
    rebuilt = b""
    for at, length, source in expand_ops(ops, len(base), len(target)):
        rebuilt += target[at : at + length] if source is None else base[source : source + length]
    assert rebuilt == target
    assert ops[:2] == [[-1, MiB], [2, 3]]


def test_quota_counts_the_new_version(server, files):
    srv = server(anonymous=False, login_failure_delay=0.01)
    add_user(srv.root, "alice", "pw", quota_bytes=20 * MiB)
    alice = login(srv, "alice", "pw")
    alice.put(files("f.bin", os.urandom(8 * MiB)), "f.bin")
    alice.put(files("other.bin", os.urandom(5 * MiB)), "other.bin")
    base = alice.blocks("f.bin")
    grown = (files.dir / "f.bin").read_bytes() + os.urandom(8 * MiB)  # 16 MiB: 21 MiB in all
    with pytest.raises(sockftp.QuotaExceeded):
        alice.put_delta(files("grown.bin", grown), "f.bin", base, fallback=False)
    alice.ping()  # the literals were read and dropped: in step
    assert alice.quota()["used_bytes"] == 13 * MiB and alice.quota()["reserved_bytes"] == 0
    fits = (files.dir / "f.bin").read_bytes() + os.urandom(6 * MiB)  # 14 MiB: 19 MiB in all
    result = alice.put_delta(files("fits.bin", fits), "f.bin", base, fallback=False)
    assert result.sent == 6 * MiB
    assert alice.quota()["used_bytes"] == 19 * MiB
    assert (srv.root / "users" / "alice" / "f.bin").read_bytes() == fits
    # The account store got the same change: the copied blocks count too.
    alice.close()
    srv.wait_idle()
    with SqliteUserStore(users_db(str(srv.root))) as store:
        usage = store.usage("alice")
    assert (usage.used_bytes, usage.used_files, usage.changes) == (19 * MiB, 2, 0)


def test_delta_base_changed_when_the_file_changed_meanwhile(srv, files):
    old = os.urandom(6 * MiB)
    with srv.client() as client, srv.client() as other:
        client.put(files("f.bin", old), "f.bin")
        base = client.blocks("f.bin")
        new = old[: 5 * MiB] + os.urandom(MiB)
        local = files("new.bin", new)
        other.put(files("third.bin", os.urandom(6 * MiB)), "f.bin")  # replaced through the server
        with pytest.raises(sockftp.DeltaBaseChanged):
            client.put_delta(local, "f.bin", base, fallback=False)
        client.ping()  # in step: the literals were read and dropped
        sock = client.wire.sock
        reply = _delta_put(
            sock, "f.bin", len(new), base.checksum, [[0, 5], [-1, MiB]], new[5 * MiB :], checksum.of_bytes(new)
        )
        assert reply["error"] == "delta_base_changed"
        _ping(sock)
        # The fallback sends the whole file instead.
        assert client.put_delta(local, "f.bin", base).sent == len(new)
        assert (srv.anon_dir / "f.bin").read_bytes() == new


@pytest.mark.parametrize("how", ["rewritten", "attribute removed", "removed"])
def test_delta_base_changed_when_the_file_changed_behind_the_servers_back(srv, files, how):
    old = os.urandom(6 * MiB)
    with srv.client() as client:
        client.put(files("f.bin", old), "f.bin")
        base = client.blocks("f.bin")
        stored = srv.anon_dir / "f.bin"
        if how == "rewritten":
            with open(stored, "r+b") as f:  # same size; a new time
                f.write(b"x")
        elif how == "attribute removed":
            os.removexattr(stored, "user.sockftp.checksum")
        else:
            stored.unlink()
        before = stored.read_bytes() if stored.exists() else None
        sock = client.wire.sock
        new = old[: 5 * MiB] + os.urandom(MiB)
        reply = _delta_put(
            sock, "f.bin", len(new), base.checksum, [[0, 5], [-1, MiB]], new[5 * MiB :], checksum.of_bytes(new)
        )
        assert reply["error"] == "delta_base_changed"
        _ping(sock)
    assert (stored.read_bytes() if stored.exists() else None) == before
    assert partials_in(srv.anon_dir) == []


# -- hostile deltas ------------------------------------------------------------------------

# Deltas whose byte count is known: refused after their literals are read, the session goes on.
IN_STEP = {
    "copy past the end": ([[0, 7]], b"", 7 * MiB),
    "copy from past the end": ([[9, 1]], b"", MiB),
    "ops make less than size": ([[-1, 10]], b"0123456789", 20),
    "ops make more than size": ([[0, 6], [-1, 10]], b"0123456789", 6 * MiB),
    "huge copy count": ([[0, 2**62]], b"", 6 * MiB),
}
# Deltas whose byte count cannot be known: refused, and the connection closes.
CLOSING = {
    "negative count": [[0, -1]],
    "negative literal": [[-1, -5]],
    "zero count": [[0, 0]],
    "block below -1": [[-2, 5]],
    "three numbers": [[0, 1, 2]],
    "floats": [[0.0, 1]],
    "booleans": [[True, 1]],
    "strings": [["0", "1"]],
    "not a list": {"0": 1},
    "ops missing": None,
    "too many ops": [[-1, 1]] * (DELTA_MAX_OPS + 1),
    "literals past any size": [[-1, 2**62], [-1, 2**62]],
}


@pytest.fixture
def based(srv, files):
    """A server holding /f.bin (6 MiB) and a client, with the file's block list."""
    client = srv.client()
    client.put(files("f.bin", os.urandom(6 * MiB)), "f.bin")
    return client, client.blocks("f.bin")


@pytest.mark.parametrize("case", sorted(IN_STEP))
def test_hostile_ops_whose_length_is_known_are_refused_in_step(srv, based, case, no_server_errors):
    client, base = based
    ops, literals, size = IN_STEP[case]
    reply = _delta_put(client.wire.sock, "f.bin", size, base.checksum, ops, literals, None)
    assert reply["error"] == "bad_request"
    _ping(client.wire.sock)
    assert checksum.of_bytes((srv.anon_dir / "f.bin").read_bytes()) == base.checksum
    assert partials_in(srv.anon_dir) == []


@pytest.mark.parametrize("case", sorted(CLOSING))
def test_hostile_ops_whose_length_is_unknown_are_refused_and_close(srv, based, case, no_server_errors):
    client, base = based
    delta = {"base": base.checksum, "block_size": DELTA_BLOCK, "ops": CLOSING[case]}
    sock = srv.raw()
    header = {"cmd": "put", "path": "f.bin", "size": 10, "checksum": "trailer", "delta": delta}
    send_frame(sock, json.dumps(header, separators=(",", ":")).encode(), b"0123456789")  # compact: under 64 KiB
    reply = recv_frame(sock)
    assert reply["error"] == "bad_request"
    assert_closed(sock)
    assert checksum.of_bytes((srv.anon_dir / "f.bin").read_bytes()) == base.checksum
    assert partials_in(srv.anon_dir) == []
    client.ping()  # the server is fine


@pytest.mark.parametrize(
    "delta",
    [{"base": "md5:00", "block_size": DELTA_BLOCK, "ops": []}, {"block_size": DELTA_BLOCK, "ops": []}, "delta", [1], 5],
    ids=["bad base", "no base", "a string", "a list", "a number"],
)
def test_a_malformed_delta_field_is_refused_and_closes(srv, delta, no_server_errors):
    sock = srv.raw()
    send_frame(sock, {"cmd": "put", "path": "f.bin", "size": 1, "checksum": "trailer", "delta": delta}, b"x")
    assert recv_frame(sock)["error"] == "bad_request"
    assert_closed(sock)


@pytest.mark.parametrize(
    "extra, error",
    [
        ({"offset": 3}, "bad_request"),
        ({"checksum": None}, "bad_request"),
        ({"block_size": 4096}, "bad_request"),
        ({"path": "missing.bin"}, "delta_base_changed"),
        ({"path": "dir"}, "is_a_directory"),
        ({"path": "/"}, "path_refused"),
        ({"path": ".sockftp-part-x"}, "path_refused"),
    ],
)
def test_a_delta_put_refused_before_its_bytes_keeps_the_stream_in_step(srv, based, extra, error, no_server_errors):
    client, base = based
    client.mkdir("dir")
    sock = client.wire.sock
    delta = {"base": base.checksum, "block_size": extra.pop("block_size", DELTA_BLOCK), "ops": [[0, 5], [-1, MiB]]}
    header = {"cmd": "put", "path": "f.bin", "size": 6 * MiB, "checksum": "trailer", "delta": delta, **extra}
    literals = os.urandom(MiB)
    send_frame(sock, header, literals)
    if header["checksum"] == "trailer":
        send_frame(sock, {"checksum": checksum.of_bytes(b"whatever")})
    assert recv_frame(sock)["error"] == error
    _ping(sock)
    assert checksum.of_bytes((srv.anon_dir / "f.bin").read_bytes()) == base.checksum


def test_a_refused_delta_with_more_literals_than_the_server_drains_closes(srv, based):
    client, base = based
    sock = srv.raw()
    count = MAX_DRAIN + 1
    delta = {"base": checksum.of_bytes(b"not it"), "block_size": DELTA_BLOCK, "ops": [[-1, count]]}
    send_frame(sock, {"cmd": "put", "path": "f.bin", "size": count, "checksum": "trailer", "delta": delta})
    assert recv_frame(sock)["error"] == "delta_base_changed"
    assert_closed(sock)
