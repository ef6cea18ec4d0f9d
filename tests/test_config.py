"""The config file and `serve`'s options: every setting can be set in either,
options override the file, and a bad key or value stops the server at
start-up with one clear line."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import wait_until

from sockftp.accounts import Account, SqliteUserStore, hash_password
from sockftp.server.config import SETTINGS, ConfigError, ServerConfig, load_config, parse_size, users_db

# -- sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("123", 123),
        ("100B", 100),
        ("64K", 64 * 1024),
        ("64k", 64 * 1024),
        ("10M", 10 * 1024**2),
        ("10MB", 10 * 1024**2),
        ("10MiB", 10 * 1024**2),
        ("10 mib", 10 * 1024**2),
        ("1.5G", 3 * 1024**3 // 2),
        (".5K", 512),
        ("1.1K", 1126),  # rounded down to whole bytes
        ("2T", 2 * 1024**4),
        ("1P", 1024**5),
        (" 7 ", 7),
        (42, 42),
    ],
)
def test_parse_size_reads_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1", "1e3", "10X", "5iB", "1.5", "ten", "1 2K", "9" * 30, True, 1.5, -5])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


# -- the config file ------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "sockftp.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_file_sets_every_setting(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    path = write(
        tmp_path,
        """
        host = "::1"
        port = 2121
        root = "/srv/sockftp"
        anonymous = true
        max_sessions = 100
        max_sessions_per_ip = 10
        idle_timeout = 60
        header_timeout = 5.5
        shutdown_grace = 0
        fsync = true
        sendfile = true
        log_level = "DEBUG"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        session_rate = "10M"
        user_rate = 1048576
        login_failure_delay = 0.5
        ban_failures = 3
        ban_window = 60
        ban_time = 3600
        audit_log = "/var/log/sockftp-audit.log"
        """,
    )
    config = load_config(path)
    assert config == ServerConfig(
        host="::1",
        port=2121,
        root="/srv/sockftp",
        anonymous=True,
        max_sessions=100,
        max_sessions_per_ip=10,
        idle_timeout=60.0,
        header_timeout=5.5,
        shutdown_grace=0.0,
        fsync=True,
        sendfile=True,
        log_level="debug",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        session_rate=10 * 1024**2,
        user_rate=1024**2,
        login_failure_delay=0.5,
        ban_failures=3,
        ban_window=60.0,
        ban_time=3600.0,
        audit_log="/var/log/sockftp-audit.log",
    )
    assert isinstance(config.idle_timeout, float)


def test_every_server_setting_has_a_checked_key():
    """A new ServerConfig field must be added to SETTINGS (and docs/CONFIG.md)."""
    assert set(SETTINGS) == {f.name for f in fields(ServerConfig)}


def test_every_key_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "CONFIG.md").read_text()
    missing = [name for name in SETTINGS if f"`{name}`" not in doc]
    assert not missing, f"docs/CONFIG.md does not describe {missing}"


def test_an_empty_file_gives_the_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SOCKFTP_ROOT", str(tmp_path / "data"))
    assert load_config(write(tmp_path, "# nothing yet\n")) == ServerConfig()
    assert load_config(None) == ServerConfig()


def test_a_rate_of_zero_means_no_limit(tmp_path):
    config = load_config(write(tmp_path, 'session_rate = 0\nuser_rate = "0M"\n'))
    assert config.session_rate is None and config.user_rate is None


def test_relative_paths_are_taken_from_the_files_directory(tmp_path, monkeypatch):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "tls").mkdir()
    (conf / "tls" / "cert.pem").write_text("x")
    (conf / "tls" / "key.pem").write_text("x")
    monkeypatch.chdir(tmp_path)  # elsewhere
    path = write(
        conf,
        'root = "data"\naudit_log = "../log/audit.log"\ntls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n',
    )
    config = load_config(path)
    assert config.root == str(conf / "data")
    assert config.audit_log == str(tmp_path / "log" / "audit.log")
    assert config.tls_cert == str(conf / "tls" / "cert.pem")
    assert config.tls_key == str(conf / "tls" / "key.pem")


def test_options_override_the_file(tmp_path):
    path = write(tmp_path, 'port = 2121\nanonymous = true\nsession_rate = "1M"\nmax_sessions = 5\n')
    config = load_config(path, {"port": 0, "anonymous": False, "session_rate": "2M", "max_sessions": None})
    assert (config.port, config.anonymous, config.session_rate) == (0, False, 2 * 1024**2)
    assert config.max_sessions == 5, "an option left out (None) does not override"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prot = 1", "unknown key 'prot' (did you mean 'port'?)"),
        ("max-sessions = 1", "unknown key 'max-sessions' (did you mean 'max_sessions'?)"),
        ("idle_timout = 1", "unknown key 'idle_timout' (did you mean 'idle_timeout'?)"),
        ("colour = 1", "unknown key 'colour'"),
        ('[tls]\ncert = "c.pem"', "unknown section [tls]: settings are top-level keys, e.g. tls_cert = ..."),
    ],
)
def test_an_unknown_key_is_named_with_the_file_and_the_closest_key(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('port = "x"', 'port: expected an integer from 0 to 65535, got "x"'),
        ("port = 21.0", "port: expected an integer from 0 to 65535, got 21.0"),
        ('anonymous = "yes"', 'anonymous: expected true or false, got "yes"'),
        ("fsync = 1", "fsync: expected true or false, got 1"),
        ("idle_timeout = true", "idle_timeout: expected a number of seconds above 0, got true"),
        ('idle_timeout = "5"', 'idle_timeout: expected a number of seconds above 0, got "5"'),
        ("host = 1", "host: expected a non-empty string, got 1"),
        ('host = ""', 'host: expected a non-empty string, got ""'),
        ("root = []", "root: expected a path (a string), got an array"),
        ('log_level = "loud"', 'log_level: expected one of "debug", "info", "warning", "error", got "loud"'),
        ("session_rate = 1.5", 'session_rate: expected a size (bytes, or a string such as "10M"), got 1.5'),
        ('user_rate = "fast"', "user_rate: not a size: 'fast'"),
        ('audit_log = "a\\nb"', None),  # accepted: any path
    ],
)
def test_a_value_of_the_wrong_type_is_named_with_what_was_expected(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    if message is None:
        load_config(path)
        return
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 70000", "port: expected an integer from 0 to 65535, got 70000"),
        ("port = -1", "port: expected an integer from 0 to 65535, got -1"),
        ("max_sessions = 0", "max_sessions: expected an integer of at least 1, got 0"),
        ("max_sessions_per_ip = -3", "max_sessions_per_ip: expected an integer of at least 1, got -3"),
        ("idle_timeout = 0", "idle_timeout: expected a number of seconds above 0, got 0"),
        ("header_timeout = -1.5", "header_timeout: expected a number of seconds above 0, got -1.5"),
        ("shutdown_grace = -1", "shutdown_grace: expected a number of seconds of at least 0, got -1"),
        ("idle_timeout = inf", "idle_timeout: expected a number of seconds above 0, got inf"),
        ("idle_timeout = nan", "idle_timeout: expected a number of seconds above 0, got nan"),
        ("login_failure_delay = -0.1", "login_failure_delay: expected a number of seconds of at least 0, got -0.1"),
        ("ban_failures = 0", "ban_failures: expected an integer of at least 1, got 0"),
        ("ban_window = 0", "ban_window: expected a number of seconds above 0, got 0"),
        ("session_rate = -1", "session_rate: a size cannot be negative: -1"),
        ('tls_cert = "missing.pem"\ntls_key = "missing.pem"', "tls_cert: no such file: "),
    ],
)
def test_a_value_out_of_range_is_refused(tmp_path, text, message):
    path = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: {message}")


def test_a_certificate_needs_its_key(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    with pytest.raises(ConfigError, match="tls_cert is set but tls_key is not"):
        load_config(write(tmp_path, 'tls_cert = "cert.pem"\n'))
    with pytest.raises(ConfigError, match="tls_key is set but tls_cert is not"):
        load_config(None, {"tls_key": str(tmp_path / "cert.pem")})


def test_a_bad_option_value_names_the_option(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, 'session_rate = "1M"\n'), {"session_rate": "fast"})
    assert str(error.value).startswith("--session-rate: not a size: 'fast'")
    assert error.value.option == "--session-rate"


def test_a_file_that_is_not_toml_or_is_missing_is_named(tmp_path):
    path = write(tmp_path, "port = \n")
    with pytest.raises(ConfigError, match=r"sockftp.toml: not valid TOML: .*line 1"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"cannot read config file .*nowhere.toml: No such file"):
        load_config(str(tmp_path / "nowhere.toml"))


def test_server_config_itself_checks_ranges():
    with pytest.raises(ValueError, match="port"):
        ServerConfig(port=70000)
    with pytest.raises(ValueError, match="ban_failures"):
        ServerConfig(ban_failures=0)
    assert ServerConfig(session_rate=0).session_rate is None


# -- the serve command --------------------------------------------------------------------


class Serve:
    """``sockftp serve ARGS`` as a subprocess, stopped at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        """Run serve until it fails (for bad settings)."""
        return subprocess.run(
            [sys.executable, "-m", "sockftp", "serve", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp_path,
        )

    def start(self, *args: str, timeout: float = 15.0) -> tuple[subprocess.Popen, int, str]:
        """Start serve; returns the process, its port and what it printed before listening."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "sockftp", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp_path,
        )
        self.procs.append(proc)
        seen = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"sockftp listening on " not in seen or not seen.endswith(b"\n"):
                left = deadline - time.monotonic()
                assert left > 0 and selector.select(left), f"serve printed no listening line: {seen!r}"
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"serve exited ({proc.wait()}) before listening: {seen!r}"
                seen += chunk
        text = seen.decode()
        port = int(text.rsplit("sockftp listening on ", 1)[1].strip().rsplit(":", 1)[1])
        return proc, port, text

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()


@pytest.fixture
def serve(tmp_path):
    runner = Serve(tmp_path)
    yield runner
    runner.stop_all()


def test_options_override_the_config_file(serve, tmp_path):
    with socket.socket() as taken:  # the file's port is busy: only --port 0 lets serve start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        write(tmp_path, f'port = {taken.getsockname()[1]}\nroot = "data"\nanonymous = true\n', "conf.toml")
        _proc, port, out = serve.start("--config", "conf.toml", "--port", "0")
        assert port != taken.getsockname()[1]
    assert f"data directory {tmp_path / 'data'}\n" in out
    assert f"anonymous access is on: clients share {tmp_path / 'data'}/anonymous" in out
    assert out.endswith(f"sockftp listening on 127.0.0.1:{port}\n")

    _proc, _port, out = serve.start("--config", "conf.toml", "--port", "0", "--no-anonymous")
    assert "anonymous access is on" not in out


def test_a_bad_config_file_stops_serve_with_one_line(serve, tmp_path):
    write(tmp_path, "prot = 2121\n", "conf.toml")
    result = serve.run("--config", "conf.toml")
    assert result.returncode == 1
    assert result.stderr == "Error: conf.toml: unknown key 'prot' (did you mean 'port'?)\n"
    assert result.stdout == ""


def test_a_bad_size_option_is_a_usage_error(serve):
    result = serve.run("--session-rate", "fast", "--port", "0")
    assert result.returncode == 2
    assert "Error: --session-rate: not a size: 'fast'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_line(serve):
    result = serve.run("--config", "nowhere.toml")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot read config file nowhere.toml: No such file")
    assert result.stderr.count("\n") == 1


def test_serve_without_users_says_how_to_add_one(serve, tmp_path):
    root = tmp_path / "data"
    _proc, _port, out = serve.start("--port", "0", "--root", str(root))
    assert (
        f"no users yet: add one with  sockftp user add NAME --root {root}"
        f"  (or restart with --anonymous to share {root}/anonymous)\n"
    ) in out


def test_serve_with_users_says_that_login_is_required(serve, tmp_path):
    root = tmp_path / "data"
    (root / ".sockftp").mkdir(parents=True)
    store = SqliteUserStore(users_db(str(root)))
    store.add(Account("alice", hash_password("pw")))
    store.close()
    _proc, _port, out = serve.start("--port", "0", "--root", str(root))
    assert "1 user; clients must log in (anonymous access is off)\n" in out
    assert "no users yet" not in out


def test_serve_writes_the_audit_log_its_option_names(serve, tmp_path, files):
    from sockftp.client import Client

    _proc, port, out = serve.start("--port", "0", "--root", "data", "--anonymous", "--audit-log", "audit.log")
    assert f"audit log: {tmp_path / 'audit.log'}\n" in out
    with Client("127.0.0.1", port, timeout=10) as client:
        client.put(str(files("a.txt", b"abc")), "a.txt")
    audit_log = tmp_path / "audit.log"
    wait_until(lambda: audit_log.read_text(), what="the audit line")  # written just after the reply
    lines = audit_log.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        " event=put user=anonymous ip=127.0.0.1 path='/a.txt' bytes=3 result=ok"
    )


def test_help_lists_every_setting(serve):
    result = subprocess.run(
        [sys.executable, "-m", "sockftp", "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    for name in SETTINGS:
        assert "--" + name.replace("_", "-") in result.stdout
    assert "--config" in result.stdout
