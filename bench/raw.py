"""The raw loopback limits: minimal socket pairs between two processes
moving the same file, with none of a file server's work.

* the get's reference: ``sendfile`` into ``recv_into`` plus a file write,
  what any download that keeps the file (sockftp's get, an FTP client's
  RETR) is up against (issue 16, item 8: a real download has to land
  somewhere);
* download limit, printed beside it as context: the faster of
  ``socket.sendfile()`` and a ``readinto`` + ``sendall`` loop with 4 MiB
  buffers, each into a discarding ``recv_into``. On this VM a receiver that
  only discards is woken for every 64 KiB segment or every 4 MiB depending
  on its timing, so that limit swings from 2 to 7 GB/s between runs
  (docs/bench-notes.md);
* upload limit: ``sendall`` into ``recv_into`` plus a file write, the faster
  of 1 MiB and 4 MiB buffers.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

from .common import MiB

#: (name, mode, buffer size, writes a file) of each raw variant.
DOWNLOAD_VARIANTS = (
    ("raw download, sendfile", "sendfile", 4 * MiB, False),
    ("raw download, readinto+sendall 4M", "copy", 4 * MiB, False),
)
UPLOAD_VARIANTS = (
    ("raw upload, 1M + file write", "copy", MiB, True),
    ("raw upload, 4M + file write", "copy", 4 * MiB, True),
)
WRITING_DOWNLOAD_VARIANTS = (("raw download, sendfile + file write", "sendfile", 4 * MiB, True),)


def _raw_sender(port: int, path: str, mode: str, buffer_size: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock, open(path, "rb", buffering=0) as f:
        if mode == "sendfile":
            sock.sendfile(f)
        else:
            view = memoryview(bytearray(buffer_size))
            while n := f.readinto(view):
                sock.sendall(view[:n])


def raw_transfer(path: str, size: int, mode: str, buffer_size: int, write_to: str | None) -> float:
    """Seconds to move *path* from a child process to this one, writing what
    arrives to *write_to* (deleted afterwards) or nowhere."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(60)
    port = listener.getsockname()[1]
    child = multiprocessing.get_context("fork").Process(target=_raw_sender, args=(port, path, mode, buffer_size))
    child.start()
    conn, _ = listener.accept()
    conn.settimeout(60)
    # Timed from the connection, so the child's start-up is not counted.
    start = time.perf_counter()
    view = memoryview(bytearray(buffer_size))
    out = os.open(write_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if write_to else None
    received = 0
    while received < size:
        n = conn.recv_into(view)
        if not n:
            break
        if out is not None:
            os.write(out, view[:n])
        received += n
    elapsed = time.perf_counter() - start
    if out is not None:
        os.close(out)
        os.unlink(write_to)
    conn.close()
    listener.close()
    child.join(60)
    assert received == size, f"raw transfer moved {received} of {size} bytes"
    return elapsed
