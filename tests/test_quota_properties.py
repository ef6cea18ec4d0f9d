"""Property: whatever the sequence of operations, a user's quota ledger
equals what their home holds on disk, so does the usage the account store
keeps for them (what a rescan would measure), and committed usage stays
within the quota. Runs on the storage layer directly (no network) over a
real SQLite store, so hypothesis can try many sequences quickly."""

from __future__ import annotations

import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

from sockftp import SockftpError  # noqa: E402
from sockftp.accounts import Account, SqliteUserStore, StoredUsage  # noqa: E402
from sockftp.protocol import checksum  # noqa: E402
from sockftp.server.quota import QuotaRegistry  # noqa: E402
from sockftp.server.quota_storage import QuotaStorage  # noqa: E402
from sockftp.storage import LocalStorage  # noqa: E402

HOME = ("users", "alice")
#: "d" is also a directory at times: an upload onto it fails at its commit.
NAMES = st.sampled_from(["a", "b", "c", "d", "d/a", "d/b", "e/a"])
QUOTA = 600
MAX_FILES = 4


class QuotaMachine(RuleBasedStateMachine):
    #: (quota_bytes, max_files) of the user.
    limits = (QUOTA, MAX_FILES)

    def __init__(self):
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.inner = LocalStorage(os.path.join(self.dir.name, "root"))
        self.inner.mkdir(HOME, parents=True)
        self.store = SqliteUserStore(os.path.join(self.dir.name, "users.db"))
        self.store.add(Account("alice", "hash", *self.limits))
        self.registry = QuotaRegistry(self.inner, self.store)
        self.ledger = self.registry.login("alice", HOME, *self.limits)
        if self.measured:
            assert self.ledger.measure()  # as a quota command would
        self.storage = QuotaStorage(self.inner, self.ledger)

    #: Whether the usage is measured (and so stored) from the start; with
    #: limits it always is.
    measured = True

    def teardown(self):
        self.inner.close()
        self.store.close()
        self.dir.cleanup()

    def _path(self, name: str):
        return HOME + tuple(name.split("/"))

    @rule(
        name=NAMES,
        size=st.integers(0, 400),
        cut=st.integers(0, 400),
        end=st.sampled_from(["commit", "keep", "discard", "corrupt"]),
        at_once=st.booleans(),
    )
    def upload(self, name, size, cut, end, at_once):
        path = self._path(name)
        data = os.urandom(size)
        try:
            held = self.storage.partial_size(path, size)
            # at_once: the unnamed file's way (see storage.local_files.UnnamedUpload)
            upload = self.storage.open_upload(path, size, held, at_once=at_once)
        except SockftpError:
            return
        try:
            sent = data[held : max(held, min(size, cut))] if end == "keep" else data[held:]
            upload.write(sent)
            if end == "commit":
                upload.commit(checksum.of_bytes(data))
            elif end == "discard" or end == "corrupt":
                upload.discard()
        except SockftpError:
            pass
        finally:
            upload.keep()

    @rule(name=NAMES)
    def remove(self, name):
        try:
            self.storage.remove(self._path(name))
        except SockftpError:
            pass

    @rule(source=NAMES, destination=NAMES)
    def rename(self, source, destination):
        try:
            self.storage.rename(self._path(source), self._path(destination))
        except SockftpError:
            pass

    @rule(name=st.sampled_from(["d", "e"]))
    def mkdir(self, name):
        try:
            self.storage.mkdir(self._path(name))
        except SockftpError:
            pass

    @rule(name=st.sampled_from(["d", "e"]))
    def rmdir(self, name):
        try:
            self.storage.rmdir(self._path(name))
        except SockftpError:
            pass

    @rule(source=st.sampled_from(["d", "e"]), destination=st.sampled_from(["d", "e", "f"]))
    def rename_directory(self, source, destination):
        try:
            self.storage.rename(self._path(source), self._path(destination))
        except SockftpError:
            pass

    @invariant()
    def ledger_matches_the_disk(self):
        usage = self.inner.usage(HOME)
        assert (self.ledger.used_bytes, self.ledger.used_files) == (usage.bytes, usage.files)
        assert (self.ledger.reserved_bytes, self.ledger.reserved_files) == (0, 0)

    @invariant()
    def the_store_keeps_what_a_rescan_would_measure(self):
        usage = self.inner.usage(HOME)
        expected = StoredUsage(usage.bytes, usage.files, 0) if self.measured else StoredUsage(None, None, 0)
        assert self.store.usage("alice") == expected

    @invariant()
    def complete_files_stay_within_the_quota(self):
        if self.ledger.quota_bytes is None:
            return
        complete = sum(
            os.path.getsize(os.path.join(root, f))
            for root, _dirs, names in os.walk(os.path.join(self.dir.name, "root", *HOME))
            for f in names
            if not f.startswith(".sockftp")
        )
        assert complete <= QUOTA
        assert self.ledger.used_files <= MAX_FILES


QuotaMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_quota_ledger_always_matches_the_disk = QuotaMachine.TestCase


class UnlimitedMachine(QuotaMachine):
    """A user without limits, whose uploads skip the early measure of the
    file they replace: the ledger must match the disk all the same."""

    limits = (None, None)


UnlimitedMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_an_unlimited_users_ledger_always_matches_the_disk = UnlimitedMachine.TestCase


class UnmeasuredMachine(QuotaMachine):
    """A user without limits whose usage was never measured: nothing is
    measured or stored for them, and a measure at any point is exact from
    then on (checked by the ledger's own invariant, since the home starts
    empty)."""

    limits = (None, None)
    measured = False

    @rule()
    def ask_for_the_quota(self):
        assert self.ledger.measure()
        self.measured = True


UnmeasuredMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_a_usage_measured_late_always_matches_the_disk = UnmeasuredMachine.TestCase
