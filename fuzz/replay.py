"""Replay fuzz inputs through the same server and oracles, without atheris.

    python -m fuzz.replay [--structured] FILE_OR_DIR...

Runs each input once and prints the findings; exits 1 if there was any.
It needs no atheris (except for ``--structured``, whose inputs are read
through atheris's FuzzedDataProvider), so a corpus can be checked on any
machine, and line coverage measured with coverage.py, which follows the
server's threads::

    coverage run --source=sockftp -m fuzz.replay fuzz/work/corpus-raw fuzz/corpus
    coverage report
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .fuzz_session import memory_backed, raw_chunks
from .harness import Finding, Target


def main(argv: list[str]) -> int:
    structured = "--structured" in argv
    paths = [Path(a).resolve() for a in argv if a != "--structured"]
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.iterdir()) if f.is_file())
    if structured:
        import atheris

        from .structured import session

        def chunks(data: bytes) -> list[bytes]:
            return session(atheris.FuzzedDataProvider(data))

    else:
        chunks = raw_chunks
    failed = 0
    with tempfile.TemporaryDirectory(prefix="sockftp-replay-", dir=memory_backed()) as top:
        target = Target(Path(top))
        try:
            for file in files:
                try:
                    target.run(chunks(file.read_bytes()))
                except Finding as exc:
                    failed += 1
                    print(f"== {file}\n{exc}\n", flush=True)
            target.health_check()
        finally:
            target.stop()
    print(f"{len(files)} inputs, {failed} with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
