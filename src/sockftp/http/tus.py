"""tus 1.0 resumable uploads at ``/tus/`` (filled in below the skeleton)."""

from __future__ import annotations


def register(door) -> None:
    pass
