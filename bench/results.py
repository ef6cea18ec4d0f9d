"""The results table at the top of docs/BENCHMARKS.md, written by
``python -m bench`` itself, so that it never drifts from what was measured.

The table sits between two marker comments, :data:`START` and :data:`END`;
a run of record replaces whatever is between them, and nothing else in the
file. Every run, of record or not, prints the same block on stdout (after
the text report), so a ``--quick`` or partial run shows its table without
touching the document.

The block records the code it measured in a comment,
``<!-- bench:code SHA -->``: the last commit that changed src/, bench/ or
pyproject.toml. ``python -m bench`` refuses to replace a run of record
with a later run of the same code (a re-launch), unless told to with
``--replace-record`` (see ``bench/__main__.py`` and docs/BENCHMARKS.md,
"The run of record").
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import describe_filesystem
from .report import Check

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
CODE_MARK = re.compile(r"<!-- bench:code ([0-9a-f]{7,40}) -->")

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BENCHMARKS.md"
#: What "the code" of a run is: a change under these paths makes a new run of record due.
CODE_PATHS = ("src", "bench", "pyproject.toml")


# -- what was measured, and where ----------------------------------------------------


@dataclass
class Code:
    """The code a run measured."""

    commit: str | None  # HEAD when the run was launched
    code_commit: str | None  # the last commit that changed CODE_PATHS
    dirty: bool  # uncommitted changes, or untracked files, under CODE_PATHS

    def text(self) -> str:
        if self.commit is None:
            return "not a git checkout"
        text = f"commit `{self.commit[:9]}`"
        if self.code_commit and self.code_commit != self.commit:
            text += f" (code as of `{self.code_commit[:9]}`)"
        return text + (", with uncommitted changes" if self.dirty else "")


def code_state(repo: Path = REPO) -> Code:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--", *CODE_PATHS)
    return Code(
        git("rev-parse", "HEAD") or None,
        git("log", "-1", "--format=%H", "--", *CODE_PATHS) or None,
        status is None or bool(status),
    )


@dataclass
class Machine:
    cpu: str
    cores: int
    memory: str
    kernel: str
    filesystem: str  # of the bench's work directory
    python: str
    pyftpdlib: str

    def text(self) -> str:
        return (
            f"{self.cpu}, {self.cores} cores, {self.memory} RAM, {self.kernel}; bench directory on "
            f"{self.filesystem}; Python {self.python}, pyftpdlib {self.pyftpdlib}"
        )


def machine(work: str) -> Machine:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pyftpdlib = version("pyftpdlib")
    except PackageNotFoundError:
        pyftpdlib = "?"
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory=_memory(),
        kernel=f"{platform.system()} {platform.release()}",
        filesystem=describe_filesystem(work),
        python=platform.python_version(),
        pyftpdlib=pyftpdlib,
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024**2:.0f} GiB"
    except OSError:
        pass
    return "? GiB"


@dataclass
class Run:
    """One launch of ``python -m bench``, as the table's heading gives it."""

    started: str  # e.g. "2026-11-28 01:25"
    command: str
    runs: int
    took: float  # seconds
    code: Code
    machine: Machine
    not_of_record: str | None  # why this run is not the run of record; None if it is
    failed: tuple[str, ...] = ()  # workloads that failed


# -- the block -----------------------------------------------------------------------


def render(run: Run, checks: list[Check]) -> str:
    """The Markdown block, markers included: the run's heading, one row per
    target, how many were met, and the context sentences of the checks."""
    what = "Run of record" if run.not_of_record is None else f"Not a run of record ({run.not_of_record})"
    lines = [START, "<!-- Written by `python -m bench` (bench/results.py): do not edit by hand. -->"]
    if run.not_of_record is None and run.code.code_commit:
        lines.append(f"<!-- bench:code {run.code.code_commit} -->")
    lines += [
        "",
        f"**{what}:** {run.started}, {run.code.text()}, took {run.took:.0f} s: `{run.command}`",
        "",
        f"**Machine:** {run.machine.text()}",
        "",
        "| workload | sockftp | reference | ratio | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_row(check) for check in checks]
    met = sum(check.met for check in checks)
    targets = sum(check.has_target for check in checks)
    how = (
        f"Medians of {run.runs} interleaved runs; ratio: sockftp / reference, of the medians, with its range run by "
        "run in brackets."
        if run.runs > 1
        else "One run of each variant; ratio: sockftp / reference."
    )
    lines += ["", f"**{met} of {targets} targets met.** {how} For times and memory, lower is better."]
    if run.failed:
        lines += ["", f"**Failed:** {', '.join(run.failed)} (no figures; see the text report)."]
    context = [f"- {_cell(check.workload)}: {_cell(check.context)}" for check in checks if check.context]
    if context:
        lines += ["", *context]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _row(check: Check) -> str:
    workload = check.workload if check.is_ratio else f"{check.workload}: {check.measure}"
    if check.missing:
        target = f"{'≥' if check.at_least else '≤'} {check.target:g}"
        cells = [workload, "—", f"{check.reference_name}: {check.missing}", "—", target, "**not measured**"]
        return "| " + " | ".join(_cell(cell) for cell in cells) + " |"
    ours = check.ours.text() if check.ours else "—"
    reference = f"{check.reference_name}: {check.reference.text()}" if check.reference else "—"
    ratio = check.text()[2] if check.is_ratio else "—"
    if not check.has_target:
        target = result = "—"  # side by side only: no target given (the context says why)
    else:
        unit = "" if check.is_ratio else f" {check.unit}"
        target = f"{'≥' if check.at_least else '≤'} {check.target:g}{unit}"
        result = "met" if check.met else "**missed**"
    cells = [workload, ours, reference, ratio, target, result]
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# -- the document --------------------------------------------------------------------


def _span(text: str, path: Path) -> tuple[int, int]:
    """Where the block is in *text*: from its start marker to past its end marker."""
    start = text.find(START)
    end = text.find(END, start + len(START)) if start >= 0 else -1
    if start < 0 or end < 0 or text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"{path} needs exactly one {START} and, after it, one {END}")
    return start, end + len(END)


def write(block: str, path: Path = DOC) -> None:
    """Replace the block between the markers of *path* with *block* (which
    carries its own markers). Nothing else in the file changes."""
    text = path.read_text(encoding="utf-8")
    start, end = _span(text, path)
    new = text[:start] + block.rstrip("\n") + text[end:]
    scratch = path.with_name(f".{path.name}.bench-tmp")
    scratch.write_text(new, encoding="utf-8")
    os.replace(scratch, path)


def recorded_code(path: Path = DOC) -> str | None:
    """The code commit of the run of record in *path*, or None if it holds none."""
    try:
        text = path.read_text(encoding="utf-8")
        start, end = _span(text, path)
    except (OSError, ValueError):
        return None
    match = CODE_MARK.search(text, start, end)
    return match.group(1) if match else None
