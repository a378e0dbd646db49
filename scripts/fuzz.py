"""Long fuzzing run of every decoder that reads the network (``make fuzz``).

The same targets as the ``test_fuzz.py`` files of the packages (whose input strategies
and fixtures it imports), with many more inputs each; Hypothesis generates them
(mutations of valid messages and plain garbage) and shrinks any crash to a minimal
input. Per target it prints how many inputs were tried, how many were accepted, how
many were rejected and by which error, and how many crashed (must be 0). A crash is any
exception other than the decoder's documented one, a Shard whose state changed on a
message it dropped (or that did not count the drop), or a node that stopped answering.

Usage: ``python scripts/fuzz.py [--examples 5000] [--target NAME ...]``. Exit status 1
when anything crashed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdt_state import Delta, Snapshot, WireError
from pubsub_zmq import wire as pubsub_wire
from pubsub_zmq.errors import WireError as FrameError
from tracker_zmq.client import ProtocolError, decode_message, decode_request
from tracker_zmq.wire import MessageError, decode, join_payload

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> ModuleType:
    """Import a test module by path (they are not packages)."""
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_fuzz", ROOT / path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tf = load("packages/tracker-zmq/tests/test_fuzz.py")
pf = load("packages/pubsub-zmq/tests/test_fuzz.py")


def as_bytes(frame: Any) -> bytes:
    return frame if isinstance(frame, bytes) else tf.dumps(frame)


# ------------------------------------------------------------------------- targets
# Each check returns the outcome's label ("accepted", or the error's name) and raises
# anything else: that is a crash.


def check_frame(data: bytes) -> str:
    try:
        pubsub_wire.decode(data, 4096)
    except FrameError as exc:
        return type(exc).__name__
    return "accepted"


def check_message(data: Any) -> str:
    try:
        decode(data, pool_size=1, max_replicas=8, max_entries=100)
    except MessageError:
        return "MessageError"
    return "accepted"


def check_parts(case: tuple[str, Any]) -> str:
    kind, parts = case
    if not isinstance(parts, list):
        return "outside the contract (not a list)"
    try:
        join_payload(kind, parts, 1000)
    except MessageError:
        return "MessageError"
    return "accepted"


def check_shard(data: Any) -> str:
    try:
        decode(data, pool_size=1)
    except MessageError:
        invalid = True
    else:
        invalid = False
    shard = tf.peer_shard()
    before = tf.fingerprint(shard)
    dropped = shard.counters["dropped"]
    out = shard.receive(data, 1.0)
    if not invalid:
        return "accepted"
    if out.diff or out.sends or out.events:
        raise AssertionError(f"a dropped message had effects: {out}")
    if tf.fingerprint(shard) != before:
        raise AssertionError("a dropped message changed the shard's state")
    if shard.counters["dropped"] != dropped + 1:
        raise AssertionError("a dropped message was not counted")
    return "dropped and counted"


def check_snapshot(data: Any) -> str:
    try:
        Snapshot.from_wire(data)
    except WireError:
        return "WireError"
    return "accepted"


def check_delta(data: Any) -> str:
    try:
        Delta.from_wire(data)
    except WireError:
        return "WireError"
    return "accepted"


def check_request(frame: Any) -> str:
    try:
        decode_request(as_bytes(frame))
    except ProtocolError as exc:
        return f"ProtocolError({exc.code})"
    return "accepted"


def check_reply(frame: Any) -> str:
    try:
        decode_message(as_bytes(frame))
    except ProtocolError:
        return "ProtocolError"
    return "accepted"


class NodeTarget:
    """The client endpoint of a live node (in a thread), fed raw frames."""

    def __init__(self) -> None:
        self.node: Any = None
        self.probe: Any = None

    def __enter__(self) -> NodeTarget:
        self.node = tf.NodeThread()
        self.probe = tf.Probe(self.node.endpoint)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.probe is not None:
            self.probe.close()
        if self.node is not None:
            self.node.close()

    def check(self, parts: list[bytes]) -> str:
        before = self.probe.status()["clients"]
        self.probe.sock.send_multipart(parts)
        after = self.probe.status()["clients"]  # raises if the node stopped answering
        if after["garbage"] - before["garbage"] == 1:
            return "counted as garbage"
        if after["requests"] - before["requests"] == 2:
            return "read as a request" + (
                " (refused)" if after["errors"] > before["errors"] else ""
            )
        raise AssertionError(f"a frame was neither a request nor garbage: {before} -> {after}")


def snapshot_forms() -> list[Any]:
    b = tf._peer_state()
    return [json.loads(json.dumps(b.extract(("a", 1), {("a", 1): 0}).to_wire()))]


def delta_forms() -> list[Any]:
    return [json.loads(json.dumps(tf._peer_state().delta.to_wire()))]


def targets(
    node: NodeTarget,
) -> dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], str], int]]:
    """name -> (inputs, check, share of --examples in percent)."""
    garbage = st.one_of(tf.json_values, st.binary(max_size=64))
    return {
        "pubsub frame (pubsub_zmq.wire.decode)": (
            st.one_of(pf.mangled(), st.binary(max_size=200)),
            check_frame,
            100,
        ),
        "tracker message (tracker_zmq.wire.decode)": (
            st.one_of(tf.mutated(tf.MESSAGES), garbage),
            check_message,
            100,
        ),
        "transfer parts (tracker_zmq.wire.join_payload)": (
            st.one_of(*(st.tuples(st.just(k), tf.mutated([parts])) for k, parts in tf.PARTS)),
            check_parts,
            100,
        ),
        "Shard.receive (state unchanged, drop counted)": (
            st.one_of(tf.mutated(tf.MESSAGES), tf.json_values),
            check_shard,
            50,
        ),
        "Snapshot.from_wire": (
            st.one_of(tf.mutated(snapshot_forms()), tf.json_values),
            check_snapshot,
            100,
        ),
        "Delta.from_wire": (
            st.one_of(tf.mutated(delta_forms()), tf.json_values),
            check_delta,
            100,
        ),
        "client request (decode_request)": (
            st.one_of(
                tf.mangled_bytes(tf.REQUESTS),
                tf.mutated([orjson.loads(r) for r in tf.REQUESTS]),
                st.binary(max_size=64),
            ),
            check_request,
            100,
        ),
        "node reply (decode_message)": (
            st.one_of(
                tf.mangled_bytes(tf.NODE_MESSAGES),
                tf.mutated([orjson.loads(m) for m in tf.NODE_MESSAGES]),
            ),
            check_reply,
            100,
        ),
        "node client endpoint (raw DEALER frames)": (tf.frames, node.check, 20),
    }


def fuzz(
    name: str, inputs: st.SearchStrategy[Any], check: Callable[[Any], str], examples: int
) -> tuple[int, collections.Counter[str], str | None]:
    outcomes: collections.Counter[str] = collections.Counter()
    tried = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(inputs)
    def run(data: Any) -> None:
        nonlocal tried
        tried += 1
        outcomes[check(data)] += 1

    crash = None
    try:
        run()
    except Exception as exc:  # the minimal failing input, after shrinking
        crash = f"{type(exc).__name__}: {exc}"[:2000]
    return tried, outcomes, crash


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="inputs per target (5000)")
    parser.add_argument("--target", action="append", help="only targets containing this text")
    args = parser.parse_args()
    logging.getLogger("tracker_zmq").setLevel(logging.CRITICAL)  # garbage warnings
    crashes = 0
    rows: list[tuple[str, int, int, str, int, float]] = []
    with NodeTarget() as node:
        for name, (inputs, check, share) in targets(node).items():
            if args.target and not any(t.lower() in name.lower() for t in args.target):
                continue
            started = time.monotonic()
            tried, outcomes, crash = fuzz(name, inputs, check, max(1, args.examples * share // 100))
            took = time.monotonic() - started
            accepted = outcomes.pop("accepted", 0)
            rejected = ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
            rows.append((name, tried, accepted, rejected or "-", int(crash is not None), took))
            print(f"{name}: {tried} inputs in {took:.1f} s", flush=True)
            if crash is not None:
                crashes += 1
                print(f"  CRASH: {crash}", flush=True)
    print("\n| target | inputs | accepted | rejected (by error) | crashes | time |")
    print("|---|---|---|---|---|---|")
    for name, tried, accepted, rejected, crash, took in rows:
        print(f"| {name} | {tried} | {accepted} | {rejected} | {crash} | {took:.1f} s |")
    print("\nfuzz:", "PASS" if crashes == 0 else f"FAIL ({crashes} targets crashed)")
    return 1 if crashes else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
