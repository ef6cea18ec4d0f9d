"""Sizes as people read them, in messages both ends print."""

from __future__ import annotations


def human_size(size: float) -> str:
    """``512 B``, ``4.0 KiB``, ``10.0 MiB``: binary units, one decimal."""
    if abs(size) < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        size /= 1024
        if abs(size) < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")
