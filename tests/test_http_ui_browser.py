"""The browser UI in a real browser (Debian's chromium through Playwright):
logging in, browsing, picking and dropping files and folders, an upload
cut off and resumed after a reload, download, rename, delete, the quota
bar, share links, and hostile file names that must stay text."""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import unquote

import pytest
from browser_support import CHROMIUM, browser_fixture, new_page_fixture, snap  # noqa: F401 - fixtures
from http_support import PASSWORD, http_server_fixture  # noqa: F401 - the fixture

from sockftp.protocol.checksum import of_bytes

MiB = 1024 * 1024


@pytest.fixture
def srv(http_server):
    server = http_server()
    home = server.add_user("alice", quota_bytes=64 * MiB)
    home.mkdir(parents=True, exist_ok=True)
    return server


def log_in(watched, srv, user="alice", password=PASSWORD):
    page = watched.page
    page.goto(srv.base + "/")
    page.fill("#login-form input[name=user]", user)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app", state="visible")
    return page


def row(page, name):
    """The listing's row whose name cell is exactly *name*."""
    return page.locator("#entries tr").filter(has=page.get_by_text(name, exact=True))


def test_the_system_browser_launches(browser):
    # If this fails, the others cannot run: Debian's chromium no longer
    # starts under Playwright (see tests/browser_support.py).
    page = browser.new_page()
    try:
        assert page.evaluate("1 + 1") == 2
        assert browser.version, f"{CHROMIUM} gave no version"
    finally:
        page.close()


def test_logging_in_browsing_mkdir_rename_delete_download_and_the_quota_bar(srv, new_page, tmp_path):
    home = srv.home("alice")
    (home / "docs").mkdir()
    (home / "docs" / "report.txt").write_bytes(b"quarterly numbers\n")
    (home / "big.bin").write_bytes(os.urandom(3 * MiB))
    watched = new_page()
    page = watched.page
    page.goto(srv.base + "/")
    snap(page, "login")
    page.fill("#login-form input[name=user]", "alice")
    page.fill("#login-form input[name=password]", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-error:not(:empty)")
    log_in(watched, srv)
    assert page.text_content("#user") == "alice"

    row(page, "docs").locator("button.open").click()
    page.wait_for_selector("#entries a.download")
    assert [c.text_content() for c in page.locator("#crumbs .crumb").all()] == ["home", "docs"]
    with page.expect_download() as download:
        row(page, "report.txt").locator("a.download").click()
    assert download.value.suggested_filename == "report.txt"
    assert open(download.value.path(), "rb").read() == b"quarterly numbers\n"

    page.click("#mkdir")
    page.fill("#name-form input[name=newname]", "new folder")
    page.click("#name-form button[type=submit]")
    row(page, "new folder").wait_for()
    assert (home / "docs" / "new folder").is_dir()

    row(page, "report.txt").locator("button.rename").click()
    page.fill("#name-form input[name=newname]", "renamed.txt")
    page.click("#name-form button[type=submit]")
    row(page, "renamed.txt").wait_for()
    assert (home / "docs" / "renamed.txt").exists() and not (home / "docs" / "report.txt").exists()

    row(page, "new folder").locator("button.delete").click()
    row(page, "new folder").wait_for(state="detached")
    assert not (home / "docs" / "new folder").exists()

    page.locator("#crumbs .crumb", has_text="home").click()
    row(page, "big.bin").wait_for()
    width = page.eval_on_selector("#quota-fill", "e => parseFloat(e.style.width)")
    assert 3 < width < 7  # 3 MiB of 64
    assert "of 64.0 MiB" in page.text_content("#quota-text")

    page.click("th button[data-sort=size]")  # smallest first, folders on top
    assert [c.text_content() for c in page.locator("#entries td.name").all()] == ["docs", "big.bin"]
    page.reload()  # the login and the folder survive a reload
    row(page, "big.bin").wait_for()
    snap(page, "browse")
    watched.assert_clean()


def test_a_login_that_ended_brings_the_login_form_back_instead_of_a_hung_request(srv, new_page):
    watched = new_page()
    page = log_in(watched, srv)
    srv.front.extensions["ui"].close()  # every browser login ends (as after IDLE, or a restart)
    page.click("#mkdir")
    page.fill("#name-form input[name=newname]", "late")
    page.click("#name-form button[type=submit]")
    page.wait_for_selector("#login", state="visible", timeout=5_000)
    assert not (srv.home("alice") / "late").exists()
    log_in(watched, srv)  # and a new login carries on
    watched.assert_clean()


def test_picked_and_dropped_files_and_folders_upload_verified(srv, new_page, tmp_path):
    first, second = tmp_path / "one.txt", tmp_path / "two.bin"
    first.write_bytes(b"first file\n")
    second.write_bytes(os.urandom(300_000))
    folder = tmp_path / "album"
    (folder / "inner").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"not really a jpeg")
    (folder / "inner" / "b.jpg").write_bytes(b"nor this")
    watched = new_page()
    page = log_in(watched, srv)
    home = srv.home("alice")

    page.set_input_files("#pick-files", [str(first), str(second)])
    page.wait_for_function("() => document.querySelectorAll('#upload-list .upload.done').length === 2")
    assert (home / "one.txt").read_bytes() == first.read_bytes()
    assert (home / "two.bin").read_bytes() == second.read_bytes()

    page.set_input_files("#pick-folder", str(folder))
    page.wait_for_function("() => document.querySelectorAll('#upload-list .upload.done').length === 4")
    assert (home / "album" / "inner" / "b.jpg").read_bytes() == b"nor this"

    # A drop, as the browser makes one: a DataTransfer holding a file.
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped bytes"], "dropped.txt", {type: "text/plain"}));
            const zone = document.getElementById("drop");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
        }"""
    )
    page.wait_for_function("() => document.querySelectorAll('#upload-list .upload.done').length === 5")
    assert (home / "dropped.txt").read_bytes() == b"dropped bytes"
    assert "5 of 5 files" in page.text_content("#total-text")
    assert page.eval_on_selector("#total-fill", "e => parseFloat(e.style.width)") == 100
    snap(page, "uploads")
    watched.assert_clean()


def test_an_upload_cut_off_then_reloaded_resumes_to_a_verified_file(srv, new_page, tmp_path):
    big = tmp_path / "movie.bin"
    big.write_bytes(os.urandom(20 * MiB))  # two tus PATCHes of 16 MiB at most
    watched = new_page()
    page = log_in(watched, srv)
    patches: list[str] = []

    def cut_after_first_patch(route):
        request = route.request
        if request.method == "PATCH":
            patches.append(request.headers.get("upload-offset"))
            if len(patches) > 1:
                return route.abort("connectionreset")  # the network drops
        return route.continue_()

    page.route("**/tus/**", cut_after_first_patch)
    page.set_input_files("#pick-files", str(big))
    for _ in range(300):  # until the first PATCH is answered and the second is cut
        if len(patches) > 1:
            break
        page.wait_for_timeout(50)
    assert patches[:2] == ["0", str(16 * MiB)], patches
    assert not (srv.home("alice") / "movie.bin").exists()

    page.reload()
    page.unroute("**/tus/**")
    page.wait_for_selector("#resumable:not([hidden])")
    assert "/movie.bin" in page.text_content("#resumable")
    resumed: list[str] = []
    page.on("request", lambda r: r.method == "PATCH" and resumed.append(r.headers.get("upload-offset")))
    page.set_input_files("#pick-files", str(big))
    page.wait_for_selector("#upload-list .upload.done")
    assert resumed and int(resumed[0]) == 16 * MiB, resumed  # it went on from where it was cut, not from 0
    assert (srv.home("alice") / "movie.bin").read_bytes() == big.read_bytes()
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tus::')).length") == 0
    watched.assert_clean()


HOSTILE = [
    "<img src=x onerror=alert(1)>.txt",
    "quote\"and'apostrophe.txt",
    "<svg onload=alert(2)>",
]


def test_hostile_names_are_shown_as_text_and_no_script_runs(srv, new_page):
    home = srv.home("alice")
    for name in HOSTILE:
        (home / name).write_bytes(b"payload")
    (home / "line\r\nbreak.txt").write_bytes(b"x")
    os.mkdir(os.path.join(os.fsencode(home), b"not utf-8 \xff\xfe"))
    watched = new_page()
    page = log_in(watched, srv)
    row(page, HOSTILE[0]).wait_for()
    names = [c.text_content() for c in page.locator("#entries td.name").all()]
    for name in HOSTILE:
        assert name in names
    assert "line\r\nbreak.txt" in names
    assert "not utf-8 \\xff\\xfe" in names  # the bytes, escaped, as text
    assert page.locator("#entries img, #entries script").count() == 0
    for name in HOSTILE[:2]:
        with page.expect_response(lambda r: "/files/" in r.url) as response, page.expect_download() as download:
            row(page, name).locator("a.download").click()
        disposition = response.value.headers["content-disposition"]
        assert disposition.startswith("attachment;")
        assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name  # RFC 6266: the exact name
        # chromium then makes it a safe local name: <, >, " and the like become _.
        assert download.value.suggested_filename == re.sub(r'[<>:"/\\|?*]', "_", name)
        assert open(download.value.path(), "rb").read() == b"payload"
    page.click("#crumbs .crumb")
    watched.assert_clean()


def test_share_links_made_used_and_revoked_in_the_browser(srv, new_page, tmp_path):
    home = srv.home("alice")
    (home / "photos").mkdir()
    (home / "photos" / "cat.jpg").write_bytes(b"meow")
    (home / "inbox").mkdir()
    owner = new_page()
    page = log_in(owner, srv)

    row(page, "photos").locator("button.share").click()
    page.fill("#share-form input[name=password]", "tuna")
    page.click("#share-form button[type=submit]")
    page.wait_for_selector("#share-made:not([hidden])")
    read_url = page.get_attribute("#share-url", "href")

    row(page, "inbox").locator("button.share").click()
    page.select_option("#share-form select[name=kind]", "drop")
    page.click("#share-form button[type=submit]")
    page.wait_for_function(f"() => document.getElementById('share-url').getAttribute('href') !== {read_url!r}")
    drop_url = page.get_attribute("#share-url", "href")
    page.click("#show-shares")
    page.wait_for_function("() => document.querySelectorAll('#share-list tr').length === 2")
    row(page, "inbox").wait_for()
    snap(page, "shares")

    visitor = new_page()
    guest = visitor.page
    guest.goto(srv.base + read_url)
    guest.fill("#unlock-form input[name=password]", "wrong")
    guest.click("#unlock-form button[type=submit]")
    guest.wait_for_selector("#share-error:not(:empty)")
    guest.fill("#unlock-form input[name=password]", "tuna")
    guest.click("#unlock-form button[type=submit]")
    guest.wait_for_selector("#entries a.download")
    with guest.expect_download() as download:
        guest.click("#entries a.download")
    assert open(download.value.path(), "rb").read() == b"meow"
    snap(guest, "share-read")

    dropper = new_page()
    drop_page = dropper.page
    drop_page.goto(srv.base + drop_url)
    drop_page.wait_for_selector("#drop-box:not([hidden])")
    dropped = tmp_path / "homework.pdf"
    dropped.write_bytes(b"%PDF pretend")
    drop_page.set_input_files("#pick-files", str(dropped))
    drop_page.wait_for_selector("#upload-list .upload.done")
    assert (home / "inbox" / "homework.pdf").read_bytes() == b"%PDF pretend"
    snap(drop_page, "share-drop")

    page.locator("#share-list tr", has_text="/photos").locator("button.revoke").click()
    page.wait_for_function("() => document.querySelectorAll('#share-list tr').length === 1")
    assert guest.goto(srv.base + read_url).status == 404
    guest.wait_for_selector("#share-error:not(:empty)")
    assert "does not exist" in guest.text_content("#share-error")
    for watched in (owner, visitor, dropper):
        watched.assert_clean()


def test_the_page_sends_the_files_xxh3_and_a_mismatch_is_refused_after_a_dropped_request_is_retried(
    srv, new_page, tmp_path
):
    sample = tmp_path / "sample.bin"
    sample.write_bytes(os.urandom(100_000))
    watched = new_page()
    page = log_in(watched, srv)
    sent: list[str] = []
    cut: list[str] = []

    def tamper(route):
        request = route.request
        if request.method == "POST":
            fields = dict(pair.split(" ") for pair in request.headers["upload-metadata"].split(","))
            sent.append(base64.b64decode(fields["checksum"]).decode())
            fields["checksum"] = base64.b64encode(b"xxh3-128:" + b"0" * 32).decode()
            headers = {**request.headers, "upload-metadata": ",".join(f"{k} {v}" for k, v in fields.items())}
            return route.continue_(headers=headers)
        if request.method == "PATCH" and not cut:
            cut.append(request.headers["upload-offset"])
            return route.abort("connectionreset")  # a dropped request: tus retries it
        return route.continue_()

    page.route("**/tus/**", tamper)
    page.set_input_files("#pick-files", str(sample))
    page.locator("#upload-list .upload.failed").wait_for()
    assert sent == [of_bytes(sample.read_bytes())]  # the browser's XXH3-128 is sockftp's
    assert cut == ["0"]
    assert "arrived damaged" in page.text_content("#upload-list .status")
    assert not (srv.home("alice") / "sample.bin").exists()  # refused: nothing under the name
    watched.assert_clean()
