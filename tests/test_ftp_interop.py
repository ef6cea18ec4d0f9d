"""Real FTP clients against the FTP front door: curl, lftp, ncftp and tnftp.

Each client runs as a subprocess (with HOME in a tmp dir, so no user
configuration leaks in) against a server on 127.0.0.1. For each one:
a login, an upload and a download compared byte for byte, a listing,
mkdir, rename and delete, and the resume of an interrupted upload and of
an interrupted download. curl and lftp also do it all over explicit FTPS.

A transfer is interrupted by killing the client (SIGKILL) once some of the
file has moved; the server runs with a bandwidth limit while that happens,
so that there is time to. The limit is lifted for the resume, and the
audit log shows the resume moved only the rest of the file.

A missing client skips its tests, except where ``SOCKFTP_FTP_CLIENTS`` is
``required`` (CI sets it, after installing them): there it fails them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import partials_in, wait_until
from ftp_support import PASSWORD, free_port_run, ftp_server_fixture, pki_fixture  # noqa: F401 - fixtures

from sockftp.protocol import checksum

pytestmark = [pytest.mark.usefixtures("no_server_errors"), pytest.mark.timeout(180)]

KiB = 1024
MiB = 1024 * KiB
SIZE = 3 * MiB + 77  # not a multiple of any buffer
#: While a transfer is to be interrupted: slow enough to kill the client mid-file.
SLOW = 512 * KiB
CLIENT_TIMEOUT = 90


def need(binary: str) -> str:
    """The path of *binary*; skips the test (fails it in CI) if it is missing."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (apt-get install -y lftp ncftp tnftp curl rclone)"
        if os.environ.get("SOCKFTP_FTP_CLIENTS") == "required":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """The clients' working directory and HOME, with the source file in it."""
    directory = tmp_path / "client"
    directory.mkdir()
    (directory / "source.bin").write_bytes(os.urandom(SIZE))
    monkeypatch.setenv("HOME", str(directory))
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def srv(ftp_server):
    running = ftp_server()
    running.add_user("alice")
    return running


@pytest.fixture
def tls_srv(ftp_server, pki):
    running = ftp_server(tls_cert=pki["cert"], tls_key=pki["key"])  # FTP then requires TLS
    running.add_user("alice")
    return running


def run(args: list[str], stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    if ok:
        assert result.returncode == 0, f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result


def kill_when(args: list[str], stdin: str | None = None, *, moved) -> None:
    """Run a client, and kill it once *moved()* is true (some bytes moved)."""
    proc = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    try:
        if stdin:
            proc.stdin.write(stdin)
            proc.stdin.flush()
        wait_until(moved, timeout=60, what=f"{args[0]} to move some bytes")
        assert proc.poll() is None, f"{args[0]} finished before it could be interrupted"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def audit_lines(caplog):
    """The audit log's lines so far (a function)."""
    caplog.set_level(logging.INFO, logger="sockftp.audit")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "sockftp.audit"]


def last_transfer(lines: list[str], event: str, path: str) -> int:
    """The bytes the last successful *event* (put, get) of *path* moved."""
    pattern = re.compile(rf"event={event} user=alice ip=\S+ path='{re.escape(path)}' bytes=(\d+) result=ok")
    found = [int(m.group(1)) for line in lines if (m := pattern.search(line))]
    assert found, f"no successful {event} of {path} in the audit log:\n" + "\n".join(lines)
    return found[-1]


def interrupted_upload(srv, home: Path, start) -> int:
    """Start an upload with *start()* (which returns the args and stdin of
    the client), kill it midway, and return what the server holds."""
    srv.main.config.session_rate = SLOW
    kill_when(*start(), moved=lambda: any(p.stat().st_size >= 64 * KiB for p in partials_in(home)))
    srv.main.config.session_rate = None  # new sessions resume at full speed
    wait_until(lambda: len(srv.main.sessions) == 0, what="the killed client's session to end")
    assert not (home / "up.bin").exists(), "an interrupted upload must not be visible"
    [partial] = partials_in(home)
    held = partial.stat().st_size
    assert 0 < held < SIZE
    return held


def interrupted_download(srv, work: Path, start) -> int:
    """The same for a download into ``work/down.bin``; returns its length."""
    local = work / "down.bin"
    srv.main.config.session_rate = SLOW
    kill_when(*start(), moved=lambda: local.exists() and local.stat().st_size >= 64 * KiB)
    srv.main.config.session_rate = None
    held = local.stat().st_size
    assert 0 < held < SIZE
    return held


def check_resumed_upload(home: Path, work: Path, audit_lines, held: int) -> None:
    assert (home / "up.bin").read_bytes() == (work / "source.bin").read_bytes()
    assert partials_in(home) == []
    assert last_transfer(audit_lines(), "put", "/up.bin") == SIZE - held  # only the rest moved


def check_resumed_download(work: Path, audit_lines, held: int) -> None:
    assert (work / "down.bin").read_bytes() == (work / "source.bin").read_bytes()
    assert last_transfer(audit_lines(), "get", "/up.bin") == SIZE - held


def seed(srv, home: Path, work: Path) -> None:
    """Put the source on the server as /up.bin (for the download tests)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "source.bin", home / "up.bin")


# --- curl ------------------------------------------------------------------------------------------------


def curl_args(srv, *extra: str, tls_ca: str | None = None) -> list[str]:
    args = [need("curl"), "-sS", "--max-time", str(CLIENT_TIMEOUT), "--user", f"alice:{PASSWORD}"]
    if tls_ca is not None:
        args += ["--ssl-reqd", "--cacert", tls_ca]
    return args + list(extra)


def curl_round_trip(srv, work: Path, tls_ca: str | None = None) -> None:
    url = f"ftp://127.0.0.1:{srv.port}"
    home = srv.home("alice")
    run(curl_args(srv, "-T", "source.bin", f"{url}/up.bin", tls_ca=tls_ca))
    run(curl_args(srv, "-o", "copy.bin", f"{url}/up.bin", tls_ca=tls_ca))
    assert (work / "copy.bin").read_bytes() == (work / "source.bin").read_bytes()
    assert (home / "up.bin").read_bytes() == (work / "source.bin").read_bytes()
    listing = run(curl_args(srv, f"{url}/", tls_ca=tls_ca)).stdout
    assert re.search(rf"^-rw\S+ +1 alice +alice +{SIZE} .* up\.bin$", listing, re.MULTILINE), listing
    assert run(curl_args(srv, "--list-only", f"{url}/", tls_ca=tls_ca)).stdout == "up.bin\n"
    commands = ["-Q", "MKD dir", "-Q", "RNFR up.bin", "-Q", "RNTO dir/moved.bin"]
    run(curl_args(srv, *commands, "-o", os.devnull, f"{url}/", tls_ca=tls_ca))
    assert (home / "dir" / "moved.bin").stat().st_size == SIZE
    assert run(curl_args(srv, "--list-only", f"{url}/dir/", tls_ca=tls_ca)).stdout == "moved.bin\n"
    run(curl_args(srv, "-Q", "DELE dir/moved.bin", "-o", os.devnull, f"{url}/", tls_ca=tls_ca))
    assert os.listdir(home / "dir") == []


def test_curl_login_transfers_listing_mkdir_rename_delete(srv, work):
    curl_round_trip(srv, work)


def test_curl_resumes_an_interrupted_upload(srv, work, audit_lines):
    home = srv.home("alice")
    url = f"ftp://127.0.0.1:{srv.port}/up.bin"
    held = interrupted_upload(srv, home, lambda: (curl_args(srv, "-T", "source.bin", url),))
    run(curl_args(srv, "-C", "-", "-T", "source.bin", url))  # SIZE, then APPE of the rest
    check_resumed_upload(home, work, audit_lines, held)


def test_curl_resumes_an_interrupted_download(srv, work, audit_lines):
    seed(srv, srv.home("alice"), work)
    url = f"ftp://127.0.0.1:{srv.port}/up.bin"
    held = interrupted_download(srv, work, lambda: (curl_args(srv, "-o", "down.bin", url),))
    run(curl_args(srv, "-C", "-", "-o", "down.bin", url))  # REST, then RETR
    check_resumed_download(work, audit_lines, held)


def test_curl_over_explicit_ftps(tls_srv, work, pki):
    curl_round_trip(tls_srv, work, tls_ca=pki["ca"])


def test_curl_without_tls_is_refused_by_a_server_that_requires_it(tls_srv, work):
    result = run(curl_args(tls_srv, f"ftp://127.0.0.1:{tls_srv.port}/"), ok=False)
    assert result.returncode != 0 and "534" in result.stderr


# --- lftp -------------------------------------------------------------------------------------------------


def lftp_args(srv, script: str, tls_ca: str | None = None) -> list[str]:
    settings = [
        "set cmd:fail-exit true",
        "set net:max-retries 1",
        "set net:timeout 20",
        "set xfer:clobber true",
    ]
    if tls_ca is None:
        settings.append("set ftp:ssl-allow false")
    else:
        settings += [
            f"set ssl:ca-file {tls_ca}",
            "set ftp:ssl-force true",
            "set ftp:ssl-protect-data true",
            "set ftp:ssl-protect-list true",
        ]
    opening = f"open -u alice,{PASSWORD} -p {srv.port} ftp://127.0.0.1"
    return [need("lftp"), "-c", "; ".join([*settings, opening, script])]


def lftp_round_trip(srv, work: Path, tls_ca: str | None = None) -> None:
    home = srv.home("alice")
    run(lftp_args(srv, "put source.bin -o up.bin; get up.bin -o copy.bin", tls_ca))
    assert (work / "copy.bin").read_bytes() == (work / "source.bin").read_bytes()
    assert (home / "up.bin").read_bytes() == (work / "source.bin").read_bytes()
    listing = run(lftp_args(srv, "ls; cls -1", tls_ca)).stdout.splitlines()  # LIST, then MLSD
    assert re.match(rf"-rw\S+ +1 alice +alice +{SIZE} .* up\.bin$", listing[0]), listing
    assert listing[1:] == ["up.bin"]
    run(lftp_args(srv, "mkdir dir; mv up.bin dir/moved.bin", tls_ca))
    assert (home / "dir" / "moved.bin").stat().st_size == SIZE
    assert run(lftp_args(srv, "cls -1 dir", tls_ca)).stdout.split() == ["dir/moved.bin"]
    run(lftp_args(srv, "rm dir/moved.bin; rmdir dir", tls_ca))
    assert os.listdir(home) == []


def test_lftp_login_transfers_listing_mkdir_rename_delete(srv, work):
    lftp_round_trip(srv, work)


def test_lftp_resumes_an_interrupted_upload(srv, work, audit_lines):
    home = srv.home("alice")
    held = interrupted_upload(srv, home, lambda: (lftp_args(srv, "put source.bin -o up.bin"),))
    run(lftp_args(srv, "put -c source.bin -o up.bin"))  # SIZE, then REST + STOR
    check_resumed_upload(home, work, audit_lines, held)


def test_lftp_resumes_an_interrupted_download(srv, work, audit_lines):
    seed(srv, srv.home("alice"), work)
    held = interrupted_download(srv, work, lambda: (lftp_args(srv, "get up.bin -o down.bin"),))
    run(lftp_args(srv, "get -c up.bin -o down.bin"))  # REST, then RETR
    check_resumed_download(work, audit_lines, held)


def test_lftp_mirrors_a_tree_five_times_larger_than_the_passive_range(ftp_server, work):
    # Every file is a data connection, and each one the server ends first
    # leaves its passive port in TIME_WAIT: the range must be reusable.
    first = free_port_run(10)
    srv = ftp_server(ftp_passive_ports=(first, first + 9))
    srv.add_user("alice")
    tree = work / "tree"
    tree.mkdir()
    for number in range(50):
        (tree / f"f{number:02}.txt").write_bytes(b"x" * number)
    run(lftp_args(srv, "mirror -R tree tree"))
    run(lftp_args(srv, "mirror tree back"))
    names = sorted(p.name for p in tree.iterdir())
    assert sorted(p.name for p in (work / "back").iterdir()) == names
    for name in names:
        assert (work / "back" / name).read_bytes() == (tree / name).read_bytes()


@pytest.mark.parametrize("secure", [False, True], ids=["clear", "ftps"])
def test_lftp_mirror_over_four_connections_stores_every_file_whole(request, pki, work, secure):
    # lftp mirror --parallel=4: small files stored at once side by side in
    # one directory, and one past the small size that needs its partial.
    server = request.getfixturevalue("tls_srv" if secure else "srv")
    tree = work / "tree"
    tree.mkdir()
    files = {f"f{number:02}.bin": os.urandom(number * 97) for number in range(40)}
    files["big.bin"] = os.urandom(200 * 1024)
    for name, data in files.items():
        (tree / name).write_bytes(data)
    run(lftp_args(server, "mirror -R --parallel=4 tree tree", pki["ca"] if secure else None))
    home = server.home("alice") / "tree"
    assert {p.name: p.read_bytes() for p in home.iterdir()} == files
    assert partials_in(server.home("alice")) == []
    for name in ("f39.bin", "big.bin"):
        assert server.main.storage.checksum(("users", "alice", "tree", name)) == checksum.of_bytes(files[name])


def test_rclone_copies_a_tree_five_times_larger_than_the_passive_range(ftp_server, work):
    rclone = need("rclone")
    first = free_port_run(10)
    srv = ftp_server(ftp_passive_ports=(first, first + 9))
    home = srv.add_user("alice")
    tree = work / "tree"
    tree.mkdir()
    (tree / "sub").mkdir()
    for number in range(50):
        (tree / f"f{number:02}.txt").write_bytes(b"y" * number)
        os.utime(tree / f"f{number:02}.txt", (1234567890 + number, 1234567890 + number))
    obscured = run([rclone, "obscure", PASSWORD]).stdout.strip()
    remote = f":ftp,host=127.0.0.1,port={srv.port},user=alice,pass={obscured}:"
    up = run([rclone, "copy", "--config", "/dev/null", str(tree), remote + "tree"])
    # MFMT lets rclone keep times, so a later sync does not send files again.
    assert "not supported" not in up.stderr, up.stderr
    run([rclone, "copy", "--config", "/dev/null", remote + "tree", str(work / "back")])
    for number in range(50):
        name = f"f{number:02}.txt"
        assert (home / "tree" / name).read_bytes() == b"y" * number
        assert (work / "back" / name).read_bytes() == b"y" * number
        assert (home / "tree" / name).stat().st_mtime == 1234567890 + number
    again = run([rclone, "copy", "-v", "--config", "/dev/null", str(tree), remote + "tree"])
    assert "Copied" not in again.stderr, again.stderr  # nothing changed: nothing sent


def test_lftp_over_explicit_ftps(tls_srv, work, pki):
    lftp_round_trip(tls_srv, work, tls_ca=pki["ca"])


# --- ncftp: ncftpput, ncftpget, ncftpls -----------------------------------------------------------------


def ncftp_args(srv, program: str, *args: str) -> list[str]:
    quiet = ["-V"] if program != "ncftpls" else []  # no progress meter
    return [need(program), "-u", "alice", "-p", PASSWORD, "-P", str(srv.port), "-t", "30", *quiet, *args]


def test_ncftp_login_transfers_listing_mkdir_rename_delete(srv, work):
    home = srv.home("alice")
    url = "ftp://127.0.0.1"
    # -m: mkdir the target directory; -S: upload to a temporary name, then rename.
    run(ncftp_args(srv, "ncftpput", "-m", "-S", ".part", "127.0.0.1", "/dir", "source.bin"))
    assert (home / "dir" / "source.bin").read_bytes() == (work / "source.bin").read_bytes()
    (work / "got").mkdir()
    run(ncftp_args(srv, "ncftpget", "127.0.0.1", "got", "/dir/source.bin"))
    assert (work / "got" / "source.bin").read_bytes() == (work / "source.bin").read_bytes()
    long = run(ncftp_args(srv, "ncftpls", "-l", f"{url}/dir/")).stdout
    assert re.search(rf"^-rw\S+ +1 alice +alice +{SIZE} .* source\.bin$", long, re.MULTILINE), long
    machine = run(ncftp_args(srv, "ncftpls", "-m", f"{url}/dir/")).stdout
    assert machine.startswith(f"type=file;size={SIZE};modify=") and machine.endswith(" source.bin\n"), machine
    # The raw RNFR/RNTO pair after login; ncftpls -Z lists nothing, and says so in its status.
    rename = ["-W", "RNFR /dir/source.bin", "-W", "RNTO /dir/moved.bin"]
    run(ncftp_args(srv, "ncftpls", "-Z", *rename, f"{url}/"), ok=False)
    assert os.listdir(home / "dir") == ["moved.bin"]
    (work / "got2").mkdir()
    run(ncftp_args(srv, "ncftpget", "-DD", "127.0.0.1", "got2", "/dir/moved.bin"))  # download, then DELE
    assert os.listdir(home / "dir") == []
    assert (work / "got2" / "moved.bin").read_bytes() == (work / "source.bin").read_bytes()


def test_ncftp_resumes_an_interrupted_upload(srv, work, audit_lines):
    home = srv.home("alice")
    (work / "up.bin").symlink_to(work / "source.bin")
    held = interrupted_upload(srv, home, lambda: (ncftp_args(srv, "ncftpput", "127.0.0.1", "/", "up.bin"),))
    # -z: SIZE, then REST + STOR. -s: no sendfile(), with which ncftpput 3.2.6
    # sends the whole file after REST (pyftpdlib gets the same wrong file).
    run(ncftp_args(srv, "ncftpput", "-z", "-s", "127.0.0.1", "/", "up.bin"))
    check_resumed_upload(home, work, audit_lines, held)


def test_ncftp_resumes_an_interrupted_download(srv, work, audit_lines):
    seed(srv, srv.home("alice"), work)
    args = ncftp_args(srv, "ncftpget", "-C", "127.0.0.1", "/up.bin", "down.bin")
    held = interrupted_download(srv, work, lambda: (args,))
    run(ncftp_args(srv, "ncftpget", "-z", "-C", "127.0.0.1", "/up.bin", "down.bin"))  # REST, then RETR
    check_resumed_download(work, audit_lines, held)


# --- tnftp --------------------------------------------------------------------------------------------------


def tnftp(srv, *commands: str, ok: bool = True) -> subprocess.CompletedProcess:
    script = "\n".join([f"user alice {PASSWORD}", "binary", *commands, "quit"]) + "\n"
    return run([need("tnftp"), "-n", "-v", "127.0.0.1", str(srv.port)], stdin=script, ok=ok)


def test_tnftp_login_transfers_listing_mkdir_rename_delete(srv, work):
    home = srv.home("alice")
    out = tnftp(srv, "put source.bin up.bin", "get up.bin copy.bin", "ls", "mkdir dir", "rename up.bin dir/moved.bin")
    assert "230 User alice logged in" in out.stdout
    assert (work / "copy.bin").read_bytes() == (work / "source.bin").read_bytes()
    assert re.search(rf"^-rw\S+ +1 alice +alice +{SIZE} .* up\.bin$", out.stdout, re.MULTILINE), out.stdout
    assert (home / "dir" / "moved.bin").read_bytes() == (work / "source.bin").read_bytes()
    out = tnftp(srv, "nlist dir", "delete dir/moved.bin", "rmdir dir")
    assert "\nmoved.bin\n" in out.stdout
    assert os.listdir(home) == []


def test_tnftp_resumes_an_interrupted_upload(srv, work, audit_lines):
    home = srv.home("alice")
    script = f"user alice {PASSWORD}\nbinary\nput source.bin up.bin\nquit\n"
    args = [need("tnftp"), "-n", "127.0.0.1", str(srv.port)]
    held = interrupted_upload(srv, home, lambda: (args, script))
    # tnftp has no automatic upload resume: ask SIZE, then restart there.
    size = re.search(r"^up\.bin\t(\d+)$", tnftp(srv, "size up.bin").stdout, re.MULTILINE)
    assert size and int(size.group(1)) == held
    tnftp(srv, f"restart {held}", "put source.bin up.bin")  # REST + STOR of the rest
    check_resumed_upload(home, work, audit_lines, held)


def test_tnftp_resumes_an_interrupted_download(srv, work, audit_lines):
    seed(srv, srv.home("alice"), work)
    script = f"user alice {PASSWORD}\nbinary\nget up.bin down.bin\nquit\n"
    args = [need("tnftp"), "-n", "127.0.0.1", str(srv.port)]
    held = interrupted_download(srv, work, lambda: (args, script))
    tnftp(srv, "reget up.bin down.bin")  # REST, then RETR
    check_resumed_download(work, audit_lines, held)
