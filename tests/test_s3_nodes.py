"""Uploads to S3 storage that resume on any node (issue 18), against a real
SeaweedFS (tests/s3_support.py).

Every node here is its own ``sockftp serve`` process with its own data
directory (so its own spool): what they share is the bucket and the
account store (one SQLite file: the multipart upload records, the leases).
A cut client, a node killed with SIGKILL mid-part, two nodes resuming one
upload at once and the object store itself stopped mid-transfer must all
end in a byte-exact file, verified end to end. Also the FTP door over the
same storage.
"""

from __future__ import annotations

import ftplib
import io
import os
import random
import signal
import socket
import threading
import time

import pytest
from conftest import encode_frame, recv_frame, wait_until
from faults import fault_seed, reset
from ftp_support import ftp_server_fixture  # noqa: F401 - the ftp_server fixture
from s3_support import BUCKET

from sockftp.client import Client
from sockftp.protocol import checksum
from sockftp.protocol.errors import Busy, SockftpError

MiB = 1024 * 1024
PART = 5 * MiB
LEASE = 1.0


@pytest.fixture
def s3_env(seaweed, monkeypatch):
    """The AWS settings of the test SeaweedFS, for this process and the
    servers it starts."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    return seaweed


@pytest.fixture
def nodes(tmp_path, s3_env, s3_prefix, spawn_server):
    """Factory of server processes on one bucket prefix and one account
    store (a SQLite file; ``nodes.use_db(url)`` for another), each with a
    data directory (and a spool) of its own."""
    config = tmp_path / "node.toml"

    def use_db(db: str) -> None:
        config.write_text(
            f'storage = "s3://{BUCKET}/{s3_prefix}"\ns3_part_size = "5M"\nlease_time = {LEASE}\ndb = "{db}"\n'
        )

    use_db(str(tmp_path / "users.db"))
    count = iter(range(100))

    def start(*extra: str):
        return spawn_server(tmp_path / f"node{next(count)}", "--config", str(config), *extra)

    start.prefix = s3_prefix
    start.use_db = use_db
    return start


def client(node, **kwargs) -> Client:
    return Client("127.0.0.1", node.port, timeout=30, **kwargs)


def stored(seaweed, prefix: str, name: str) -> bytes:
    return seaweed.client().get_object(Bucket=BUCKET, Key=f"{prefix}/anonymous/{name}")["Body"].read()


def cut_put(node, name: str, data: bytes, offset: int, cut: int, abrupt: bool = True) -> None:
    """A raw session that resumes a verified put of *data* at *offset* and
    dies after sending it up to byte *cut* (*abrupt*: with a reset, which
    may drop what is in flight; else with a close, and all arrives)."""
    header = {"cmd": "put", "path": name, "size": len(data), "offset": offset, "checksum": "trailer"}
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.sendall(encode_frame({"cmd": "ping"}))
    assert recv_frame(sock) == {"ok": True}
    sock.sendall(encode_frame(header) + data[offset:cut])
    if abrupt:
        reset(sock)
    else:
        sock.close()


def held(node, name: str, size: int) -> int:
    with client(node) as c:
        return c.request({"cmd": "resume", "path": name, "size": size})["offset"]


def test_a_client_cut_at_random_offsets_resumes_through_a_new_server_process(nodes, s3_env, files):
    rng = random.Random(fault_seed())
    data = os.urandom(2 * PART + 777)
    offset = 0
    node = nodes()
    for _ in range(3):
        cut = rng.randrange(offset + 1, len(data))
        cut_put(node, "f", data, offset, cut)
        # The node keeps what arrived, its tail under a part included (a
        # reset may drop what was in flight), and lets go at the latest
        # when it stops. A new process finds it in the records.
        node.proc.terminate()
        node.proc.wait(15)
        node = nodes()
        kept = held(node, "f", len(data))
        assert offset <= kept <= cut
        offset = kept
    fresh = node
    with client(fresh) as c:
        result = c.put(files("data", data), "f")
    assert result.resumed_from == offset  # resumed where the records said
    assert result.checksum == checksum.of_bytes(data)
    assert stored(s3_env, nodes.prefix, "f") == data
    assert held(fresh, "f", len(data)) == 0


def test_kill9_of_a_node_mid_part_then_resume_through_another(nodes, s3_env, files):
    kill9_mid_part_then_resume(nodes, s3_env, files)


def test_kill9_mid_part_then_resume_through_another_node_on_postgresql(nodes, s3_env, files, pg_url):
    nodes.use_db(pg_url)  # the upload records shared as nodes on several machines share them
    kill9_mid_part_then_resume(nodes, s3_env, files)


def kill9_mid_part_then_resume(nodes, s3_env, files) -> None:
    data = os.urandom(3 * PART + 12345)
    local = files("data", data)
    node = nodes("--session-rate", "4M")
    uploader = client(node)
    thread = threading.Thread(target=_swallow, args=(uploader.put, local, "big"), daemon=True)
    thread.start()
    # Past the first part and into the second: one part recorded.
    wait_until(lambda: held(node, "big", len(data)) >= PART, timeout=20, what="a part recorded")
    time.sleep(0.5)
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    other = nodes()
    offset = held(other, "big", len(data))
    assert offset % PART == 0 and offset >= PART  # what the parts recorded, not what was spooled
    time.sleep(LEASE)  # the dead node's lease runs out
    with client(other) as c:
        result = c.put(local, "big")
    assert result.resumed_from == offset
    assert stored(s3_env, nodes.prefix, "big") == data
    assert held(other, "big", len(data)) == 0
    uploader.close()


def test_two_nodes_resuming_one_upload_at_once_one_wins_and_the_file_is_exact(nodes, s3_env, files):
    data = os.urandom(2 * PART + 99)
    local = files("data", data)
    first = nodes()
    cut_put(first, "f", data, 0, PART + 1000, abrupt=False)
    assert held(first, "f", len(data)) == PART + 1000
    a, b = nodes(), nodes()
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def resume(node):
        with client(node) as c:
            start.wait()
            try:
                c.put(local, "f")
                outcomes.append("stored")
            except Busy:
                outcomes.append("busy")

    threads = [threading.Thread(target=resume, args=(node,)) for node in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert "stored" in outcomes and set(outcomes) <= {"stored", "busy"}, outcomes
    assert stored(s3_env, nodes.prefix, "f") == data
    listed = s3_env.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{nodes.prefix}/anonymous/")
    keys = [item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", ())]
    assert sorted(keys) == ["", "f"]  # the home's marker and the file: no partial left


def test_the_object_store_stopped_mid_transfer_gives_a_clear_error_then_resumes(nodes, s3_env, files, monkeypatch):
    data = os.urandom(3 * PART + 5)
    local = files("data", data)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the error at once, without botocore's retries
    node = nodes("--session-rate", "4M")
    errors: list[SockftpError] = []

    def upload():
        with client(node) as c:
            try:
                c.put(local, "f")
            except SockftpError as exc:
                errors.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    wait_until(lambda: held(node, "f", len(data)) >= PART, timeout=20, what="a part recorded")
    s3_env.stop(gracefully=False)
    try:
        thread.join(60)
        assert errors and "object store" in errors[0].message, errors
        with client(node) as c:
            with pytest.raises(SockftpError) as info:
                c.ls()
            assert "object store is unreachable" in info.value.message
    finally:
        s3_env.start()
    with client(node) as c:
        result = c.put(local, "f")
    assert result.resumed_from >= PART
    assert stored(s3_env, nodes.prefix, "f") == data


def test_the_ftp_door_stores_and_retrieves_on_s3(ftp_server, s3_env, s3_prefix):
    srv = ftp_server(storage=f"s3://{BUCKET}/{s3_prefix}", s3_part_size=PART)
    srv.add_user("alice")
    data = os.urandom(PART + 4321)
    ftp = srv.login()
    ftp.storbinary("STOR big.bin", io.BytesIO(data))
    assert ftp.size("big.bin") == len(data)
    got = io.BytesIO()
    ftp.retrbinary("RETR big.bin", got.write)
    assert got.getvalue() == data
    # REST + RETR: a ranged GET from the offset.
    got = io.BytesIO()
    ftp.retrbinary("RETR big.bin", got.write, rest=PART)
    assert got.getvalue() == data[PART:]
    ftp.mkd("d")
    ftp.rename("big.bin", "d/moved.bin")
    assert [name.rsplit("/", 1)[-1] for name in ftp.nlst("d")] == ["moved.bin"]
    with pytest.raises(ftplib.error_perm):
        ftp.rmd("d")
    key = f"{s3_prefix}/users/alice/d/moved.bin"
    assert s3_env.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def _swallow(call, *args):
    try:
        call(*args)
    except (SockftpError, OSError):
        pass


def test_quotas_hold_on_s3_as_on_a_disk_partials_included(server, s3_env, s3_prefix, files, tmp_path):
    from conftest import add_user, login

    from sockftp.protocol.errors import QuotaExceeded

    root = tmp_path / "quota-root"
    add_user(root, "alice", quota_bytes=4 * PART)
    running = server(root=root, anonymous=False, storage=f"s3://{BUCKET}/{s3_prefix}", s3_part_size=PART)
    alice = login(running, "alice")
    two_parts = os.urandom(2 * PART)
    alice.put(files("a", two_parts), "a")
    with pytest.raises(QuotaExceeded):
        alice.put(files("b", os.urandom(2 * PART + 1)), "b")
    alice.put(files("a2", two_parts + b"x" * 1000), "a")  # a replace is credited with what it replaces
    quota = alice.quota()
    assert quota["used_bytes"] == 2 * PART + 1000 and quota["used_files"] == 1
    # A partial kept (its client cut) counts until it is resumed or expires.
    alice.close()
    header = {"cmd": "put", "path": "c", "size": PART, "checksum": "trailer"}
    sock = running.raw(timeout=10)
    sock.sendall(encode_frame({"cmd": "auth", "user": "alice", "password": "secret"}))
    assert recv_frame(sock)["ok"]
    sock.sendall(encode_frame(header) + b"y" * (PART // 2))
    sock.close()
    alice = login(running, "alice")
    # (Until the server reads to the end of what was sent, the upload runs on.)
    wait_until(lambda: alice.request({"cmd": "resume", "path": "c", "size": PART})["offset"] == PART // 2)
    assert alice.quota()["used_bytes"] == 2 * PART + 1000 + PART // 2
    with pytest.raises(QuotaExceeded):
        alice.put(files("d", os.urandom(3 * PART // 2)), "d")  # 1000 bytes too many, with the partial
    alice.close()


def test_the_admin_commands_measure_homes_in_the_bucket(server, s3_env, s3_prefix, files, tmp_path):
    import json

    from click.testing import CliRunner
    from conftest import add_user, login

    from sockftp.cli import main

    root = tmp_path / "admin-root"
    url = f"s3://{BUCKET}/{s3_prefix}"
    add_user(root, "alice")
    running = server(root=root, anonymous=False, storage=url, s3_part_size=PART)
    alice = login(running, "alice")
    alice.put(files("a", os.urandom(PART + 1024)), "a")
    alice.close()
    runner = CliRunner()
    listed = runner.invoke(main, ["user", "list", "--json", "--root", str(root), "--storage", url])
    assert listed.exit_code == 0, listed.output
    assert (json.loads(listed.output)["used_bytes"], json.loads(listed.output)["used_files"]) == (PART + 1024, 1)
    rescanned = runner.invoke(main, ["user", "rescan", "alice", "--root", str(root)], env={"SOCKFTP_STORAGE": url})
    assert rescanned.exit_code == 0, rescanned.output
    assert "5.0 MiB in 1 file" in rescanned.output, rescanned.output
    refused = runner.invoke(main, ["user", "del", "alice", "--delete-files", "--root", str(root), "--storage", url])
    assert refused.exit_code != 0 and "S3 bucket" in refused.output
