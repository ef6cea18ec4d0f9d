"""Quotas: enforced when an upload is announced, exact under races, right
after deletes, renames, aborted uploads and restarts."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import LineStops, add_user, encode_frame, login, recv_frame, returns_at_once, wait_until

import sockftp

KiB = 1024
MiB = 1024 * KiB


def usage(client) -> dict:
    return client.request({"cmd": "quota"})


def on_disk(home) -> tuple[int, int]:
    """Bytes (partials included) and complete files under *home*."""
    total = files = 0
    for root, _dirs, names in os.walk(home):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += not name.startswith(".sockftp")
    return total, files


@pytest.fixture
def quota_server(server, tmp_path):
    def start(**limits):
        srv = server(anonymous=False, login_failure_delay=0.01)
        add_user(srv.root, "alice", **limits)
        return srv

    return start


def test_an_upload_past_the_quota_is_refused_before_anything_is_stored(quota_server, files):
    srv = quota_server(quota_bytes=100 * KiB)
    client = login(srv, "alice")
    client.put(files("a.bin", os.urandom(60 * KiB)), "a.bin")
    with pytest.raises(sockftp.QuotaExceeded):
        client.put(files("b.bin", os.urandom(60 * KiB)), "b.bin")
    assert not (srv.root / "users" / "alice" / "b.bin").exists()
    assert usage(client)["used_bytes"] == 60 * KiB
    assert client.pwd() == "/"  # the refused bytes were drained: still in step


def test_twenty_parallel_uploads_at_the_quotas_edge_never_pass_it(quota_server, files):
    size = 50 * KiB
    srv = quota_server(quota_bytes=7 * size + size // 2)  # room for 7 of 20
    clients = [login(srv, "alice") for _ in range(20)]
    sources = [files(f"s{i}.bin", os.urandom(size)) for i in range(20)]
    results: list = [None] * 20
    start = threading.Barrier(20)

    def upload(i):
        start.wait()
        try:
            clients[i].put(sources[i], f"f{i}.bin")
            results[i] = "ok"
        except sockftp.QuotaExceeded:
            results[i] = "quota"

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("ok") == 7 and results.count("quota") == 13
    reply = usage(clients[0])
    home = srv.root / "users" / "alice"
    assert reply["used_bytes"] == on_disk(home)[0] == 7 * size <= reply["quota_bytes"]
    assert reply["used_files"] == 7 and reply["reserved_bytes"] == 0


def test_replacing_a_file_at_the_quotas_edge_is_allowed(quota_server, files):
    srv = quota_server(quota_bytes=100 * KiB)
    client = login(srv, "alice")
    client.put(files("a.bin", os.urandom(100 * KiB)), "a.bin")
    client.put(files("b.bin", os.urandom(100 * KiB)), "a.bin")
    reply = usage(client)
    assert (reply["used_bytes"], reply["used_files"]) == (100 * KiB, 1)


def test_the_file_limit_counts_new_names_only(quota_server, files):
    srv = quota_server(max_files=2)
    client = login(srv, "alice")
    source = files("x", b"x")
    client.put(source, "one")
    client.put(source, "two")
    client.put(source, "two")  # a replacement is not a new file
    with pytest.raises(sockftp.QuotaExceeded):
        client.put(source, "three")
    client.rm("one")
    client.put(source, "three")
    assert usage(client)["used_files"] == 2


def test_deletes_renames_and_rmdir_keep_usage_exact(quota_server, files):
    srv = quota_server(quota_bytes=10 * MiB)
    client = login(srv, "alice")
    client.mkdir("d")
    client.put(files("a", os.urandom(3000)), "d/a")
    client.put(files("b", os.urandom(5000)), "b")
    client.mv("b", "d/a")  # replaces a: 3000 bytes and a file gone
    assert (usage(client)["used_bytes"], usage(client)["used_files"]) == (5000, 1)
    client.rm("d/a")
    client.rmdir("d")
    assert (usage(client)["used_bytes"], usage(client)["used_files"]) == (0, 0)


def test_an_aborted_upload_counts_what_it_left_and_resumes_within_the_quota(quota_server, files):
    srv = quota_server(quota_bytes=4 * MiB)
    data = os.urandom(3 * MiB)
    client = login(srv, "alice")
    # A raw session uploads half the file, then dies.
    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": "secret"}))
    assert recv_frame(sock)["ok"]
    header = {"cmd": "put", "path": "big.bin", "size": len(data), "checksum": "trailer"}
    sock.sendall(encode_frame(header) + data[: len(data) // 2])
    wait_until(lambda: usage(client)["used_bytes"] >= len(data) // 2, what="half the upload accounted")
    sock.close()
    wait_until(lambda: usage(client)["reserved_bytes"] == 0, what="the reservation released")
    home = srv.root / "users" / "alice"
    assert usage(client)["used_bytes"] == on_disk(home)[0] == len(data) // 2
    result = client.put(files("big.bin", data), "big.bin")
    assert result.resumed_from == len(data) // 2
    reply = usage(client)
    assert (reply["used_bytes"], reply["used_files"]) == (len(data), 1) == on_disk(home)


def test_usage_is_right_after_a_restart(server, files):
    srv = server(anonymous=False)
    add_user(srv.root, "alice", quota_bytes=1 * MiB)
    client = login(srv, "alice")
    client.put(files("a", os.urandom(300 * KiB)), "a")
    client.put(files("b", os.urandom(200 * KiB)), "b")
    client.rm("a")
    client.close()
    srv.stop()

    again = server(root=srv.root, anonymous=False)
    client = login(again, "alice")
    reply = usage(client)
    assert (reply["used_bytes"], reply["used_files"]) == (200 * KiB, 1)
    with pytest.raises(sockftp.QuotaExceeded):
        client.put(files("c", os.urandom(900 * KiB)), "c")


def test_quota_and_df_answer_the_same(quota_server):
    srv = quota_server(quota_bytes=5 * MiB, max_files=10)
    client = login(srv, "alice")
    quota, df = usage(client), client.request({"cmd": "df"})
    assert quota == df
    assert (quota["quota_bytes"], quota["max_files"], quota["user"]) == (5 * MiB, 10, "alice")


def test_files_removed_behind_the_servers_back_count_until_a_rescan(quota_server, files):
    # Usage is kept in the account store, and a login no longer walks the
    # home (issue 16): files an admin removes on disk stay counted until
    # `sockftp user rescan` measures the home again, which the running
    # server reads at the user's next first session.
    from sockftp.server.rescan import rescan_root

    srv = quota_server(quota_bytes=1 * MiB)
    client = login(srv, "alice")
    client.put(files("a", os.urandom(600 * KiB)), "a")
    client.quit()
    srv.wait_idle()
    (srv.root / "users" / "alice" / "a").unlink()
    client = login(srv, "alice")
    assert usage(client)["used_bytes"] == 600 * KiB
    client.quit()
    srv.wait_idle()
    [rescan] = rescan_root(str(srv.root), "alice")
    assert rescan.describe() == "alice: 0 bytes in 0 files (was 600.0 KiB in 1 file)"
    client = login(srv, "alice")
    assert usage(client)["used_bytes"] == 0
    client.put(files("b", os.urandom(600 * KiB)), "b")


def test_a_recreated_account_is_measured_at_its_first_login(quota_server, files):
    # An account deleted and added again (its files stay) starts with a
    # usage never measured: its first login measures what the home holds.
    from sockftp.accounts import SqliteUserStore
    from sockftp.server.config import users_db

    srv = quota_server(quota_bytes=1 * MiB)
    client = login(srv, "alice")
    client.put(files("a", os.urandom(600 * KiB)), "a")
    client.quit()
    srv.wait_idle()
    with SqliteUserStore(users_db(str(srv.root))) as store:
        account = store.get("alice")
        store.delete("alice")
        store.add(account)
        assert store.usage("alice").used_bytes is None
    (srv.root / "users" / "alice" / "a").unlink()
    client = login(srv, "alice")
    assert (usage(client)["used_bytes"], usage(client)["used_files"]) == (0, 0)
    client.put(files("b", os.urandom(600 * KiB)), "b")


def _start_raw_upload(srv, path: str, data: bytes, sent: int):
    """A raw session of alice that announces *data* for *path* and sends its
    first *sent* bytes; returns a function that sends the rest and the reply
    (its ``sock`` attribute is the session's socket)."""
    from sockftp.protocol import checksum

    sock = srv.raw()
    sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": "secret"}))
    assert recv_frame(sock)["ok"]
    header = {"cmd": "put", "path": path, "size": len(data), "checksum": "trailer"}
    sock.sendall(encode_frame(header) + data[:sent])

    def finish() -> dict:
        sock.sendall(data[sent:] + encode_frame({"checksum": checksum.of_bytes(data)}))
        return recv_frame(sock)

    finish.sock = sock
    return finish


def test_renaming_the_directory_of_an_upload_under_way_keeps_usage_exact(quota_server, files):
    srv = quota_server(quota_bytes=1000)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.mkdir("d")
    finish = _start_raw_upload(srv, "d/f", os.urandom(300), 100)
    wait_until(lambda: usage(client)["used_bytes"] == 100, what="the first bytes accounted")
    client.mv("d", "e")
    client.mkdir("d")
    client.put(files("other", os.urandom(600)), "d/f")
    assert finish()["ok"]  # lands in e/f, where its directory went
    assert (home / "e" / "f").stat().st_size == 300 and (home / "d" / "f").stat().st_size == 600
    reply = usage(client)
    assert (reply["used_bytes"], reply["used_files"]) == on_disk(home) == (900, 2)


def test_an_upload_whose_replaced_file_moved_away_must_fit_without_it(quota_server, files):
    srv = quota_server(quota_bytes=10_000, max_files=1)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.put(files("a", os.urandom(500)), "a")
    finish = _start_raw_upload(srv, "a", os.urandom(500), 100)  # replaces a: no new file
    wait_until(lambda: usage(client)["used_bytes"] == 600, what="the first bytes accounted")
    client.mv("a", "b")  # now the upload would add a second file
    reply = finish()
    assert reply["error"] == "quota_exceeded"
    assert sorted(p.name for p in home.iterdir()) == ["b"]
    quota = usage(client)
    assert (quota["used_bytes"], quota["used_files"]) == on_disk(home) == (500, 1)


def test_rmdir_refused_for_an_upload_under_way_removes_nothing(quota_server, files):
    srv = quota_server(quota_bytes=1 * MiB)
    home = srv.root / "users" / "alice"
    client = login(srv, "alice")
    client.mkdir("d")
    # An abandoned partial, then an upload under way, in the same directory.
    abandoned = _start_raw_upload(srv, "d/old", os.urandom(4000), 2000)
    wait_until(lambda: usage(client)["used_bytes"] == 2000, what="the first partial accounted")
    abandoned.sock.close()
    srv.wait_idle(sessions=1)  # only `client` is left; the partial stays
    finish = _start_raw_upload(srv, "d/new", os.urandom(3000), 1000)
    wait_until(lambda: usage(client)["used_bytes"] == 3000, what="both partials accounted")
    with pytest.raises(sockftp.Busy):
        client.rmdir("d")
    assert usage(client)["used_bytes"] == on_disk(home)[0] == 3000
    assert finish()["ok"]


# --- uploads of unknown size and appends (the FTP front door's STOR and APPE) ---------------


@pytest.fixture
def ledgered(tmp_path):
    """A QuotaStorage over a fresh LocalStorage with a 100 KiB, 3-file quota."""
    from sockftp.server.quota import QuotaLedger
    from sockftp.server.quota_storage import QuotaStorage
    from sockftp.storage import LocalStorage

    inner = LocalStorage(tmp_path / "root")
    ledger = QuotaLedger("alice", 0, 0, quota_bytes=100 * KiB, max_files=3)
    yield QuotaStorage(inner, ledger), ledger, tmp_path / "root"
    inner.close()


def test_an_upload_of_unknown_size_is_refused_at_the_chunk_that_passes_the_quota(ledgered):
    storage, ledger, root = ledgered
    upload = storage.open_upload(("a",), None)
    upload.write(os.urandom(60 * KiB))
    upload.write(os.urandom(40 * KiB))  # exactly at the edge
    with pytest.raises(sockftp.QuotaExceeded):
        upload.write(b"x")
    assert (ledger.used_bytes, ledger.reserved_bytes) == (100 * KiB, 0)
    upload.discard()
    assert (ledger.used_bytes, ledger.reserved_bytes, ledger.reserved_files) == (0, 0, 0)
    assert on_disk(root) == (0, 0)


def test_an_upload_of_unknown_size_counts_its_file_and_may_replace_one_at_the_edge(ledgered):
    storage, ledger, root = ledgered
    for name in ("a", "b", "c"):
        upload = storage.open_upload((name,), None)
        upload.write(b"x" * (30 * KiB))
        upload.commit(None)
    with pytest.raises(sockftp.QuotaExceeded):  # a fourth file
        storage.open_upload(("d",), None)
    upload = storage.open_upload(("c",), None)
    upload.write(b"y" * (40 * KiB))  # 90 + 40 - 30 replaced: fits
    upload.commit(None)
    assert (ledger.used_bytes, ledger.used_files) == on_disk(root) == (100 * KiB, 3)


def test_an_append_counts_its_copy_until_it_replaces_the_file(ledgered):
    storage, ledger, root = ledgered
    upload = storage.open_upload(("a",), None)
    upload.write(b"a" * (40 * KiB))
    upload.commit(None)
    upload = storage.open_append(("a",))
    assert (ledger.used_bytes, ledger.reserved_bytes) == (80 * KiB, 0)  # the copy is on disk
    upload.write(b"b" * (20 * KiB))  # the final 60 KiB replace the 40 KiB: fits
    with pytest.raises(sockftp.QuotaExceeded):
        upload.write(b"c" * (41 * KiB))
    upload.keep()
    assert (ledger.used_bytes, ledger.used_files) == on_disk(root) == (100 * KiB, 1)
    upload = storage.open_append(("a",), 10 * KiB)  # drops the 60 KiB partial, copies 10 KiB
    assert ledger.used_bytes == on_disk(root)[0] == 50 * KiB
    upload.commit(None)
    assert (ledger.used_bytes, ledger.used_files, ledger.reserved_bytes) == (10 * KiB, 1, 0)
    assert on_disk(root) == (10 * KiB, 1)
    with pytest.raises(sockftp.NotFound):
        storage.open_append(("missing",))
    assert (ledger.reserved_bytes, ledger.reserved_files) == (0, 0)


def test_a_session_stopped_anywhere_in_its_logout_never_holds_up_another_login(tmp_path):
    """A session thread can stall at any point (waiting for the GIL, say).
    If logging out held the registry's lock meanwhile, every session starting
    or ending would wait too: in the soak, 387 threads queued there while
    ended sessions kept their places and new clients were refused. Here a
    logout is stopped at every line it runs, and each time another session
    must log in and out at once."""
    from sockftp.server.quota import QuotaRegistry
    from sockftp.storage import LocalStorage

    registry = QuotaRegistry(LocalStorage(tmp_path))
    ledgers = [registry.login("anonymous", ("anonymous",)) for _ in range(2)]
    stops = LineStops()
    stops.run(lambda: registry.logout(ledgers[0]))

    def check(n):
        other = lambda: registry.logout(registry.login("anonymous", ("anonymous",)))  # noqa: E731
        assert returns_at_once(other), f"a login waited for a logout stopped at line {n}"

    assert stops.each_stop(check) >= 1
    assert ledgers[1].sessions == 1
