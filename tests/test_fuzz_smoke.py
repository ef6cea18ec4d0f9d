"""The fuzz target still runs, and finds nothing in a short run of each mode.

``python -m fuzz`` (docs/FUZZING.md) fuzzes a real server over TCP with
atheris. Here it runs for a few seconds per mode, so that CI notices when
the target rots or a change gives an oracle something to report. The raw
mode first replays the committed seeds (fuzz/corpus/), which are valid
sessions of every command. Any finding makes the run exit non-zero and
leaves its input as ``crash-*`` in the artifact directory.

The last tests drive the fuzz target's harness directly, without atheris,
to show that its oracles do report a bug when there is one.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The same condition as the atheris marker in pyproject.toml's test extra:
# atheris 3.0.0 has wheels only for these, and building it needs libFuzzer.
ATHERIS_INSTALLS = (
    platform.python_implementation() == "CPython"
    and platform.system() == "Linux"
    and platform.machine() == "x86_64"
    and sys.version_info < (3, 14)
)


@pytest.mark.skipif(not ATHERIS_INSTALLS, reason="atheris 3.0.0 has wheels only for CPython 3.11-3.13 on Linux x86_64")
@pytest.mark.timeout(150)
@pytest.mark.parametrize(("mode", "seconds"), [("raw", 10), ("structured", 7), ("proxy", 3)])
def test_a_short_fuzzing_run_finds_nothing(tmp_path, mode, seconds):
    if importlib.util.find_spec("atheris") is None:
        pytest.fail("atheris is not installed: pip install -e '.[test]'")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    args = [f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}{os.sep}", str(corpus)]
    if mode == "raw":
        args.append(str(REPO / "fuzz" / "corpus"))
    else:
        args.insert(0, f"--{mode}")
    if mode == "proxy":
        args.append(str(REPO / "fuzz" / "corpus-proxy"))
    result = subprocess.run(
        [sys.executable, "-m", "fuzz", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = result.stderr
    assert result.returncode == 0, "the fuzzer reported a finding:\n" + log[-6000:]
    assert not list(tmp_path.glob("crash-*")), log[-3000:]
    runs = re.search(r"Done (\d+) runs", log)
    assert runs and int(runs.group(1)) >= 40, "too few inputs ran:\n" + log[-3000:]
    # Nearly all of it is the server's, counted in its session threads: the
    # seeds alone reach about 780 edges, a session that sends nothing about
    # 120, and without the threads' coverage it would be near 0.
    coverage = [int(c) for c in re.findall(r"cov: (\d+)", log)]
    assert coverage and coverage[-1] > {"raw": 600, "structured": 150, "proxy": 30}[mode], log[-3000:]


# -- the oracles see what they are for (no atheris needed, so these run everywhere) --------


@pytest.fixture
def target(tmp_path, monkeypatch):
    """The fuzz target's server and oracles, driven directly."""
    monkeypatch.syspath_prepend(str(REPO))
    from fuzz.harness import Target

    running = Target(tmp_path / "sandbox")
    yield running
    running.stop()


def test_the_oracles_report_an_exception_in_a_command(target, monkeypatch):
    from fuzz.harness import Finding, frame
    from sockftp.server import commands

    def broken(ctx, req):
        raise RuntimeError("a planted bug")

    monkeypatch.setitem(commands.COMMANDS, "broken", commands.Command("broken", broken, False, False))
    target.run([frame({"cmd": "ping"})])
    with pytest.raises(Finding, match="server logged an error(.|\n)*a planted bug(.|\n)*answered internal"):
        target.run([frame({"cmd": "broken"}), frame({"cmd": "ping"})])


def test_the_oracles_report_a_file_outside_the_root(target):
    from fuzz.harness import Finding, frame

    (target.sandbox.jail / "escaped.txt").write_bytes(b"")
    with pytest.raises(Finding, match="escaped.txt"):
        target.run([frame({"cmd": "ping"})])
