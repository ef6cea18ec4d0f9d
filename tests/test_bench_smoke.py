"""The benchmark still runs: ``python -m bench --quick`` end to end.

Speed is never asserted here (docs/BENCHMARKS.md); this only keeps the
bench from rotting. It starts real servers on 127.0.0.1 in child processes
and needs pyftpdlib, which the ``test`` and ``bench`` extras install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyftpdlib")

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(190)  # seven workloads; each logs in with argon2 (~0.1-1 s a check here)
def test_quick_bench_runs_every_workload_and_prints_the_table(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for section in (
        "one 8 MiB file",
        "files of 4 KiB",
        "simultaneous connects",
        "many clients",
        "idle sessions",
        "FTP front door",
        "against a home of N files",
    ):
        assert section in out, out
    assert "FAILED" not in out, out
    assert "== targets (issue 4)" in out, out
    for row in (
        "sockftp / raw download limit",
        "sockftp / pyftpdlib STOR",
        "argon2id password check",
        "one 8 MiB file: sockftp FTP STOR",
        "sockftp FTP / pyftpdlib, RETR GB/s",
        "anonymous, 2,000 files: p99",
        "p99, user with a quota, by token",
    ):
        assert row in out, out
    assert "targets met" in out, out
    # Nothing left behind in the work directory.
    assert list(tmp_path.iterdir()) == []
