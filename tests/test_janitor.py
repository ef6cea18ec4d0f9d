"""Abandoned partial uploads expire after partial_ttl (server/janitor.py)."""

from __future__ import annotations

import logging
import os
import time

from conftest import partials_in

from sockftp.server.janitor import Janitor
from sockftp.storage import LocalStorage

DAY = 86400.0


def age(path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def test_only_partials_untouched_for_the_ttl_and_held_by_no_upload_are_removed(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    storage.mkdir(("users", "alice", "deep"), parents=True)
    for name in ("old.bin", "fresh.bin", "held.bin"):
        upload = storage.open_upload(("users", "alice", "deep", name), 1000)
        upload.write(b"x" * 300)
        upload.keep()
    old, fresh, held = (
        next(p for p in partials_in(tmp_path / "root/users/alice/deep") if p.name.endswith(suffix))
        for suffix in _suffixes(storage, ("old.bin", "fresh.bin", "held.bin"))
    )
    age(old, 8)
    age(fresh, 6)
    resumed = storage.open_upload(("users", "alice", "deep", "held.bin"), 1000, 300)  # an upload holds it...
    age(held, 30)  # ...however old it looks
    (tmp_path / "root/users/alice/deep/done.txt").write_text("a file, however old, is never touched")
    age(tmp_path / "root/users/alice/deep/done.txt", 365)

    removed = []
    janitor = Janitor(storage, ttl=7 * DAY, removed=lambda d, size: removed.append((d, size)))
    assert janitor.sweep() == (1, 300)
    assert removed == [(("users", "alice", "deep"), 300)]
    assert not old.exists() and fresh.exists() and held.exists()
    assert (tmp_path / "root/users/alice/deep/done.txt").exists()
    resumed.write(b"y" * 700)  # the held upload goes on and completes
    resumed.commit(None)
    assert (tmp_path / "root/users/alice/deep/held.bin").read_bytes() == b"x" * 300 + b"y" * 700


def _suffixes(storage, names):
    from sockftp.storage.local import partial_name

    return [partial_name(name) for name in names]


def test_the_server_sweeps_and_logs_what_it_removed(server, tmp_path, caplog):
    srv = server(partial_ttl=3600)
    data = os.urandom(200_000)
    with srv.client() as client:
        reply = client.request({"cmd": "resume", "path": "cut.bin", "size": len(data)})
        assert reply["offset"] == 0
    upload = srv.server.storage.open_upload(("anonymous", "cut.bin"), len(data))
    upload.write(data[:50_000])
    upload.keep()
    (partial,) = partials_in(srv.anon_dir)
    age(partial, 1 / 12)  # two hours: past a one-hour ttl
    caplog.set_level(logging.INFO, logger="sockftp.janitor")
    assert srv.server.janitor.sweep() == (1, 50_000)
    assert partials_in(srv.anon_dir) == []
    assert any("removed an abandoned partial upload in /anonymous (48.8 KiB" in r.getMessage() for r in caplog.records)
    with srv.client() as client:  # nothing is left to resume: the upload starts over
        assert client.request({"cmd": "resume", "path": "cut.bin", "size": len(data)})["offset"] == 0


def test_an_expired_partial_gives_its_bytes_back_to_its_owners_quota(server):
    from conftest import add_user, login, wait_until

    srv = server(partial_ttl=3600)
    add_user(srv.root, "alice", quota_bytes=1_000_000)
    home = srv.root / "users" / "alice"
    with login(srv, "alice") as alice:
        cut = login(srv, "alice")
        cut._send({"cmd": "put", "path": "cut.bin", "size": 600_000}, b"p" * 400_000)
        wait_until(lambda: [p.stat().st_size for p in partials_in(home)] == [400_000], what="the bytes sent")
        cut.close()  # cut off: the partial stays, resumable, and counts
        # Until the server has seen the cut, the upload holds its partial.
        wait_until(lambda: srv.session_count == 1, what="the cut session to end")
        assert alice.quota()["used_bytes"] == 400_000
        (partial,) = partials_in(home)
        age(partial, 1)
        assert srv.server.janitor.sweep() == (1, 400_000)
        assert alice.quota()["used_bytes"] == 0
