"""The soak of issue 5 in its CI size: ``python -m bench.soak --clients 100
--duration 30``, 100 sessions doing verified mixed operations for 30 s
against a ``sockftp serve`` child process.

It fails on any error, checksum mismatch, growth of the server's memory,
descriptors or threads after warm-up, or a descriptor left open once the
clients have gone (the soak's exit status says which). Its report is
printed, so that the CI log shows the figures. The 10-minute, 500-client
run and its results are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(200)
def test_soak_100_clients_for_30_seconds_has_no_error_mismatch_or_growth(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--clients", "100", "--duration", "30", "--dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "== errors: 0, checksum mismatches: 0 ==" in out
    assert "== verdict: PASS ==" in out
    # Every kind of operation ran, and the time series and growth table are there.
    for kind in ("put", "replace", "get", "stat", "ls", "mv", "rm", "put-resume", "get-resume", "put-cut", "audit"):
        assert f"\n| {kind} " in out, kind
    assert "RSS MiB" in out and "open fds" in out
    # Nothing left behind in the work directory.
    assert list(tmp_path.iterdir()) == []
