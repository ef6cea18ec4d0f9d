"""The sync's decisions, from listings alone: sockftp.client.sync_plan (pure)."""

from __future__ import annotations

import pytest

from sockftp.client.sync_plan import (
    MODIFY_WINDOW,
    Excluder,
    FileChange,
    Item,
    add_remote_entry,
    checksum_candidates,
    make_plan,
    without_excluded,
)
from sockftp.protocol.errors import PathRefused

T = 1_700_000_000.123456789


def d(mtime=T):
    return Item("dir", 0, mtime)


def f(size=10, mtime=T, checksum=None):
    return Item("file", size, mtime, checksum)


def listing(**entries):
    """A listing from keyword arguments; "__" in a name stands for "/"."""
    out = {"": d()}
    out.update({name.replace("__", "/"): item for name, item in entries.items()})
    return out


def test_a_file_is_unchanged_when_size_and_time_match_within_the_window():
    source = listing(same=f(), close=f(mtime=T + MODIFY_WINDOW / 2), late=f(mtime=T + 0.0011), big=f(size=11))
    dest = listing(same=f(), close=f(), late=f(), big=f())
    plan = make_plan(source, dest)
    assert sorted(c.path for c in plan.transfers) == ["big", "late"]
    assert all(c.old_size == 10 for c in plan.transfers)
    assert plan.checked == 4
    assert plan.changes == [("~", "big"), ("~", "late")]


def test_a_wider_window_forgives_a_filesystem_that_rounds_times():
    source = listing(a=f(mtime=1000.9))
    dest = listing(a=f(mtime=1000.0))  # FAT keeps even seconds
    assert make_plan(source, dest).transfers
    assert not make_plan(source, dest, modify_window=2).transfers


def test_with_checksum_same_size_and_time_but_other_content_is_a_change():
    source = listing(a=f(checksum="xxh3-128:" + "1" * 32), b=f(checksum="xxh3-128:" + "2" * 32))
    dest = listing(a=f(checksum="xxh3-128:" + "1" * 32), b=f(checksum="xxh3-128:" + "3" * 32))
    assert [c.path for c in make_plan(source, dest).transfers] == []  # by time: nothing
    assert [c.path for c in make_plan(source, dest, checksum=True).transfers] == ["b"]


def test_with_checksum_a_matching_content_with_another_time_only_gets_its_time():
    sums = "xxh3-128:" + "1" * 32
    plan = make_plan(listing(a=f(mtime=T + 5, checksum=sums)), listing(a=f(checksum=sums)), checksum=True)
    assert plan.transfers == []
    assert plan.touch == [FileChange("a", 10, T + 5, 10)]
    assert ("~", "a") in plan.changes


def test_with_checksum_a_file_whose_checksum_is_unknown_counts_as_changed():
    plan = make_plan(listing(a=f(checksum=None)), listing(a=f(checksum=None)), checksum=True)
    assert [c.path for c in plan.transfers] == ["a"]


def test_checksum_candidates_are_only_files_of_the_same_size_on_both_sides():
    source = listing(same=f(), other=f(size=3), new=f(), kind=f())
    dest = listing(same=f(), other=f(), kind=d())
    assert checksum_candidates(source, dest) == ["same"]


def test_new_files_and_directories_parents_first_and_their_times_deepest_first():
    source = listing(a=d(T + 1), a__b=d(T + 2), a__b__c=f(), e=d(T + 3))
    plan = make_plan(source, {})
    assert plan.mkdirs == ["a", "a/b", "e"]
    assert [c.path for c in plan.transfers] == ["a/b/c"]
    assert plan.dir_times == [("e", T + 3), ("a/b", T + 2), ("a", T + 1), ("", T)]
    assert plan.changes == [("d", "a/"), ("d", "a/b/"), ("+", "a/b/c"), ("d", "e/")]


def test_unchanged_tree_has_nothing_to_do():
    tree = listing(a=d(), a__b=f(), c=f(size=0))
    plan = make_plan(tree, dict(tree), delete=True)
    assert plan.empty and plan.changes == [] and plan.checked == 2


def test_a_directory_gets_its_time_again_when_something_inside_it_changes():
    source = listing(a=d(), a__new=f(), b=d(), b__same=f(), c=d(T + 9))
    dest = listing(a=d(), b=d(), b__same=f(), c=d())
    plan = make_plan(source, dest)
    assert [path for path, _ in plan.dir_times] == ["c", "a"]  # c by its time, a by its new file


def test_without_delete_what_the_source_lacks_stays():
    plan = make_plan(listing(), listing(old=f(), olddir=d(), olddir__x=f()))
    assert plan.remove == [] and plan.empty


def test_with_delete_what_the_source_lacks_goes_children_first():
    dest = listing(old=f(), olddir=d(), olddir__sub=d(), olddir__sub__x=f(), olddir__y=f(), keep=f())
    plan = make_plan(listing(keep=f()), dest, delete=True)
    assert plan.remove == [
        ("olddir/y", "file"),
        ("olddir/sub/x", "file"),
        ("olddir/sub", "dir"),
        ("olddir", "dir"),
        ("old", "file"),
    ]
    assert ("-", "olddir/") in plan.changes and ("-", "olddir/sub/x") in plan.changes
    assert plan.dir_times == [("", T)]  # the root's entries changed


def test_a_file_replaced_by_a_directory_and_the_reverse_even_without_delete():
    source = listing(was_file=d(), was_file__inside=f(), was_dir=f(size=4))
    dest = listing(was_file=f(), was_dir=d(), was_dir__deep=d(), was_dir__deep__x=f())
    plan = make_plan(source, dest)
    assert plan.remove == [
        ("was_dir/deep/x", "file"),
        ("was_dir/deep", "dir"),
        ("was_dir", "dir"),
        ("was_file", "file"),
    ]
    assert plan.replaced == {"was_dir", "was_file"}  # (what is inside goes with them)
    assert plan.mkdirs == ["was_file"]
    assert sorted((c.path, c.old_size) for c in plan.transfers) == [("was_dir", None), ("was_file/inside", None)]


def test_links_in_the_source_are_skipped_and_in_the_destination_replaced():
    source = listing(link=Item("link", 0, T), real=f())
    dest = listing(link=f(), real=Item("link", 0, T))
    plan = make_plan(source, dest)
    assert plan.remove == [("real", "link")]
    assert [c.path for c in plan.transfers] == ["real"]
    assert plan.checked == 1
    # With delete, the destination's file where the source has only a link goes.
    assert ("link", "file") in make_plan(source, dest, delete=True).remove


def test_excluded_names_match_the_name_or_the_relative_path():
    excluded = Excluder(["*.tmp", "build/", "docs/draft", "cache"])
    assert excluded("x.tmp", False) and excluded("a/b/x.tmp", False)
    assert excluded("build", True) and excluded("src/build", True)
    assert not excluded("build", False)  # "build/" matches directories only
    assert excluded("docs/draft", False) and not excluded("other/draft", False)
    assert excluded("cache", True) and excluded("deep/cache", False)
    assert not excluded("x.tmpl", False)
    assert not Excluder([])


def test_excluded_directories_take_all_they_hold_and_are_never_deleted():
    dest = listing(build=d(), build__out=f(), keep=f(), x_tmp=f())
    kept = without_excluded(dest, Excluder(["build/", "x_*"]))
    assert list(kept) == ["", "keep"]
    plan = make_plan(listing(), kept, delete=True)
    assert plan.remove == [("keep", "file")]


def test_changes_come_by_path_whatever_order_the_listings_came_in():
    source = {"": d(), "b": d(), "a": d(), "b/z": f(), "a/y": f(), "a/y2": f()}
    plan = make_plan(source, {"": d(), "c": f()}, delete=True)
    assert [path for _, path in plan.changes] == ["a/", "a/y", "a/y2", "b/", "b/z", "c"]


@pytest.mark.parametrize(
    "path",
    ["", "..", "a/..", "../x", "x/../../y", "/abs", "a//b", "a\\b", "nul\x00", ".", "a/.", 7, None],
)
def test_a_server_listing_cannot_name_a_path_outside_the_directory(path):
    with pytest.raises(PathRefused):
        add_remote_entry({"": d(), "a": d(), "x": d()}, path, f())


def test_a_server_listing_must_list_each_directory_before_what_it_holds():
    listed = {"": d(), "file": f()}
    with pytest.raises(PathRefused):
        add_remote_entry(listed, "missing/x", f())
    with pytest.raises(PathRefused):
        add_remote_entry(listed, "file/x", f())  # a file is no directory to write into
    add_remote_entry(listed, "dir", d())
    add_remote_entry(listed, "dir/x", f())
    assert list(listed) == ["", "file", "dir", "dir/x"]
