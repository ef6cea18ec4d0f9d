"""``python -m bench.stores --quick`` still runs end to end (SQLite against
PostgreSQL as the account store) and prints its table and the round trips
per upload. Speed is never asserted here; this keeps the bench from rotting.
Needs PostgreSQL as the other PostgreSQL tests do (tests/pg_support.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(170)
def test_quick_store_bench_runs_and_reports_round_trips(tmp_path, postgres_cluster):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    from pg_support import new_database

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.stores",
            "--quick",
            "--dir",
            str(tmp_path),
            "--pg-url",
            new_database(postgres_cluster),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=160,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| 20 token logins at once |" in result.stdout
    assert "round trips per upload (success path, counted by the store): 2.00" in result.stdout
