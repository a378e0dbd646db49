"""DeltaGenerations (in place, indexed) against Phoenix's algorithm built on merge_deltas.

The reference below is the generations' push as Phoenix writes it (and as this package
did before pushes became in place): every push merges each generation into a new delta
with :func:`~crdt_state.state.merge_deltas`. The replica machine drives both with every
delta a replica sends or merges, over small caps so that windows slide often, and
checks after every step that they hold equal generations and answer transfers alike.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from crdt_state import Delta, DeltaGenerations, Replica, Snapshot, State
from crdt_state import clock as _clock
from crdt_state.state import _clouds_size, merge_deltas
from crdt_state.testing import ReplicaMachine

CAPS = (2, 5, 9)


class ReferenceGenerations:
    """Phoenix's DeltaGeneration.push, a new delta per generation on every push."""

    def __init__(self, max_sizes: tuple[int, ...]) -> None:
        self.max_sizes = max_sizes
        self.gens: list[Delta] = []

    def push(self, state: State, delta: Delta) -> None:
        gens = self.gens or [state.delta for _ in self.max_sizes]
        tags = _clouds_size(delta._clouds)
        out: list[Delta] = []
        prev = delta
        for gen, cap in zip(gens, self.max_sizes, strict=True):
            if tags <= cap:
                merged = merge_deltas(gen, delta)
                contiguous = merged is not None
            else:
                merged = None
                contiguous = _clock.dominates_or_equal(
                    delta._end, gen._start
                ) and _clock.dominates_or_equal(gen._end, delta._start)
            if not contiguous:
                out.append(gen)
                prev = gen
                continue
            if merged is not None and merged.size() <= cap:
                out.append(merged)
                prev = merged
                continue
            if prev.size() <= cap:
                out.append(prev)
            else:
                end = _clock.upperbound(gen._end, delta._end)
                out.append(Delta._make(gen.replica, {}, {}, dict(end), end))
            if merged is not None:
                prev = merged
        self.gens = out

    def remove_down_replicas(self, replica: Replica) -> None:
        pruned = []
        for gen in self.gens:
            copy = gen.copy()
            copy._values.pop(replica, None)
            copy._clouds.pop(replica, None)
            copy._start.pop(replica, None)
            copy._end.pop(replica, None)
            pruned.append(copy)
        self.gens = pruned


class GenerationsMachine(ReplicaMachine):
    """Every replica keeps generations both ways, fed as the tracker's shard feeds them."""

    def __init__(self) -> None:
        super().__init__()
        self.gens: dict[int, DeltaGenerations] = {}
        self.refs_gens: dict[int, ReferenceGenerations] = {}

    def _pair(self, slot: int) -> tuple[DeltaGenerations, ReferenceGenerations]:
        if slot not in self.gens:
            self.gens[slot] = DeltaGenerations(CAPS)
            self.refs_gens[slot] = ReferenceGenerations(CAPS)
        return self.gens[slot], self.refs_gens[slot]

    def _push(self, slot: int, delta: Delta) -> None:
        gens, ref = self._pair(slot)
        gens.push(self.states[slot], delta)
        ref.push(self.states[slot], delta)

    def on_send(self, slot: int, delta: Delta) -> None:
        self._push(slot, delta)

    def on_merge(self, slot: int, payload: Snapshot | Delta) -> None:
        if isinstance(payload, Delta):
            self._push(slot, payload)
        else:  # a full state was merged: the shard drops its generations, as Phoenix
            gens, ref = self._pair(slot)
            gens.reset()
            ref.gens = []

    def on_restart(self, slot: int, old: Replica, new: Replica) -> None:
        self.gens.pop(slot, None)
        self.refs_gens.pop(slot, None)

    def _forget(self, replica: Replica) -> None:
        super()._forget(replica)
        for slot in self.gens:
            self.gens[slot].remove_down_replicas(replica)
            self.refs_gens[slot].remove_down_replicas(replica)

    def transfer_payload(self, src: int, dst: int) -> Snapshot | Delta:
        gens, ref = self._pair(src)
        remote = self.refs[dst]
        context = self.states[dst].clocks()[1]
        answer = gens.extract(self.states[src], remote, context)
        expected = ReferenceAnswer(ref).extract(self.states[src], remote, context)
        assert answer == expected, "the generations answered a transfer differently"
        return answer

    def check_state(self, slot: int, state: State) -> None:
        if slot not in self.gens:
            return
        gens, ref = self.gens[slot], self.refs_gens[slot]
        assert gens.generations == ref.gens, f"slot {slot}: generations differ from Phoenix's"
        assert gens.sizes() == [gen.size() for gen in ref.gens]
        assert all(size <= cap for size, cap in zip(gens.sizes(), CAPS, strict=False))


class ReferenceAnswer(DeltaGenerations):
    """DeltaGenerations.extract over the reference's generations."""

    def __init__(self, ref: ReferenceGenerations) -> None:
        super().__init__(ref.max_sizes)
        self._gens = ref.gens


TestGenerationsMachine = GenerationsMachine.TestCase
TestGenerationsMachine.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_generations_are_copies() -> None:
    """What ``generations`` returns is the caller's: later pushes don't change it."""
    s1 = State("s1")
    gens = DeltaGenerations(CAPS)
    s1.join("pid-1", "lobby", "user1", {})
    gens.push(s1, s1.take_delta())
    before = gens.generations
    kept = [gen.copy() for gen in before]
    s1.join("pid-2", "lobby", "user2", {})
    gens.push(s1, s1.take_delta())
    assert before == kept
    assert gens.generations != before
    before[0]._values.clear()
    assert gens.sizes()[0] > 0


def _records_of_one_presence() -> tuple[object, object]:
    """Two values of one replica for the same (owner, topic, key): tags 1 and 3."""
    s = State("s1")
    s.join("pid", "lobby", "user", {"v": 1})
    first = s.delta._values["s1"][1]
    s.leave("pid", "lobby", "user")
    s.join("pid", "lobby", "user", {"v": 2})
    second = s.delta._values["s1"][3]
    return first, second


def test_only_the_newest_value_per_presence_stays() -> None:
    """A window that meets two values of one presence keeps the newer, either way round.

    No sequence of one replica's deltas brings both into a generation (the older one's
    remove travels with or before the newer), but relayed windows can, and merge_deltas
    keeps one per (replica, owner, topic, key): so must the in-place push.
    """
    first, second = _records_of_one_presence()
    s2 = State("s2")
    for older_first in (True, False):
        a, b = (first, second) if older_first else (second, first)
        ca, cb = (1, 3) if older_first else (3, 1)
        gens, ref = DeltaGenerations((5, 10)), ReferenceGenerations((5, 10))
        one = Delta._make("s2", {"s1": {ca: a}}, {"s1": {ca}}, {"s1": 0}, {"s1": 3})
        two = Delta._make("s2", {"s1": {cb: b}}, {"s1": {cb}}, {"s1": 0}, {"s1": 3})
        for delta in (one, two):
            gens.push(s2, delta)
            ref.push(s2, delta)
        assert gens.generations == ref.gens
        assert [list(gen.values) for gen in gens.generations] == [[("s1", 3)], [("s1", 3)]]
