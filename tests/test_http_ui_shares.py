"""Share links over HTTP, without a browser: read links to a file and a
folder, passwords, drop links (the owner's quota, no overwrite, nothing
to read), revocation, expiry, and the jail."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from http_support import http_server_fixture  # noqa: F401 - the fixture

from sockftp.protocol.checksum import of_bytes


@pytest.fixture
def srv(http_server):
    server = http_server()
    home = server.add_user("alice", quota_bytes=1024 * 1024)
    home.mkdir(parents=True, exist_ok=True)
    (home / "docs").mkdir()
    (home / "docs" / "a.txt").write_bytes(b"hello a")
    (home / "docs" / "sub").mkdir()
    (home / "docs" / "sub" / "b.txt").write_bytes(b"hello b")
    (home / "secret.txt").write_bytes(b"not shared")
    (home / "inbox").mkdir()
    return server


def share(srv, path, kind="read", **fields):
    status, body = srv.json(
        "POST",
        "/shares/",
        body=json.dumps({"path": path, "kind": kind, **fields}),
        headers={"Content-Type": "application/json"},
        user="alice",
    )
    assert status == 201, body
    return body


def test_a_read_link_to_a_file_downloads_it_with_ranges_and_nothing_else(srv):
    link = share(srv, "/docs/a.txt")
    url = link["url"]
    assert url.startswith("/s/") and link["kind"] == "read" and link["password"] is False
    status, headers, body = srv.request("GET", url + "files/")
    assert (status, body) == (200, b"hello a")
    assert (
        headers["content-disposition"].startswith("attachment")
        and "filename*=UTF-8''a.txt" in headers["content-disposition"]
    )
    status, _headers, body = srv.request("GET", url + "files/", headers={"Range": "bytes=1-3"})
    assert (status, body) == (206, b"ell")
    assert srv.request("PUT", url + "files/", body=b"x")[0] == 404  # a read link writes nothing
    assert srv.request("DELETE", url + "files/")[0] == 404
    status, _headers, body = srv.request("GET", url)
    assert status == 200 and b"share.js" in body
    assert srv.request("GET", url.rstrip("/"))[0] == 308
    info = json.loads(srv.request("GET", url + "info")[2])
    assert info["name"] == "a.txt" and info["type"] == "file" and info["size"] == 7


def test_a_links_secret_never_reaches_the_log(srv, caplog):
    made = share(srv, "/docs/a.txt")
    secret = made["url"].split("/")[2]
    with caplog.at_level(logging.INFO):
        assert srv.request("GET", made["url"] + "files/")[0] == 200
        deadline = time.monotonic() + 5
        while not any("/s/id:" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"/s/id:{made['id']}/files/" in logged  # the public id, as /shares/ lists it
    assert secret not in logged


def test_a_read_link_to_a_folder_lists_and_serves_it_and_nothing_beside_it(srv):
    url = share(srv, "/docs")["url"]
    status, _h, body = srv.request("GET", url + "files/")
    assert status == 200 and sorted(e["name"] for e in json.loads(body)["entries"]) == ["a.txt", "sub"]
    assert srv.request("GET", url + "files/sub/b.txt")[2] == b"hello b"
    for escape in ("files/../secret.txt", "files/%2e%2e/secret.txt", "files/sub/../../secret.txt"):
        status, _h, body = srv.request("GET", url + escape)
        assert status in (400, 404) and b"not shared" not in body, escape


def test_a_password_link_asks_for_it_and_counts_wrong_ones(srv):
    url = share(srv, "/docs/a.txt", password="open sesame")["url"]
    info = json.loads(srv.request("GET", url + "info")[2])
    assert info["password"] is True and info["unlocked"] is False
    assert "name" not in info and "size" not in info  # nothing about the file before the password
    assert srv.request("GET", url + "files/")[0] == 403
    wrong = srv.request(
        "POST", url + "unlock", body=json.dumps({"password": "nope"}), headers={"Content-Type": "application/json"}
    )
    assert wrong[0] == 403 and "set-cookie" not in wrong[1]
    status, headers, _ = srv.request(
        "POST",
        url + "unlock",
        body=json.dumps({"password": "open sesame"}),
        headers={"Content-Type": "application/json"},
    )
    assert status == 204
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Path={url}" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert srv.request("GET", url + "files/", headers=jar)[2] == b"hello a"
    assert json.loads(srv.request("GET", url + "info", headers=jar)[2])["name"] == "a.txt"
    other = share(srv, "/docs/sub/b.txt", password="other")["url"]
    assert srv.request("GET", other + "files/", headers=jar)[0] == 403  # one link's cookie opens no other


def test_a_drop_link_takes_new_files_into_the_folder_on_the_owners_quota(srv, caplog):
    made = share(srv, "/inbox", kind="drop")
    url = made["url"]
    with caplog.at_level(logging.INFO, logger="sockftp.audit"):
        status, _h, body = srv.request("PUT", url + "files/report.pdf", body=b"dropped")
        # The line is written once the response is out, as the door's own are.
        deadline = time.monotonic() + 5
        while not any("event=put" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert status == 201 and body == b""
    line = next(r.getMessage() for r in caplog.records if "event=put" in r.getMessage())
    for field in ("user=alice", "path='/inbox/report.pdf'", f"share={made['id']}", "bytes=7", "result=ok"):
        assert field in line, line
    assert (srv.home("alice") / "inbox" / "report.pdf").read_bytes() == b"dropped"
    assert srv.request("PUT", url + "files/report.pdf", body=b"again")[0] == 403  # no overwriting
    assert (srv.home("alice") / "inbox" / "report.pdf").read_bytes() == b"dropped"
    assert srv.request("GET", url + "files/report.pdf")[0] == 404  # nothing to read
    assert srv.request("GET", url + "files/")[0] == 404
    assert srv.request("PUT", url + "files/../escaped.txt", body=b"x")[0] in (400, 403)
    assert not (srv.home("alice") / "escaped.txt").exists()
    # A dropped folder's folders may be made; nothing else may be changed.
    assert srv.request("POST", url + "files/album/inner?op=mkdir&parents=1")[0] == 201
    assert (srv.home("alice") / "inbox" / "album" / "inner").is_dir()
    assert srv.request("POST", url + "files/report.pdf?op=move&to=/x.pdf")[0] == 404
    assert srv.request("DELETE", url + "files/report.pdf")[0] == 404
    status, _h, body = srv.request("PUT", url + "files/big.bin", body=b"x" * (2 * 1024 * 1024))
    assert status == 413, body  # alice's quota is 1 MiB
    status, quota = srv.json("GET", "/api/quota", user="alice")
    assert quota["used_bytes"] >= len(b"dropped")


def test_links_are_listed_and_revoked_by_their_owner_only(srv):
    srv.add_user("bob")
    link = share(srv, "/docs/a.txt")
    status, listed = srv.json("GET", "/shares/", user="alice")
    assert [s["id"] for s in listed["shares"]] == [link["id"]] and "url" not in listed["shares"][0]
    assert srv.json("GET", "/shares/", user="bob")[1] == {"shares": []}
    assert srv.request("DELETE", "/shares/" + link["id"], user="bob")[0] == 404
    assert srv.request("DELETE", "/shares/" + link["id"], user="alice")[0] == 204
    assert srv.request("GET", link["url"] + "files/")[0] == 404
    assert srv.request("GET", "/shares/")[0] == 401


def test_an_expired_link_is_refused(srv):
    url = share(srv, "/docs/a.txt", expires_in=0.3)["url"]
    assert srv.request("GET", url + "files/")[0] == 200
    time.sleep(0.4)
    assert srv.request("GET", url + "files/")[0] == 404
    assert srv.request("GET", url + "info")[0] == 404
    status, _h, body = srv.request("GET", url)
    assert status == 404 and b"share.js" in body  # the page, which says the link is gone


def test_bad_share_requests_get_clear_errors(srv):
    for fields, why in (
        ({"path": "/docs/a.txt", "kind": "drop"}, "a drop link opens a folder"),
        ({"path": "/docs/a.txt", "kind": "write"}, "kind"),
        ({"path": "/nothing"}, "no such"),
        ({"path": "/docs", "expires_in": -1}, "expires_in"),
        ({"path": "/docs", "expires_in": True}, "expires_in"),
        ({"path": "/docs", "password": ""}, "password"),
        ({"path": "/../etc"}, "root"),
    ):
        status, body = srv.json(
            "POST", "/shares/", body=json.dumps(fields), headers={"Content-Type": "application/json"}, user="alice"
        )
        assert status in (400, 404) and why in body["message"], (fields, body)
    assert srv.request("GET", "/s/not-a-link/files/")[0] == 404
    assert srv.request("GET", "/s/")[0] == 404


def tus_metadata(**fields) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def test_a_drop_link_takes_resumable_tus_uploads_under_its_own_url(srv):
    url = share(srv, "/inbox", kind="drop")["url"]
    data = b"resumable drop"
    head = {"Tus-Resumable": "1.0.0"}
    create = {
        **head,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": tus_metadata(path="/d.bin", checksum=of_bytes(data)),
    }
    status, headers, _ = srv.request("POST", url + "tus/", headers=create)
    assert status == 201, headers
    location = headers["location"]
    assert location.startswith(url + "tus/")  # the upload's URL stays under the link
    chunk = {**head, "Content-Type": "application/offset+octet-stream"}
    assert srv.request("PATCH", location, body=data[:5], headers={**chunk, "Upload-Offset": "0"})[0] == 204
    assert srv.request("HEAD", location, headers=head)[1]["upload-offset"] == "5"
    assert srv.request("PATCH", location, body=data[5:], headers={**chunk, "Upload-Offset": "5"})[0] == 204
    assert (srv.home("alice") / "inbox" / "d.bin").read_bytes() == data
    status, _h, body = srv.request("POST", url + "tus/", headers=create)  # the same name again: refused
    assert status == 403, body
    escape = {**create, "Upload-Metadata": tus_metadata(path="/../secret.txt")}
    assert srv.request("POST", url + "tus/", headers=escape)[0] == 400
    read_url = share(srv, "/docs")["url"]
    assert srv.request("POST", read_url + "tus/", headers=create)[0] == 404  # a read link takes nothing
