"""What the benchmark prints: one section per workload (medians with their
spread), then every target of issue 4 as a ratio, marked met or missed.

A ratio is taken of the medians; the spread after it is the range of the
same ratio taken run by run (the runs are interleaved, so run *i* of two
variants ran side by side).

Each :class:`Check` also carries the two medians it compares (sockftp's
and its reference's, as :class:`Figure`), so that :mod:`bench.results` can
put them side by side in the Markdown table of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .common import Samples, significant_digits


@dataclass
class Row:
    name: str
    samples: Samples
    detail: str = ""  # e.g. CPU seconds of server and clients


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, samples: Samples, detail: str = "") -> None:
        self.rows.append(Row(name, samples, detail))

    def samples(self, name: str) -> Samples:
        for row in self.rows:
            if row.name == name:
                return row.samples
        raise KeyError(name)


@dataclass
class Figure:
    """A median and its unit, e.g. 3.95 GB/s."""

    value: float
    unit: str

    def text(self) -> str:
        if abs(self.value) >= 1000:
            return f"{self.value:,.0f} {self.unit}"
        return f"{self.value:.{significant_digits(self.value)}f} {self.unit}"


@dataclass
class Check:
    """One target: *value* compared with *target* (at least, or at most).

    *value* is a ratio (``unit`` "x") of sockftp's figure to its
    reference's, or a figure of sockftp's alone held to an absolute target
    (``unit`` "KB", "ms"); *ours* and *reference* are the medians it was
    taken from, or for an absolute target the reference shown beside it for
    context. *context* is a sentence the results table prints under it."""

    workload: str
    measure: str  # what the value is, e.g. "sockftp / raw download + file write"
    value: float | None  # None: not measured (then *missing* says why)
    target: float | None  # None: a figure shown side by side, with no target to meet
    at_least: bool
    per_run: list[float] = field(default_factory=list)
    unit: str = "x"
    ours: Figure | None = None
    reference: Figure | None = None
    reference_name: str = ""  # e.g. "pyftpdlib RETR"
    context: str = ""
    #: Why it could not be measured (its reference is not installed, say):
    #: the row says so, and counts as not met.
    missing: str = ""

    @property
    def is_ratio(self) -> bool:
        return self.unit == "x"

    @property
    def has_target(self) -> bool:
        """A figure held to a target (met, missed, or not measured), not one
        shown side by side only."""
        return self.target is not None

    @property
    def met(self) -> bool:
        if self.missing or not self.has_target:
            return False
        return self.value >= self.target if self.at_least else self.value <= self.target

    def text(self) -> tuple[str, str, str, str, str]:
        if self.missing:
            target = f"{'>=' if self.at_least else '<='} {self.target:g}"
            return self.workload, self.measure, "not measured", target, f"NOT MEASURED: {self.missing}"
        digits = significant_digits(self.value)
        if self.target is None:
            unit = "" if self.unit == "x" else f" {self.unit}"
            value = f"{self.value:.{digits}f}"
            if len(self.per_run) > 1:
                value += f" ({min(self.per_run):.{digits}f}-{max(self.per_run):.{digits}f})"
            return self.workload, self.measure, value + unit, "—", ""
        value = f"{self.value:.{digits}f}"
        if len(self.per_run) > 1:
            value += f" ({min(self.per_run):.{digits}f}-{max(self.per_run):.{digits}f})"
        unit = "" if self.unit == "x" else f" {self.unit}"
        target = f"{'>=' if self.at_least else '<='} {self.target:g}{unit}"
        return self.workload, self.measure, value + unit, target, "met" if self.met else "MISSED"


def ratio_check(
    workload: str,
    measure: str,
    numerator: list[float],
    denominator: list[float],
    target: float,
    at_least: bool,
    *,
    unit: str,
    reference_name: str,
    context: str = "",
) -> Check:
    """A check on numerator (sockftp's figures, in *unit*) / denominator (its
    reference's, *reference_name*): of the medians, with the per-run ratios
    as spread."""
    value, per_run = ratio(numerator, denominator)
    return Check(
        workload,
        measure,
        value,
        target,
        at_least,
        per_run,
        ours=Figure(statistics.median(numerator), unit),
        reference=Figure(statistics.median(denominator), unit),
        reference_name=reference_name,
        context=context,
    )


def missing_check(workload: str, measure: str, target: float, at_least: bool, reference_name: str, why: str) -> Check:
    """A target that could not be measured, and *why*: its row says so."""
    return Check(workload, measure, float("nan"), target, at_least, reference_name=reference_name, missing=why)


def ratio(numerator: list[float], denominator: list[float]) -> tuple[float, list[float]]:
    """The ratio of the medians, and the ratios run by run (the runs are interleaved)."""
    value = statistics.median(numerator) / statistics.median(denominator)
    return value, [a / b for a, b in zip(numerator, denominator, strict=True)]


@dataclass
class Report:
    header: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def render(self) -> str:
        lines = list(self.header)
        for section in self.sections:
            lines += ["", f"== {section.title} =="]
            width = max((len(row.name) for row in section.rows), default=0) + 2
            for row in section.rows:
                value = f"{row.samples.spread()} {row.samples.unit}"
                lines.append(f"  {row.name:{width}}{value:28}{row.detail}".rstrip())
            lines += [f"  {note}" for note in section.notes]
        if self.checks:
            lines += ["", "== targets (issue 4): medians, per-run range in brackets =="]
            table = [("workload", "measure", "value", "target", "")] + [check.text() for check in self.checks]
            widths = [max(len(row[i]) for row in table) for i in range(5)]
            for row in table:
                lines.append(
                    "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                )
            met = sum(check.met for check in self.checks)
            lines.append(f"  {met} of {sum(check.has_target for check in self.checks)} targets met")
        return "\n".join(lines)
