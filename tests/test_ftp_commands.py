"""The FTP commands without a network: a real Session, storage and
authenticator, and a stand-in Link whose data connections are in memory.

This is where the decisions are tested one by one: logins and their
limits, RFC 2577's checks on PORT and EPRT, what SIZE, APPE and REST+STOR
do with an interrupted upload, and that a transfer cut short never leaves
a visible file.
"""

from __future__ import annotations

import time

import pytest

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.ftp import commands
from sockftp.ftp.commands import Context, Link, Settings, State
from sockftp.ftp.data import DataError, TransferAborted
from sockftp.ftp.replies import Reply
from sockftp.protocol import checksum
from sockftp.protocol.errors import OffsetMismatch
from sockftp.server.auth import Authenticator
from sockftp.server.config import ServerConfig
from sockftp.server.quota import QuotaLedger
from sockftp.server.quota_storage import QuotaStorage
from sockftp.server.session import ANONYMOUS_HOME, Identity, Session
from sockftp.storage import LocalStorage

PEER = "192.0.2.10"


class MemoryData:
    """A data connection in memory: what a client would send, and what it got."""

    def __init__(self, incoming: bytes = b"", abort_after: int | None = None):
        self.incoming = incoming
        self.abort_after = abort_after
        self.sent = bytearray()
        self.bytes = 0
        self.closed = False

    def send(self, data):
        self.sent += data
        self.bytes += len(data)

    def send_file(self, fd, offset, count):
        import os

        self.send(os.pread(fd, count, offset))

    def send_from(self, readinto, offset, count):
        buffer = bytearray(count)
        n = readinto(memoryview(buffer), offset) if count else 0
        self.send(bytes(buffer[:n]))

    def receive(self, write, hasher=None):
        data = self.incoming if self.abort_after is None else self.incoming[: self.abort_after]
        for start in range(0, len(data), 7):  # small chunks, as a network would give
            chunk = memoryview(data[start : start + 7])
            if hasher is not None:
                hasher.update(chunk)
            write(chunk)
            self.bytes += len(chunk)
        if self.abort_after is not None:
            raise TransferAborted("the client aborted the transfer")
        return len(data)

    def receive_whole(self, into, limit, within):
        """All of it at once, if small; an abort after what came first."""
        if self.abort_after is not None:
            into += self.incoming[: self.abort_after]
            self.bytes += len(into)
            raise TransferAborted("the client aborted the transfer")
        if len(self.incoming) > limit:
            return False  # receive() gets it all
        into += self.incoming
        self.bytes += len(self.incoming)
        self.incoming = b""
        return True

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MemoryLink(Link):
    def __init__(self, local="198.51.100.1", peer=PEER):
        self.local = local
        self.peer = peer
        self.preliminary: list[Reply] = []
        self.active_to: tuple[str, int] | None = None
        self.passive_port = 50000
        self.next_data = MemoryData()
        self.tls_started = False
        self.ready = False
        self.opened: list[bool] = []

    def reply(self, reply):
        self.preliminary.append(reply)

    def passive(self):
        self.ready = True
        return self.passive_port

    def active(self, host, port):
        self.ready = True
        self.active_to = (host, port)

    @property
    def data_ready(self):
        return self.ready

    def open_data(self, protect):
        if isinstance(self.next_data, Exception):
            raise self.next_data
        self.opened.append(protect)
        return self.next_data

    def start_tls(self):
        self.tls_started = True

    def anonymous_identity(self):
        return Identity("anonymous", ANONYMOUS_HOME)


@pytest.fixture(scope="module")
def alice_hash():
    return hash_password("secret")


@pytest.fixture
def storage(tmp_path):
    store = LocalStorage(tmp_path / "root")
    yield store
    store.close()


@pytest.fixture
def make(storage, alice_hash, tmp_path):
    """Factory: a logged-out connection's (Context-making function, link, state)."""
    stores = []

    def build(settings: Settings | None = None, delay: float = 0.0, quota: int | None = None, **config):
        users = SqliteUserStore(str(tmp_path / f"users-{len(stores)}.db"))
        stores.append(users)
        users.add(Account("alice", alice_hash))
        users.add(Account("reader", alice_hash, read_only=True))
        server_config = ServerConfig(root=str(tmp_path / "root"), login_failure_delay=delay, **config)

        def identity(account):
            home = ("users", account.name)
            storage.mkdir(home, parents=True)
            ledger = QuotaLedger(account.name, 0, 0, quota_bytes=quota)
            return Identity(account.name, home, not account.read_only, QuotaStorage(storage, ledger))

        session = Session(storage, "test", address=PEER, authenticator=Authenticator(users, server_config, identity))
        link, state = MemoryLink(), State()
        settings = settings or Settings()

        def run(line: str) -> Reply:
            ctx = Context(session, state, settings, link)
            run.last = ctx
            return commands.dispatch(ctx, line)

        run.session, run.link, run.state = session, link, state
        return run

    yield build
    for users in stores:
        users.close()


@pytest.fixture
def alice(make):
    run = make()
    assert run("USER alice").code == 331
    assert run("PASS secret").code == 230
    return run


def home(storage, name="alice"):
    from pathlib import Path

    return Path(storage.root) / "users" / name


# --- dispatch ---------------------------------------------------------------------------------------------


def test_unknown_malformed_and_misused_commands(alice):
    assert alice("FROB x").code == 502
    assert alice("1234").code == 500
    assert alice("RETR").code == 501  # its argument is required
    assert alice("PWD now").code == 501  # it takes none
    assert alice("retr   ").code == 501


def test_everything_but_the_login_commands_needs_a_login(make):
    run = make()
    public = {"USER", "PASS", "QUIT", "AUTH", "PBSZ", "PROT", "NOOP", "SYST", "CLNT", "FEAT", "OPTS", "HELP", "ACCT"}
    public |= {"ABOR"}
    for name, verb in commands.COMMANDS.items():
        assert verb.needs_login == (name not in public), name
    assert run("LIST").code == 530 and run.last.result == "auth_required"


# --- logging in (RFC 2577 section 4) ----------------------------------------------------------------------


def test_user_answers_the_same_whatever_the_name(make):
    run = make()
    answers = {run(f"USER {name}").lines for name in ("alice", "nobody", "anonymous", "ro'ot")}
    assert answers == {("Password required",)}


def test_a_failed_login_waits_and_the_third_on_a_connection_closes_it(make):
    run = make(delay=0.2, ban_failures=100)
    for _ in range(2):
        run("USER alice")
        started = time.monotonic()
        assert run("PASS wrong").code == 530
        assert time.monotonic() - started >= 0.2
        assert not run.last.close
    run("USER nobody")
    assert run("PASS wrong").code == 421 and run.last.close
    assert run.session.identity is None


def test_failed_logins_ban_the_address_for_every_front_door(make):
    from sockftp.protocol.errors import Banned

    run = make(ban_failures=2, ban_window=60, ban_time=60)
    run("USER alice")
    assert run("PASS wrong").code == 530
    run("USER alice")
    reply = run("PASS wrong")
    assert reply.code == 421 and "too many failed logins" in reply.text and run.last.close
    # The ban list is the authenticator's, which the native protocol uses too.
    with pytest.raises(Banned):
        run.session.authenticator.login(PEER, "alice", password="secret")


def test_pass_without_user_and_anonymous_only_when_enabled(make):
    run = make()
    assert run("PASS x").code == 503
    run("USER anonymous")
    assert run("PASS guest@example.org").code == 530
    run = make(Settings(anonymous=True))
    run("USER anonymous")
    assert run("PASS guest@example.org").code == 230
    assert run.session.identity.name == "anonymous"


def test_user_before_tls_is_refused_when_tls_is_required(make):
    run = make(Settings(tls_available=True, require_tls=True))
    assert run("USER alice").code == 534
    assert run("AUTH TLS").code == 234
    run.last.after()
    assert run.link.tls_started
    run.state.tls = True
    assert run("USER alice").code == 331


def test_a_new_user_command_logs_out_first(alice):
    alice("USER bob")
    assert alice.session.identity is None
    assert alice("PWD").code == 530


# --- data connections (RFC 2577 section 3) ----------------------------------------------------------------


def test_port_and_eprt_go_only_to_the_clients_own_host_and_unprivileged_ports(alice):
    assert alice("PORT 203,0,113,9,200,10").code == 501  # a third host: an FTP bounce
    assert alice("EPRT |1|203.0.113.9|51210|").code == 501
    assert alice("PORT 192,0,2,10,0,25").code == 501  # port 25 on the client: faking a service
    assert alice("EPRT |1|192.0.2.10|1023|").code == 501
    assert alice.link.active_to is None
    assert alice("PORT 192,0,2,10,200,10").code == 200
    assert alice.link.active_to == ("192.0.2.10", 51210)
    assert alice("EPRT |1|192.0.2.10|1024|").code == 200
    assert alice("EPRT |2|::1|5000|").code == 522  # the wrong family for this connection


def test_pasv_epsv_and_epsv_all(make):
    run = make(Settings(masquerade="203.0.113.7"))
    run("USER alice")
    run("PASS secret")
    assert run("PASV").text == "Entering Passive Mode (203,0,113,7,195,80)."
    assert run("EPSV").text == "Entering Extended Passive Mode (|||50000|)"
    assert run("EPSV 2").code == 522
    assert run("EPSV ALL").code == 200
    assert run("PASV").code == 503 and run("PORT 192,0,2,10,200,10").code == 503
    assert run("EPSV").code == 229


def test_pasv_on_ipv6_points_to_epsv(alice):
    alice.link.local = "2001:db8::1"
    assert alice("PASV").code == 501
    assert alice("PORT 192,0,2,10,200,10").code == 522


def test_a_passive_port_that_cannot_be_had_is_425(alice):
    def refuse():
        raise DataError("no free passive port in 50000-50001; try again")

    alice.link.passive = refuse
    assert alice("PASV").code == 425


def test_no_transfer_without_a_data_address_and_with_require_tls_none_in_clear(make, storage):
    run = make(Settings(tls_available=True, require_tls=False))
    run("USER alice")
    run("PASS secret")
    assert run("LIST").code == 425 and run.link.preliminary == []
    strict = make(Settings(tls_available=True, require_tls=True))
    strict.state.tls = True
    strict("USER alice")
    strict("PASS secret")
    strict("PASV")
    assert strict("LIST").code == 534
    strict("PBSZ 0")
    strict("PROT P")
    assert strict("LIST").code == 226 and strict.link.opened == [True]


# --- uploads -----------------------------------------------------------------------------------------------


def store(run, line: str, data: bytes, abort_after: int | None = None) -> Reply:
    run.link.ready = True
    run.link.next_data = MemoryData(data, abort_after)
    return run(line)


def test_stor_commits_the_bytes_and_keeps_their_checksum(alice, storage):
    reply = store(alice, "STOR f.txt", b"hello world")
    assert reply.code == 226 and alice.link.preliminary[-1].code == 150
    assert (home(storage) / "f.txt").read_bytes() == b"hello world"
    assert storage.checksum(("users", "alice", "f.txt")) == checksum.of_bytes(b"hello world")
    assert alice.last.audit == ("put", {"path": "f.txt"}) and alice.last.bytes == 11


def test_an_aborted_stor_keeps_a_hidden_partial_that_size_reports(alice, storage):
    reply = store(alice, "STOR f", b"0123456789", abort_after=6)
    assert reply.code == 426 and alice.last.result == "aborted"
    assert not (home(storage) / "f").exists()
    assert alice("SIZE f").text == "6"
    assert alice("LIST").code == 226 and alice.link.next_data.sent == b""  # not listed
    assert alice("RETR f").code == 550


def test_appe_continues_an_interrupted_upload_else_the_file(alice, storage):
    store(alice, "STOR f", b"0123456789", abort_after=6)
    assert store(alice, "APPE f", b"6789").code == 226
    assert (home(storage) / "f").read_bytes() == b"0123456789"
    assert store(alice, "APPE f", b"ab").code == 226
    assert (home(storage) / "f").read_bytes() == b"0123456789ab"
    assert store(alice, "APPE new", b"fresh").code == 226
    assert (home(storage) / "new").read_bytes() == b"fresh"


def test_rest_stor_continues_the_partial_or_a_prefix_of_the_file(alice, storage):
    store(alice, "STOR f", b"abcdefgh", abort_after=5)
    alice("REST 3")
    assert store(alice, "STOR f", b"DEFGH").code == 226
    assert (home(storage) / "f").read_bytes() == b"abcDEFGH"
    alice("REST 2")
    assert store(alice, "STOR f", b"xy").code == 226  # no partial: the file's first 2 bytes
    assert (home(storage) / "f").read_bytes() == b"abxy"
    alice("REST 100")
    said = len(alice.link.preliminary)
    assert store(alice, "STOR f", b"z").code == 554
    assert len(alice.link.preliminary) == said  # refused before any 150
    alice("REST 1")
    assert store(alice, "STOR missing", b"z").code == 554
    assert alice.state.rest == 0  # used up by the STOR, refused or not


def test_open_upload_chooses_what_a_resume_continues(storage):
    path = ("f",)
    with pytest.raises(OffsetMismatch):
        commands.open_upload(storage, path, 4, append=False)
    upload = commands.open_upload(storage, path, 0, append=True)  # nothing yet: a new file
    upload.write(b"abc")
    upload.keep()
    upload = commands.open_upload(storage, path, 0, append=True)  # the partial
    assert upload.offset == 3
    upload.write(b"def")
    upload.commit(None)
    upload = commands.open_upload(storage, path, 0, append=True)  # the file
    assert upload.offset == 6
    upload.discard()
    upload = commands.open_upload(storage, path, 0, append=False)  # STOR: from scratch
    assert upload.offset == 0
    upload.discard()


def test_a_stor_past_the_quota_keeps_nothing(make, storage):
    run = make(quota=10)
    run("USER alice")
    run("PASS secret")
    reply = store(run, "STOR big", b"x" * 11)
    assert reply.code == 552 and run.last.result == "quota_exceeded"
    assert sorted(p.name for p in home(storage).iterdir()) == []
    assert store(run, "STOR fits", b"x" * 10).code == 226


def test_a_small_stor_refused_after_its_bytes_came_says_why_and_keeps_nothing(alice, storage):
    # A plain STOR opens the storage once its bytes are in: the refusals
    # come after the 150, with the same codes, and leave nothing behind.
    assert alice("MKD d").code == 257
    assert store(alice, "STOR d", b"data").code == 550  # a directory
    assert store(alice, "STOR missing/f", b"data").code == 550  # no such directory
    assert alice.link.preliminary[-1].code == 150
    assert sorted(p.name for p in home(storage).iterdir()) == ["d"] and list((home(storage) / "d").iterdir()) == []


def test_a_stor_whose_data_connection_fails_leaves_no_empty_partial(alice, storage):
    alice.link.ready = True
    alice.link.next_data = DataError("no data connection within 60 s")
    assert alice("STOR f").code == 425
    assert list(home(storage).iterdir()) == []


def test_a_read_only_user_writes_nothing(make, storage):
    run = make()
    run("USER reader")
    run("PASS secret")
    for line in ("STOR f", "APPE f", "DELE f", "MKD d", "RMD d", "RNFR f", "RNTO g"):
        reply = run(line)
        assert reply.code == 550 and "read-only" in reply.text, line


# --- downloads, listings, facts -----------------------------------------------------------------------------


def test_retr_from_an_offset(alice, storage):
    store(alice, "STOR f", b"0123456789")
    alice("REST 4")
    alice.link.next_data = MemoryData()
    assert alice("RETR f").code == 226 and alice.link.next_data.sent == b"456789"
    alice("REST 11")
    assert alice("RETR f").code == 554


def test_listings(alice):
    alice("MKD d")
    store(alice, "STOR d/b.txt", b"bb")
    store(alice, "STOR d/a.txt", b"a")
    alice.link.next_data = MemoryData()
    alice("NLST d")
    assert alice.link.next_data.sent == b"a.txt\r\nb.txt\r\n"
    alice.link.next_data = MemoryData()
    alice("NLST d/a*")
    assert alice.link.next_data.sent == b"d/a.txt\r\n"
    alice.link.next_data = MemoryData()
    alice("MLSD d")
    lines = alice.link.next_data.sent.decode().splitlines()
    assert [line.split("; ")[1] for line in lines] == ["a.txt", "b.txt"] and "size=2;" in lines[1]
    alice.link.next_data = MemoryData()
    alice("LIST -l d/b.txt")
    assert alice.link.next_data.sent.decode().endswith(" d/b.txt\r\n")
    assert alice("MLSD d/a.txt").code == 550


def test_rename_needs_rnfr_right_before(alice, storage):
    store(alice, "STOR a", b"a")
    assert alice("RNTO b").code == 503
    assert alice("RNFR a").code == 350
    assert alice("RNTO b").code == 250
    assert alice.last.audit == ("mv", {"source": "a", "target": "b"})
    assert alice("RNFR b").code == 350
    alice("NOOP")
    assert alice("RNTO c").code == 503
    assert alice("RNFR missing").code == 550
    assert alice("RNFR /").code == 550  # the home cannot be renamed


def test_size_mdtm_hash_and_feat(alice):
    store(alice, "STOR f", b"12345")
    assert alice("SIZE f").text == "5"
    assert len(alice("MDTM f").text) == 14
    digest = checksum.of_bytes(b"12345").split(":")[1]
    assert alice("HASH f").text == f"XXH3-128 0-4 {digest} f"
    assert alice("OPTS HASH MD5").text == "MD5"
    assert alice("HASH f").text == "MD5 0-4 827ccb0eea8a706c4c34a16891f84e7b f"
    assert alice("SIZE /").code == 550
    feat = alice("FEAT").lines
    assert " SIZE" in feat and " REST STREAM" in feat and " AUTH TLS" not in feat


def test_help_knows_every_command(alice):
    names = alice("HELP").text
    for name in commands.COMMANDS:
        assert name in names
        assert alice(f"HELP {name}").code == 214
