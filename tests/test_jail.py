"""The jail: nothing outside a session's root can be read or written, whatever the path.

Policy (docs and local.py): the server never follows a symbolic link, even
one that points inside the root.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from conftest import recv_exact, recv_frame, round_trip, send_frame

import sockftp
from sockftp import SockftpError

pytestmark = pytest.mark.usefixtures("no_server_errors")

SECRET = b"top secret: must never leave the server\n"


@pytest.fixture
def jail(srv, tmp_path):
    """A server whose anonymous root holds links to an outside directory, and a
    file beside the anonymous root (inside the server root, outside the jail)."""
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "inner" / "deep.txt").write_bytes(SECRET)
    (srv.root / "beside.txt").write_bytes(SECRET)
    anon = srv.anon_dir
    (anon / "real.txt").write_bytes(b"real")
    (anon / "realdir").mkdir()
    (anon / "realdir" / "in.txt").write_bytes(b"in")
    os.symlink(outside / "secret.txt", anon / "link-file")
    os.symlink(outside, anon / "link-dir")
    os.symlink(anon / "real.txt", anon / "link-inside")
    os.symlink("realdir", anon / "link-inside-dir")
    os.symlink("../beside.txt", anon / "link-up")
    srv.outside = outside
    return srv


def outside_snapshot(srv) -> dict:
    """Every file outside the jail that a broken jail could touch, with its hash."""
    snap = {}
    for base in (srv.outside, srv.root):
        for dirpath, dirnames, filenames in os.walk(base):
            if os.path.abspath(dirpath).startswith(str(srv.anon_dir)):
                dirnames[:] = []
                continue
            for name in filenames:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    snap[path] = hashlib.sha256(f.read()).hexdigest()
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != str(srv.anon_dir)]
    return snap


def raw_get(srv, path) -> dict:
    with srv.raw() as sock:
        send_frame(sock, {"cmd": "get", "path": path})
        reply = recv_frame(sock)
        if reply.get("ok"):
            body = recv_exact(sock, reply["filesize"])
            assert SECRET not in body
        round_trip(sock)
    return reply


TRAVERSALS = ["../beside.txt", "a/../../beside.txt", "/../beside.txt", "..", "../", "../anonymous/../beside.txt"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_cannot_read_outside_the_root(jail, path):
    reply = raw_get(jail, path)
    assert reply["ok"] is False and reply["error"] == "path_refused", reply


@pytest.mark.parametrize("path", ["..\\beside.txt", "a\\..\\..\\beside.txt", "real.txt\x00.png", "\x00"])
def test_backslash_and_nul_paths_are_refused(jail, path):
    reply = raw_get(jail, path)
    assert reply["ok"] is False and reply["error"] == "path_refused", reply


@pytest.mark.parametrize("path", TRAVERSALS[:3] + ["..\\planted.txt", "x\x00"])
def test_traversal_cannot_write_outside_the_root(jail, path):
    before = outside_snapshot(jail)
    with jail.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": path, "size": 5}, b"PWNED")
        reply = recv_frame(sock)
        round_trip(sock)
    assert reply["ok"] is False and reply["error"] == "path_refused", reply
    assert outside_snapshot(jail) == before
    assert not (jail.root / "planted.txt").exists()


def test_absolute_system_path_resolves_inside_the_root(jail):
    reply = raw_get(jail, "/etc/passwd")
    assert reply["ok"] is False and reply["error"] == "not_found"
    with jail.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.stat("/etc")
        with pytest.raises(sockftp.NotFound):
            c.ls("/etc")


def test_absolute_host_path_for_writing_resolves_inside_the_root(jail, files):
    target = str(jail.outside / "planted.txt")  # an absolute host path
    with jail.client() as c:
        with pytest.raises(sockftp.NotFound):
            c.put(files("p", b"PWNED"), target)
        with pytest.raises(sockftp.NotFound):
            c.mkdir(str(jail.outside / "newdir"))
    assert not (jail.outside / "planted.txt").exists()
    assert not (jail.outside / "newdir").exists()


# --- symbolic links ------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["link-file", "link-up", "link-inside"])
def test_symlink_to_a_file_cannot_be_read(jail, link):
    reply = raw_get(jail, link)
    assert reply["ok"] is False and reply["error"] == "path_refused", reply


def test_symlinks_show_as_links_in_listings_and_stat(jail):
    with jail.client() as c:
        entries = {e.name: e for e in c.ls("/")}
        stat = c.stat("link-file")
        try:  # no checksum of the target: an error, or a reply without one
            assert "checksum" not in c.request({"cmd": "stat", "path": "link-file", "checksum": True})
        except SockftpError:
            pass
    for name in ("link-file", "link-dir", "link-inside", "link-inside-dir", "link-up"):
        assert entries[name].type == "link" and entries[name].size == 0
    assert stat.type == "link" and stat.size == 0  # not the target's size


def test_symlink_to_a_directory_cannot_be_listed(jail):
    with jail.client() as c:
        for path in ("link-dir", "link-dir/", "link-dir/."):
            names = [e.name for e in c.ls(path)]
            assert "secret.txt" not in names and "inner" not in names
        with pytest.raises(SockftpError):
            c.ls("link-dir/inner")


@pytest.mark.parametrize("path", ["link-dir/secret.txt", "link-dir/inner/deep.txt", "link-inside-dir/in.txt"])
def test_symlink_to_a_directory_cannot_be_read_through(jail, path):
    reply = raw_get(jail, path)
    assert reply["ok"] is False, reply
    with jail.client() as c:
        with pytest.raises(SockftpError):
            c.stat(path)
        with pytest.raises(SockftpError):
            c.cd(path.rsplit("/", 1)[0])
        assert c.pwd() == "/"


def test_symlink_cannot_be_written_through(jail, files):
    before = outside_snapshot(jail)
    local = files("evil.txt", b"PWNED")
    with jail.client() as c:
        for target in ("link-dir/new.txt", "link-dir/secret.txt", "link-dir/inner/deep.txt"):
            with pytest.raises(SockftpError):
                c.put(local, target)
        with pytest.raises(SockftpError):
            c.mkdir("link-dir/newdir")
        with pytest.raises(SockftpError):
            c.mkdir("link-dir/a/b", parents=True)
        with pytest.raises(SockftpError):
            c.mv("real.txt", "link-dir/moved.txt")
        with pytest.raises(SockftpError):
            c.mv("link-dir/secret.txt", "stolen.txt")
        with pytest.raises(SockftpError):
            c.rm("link-dir/secret.txt")
        with pytest.raises(SockftpError):
            c.rmdir("link-dir/inner")
        with pytest.raises(SockftpError):
            c.rmdir("link-dir")
        # Uploading over the link's own name replaces the link, never its target.
        try:
            c.put(local, "link-file")
        except SockftpError:
            pass
        c.ping()
    assert outside_snapshot(jail) == before
    assert sorted(os.listdir(jail.outside)) == ["inner", "secret.txt"]
    assert sorted(os.listdir(jail.outside / "inner")) == ["deep.txt"]
    assert not (jail.anon_dir / "stolen.txt").exists()


def test_removing_or_renaming_a_symlink_acts_on_the_link_only(jail):
    with jail.client() as c:
        c.mv("link-dir", "renamed-link")
        c.rm("renamed-link")
        c.rm("link-file")
    assert (jail.outside / "secret.txt").read_bytes() == SECRET
    assert (jail.outside / "inner" / "deep.txt").read_bytes() == SECRET
    assert not os.path.lexists(jail.anon_dir / "renamed-link")


@pytest.mark.parametrize(
    "request_",
    [
        {"cmd": "get", "path": "link-dir/secret.txt"},
        {"cmd": "stat", "path": "link-dir/secret.txt"},
        {"cmd": "ls", "path": "link-dir/inner"},
        {"cmd": "mkdir", "path": "link-dir/newdir"},
        {"cmd": "rm", "path": "link-dir/secret.txt"},
        {"cmd": "stat", "path": "link-inside-dir/in.txt"},
    ],
    ids=lambda r: f"{r['cmd']} {r['path']}",
)
def test_symlink_used_as_a_directory_in_a_path_is_path_refused(jail, request_):
    with jail.raw() as sock:
        send_frame(sock, request_)
        reply = recv_frame(sock)
    assert reply["ok"] is False
    assert reply["error"] == "path_refused", reply


def test_put_through_a_directory_symlink_is_path_refused(jail):
    with jail.raw() as sock:
        send_frame(sock, {"cmd": "put", "path": "link-dir/new.txt", "size": 5}, b"PWNED")
        reply = recv_frame(sock)
    assert reply["error"] == "path_refused", reply


# --- special files -----------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_fifo_in_the_tree_does_not_hang_a_get(jail, tmp_path):
    os.mkfifo(jail.anon_dir / "pipe")
    with jail.client(timeout=5) as c:
        entries = {e.name: e for e in c.ls()}
        assert entries["pipe"].type == "other"
        with pytest.raises(sockftp.PathRefused):
            c.get("pipe", tmp_path / "pipe-copy")
        assert c.stat("pipe").type == "other"
        c.ping()
    assert not (tmp_path / "pipe-copy").exists()


@pytest.mark.timeout(20)
def test_upload_over_a_fifo_name_does_not_hang(jail, files):
    os.mkfifo(jail.anon_dir / "pipe")
    with jail.client(timeout=5) as c:
        c.put(files("p", b"data"), "pipe")
    assert (jail.anon_dir / "pipe").read_bytes() == b"data"


def test_other_sessions_root_is_unreachable(jail):
    # Files of the server root beside the anonymous area (future users' homes).
    (jail.root / "alice").mkdir()
    (jail.root / "alice" / "private.txt").write_bytes(SECRET)
    for path in ("../alice/private.txt", "/../alice/private.txt", "../../alice/private.txt"):
        assert raw_get(jail, path)["error"] == "path_refused"
    assert raw_get(jail, "/alice/private.txt")["error"] == "not_found"
