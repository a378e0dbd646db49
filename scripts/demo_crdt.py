"""A crdt-state simulation: three replicas join, split and converge (`python scripts/demo_crdt.py`).

No network: heartbeats and transfers are handed from one State to another in this
process, which is exactly what the tracker does over ZeroMQ. Every step prints what
happened and what each replica now sees.
"""

from __future__ import annotations

import sys

from crdt_state import Delta, Entry, Snapshot, State

NAMES = ("a", "b", "c")


def show(entries: list[Entry]) -> str:
    return ", ".join(sorted(e.key for e in entries)) or "nobody"


class Cluster:
    def __init__(self) -> None:
        # Refs are (node name, incarnation), as the tracker makes them.
        self.states = {name: State((name, 1)) for name in NAMES}
        self.links: set[frozenset[str]] = set()
        self.step = 0

    def say(self, text: str) -> None:
        self.step += 1
        print(f"\n[{self.step:2}] {text}")

    def report(self, name: str, joins: list[Entry], leaves: list[Entry]) -> None:
        for sign, entries in (("joined", joins), ("left", leaves)):
            for e in sorted(entries):
                origin = e.tag[0][0]
                print(f"     {name} reports {e.key} {sign} {e.topic} (tracked on {origin})")

    def connect(self, x: str, y: str) -> None:
        self.links.add(frozenset((x, y)))
        for me, other in ((x, y), (y, x)):
            joins = self.states[me].replica_up(self.states[other].replica)
            self.report(me, joins, [])

    def split(self, x: str, y: str) -> None:
        self.links.discard(frozenset((x, y)))
        for me, other in ((x, y), (y, x)):
            leaves = self.states[me].replica_down(self.states[other].replica)
            self.report(me, [], leaves)

    def heartbeat(self, name: str) -> None:
        """Send name's pending delta to every replica it can reach."""
        delta: Delta = self.states[name].take_delta()
        for other in NAMES:
            if other != name and frozenset((name, other)) in self.links:
                self.report(other, *self.states[other].merge(delta))

    def transfer(self, to: str, source: str) -> None:
        """to asks source for its full state and merges it."""
        sink = self.states[to]
        replica, context = sink.clocks()
        snapshot: Snapshot = self.states[source].extract(replica, context)
        self.report(to, *sink.merge(snapshot))

    def views(self) -> None:
        for name in NAMES:
            print(f"     {name} sees in room:lobby: {show(self.states[name].online_list())}")

    def heartbeats(self) -> None:
        """Every replica heartbeats its delta; then what each one sees."""
        for name in NAMES:
            self.heartbeat(name)
        self.views()


def main() -> int:
    c = Cluster()
    print("crdt-state demo: three replicas a, b and c of one presence state.")

    c.say("a, b and c connect (replica_up both ways)")
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        c.connect(x, y)

    c.say("alice joins room:lobby on a, bob on b; each replica heartbeats its delta")
    c.states["a"].join("conn-1", "room:lobby", "alice", {"device": "web"})
    c.states["b"].join("conn-2", "room:lobby", "bob", {"device": "ios"})
    c.heartbeats()

    c.say("netsplit: c loses a and b (each side marks the other down: presences leave)")
    c.split("a", "c")
    c.split("b", "c")
    c.views()

    c.say("during the split: carol joins on c, alice leaves a, dave joins on b")
    c.states["c"].join("conn-3", "room:lobby", "carol", {"device": "web"})
    c.states["a"].leave("conn-1", "room:lobby", "alice")
    c.states["b"].join("conn-4", "room:lobby", "dave", {"device": "android"})
    c.heartbeats()

    c.say("heal: c and the others mark each other up; what c held of a and b reappears, stale")
    c.connect("a", "c")
    c.connect("b", "c")
    c.views()

    c.say("c is behind on a and b, and they on c: transfers of the full state repair it")
    for to, source in (("c", "a"), ("c", "b"), ("a", "c"), ("b", "c")):
        c.transfer(to, source)
    c.views()

    seen = {name: sorted(map(tuple, c.states[name].online_list())) for name in NAMES}
    same = len({repr(v) for v in seen.values()}) == 1
    print(
        f"\nConverged: {'yes' if same else 'NO'}; every replica sees "
        f"{show(c.states['a'].online_list())}."
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
