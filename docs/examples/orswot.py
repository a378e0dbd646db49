"""The ORSWOT worked example of the Concepts page: every value shown is asserted here."""

from crdt_state import DeltaGenerations, State, clock

# --8<-- [start:start]
a, c = State("a"), State("c")  # two replicas (real ones are named (node, vsn))
a.replica_up("c")
c.replica_up("a")  # each admits the other: context {self: 0, other: 0}
assert a.context == {"a": 0, "c": 0}
assert a.clouds == {}
# --8<-- [end:start]

# --8<-- [start:join]
alice = a.join("conn-1", "room:42", "alice", {"status": "online"})
assert alice.tag == ("a", 1)  # the dot: (replica, the next clock of replica a)
assert a.context == {"a": 1, "c": 0}

a.join("conn-2", "room:42", "bob", {"status": "online"})  # dot ("a", 2)
a.leave("conn-1", "room:42", "alice")  # a remove consumes a dot too: ("a", 3)
assert a.context == {"a": 3, "c": 0}
# --8<-- [end:join]

# --8<-- [start:delta1]
generations = DeltaGenerations(max_sizes=(100, 1000, 10000))
d1 = a.take_delta()  # what the next heartbeat carries, as plain data:
assert d1.to_wire() == {
    "replica": "a",
    "clouds": [["a", [1, 2, 3]]],  # every dot made or removed in the window
    "values": [["room:42", "conn-2", "bob", {"status": "online"}, ["a", 2]]],
    "range": [[["a", 0]], [["a", 3]]],  # the window: from clock 0 to clock 3 of a
}
generations.push(a, d1)  # kept to answer transfers later
# --8<-- [end:delta1]

# --8<-- [start:delta2]
a.leave_join("conn-2", "room:42", "bob", {"status": "away"})  # update: dots 4 and 5
d2 = a.take_delta()
assert d2.to_wire() == {
    "replica": "a",
    "clouds": [["a", [2, 4, 5]]],  # bob's old tag 2 is removed; 4 and 5 are new
    "values": [["room:42", "conn-2", "bob", {"status": "away"}, ["a", 5]]],
    "range": [[["a", 3]], [["a", 5]]],
}
generations.push(a, d2)
# --8<-- [end:delta2]

# --8<-- [start:lost]
# d1 is lost on the way to c; d2 arrives.
joins, leaves = c.merge(d2)
assert [(e.key, e.meta["status"], e.tag) for e in joins] == [("bob", "away", ("a", 5))]
assert leaves == []
assert c.context == {"c": 0, "a": 0}  # 1 is missing: the context cannot advance,
assert c.clouds == {"a": {("a", 2), ("a", 4), ("a", 5)}}  # the dots wait in a cloud
# --8<-- [end:lost]

# --8<-- [start:transfer]
# The heartbeats carry clocks: a's clock dominates c's, so c asks a for a transfer.
assert a.clocks() == ("a", {"a": 5, "c": 0})
assert c.clocks() == ("c", {"c": 0, "a": 0})
assert clock.dominates(a.clocks()[1], c.clocks()[1])
answer = generations.extract(a, c.replica, c.clocks()[1])  # a window covers the gap
assert answer.to_wire()["range"] == [[["a", 0]], [["a", 5]]]
assert c.merge(answer) == ([], [])  # nothing new to see, but the gap is filled:
assert c.context == {"c": 0, "a": 5}
assert c.clouds == {}
# --8<-- [end:transfer]

# --8<-- [start:late]
# The lost d1 finally arrives: bob's old tag 2 was seen removed, alice's tag 1 was
# covered by the context. Nothing comes back.
assert c.merge(d1) == ([], [])
assert c.merge(d2) == ([], [])  # a duplicate changes nothing either
assert c.get_by_topic("room:42") == [("bob", {"status": "away"})]
# --8<-- [end:late]

print("c sees", c.get_by_topic("room:42"), "with context", c.context)
