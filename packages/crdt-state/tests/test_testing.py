"""Runs the replica machine of crdt_state.testing, as shipped and as a user extends it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from crdt_state import Entry, Replica, State
from crdt_state.testing import (
    Join,
    Leave,
    LeaveOwner,
    Operation,
    PresenceModel,
    ReplicaMachine,
    Update,
    entry_key,
    metas,
    operations,
    presences,
    replicas,
    scenarios,
    visible_entries,
)

MACHINE_SETTINGS = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

GENERATE = (Phase.generate,)
"""For machines that fail on purpose: find the failure, skip shrinking it."""


TestReplicaMachine = ReplicaMachine.TestCase
"""The shipped machine: 3-5 replicas, lossy network, restarts, final exchange."""
TestReplicaMachine.settings = MACHINE_SETTINGS


class DiffFoldingMachine(ReplicaMachine):
    """A user-style extension: a view kept only from reported diffs must match the state.

    This is what code built on crdt_state does (a presence handler folds diffs into its
    own view); the machine drives every kind of change through it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.views: dict[int, Counter[object]] = {}

    def on_diff(self, slot: int, joins: Sequence[Entry], leaves: Sequence[Entry]) -> None:
        view = self.views.setdefault(slot, Counter())
        view.subtract(map(entry_key, leaves))
        view.update(map(entry_key, joins))

    def on_restart(self, slot: int, old: Replica, new: Replica) -> None:
        self.views[slot] = Counter()

    def check_state(self, slot: int, state: State) -> None:
        view = +self.views.get(slot, Counter())
        assert view == visible_entries(state), f"diff-folded view of slot {slot} drifted"

    def final_check(self) -> None:
        super().final_check()
        for slot, state in enumerate(self.states):
            self.check_state(slot, state)


TestDiffFoldingMachine = DiffFoldingMachine.TestCase
TestDiffFoldingMachine.settings = settings(MACHINE_SETTINGS, max_examples=40)


class SmallMachine(ReplicaMachine):
    """A subclass can size the cluster and name the refs."""

    min_replicas = 2
    max_replicas = 2

    def make_ref(self, slot: int, incarnation: int) -> Replica:
        return f"{slot}.{incarnation}"

    def final_check(self) -> None:
        super().final_check()
        assert len(self.states) == 2
        assert all(isinstance(ref, str) for ref in self.refs)


def test_subclass_can_resize_and_rename() -> None:
    run_state_machine_as_test(
        SmallMachine,
        settings=settings(MACHINE_SETTINGS, max_examples=20, database=None),
    )


class BrokenFinalCheck(ReplicaMachine):
    """Its final check always fails: proves teardown's check is really run and reported."""

    def final_check(self) -> None:
        super().final_check()
        raise AssertionError("final check reached")


def test_failing_final_check_is_reported() -> None:
    with pytest.raises(AssertionError, match="final check reached"):
        run_state_machine_as_test(
            BrokenFinalCheck,
            settings=settings(MACHINE_SETTINGS, max_examples=5, database=None, phases=GENERATE),
        )


class BrokenInvariant(ReplicaMachine):
    """A user invariant that fails once a presence is visible somewhere else."""

    def check_state(self, slot: int, state: State) -> None:
        foreign = [e for e in state.online_list() if e.tag[0] != state.replica]
        assert not foreign, "a remote presence became visible"


def test_failing_user_invariant_is_reported() -> None:
    with pytest.raises(AssertionError, match="a remote presence became visible"):
        run_state_machine_as_test(
            BrokenInvariant,
            settings=settings(MACHINE_SETTINGS, max_examples=200, database=None, phases=GENERATE),
        )


@pytest.mark.parametrize("size", [1, 3])
@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_scenarios_build_what_the_model_says(size: int, data: st.DataObject) -> None:
    scenario = data.draw(scenarios(min_replicas=size, max_replicas=size))
    cluster = scenario.build()
    again = scenario.build()
    for state, twin in zip(cluster.states, again.states, strict=True):
        assert visible_entries(state) == visible_entries(twin)
        assert state.context == twin.context
        own = [e for e in state.online_list() if e.tag[0] == state.replica]
        assert presences(own) == cluster.model.presences(state.replica)


def test_model_counts_two_replicas_tracking_the_same_presence_twice() -> None:
    model = PresenceModel()
    assert model.join("a", "conn", "room", "alice", {})
    assert model.join("b", "conn", "room", "alice", {})
    assert not model.join("a", "conn", "room", "alice", {"again": True})
    assert sum(model.visible().values()) == 2
    model.permdown("b")
    assert sum(model.visible().values()) == 1
    with pytest.raises(ValueError, match="permanently down"):
        model.join("b", "conn", "room", "bob", {})


@given(refs=st.lists(replicas(), unique=True, max_size=4), meta=metas(), op=operations())
@settings(max_examples=50, deadline=None)
def test_strategies_draw_json_able_values(
    refs: list[Replica], meta: dict[str, object], op: Operation
) -> None:
    assert json.loads(json.dumps(meta)) == meta
    assert len({repr(r) for r in refs}) == len(refs)
    assert isinstance(op, Join | Leave | Update | LeaveOwner)


def test_import_crdt_state_does_not_import_testing() -> None:
    code = (
        "import sys, crdt_state\n"
        "assert 'crdt_state.testing' not in sys.modules\n"
        "assert 'hypothesis' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
