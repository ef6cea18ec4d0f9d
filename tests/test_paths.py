"""Client paths to jailed storage paths: paths.resolve, pure."""

from __future__ import annotations

import pytest

from sockftp.protocol.errors import PathRefused
from sockftp.protocol.limits import MAX_NAME_LENGTH, MAX_PATH_DEPTH, MAX_PATH_LENGTH
from sockftp.protocol.paths import ROOT, check_name, is_within, parent, resolve, to_text


@pytest.mark.parametrize(
    "cwd, raw, expected",
    [
        ((), "", ()),
        ((), "/", ()),
        ((), "a", ("a",)),
        ((), "/a/b", ("a", "b")),
        (("x",), "a", ("x", "a")),
        (("x",), "/a", ("a",)),
        (("x", "y"), "", ("x", "y")),
        (("x", "y"), "..", ("x",)),
        (("x", "y"), "../..", ()),
        (("x",), "./a/./b/", ("x", "a", "b")),
        ((), "a//b///c", ("a", "b", "c")),
        ((), "a/b/../c", ("a", "c")),
        ((), "a/..", ()),
        ((), "/etc/passwd", ("etc", "passwd")),  # absolute means the jail's root
        ((), "données/日本語 file.txt", ("données", "日本語 file.txt")),
        ((), "...", ("...",)),
        ((), "..a", ("..a",)),
        ((), " spaced ", (" spaced ",)),
        ((), "a:b*?<>|\"'", ("a:b*?<>|\"'",)),
    ],
)
def test_resolve_accepts(cwd, raw, expected):
    assert resolve(cwd, raw) == expected


@pytest.mark.parametrize(
    "cwd, raw",
    [
        ((), ".."),
        ((), "../x"),
        ((), "/../x"),
        ((), "a/../../x"),
        (("x",), "../../y"),
        (("x",), "/.."),
        ((), "a\\b"),
        ((), "..\\x"),
        ((), "a\x00b"),
        ((), "a\nb"),
        ((), "a\rb"),
        ((), "tab\there"),
        ((), "esc\x1b[31m"),
        ((), "del\x7f"),
        ((), "c1\x85"),
        ((), "c1\x9f"),
        ((), "lone\ud800surrogate"),
        ((), ".sockftp-part-0123"),
        ((), "dir/.sockftp"),
        ((), ".sockftpanything"),
    ],
)
def test_resolve_refuses(cwd, raw):
    with pytest.raises(PathRefused) as info:
        resolve(cwd, raw)
    assert info.value.code == "path_refused"


@pytest.mark.parametrize("raw", [None, 3, b"a", ["a"]])
def test_resolve_refuses_non_strings(raw):
    with pytest.raises(PathRefused):
        resolve((), raw)


def test_name_length_limit_in_utf8_bytes():
    assert resolve((), "a" * MAX_NAME_LENGTH) == ("a" * MAX_NAME_LENGTH,)
    with pytest.raises(PathRefused):
        resolve((), "a" * (MAX_NAME_LENGTH + 1))
    # "é" is two bytes in UTF-8: 128 of them are 256 bytes.
    with pytest.raises(PathRefused):
        resolve((), "é" * 128)
    assert resolve((), "é" * 127) == ("é" * 127,)


def test_path_length_limit_in_utf8_bytes():
    raw = "/".join(["a" * 99] * 41)  # 41 * 100 - 1 = 4099 bytes
    assert len(raw) > MAX_PATH_LENGTH
    with pytest.raises(PathRefused):
        resolve((), raw)
    ok = raw[:MAX_PATH_LENGTH]
    assert len(resolve((), ok)) == 41


def test_relative_path_from_a_deep_cwd_is_bounded_by_the_full_length():
    cwd = ("c" * 199,) * 20  # 20 * 200 - 1 = 3999 bytes
    assert resolve(cwd, "b" * 96) == cwd + ("b" * 96,)  # exactly 4096
    with pytest.raises(PathRefused):
        resolve(cwd, "b" * 97)
    assert resolve(cwd, "../" + "b" * 255)[-1] == "b" * 255  # shorter once resolved


def test_path_depth_limit():
    assert len(resolve((), "/".join(["a"] * MAX_PATH_DEPTH))) == MAX_PATH_DEPTH
    with pytest.raises(PathRefused):
        resolve((), "/".join(["a"] * (MAX_PATH_DEPTH + 1)))
    with pytest.raises(PathRefused):
        resolve(("a",) * MAX_PATH_DEPTH, "b")


def test_check_name_refuses_reserved_prefix_and_long_names():
    check_name("normal")
    with pytest.raises(PathRefused):
        check_name(".sockftp-part-x")
    with pytest.raises(PathRefused):
        check_name("x" * 256)


def test_to_text_parent_and_is_within():
    assert to_text(ROOT) == "/"
    assert to_text(("a", "b")) == "/a/b"
    assert parent(("a", "b")) == ("a",)
    assert is_within(("a", "b"), ("a",))
    assert is_within(("a",), ("a",))
    assert not is_within(("ab",), ("a",))
    assert not is_within(("a",), ("a", "b"))


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _model(cwd, names, absolute):
    """A reference walk: None when the path is refused."""
    parts = [] if absolute else list(cwd)
    for name in names:
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                return None
            parts.pop()
        elif "\\" in name or "\x00" in name:
            return None
        else:
            parts.append(name)
    return tuple(parts)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "é", "x\\y", "\x00"]), max_size=12), st.booleans())
def test_resolve_agrees_with_a_reference_walk_and_never_climbs_above_the_root(names, absolute):
    raw = ("/" if absolute else "") + "/".join(names)
    cwd = ("home",)
    expected = _model(cwd, names, raw.startswith("/"))
    if expected is None:
        with pytest.raises(PathRefused):
            resolve(cwd, raw)
    else:
        assert resolve(cwd, raw) == expected
