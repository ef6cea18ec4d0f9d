"""The benchmark still runs: ``python -m bench --quick`` end to end; and its
results table (bench/results.py) is written as docs/BENCHMARKS.md expects.

Speed is never asserted here (docs/BENCHMARKS.md); this only keeps the
bench from rotting. The quick run starts real servers on 127.0.0.1 in child
processes and needs pyftpdlib, which the ``test`` and ``bench`` extras
install. The table tests feed the writer made-up results, measure nothing,
and write only to a temporary file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyftpdlib")

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BENCHMARKS.md"


@pytest.mark.timeout(390)  # fourteen workloads; each logs in with argon2 (~0.1-1 s a check here)
def test_quick_bench_runs_every_workload_and_prints_the_table(tmp_path):
    doc_before = DOC.read_bytes()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for section in (
        "one 8 MiB file",
        "get of a freshly uploaded 8 MiB file",
        "to a new name, and replacing a file",
        "files of 4 KiB",
        "simultaneous connects",
        "many clients",
        "idle sessions",
        "FTP front door",
        "against a home of N files",
        "sockftp sync against an rsync daemon",
        "lftp mirror -R of 20 files",
        "HTTP door: curl against the native protocol",
        "S3 storage on SeaweedFS",
    ):
        assert section in out, out
    has_rsync = shutil.which("rsync") is not None
    if not has_rsync:
        assert "rsync is not installed" in out, out
    assert "FAILED" not in out, out
    assert "== targets (issue 4)" in out, out
    for row in (
        "sockftp / raw download + file write",
        "the discarding download limit",
        "get of a fresh seed-style upload, 8 MiB, draining client",
        "replace / new name",
        "sockftp / pyftpdlib STOR",
        "argon2id password check",
        "one 8 MiB file: sockftp FTP STOR",
        "sockftp FTP / pyftpdlib, RETR GB/s",
        "anonymous, 2,000 files: p99",
        "p99, user with a quota, by token",
        "curl GET / native get",
        "curl PUT / native put",
        "sockftp / boto3 upload_file",
        "sockftp / boto3 download_file",
        *(
            (
                "sync up, first sync, 20 x 4 KiB",
                "sync down, first sync, 20 x 4 KiB",
                "re-sync up, 200 files, nothing changed",
                "re-sync up, 200 files, 10% changed",
                "bytes sent on the wire, % of the file",
                "bytes received on the wire, % of the file",
                "--checksum re-sync up, 32 MiB in 20 files",
            )
            if has_rsync
            else ()
        ),
    ):
        assert row in out, out
    assert "targets met" in out, out
    # lftp mirror --parallel=4 (issue 21): its two rows, measured, or saying why not.
    assert out.count("lftp mirror -R --parallel=4 of 20 x 4 KiB to the FTP door") >= 2, out
    if shutil.which("lftp") is None:
        assert "NOT MEASURED: lftp is not installed" in out, out
    else:
        assert "sockftp FTP: 4 connections / 1" in out, out
        if not os.access("/usr/sbin/vsftpd", os.X_OK):
            assert "NOT MEASURED: /usr/sbin/vsftpd is not installed" in out, out
    # The Markdown table is printed, and a quick run never writes it into the document.
    text, markdown = out.split("== results table (Markdown) ==", 1)
    assert "**Not a run of record (--quick):**" in markdown, markdown
    targets = int(re.search(r"\d+ of (\d+) targets met", text).group(1))
    # --quick: 4 big-file targets, 1 fresh get, 1 replace, 2 small files, 1 logins, one count each of crowd (2)
    # and idle (2), and 2 for the big home (anonymous, and a user with a quota); with rsync, 9 for sync
    # (first up and down, two re-syncs, bytes and time up and down, --checksum); 2 for lftp mirror --parallel=4
    # (against its 1 connection, and against vsftpd), measured or not; 2 for the HTTP door (get, put); 2 for S3
    # storage (put, get); 1 for the account stores' round trips per upload, measured or not, beside 3 timings
    # with no target (without PostgreSQL, not there).
    expected = 21 + (9 if has_rsync else 0) + 1
    has_pg = stores_missing() is None
    rows = table_rows(markdown)
    assert targets == expected, markdown
    assert len(rows) == expected + (3 if has_pg else 0), markdown
    stores = [row for row in rows if "account store" in row["workload"]]
    trips = next(row for row in stores if "round trips" in row["workload"])
    if has_pg:
        assert (trips["target"], trips[""]) == ("≤ 2 round trips", "met"), trips
        assert [row["target"] for row in stores].count("—") == 3, stores
    else:
        assert trips[""] == "**not measured**" and "not available" in trips["reference"], trips
    assert DOC.read_bytes() == doc_before
    # Nothing left behind in the work directory.
    assert list(tmp_path.iterdir()) == []


# -- the results table ---------------------------------------------------------------


def stores_missing() -> str | None:
    sys.path.insert(0, str(REPO))
    try:
        from bench.stores import postgres_missing
    finally:
        sys.path.remove(str(REPO))
    return postgres_missing()


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the results table between the markers, by column."""
    inside = markdown.split("<!-- bench:results:start -->", 1)[1].split("<!-- bench:results:end -->", 1)[0]
    lines = [line for line in inside.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "").split()) == {"---"}
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split(" | ")), strict=True)) for line in lines[2:]
    ]


@pytest.fixture
def results(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench import results

    return results


def fake_run(results, not_of_record=None):
    return results.Run(
        started="2026-12-01 10:00",
        command="python -m bench --runs 3",
        runs=3,
        took=812,
        code=results.Code("a" * 40, "b" * 40, dirty=False),
        machine=results.Machine("Some CPU", 2, "8 GiB", "Linux 6.1", "ext4 on /dev/vdb, mounted at /b", "3.11", "2"),
        not_of_record=not_of_record,
    )


def fake_checks():
    from bench.report import Check, Figure, ratio_check

    return [
        ratio_check(
            "get, one 1 GiB file",
            "sockftp / raw download + file write",
            [3.9, 4.1, 4.0],
            [4.0, 4.0, 4.4],
            0.9,
            True,
            unit="GB/s",
            reference_name="raw download, sendfile + file write",
            context="the discarding download limit (sendfile) ran at 6.10 GB/s; sockftp get / it: 0.66",
        ),
        ratio_check(
            "get of a fresh seed-style upload, 1 GiB, draining client",
            "sockftp / pyftpdlib RETR",
            [2.0, 2.2, 2.1],
            [2.5, 2.4, 2.6],
            1.2,
            True,
            unit="GB/s",
            reference_name="pyftpdlib RETR of a fresh STOR",
        ),
        ratio_check(
            "100 clients x get 10 MiB (wall time)",
            "sockftp time / pyftpdlib time",
            [0.5, 0.6, 0.55],
            [0.8, 0.9, 0.85],
            0.8,
            False,
            unit="s",
            reference_name="pyftpdlib RETR",
        ),
        Check(
            "1,000 idle sessions",
            "server RSS per session",
            3.5,
            25,
            False,
            unit="KB",
            ours=Figure(3.5, "KB"),
            reference=Figure(9.25, "KB"),
            reference_name="pyftpdlib",
        ),
    ]


def test_the_table_is_written_between_the_markers_and_nowhere_else(results, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    before, after = "# Benchmarks\n\nIntro.\n\n", "\n\n## Running the bench\n\nText | with a pipe.\n"
    doc.write_text(before + results.START + "\nno run yet\n" + results.END + after)
    block = results.render(fake_run(results), fake_checks())
    results.write(block, doc)

    text = doc.read_text()
    assert text.startswith(before + results.START) and text.endswith(results.END + after)
    assert "no run yet" not in text
    assert "**Run of record:** 2026-12-01 10:00, commit `aaaaaaaaa` (code as of `bbbbbbbbb`)" in text
    assert "`python -m bench --runs 3`" in text
    assert "Some CPU, 2 cores, 8 GiB RAM, Linux 6.1; bench directory on ext4 on /dev/vdb" in text
    rows = table_rows(text)
    assert [row["workload"] for row in rows] == [
        "get, one 1 GiB file",
        "get of a fresh seed-style upload, 1 GiB, draining client",
        "100 clients x get 10 MiB (wall time)",
        "1,000 idle sessions: server RSS per session",
    ]
    get, fresh, crowd, idle = rows
    assert get == {
        "workload": "get, one 1 GiB file",
        "sockftp": "4.00 GB/s",
        "reference": "raw download, sendfile + file write: 4.00 GB/s",
        "ratio": "1.00 (0.91-1.02)",
        "target": "≥ 0.9",
        "": "met",
    }
    assert fresh["ratio"].startswith("0.84") and fresh["target"] == "≥ 1.2" and fresh[""] == "**missed**"
    assert crowd["ratio"].startswith("0.65") and crowd["target"] == "≤ 0.8" and crowd[""] == "met"
    assert idle["sockftp"] == "3.50 KB" and idle["reference"] == "pyftpdlib: 9.25 KB"
    assert idle["ratio"] == "—" and idle["target"] == "≤ 25 KB" and idle[""] == "met"
    assert "**3 of 4 targets met.** Medians of 3 interleaved runs" in text
    assert "- get, one 1 GiB file: the discarding download limit (sendfile) ran at 6.10 GB/s" in text
    assert results.recorded_code(doc) == "b" * 40

    # The next run of record replaces it: one table, never two.
    results.write(results.render(fake_run(results), fake_checks()[:1]), doc)
    text = doc.read_text()
    assert text.count(results.START) == text.count(results.END) == 1
    assert len(table_rows(text)) == 1 and text.startswith(before) and text.endswith(after)


WHY_NOT = "/usr/sbin/vsftpd is not installed (Debian: apt-get install vsftpd)"


def test_a_target_that_could_not_be_measured_says_why(results):
    from bench.report import missing_check

    check = missing_check(
        "lftp mirror -R --parallel=4 of 1,000 x 4 KiB to the FTP door",
        "sockftp FTP / vsftpd, 4 connections",
        1.0,
        True,
        "vsftpd through lftp, 4 connections",
        WHY_NOT,
    )
    assert not check.met and check.text()[-1].startswith("NOT MEASURED: /usr/sbin/vsftpd is not installed")
    block = results.render(fake_run(results), [*fake_checks(), check])
    row = table_rows(block)[-1]
    assert row == {
        "workload": "lftp mirror -R --parallel=4 of 1,000 x 4 KiB to the FTP door",
        "sockftp": "—",
        "reference": f"vsftpd through lftp, 4 connections: {WHY_NOT}",
        "ratio": "—",
        "target": "≥ 1",
        "": "**not measured**",
    }
    assert "**3 of 5 targets met.**" in block


def test_a_run_not_of_record_says_why_and_claims_no_code(results):
    block = results.render(fake_run(results, not_of_record="--quick"), fake_checks())
    assert "**Not a run of record (--quick):**" in block
    assert "bench:code" not in block


def test_the_writer_refuses_a_document_without_its_markers(results, tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n")
    with pytest.raises(ValueError, match="bench:results:start"):
        results.write(results.render(fake_run(results), fake_checks()), doc)
    assert doc.read_text() == "# Benchmarks\n"
    assert results.recorded_code(doc) is None


def test_the_document_has_its_markers_once():
    text = DOC.read_text()
    assert text.count("<!-- bench:results:start -->") == 1
    assert text.count("<!-- bench:results:end -->") == 1
    assert text.index("<!-- bench:results:start -->") < text.index("<!-- bench:results:end -->")
    assert "(bench-notes.md)" in text and (REPO / "docs" / "bench-notes.md").exists()


def test_only_a_full_run_of_new_committed_code_is_of_record(results, monkeypatch):
    import sockftp
    from bench import __main__ as bench_main

    # Wherever sockftp is imported from, count it as this checkout's.
    monkeypatch.setattr(results, "REPO", Path(sockftp.__file__).resolve().parents[2])
    parser = bench_main.build_parser()
    clean = results.Code("a" * 40, "b" * 40, dirty=False)

    def why_not(argv, code=clean, recorded="c" * 40):
        return bench_main.not_of_record(bench_main.parse_args(argv, parser), parser, code, recorded)

    assert why_not([]) is None
    assert why_not(["--runs", "5", "--dir", "/tmp"]) is None
    assert why_not([], recorded="b" * 40).startswith("a re-launch")
    assert why_not(["--replace-record"], recorded="b" * 40) is None
    assert why_not(["--quick"]) == "--quick"
    assert why_not(["--only", "big"]).startswith("--only")
    assert why_not(["--size", "512M"]).startswith("--size")
    assert why_not(["--runs", "1"]).startswith("--runs 1")
    assert why_not(["--no-prewarm"]) == "--no-prewarm"
    assert why_not(["--no-record"]) == "--no-record"
    assert why_not([], code=results.Code("a" * 40, "b" * 40, dirty=True)).startswith("uncommitted changes")
    assert why_not([], code=results.Code(None, None, dirty=True)) == "not run from a git checkout"


def test_a_figure_side_by_side_without_a_target_is_no_target_met_or_missed(results, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from bench.report import Check, Figure

    side_by_side = Check(
        "300 token logins at once, PostgreSQL account store",
        "PostgreSQL / SQLite seconds",
        1.4,
        None,
        False,
        [1.3, 1.5],
        ours=Figure(0.7, "s"),
        reference=Figure(0.5, "s"),
        reference_name="SQLite",
    )
    block = results.render(fake_run(results), [*fake_checks(), side_by_side])
    rows = table_rows(block)
    assert rows[-1]["ratio"] == "1.40 (1.30-1.50)" and (rows[-1]["target"], rows[-1][""]) == ("—", "—")
    met = sum(check.met for check in fake_checks())
    assert f"**{met} of {len(fake_checks())} targets met.**" in block
