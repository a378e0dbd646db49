"""Coalesced presence diffs leave phoenix.js's ``Presence`` as the diffs themselves do.

``EndpointOptions(coalesce_diffs=...)`` merges a topic's ``presence_diff`` broadcasts
with :class:`~tracker_zmq.channels.coalesce.DiffMerger`. Hypothesis draws a presence
state and a sequence of diffs (joins and leaves of a few keys and refs, repeated refs,
leaves of refs never joined, a join and a leave of one ref in one diff, extra fields as
a ``fetch`` adds, the key ``__proto__``); the real phoenix npm client
(tests/js/presence_coalesce.js, one ``node`` process for the whole test) applies the
sequence with ``Presence.syncDiff`` and, to the state after every prefix of it, the merged
diff. Every one must equal the sequence's final state: a client that was there all along
and one that got its ``presence_state`` during the window both end where the diffs lead.
``make pytest`` installs the client first (``npm ci`` in tests/js).
"""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.js import node_binary
from tracker_zmq.channels.coalesce import DiffMerger

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "presence_coalesce.js"
KEYS = ["alice", "bob", "__proto__"]


class Driver:
    """One ``node`` process running presence_coalesce.js, fed one JSON line at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [node_binary(("phoenix",)), str(SCRIPT)],
            cwd=JS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(line) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"presence_coalesce.js did not answer in {timeout} s"
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        assert "error" not in out, out["error"]
        return out

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def driver() -> Iterator[Driver]:
    proc = Driver()
    try:
        yield proc
    finally:
        proc.stop()


def entries(draw: st.DrawFn, *, with_fields: bool) -> dict[str, Any]:
    """Entries of some keys, each with distinct refs of that key (a ref names one key)."""
    out: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=3)):
        refs = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
        metas = [{"phx_ref": f"{key}-{r}", "v": draw(st.integers(0, 2))} for r in refs]
        entry: dict[str, Any] = {"metas": metas}
        if with_fields and draw(st.booleans()):
            entry["user"] = draw(st.integers(0, 2))
        out[key] = entry
    return out


@st.composite
def diffs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "joins": entries(draw, with_fields=True),
        "leaves": entries(draw, with_fields=False),
    }


@st.composite
def states(draw: st.DrawFn) -> dict[str, Any]:
    return entries(draw, with_fields=True)


@settings(max_examples=300, deadline=None)
@given(state=states(), sequence=st.lists(diffs(), min_size=1, max_size=8))
def test_merged_diff_gives_phoenix_js_the_state_of_the_sequence(
    driver: Driver, state: dict[str, Any], sequence: list[dict[str, Any]]
) -> None:
    merger = DiffMerger()
    for diff in sequence:
        assert merger.add(diff)
    assert merger.count == len(sequence)
    merged = merger.payload()
    out = driver.ask({"state": state, "diffs": sequence, "merged": merged})
    final = out["sequence"][-1]
    for k, applied in enumerate(out["merged"]):
        assert applied == final, f"merged diff applied after {k} of the diffs"


def test_a_join_then_a_leave_cancels_and_a_leave_then_a_join_keeps_both(
    driver: Driver,
) -> None:
    a0 = {"phx_ref": "a0", "v": 0}
    b1 = {"phx_ref": "b1"}
    b2 = {"phx_ref": "b2", "phx_ref_prev": "b1"}
    sequence = [
        {"joins": {"a": {"metas": [a0]}}, "leaves": {}},
        {"joins": {}, "leaves": {"a": {"metas": [a0]}}},
        {"joins": {}, "leaves": {"b": {"metas": [b1]}}},
        {"joins": {"b": {"metas": [b2]}}, "leaves": {}},
    ]
    merger = DiffMerger()
    for diff in sequence:
        merger.add(diff)
    merged = merger.payload()
    # the join of a0 is gone (its entry stays, empty: a join replaces the key's fields;
    # its leave stays, for a client that saw a0 in its presence_state during the
    # window); b's leave and join both stay
    assert merged == {
        "joins": {"a": {"metas": []}, "b": {"metas": [b2]}},
        "leaves": {"a": {"metas": [a0]}, "b": {"metas": [b1]}},
    }
    state = {"b": {"metas": [b1]}}
    out = driver.ask({"state": state, "diffs": sequence, "merged": merged})
    assert out["sequence"][-1] == {"b": {"metas": [b2]}}
    assert all(applied == {"b": {"metas": [b2]}} for applied in out["merged"])


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        {"joins": {}},
        {"joins": {}, "leaves": {}, "extra": 1},
        {"joins": {"a": {"metas": []}}, "leaves": {}},
        {"joins": {"a": {"metas": [{"v": 1}]}}, "leaves": {}},
        {"joins": {"a": {"metas": [{"phx_ref": 1}]}}, "leaves": {}},
        {"joins": {}, "leaves": {"a": {"metas": [{"phx_ref": "x"}, {"phx_ref": "x"}]}}},
        {"joins": {"a": ["not", "an", "entry"]}, "leaves": {}},
    ],
)
def test_irregular_payloads_are_refused_and_change_nothing(payload: Any) -> None:
    merger = DiffMerger()
    assert merger.add({"joins": {"a": {"metas": [{"phx_ref": "r"}]}}, "leaves": {}})
    before = merger.payload()
    assert not merger.add(payload)
    assert merger.count == 1
    assert merger.payload() == before
