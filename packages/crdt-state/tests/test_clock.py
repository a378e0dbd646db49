"""Unit tests of crdt_state.clock: every case of Phoenix's clock_test.exs, and a few more.

Contexts use single-letter replicas like Phoenix's atoms; a clock is ``(replica, context)``.
"""

from __future__ import annotations

from crdt_state import clock

C1 = {"a": 1, "b": 2, "c": 3}
C2 = {"b": 2, "c": 3, "d": 1}
C3 = {"a": 1, "b": 2}

CLOCK1 = ("a", C1)
CLOCK2 = ("b", C2)
CLOCK3 = ("c", C3)


def by_replica(clockset):
    return sorted(clockset, key=lambda member: member[0])


# --------------------------------------------------------------------- Phoenix's cases


def test_dominates():
    assert clock.dominates(C1, C3)
    assert not clock.dominates(C3, C1)
    assert not clock.dominates(C1, C2)  # C1 lacks d
    assert clock.dominates(C1, C1)  # reflexive


def test_the_set_trims():
    # [c2, c3] + c1: the upper bound {a1, b2, c3, d1} dominates c1, so it is not added.
    assert by_replica(clock.append_clock([CLOCK2, CLOCK3], CLOCK1)) == [CLOCK2, CLOCK3]
    assert by_replica(clock.append_clock([CLOCK1, CLOCK2], CLOCK3)) == [CLOCK1, CLOCK2]
    assert by_replica(clock.append_clock([CLOCK1, CLOCK2], CLOCK1)) == [CLOCK1, CLOCK2]
    assert by_replica(clock.append_clock([CLOCK1, CLOCK2], CLOCK2)) == [CLOCK1, CLOCK2]
    # c2 is concurrent with the upper bound {a1, b2, c3} of [c1, c3]: it is added, and as in
    # Phoenix c3 (dominated by c1) stays: the set is not guaranteed minimal.
    assert by_replica(clock.append_clock([CLOCK1, CLOCK3], CLOCK2)) == [CLOCK1, CLOCK2, CLOCK3]
    replicas = clock.clockset_replicas(clock.append_clock([CLOCK2, CLOCK3], CLOCK1))
    assert sorted(replicas) == ["b", "c"]


def test_upperbound():
    assert clock.upperbound({"a": 1, "b": 2, "c": 2}, {"a": 3, "b": 1, "d": 2}) == {
        "a": 3,
        "b": 2,
        "c": 2,
        "d": 2,
    }
    assert clock.upperbound({}, {"a": 3, "b": 1, "d": 2}) == {"a": 3, "b": 1, "d": 2}
    assert clock.upperbound({"a": 3, "b": 1, "d": 2}, {}) == {"a": 3, "b": 1, "d": 2}


def test_lowerbound():
    assert clock.lowerbound({"a": 1, "b": 2, "c": 2}, {"a": 3, "b": 1, "d": 2}) == {
        "a": 1,
        "b": 1,
        "c": 2,
        "d": 2,
    }
    # One-sided keys are kept: lowerbound({}, x) is x, not {}.
    assert clock.lowerbound({}, {"a": 3, "b": 1, "d": 2}) == {"a": 3, "b": 1, "d": 2}
    assert clock.lowerbound({"a": 3, "b": 1, "d": 2}, {}) == {"a": 3, "b": 1, "d": 2}


def test_filter_replicas():
    assert clock.filter_replicas({"a": 1, "b": 2, "c": 3}, ["a", "b"]) == {"a": 1, "b": 2}
    assert clock.filter_replicas({"a": 1, "b": 2, "c": 3}, ["a", "c"]) == {"a": 1, "c": 3}
    assert clock.filter_replicas({"a": 1, "b": 2, "c": 3}, ["a", "d"]) == {"a": 1}
    assert clock.filter_replicas({"a": 1, "b": 2, "c": 3}, ["d"]) == {}


def test_replicas():
    assert clock.replicas({}) == []
    assert clock.replicas({"a": 1}) == ["a"]
    assert sorted(clock.replicas({"a": 1, "b": 2})) == ["a", "b"]


# ------------------------------------------------------------------ beyond Phoenix's


def test_dominates_ignores_keys_only_in_the_first_and_fails_on_fewer_keys():
    assert clock.dominates({"a": 1, "z": 0}, {"a": 1})
    assert not clock.dominates({"a": 5}, {"a": 1, "b": 0})  # fewer keys
    assert clock.dominates({}, {})
    # A missing key counts as 0 once the key count allows it.
    assert clock.dominates({"a": 0, "c": 0}, {"a": 0, "b": 0})
    assert not clock.dominates({"a": 0, "c": 0}, {"a": 1})


def test_dominates_or_equal():
    assert clock.dominates_or_equal({}, {})
    assert not clock.dominates_or_equal({}, {"a": 0})
    assert clock.dominates_or_equal({"a": 1}, {})
    assert clock.dominates_or_equal({"a": 1}, {"a": 1})
    assert not clock.dominates_or_equal({"a": 1}, {"a": 2})
    # Keys only in the second argument are ignored.
    assert clock.dominates_or_equal({"a": 2}, {"a": 1, "b": 9})
    # Keys only in the first are compared against 0.
    assert clock.dominates_or_equal({"a": 2, "c": 0}, {"a": 1})


def test_append_clock_with_an_empty_context_leaves_the_set_unchanged():
    assert clock.append_clock([CLOCK1, CLOCK2], ("z", {})) == [CLOCK1, CLOCK2]


def test_append_clock_replaces_the_set_with_a_dominating_clock():
    big = ("z", {"a": 9, "b": 9, "c": 9, "d": 9})
    assert clock.append_clock([CLOCK1, CLOCK2, CLOCK3], big) == [big]
    assert clock.append_clock([], CLOCK1) == [CLOCK1]


def test_clock_functions_never_mutate_their_arguments():
    left = {"a": 1, "b": 2}
    right = {"a": 3, "c": 1}
    clockset = [CLOCK1, CLOCK3]
    clock.upperbound(left, right)
    clock.lowerbound(left, right)
    clock.filter_replicas(left, ["a"])
    out = clock.append_clock(clockset, CLOCK2)
    assert left == {"a": 1, "b": 2}
    assert right == {"a": 3, "c": 1}
    assert clockset == [CLOCK1, CLOCK3]
    assert out is not clockset
    assert clock.upperbound(left, {}) is not left
