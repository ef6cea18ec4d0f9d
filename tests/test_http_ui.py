"""The browser UI's server side, without a browser: the page and its
policy, logging in by cookie, CSRF, sliding expiry, and logging out."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest
import trustme
from http_support import PASSWORD, http_server_fixture  # noqa: F401 - the fixture

from sockftp.accounts import SqliteUserStore
from sockftp.accounts.passwords import hash_password
from sockftp.http import websession
from sockftp.http.websession import WebLogins
from sockftp.protocol.errors import Banned


def login(srv, user="alice", password=PASSWORD, headers=None):
    """(status, cookie secret or None, JSON body) of a browser login."""
    status, response_headers, body = srv.request(
        "POST",
        "/ui/login",
        body=json.dumps({"user": user, "password": password}),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    cookie = response_headers.get("set-cookie")
    secret = cookie.split(";", 1)[0].split("=", 1)[1] if cookie else None
    try:
        data = json.loads(body)
    except ValueError:  # refused before any handler (a banned address, at connect)
        data = {"error": body.decode()}
    return status, secret, data, cookie


def as_browser(secret, csrf=None, **headers):
    out = {"Cookie": f"{websession.COOKIE}={secret}", **headers}
    if csrf is not None:
        out["X-CSRF-Token"] = csrf
    return out


@pytest.fixture
def srv(http_server):
    server = http_server()
    server.add_user("alice")
    return server


def test_the_page_and_its_scripts_are_served_under_a_policy_that_runs_only_them(srv):
    status, headers, body = srv.request("GET", "/")
    assert status == 200 and b'<script src="/static/app.js"' in body
    csp = headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "unsafe-inline" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = srv.request("GET", "/static/vendor/tus.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    for path in ("/static/index.html", "/static/../ui.py", "/static/vendor/README.md", "/nothing"):
        assert srv.request("GET", path)[0] == 404, path


def test_a_login_sets_an_httponly_samesite_strict_cookie_and_wrong_ones_get_no_basic_prompt(srv):
    status, secret, body, cookie = login(srv)
    assert status == 200 and body["user"] == "alice" and len(body["csrf"]) > 30
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; under TLS it is (see set_cookie)
    assert "Secure" in websession.set_cookie("x", tls=True) and websession.cookie_name(True).startswith("__Host-")
    status, _headers, data = srv.request("GET", "/ui/session", headers=as_browser(secret))
    assert status == 200 and json.loads(data) == {"user": "alice", "csrf": body["csrf"]}

    status, secret, body, cookie = login(srv, password="wrong")
    assert status == 401 and secret is None and cookie is None
    status, headers, _ = srv.request("GET", "/ui/session")
    assert status == 401 and "www-authenticate" not in headers  # no browser pop-up


def test_the_cookie_logs_requests_in_and_every_change_needs_the_csrf_token(srv):
    _status, secret, body, _cookie = login(srv)
    csrf = body["csrf"]
    assert srv.request("GET", "/files/", headers=as_browser(secret))[0] == 200
    assert srv.request("GET", "/files/")[0] == 401
    status, _h, data = srv.request("POST", "/files/a?op=mkdir", headers=as_browser(secret))
    assert status == 403 and json.loads(data)["error"] == "csrf"
    assert srv.request("POST", "/files/a?op=mkdir", headers=as_browser(secret, "wrong" + csrf))[0] == 403
    evil = as_browser(secret, csrf, Origin="http://evil.example")
    assert srv.request("POST", "/files/a?op=mkdir", headers=evil)[0] == 403
    assert not (srv.home("alice") / "a").exists()
    origin = {"Origin": f"http://127.0.0.1:{srv.port}"}
    assert srv.request("POST", "/files/a?op=mkdir", headers=as_browser(secret, csrf, **origin))[0] == 201
    assert (srv.home("alice") / "a").is_dir()
    # A cross-site form cannot log in either: JSON only, from this origin only.
    status, _h, _d = srv.request(
        "POST",
        "/ui/login",
        body="user=alice&password=secret",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 415
    assert login(srv, headers={"Origin": "http://evil.example"})[0] == 403


def test_under_tls_the_cookie_is_secure_and_host_only(http_server, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = http_server(tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem"))
    srv.add_user("alice")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=10)
    body = json.dumps({"user": "alice", "password": PASSWORD})
    conn.request("POST", "/ui/login", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    cookie = response.getheader("set-cookie")
    assert response.status == 200
    assert cookie.startswith("__Host-sockftp_session=") and "; Secure" in cookie and "Path=/;" in cookie
    secret = cookie.split(";", 1)[0].split("=", 1)[1]
    conn.request("GET", "/ui/session", headers={"Cookie": f"__Host-sockftp_session={secret}"})
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["user"] == "alice"
    conn.close()


def test_logging_out_ends_the_cookie_at_once(srv):
    _status, secret, body, _cookie = login(srv)
    assert srv.request("POST", "/ui/logout", headers=as_browser(secret))[0] == 403  # CSRF
    status, headers, _ = srv.request("POST", "/ui/logout", headers=as_browser(secret, body["csrf"]))
    assert status == 204 and "Max-Age=0" in headers["set-cookie"]
    assert srv.request("GET", "/files/", headers=as_browser(secret))[0] == 401
    assert srv.request("GET", "/ui/session", headers=as_browser(secret))[0] == 401


def test_the_pages_requests_after_the_login_ended_get_no_basic_challenge(srv):
    # chromium holds a fetch() that meets "WWW-Authenticate: Basic" until a
    # password box (that headless never shows) is answered: the page hung.
    status, headers, data = srv.request("GET", "/files/", headers=as_browser("gone", **{"X-Sockftp-UI": "1"}))
    assert status == 403 and "www-authenticate" not in headers
    assert json.loads(data)["error"] == "login_required"
    assert srv.request("GET", "/files/")[0] == 401  # scripts still get the challenge


def test_failed_browser_logins_count_towards_a_ban(http_server):
    srv = http_server(ban_failures=2, ban_window=60, ban_time=60)
    srv.add_user("alice")
    assert login(srv, password="x")[0] == 401
    assert login(srv, password="y")[0] in (401, 403)
    with pytest.raises(Banned):  # the address is banned on every door, this one included
        srv.main.authenticator.bans.check("127.0.0.1")
    assert srv.request("GET", "/ui/session")[0] == 403


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_login_in_use_slides_past_its_idle_time_and_an_idle_one_ends():
    clock = Clock()
    logins = WebLogins(idle=100.0, clock=clock)
    busy, _ = logins.open("alice")
    idle, _ = logins.open("bob")
    for _ in range(5):  # a long upload: a PATCH every 60 s, 300 s in all
        clock.now += 60
        assert logins.find(busy) is not None
    assert logins.find(idle) is None
    assert len(logins) == 1


def test_a_changed_password_ends_the_browser_logins_of_the_old_one(tmp_path):
    clock = Clock()
    users = SqliteUserStore(str(tmp_path / "users.db"))
    from sockftp.accounts import Account

    users.add(Account("alice", hash_password("one")))
    logins = WebLogins(users=users, clock=clock)
    secret, _ = logins.open("alice", users.get("alice").password_hash)
    clock.now += websession.RECHECK
    assert logins.find(secret) is not None
    users.update("alice", password_hash=hash_password("two"))
    clock.now += websession.RECHECK
    assert logins.find(secret) is None
    users.close()


def test_logins_past_the_cap_push_out_the_least_recently_used():
    logins = WebLogins(max_logins=2)
    first, _ = logins.open("a")
    second, _ = logins.open("b")
    assert logins.find(first) is not None  # now the most recent
    logins.open("c")
    assert logins.find(second) is None and logins.find(first) is not None
