"""The node side of a command-pipe node: its command line, its PubSub and Tracker, its loop.

A node script (``tests/pubsub_node.py``, ``tests/tracker_node.py``,
``bench/tracker_bench_node.py``) parses its command line with :func:`arguments`, builds
its PubSub with :func:`pubsub` and its Tracker with :func:`tracker`, and runs
:func:`serve_commands`: it prints one JSON line when ready (with ``"ready": name``), then
answers each JSON command line on stdin with one JSON line on stdout.
:class:`~tests.support.proc.CommandNode` drives it from the other end.

Node scripts run as ``python path/to/script.py``: they put the repository root on their
path before importing this module.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pubsub_zmq import PubSub
from tracker_zmq import Tracker

PS = TypeVar("PS", bound=PubSub)

READ_LIMIT = 1 << 24
"""The longest command line a node reads (a benchmark sends long lists of keys)."""


def arguments(
    tracker: bool = False, parser: argparse.ArgumentParser | None = None, **defaults: Any
) -> argparse.Namespace:
    """Parse a node's command line: ``--name``, ``--bind``, ``--peer`` (repeated).

    Args:
        tracker: Also the tracker's periods: ``--broadcast-period``,
            ``--max-silent-periods``, ``--down-period`` and ``--permdown-period``.
        parser: A parser with the script's own options, to add these to.
        **defaults: Defaults of these options, by destination (``permdown_period=5.0``).
    """
    parser = parser if parser is not None else argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    if tracker:
        parser.add_argument("--broadcast-period", type=float, default=0.1)
        parser.add_argument("--max-silent-periods", type=int, default=None)
        parser.add_argument("--down-period", type=float, default=1.0)
        parser.add_argument("--permdown-period", type=float, default=5.0)
    parser.set_defaults(**defaults)
    return parser.parse_args()


def pubsub(args: argparse.Namespace, cls: type[PS], **options: Any) -> PS:
    """The node's PubSub: its name, bind and peers from ``args``, short periods for tests.

    Args:
        args: The parsed command line.
        cls: ``PubSub``, or a test's subclass of it.
        **options: PubSub options over the defaults (gossip_interval 0.1 s,
            peer_timeout 1 s, start_timeout 5 s).
    """
    settings: dict[str, Any] = {
        "gossip_interval": 0.1,
        "peer_timeout": 1.0,
        "start_timeout": 5.0,
        **options,
    }
    return cls(args.name, bind=args.bind, peers=args.peer, **settings)


def tracker(ps: PubSub, args: argparse.Namespace, **options: Any) -> Tracker:
    """The node's Tracker on ``ps``, with the periods of ``args`` (the ones given).

    Args:
        ps: The node's PubSub.
        args: The command line parsed with ``arguments(tracker=True)``.
        **options: More Tracker options (``handler``, ``transfer_timeout``...).
    """
    periods = {
        name: getattr(args, name)
        for name in ("broadcast_period", "max_silent_periods", "down_period", "permdown_period")
        if getattr(args, name) is not None
    }
    return Tracker(ps, **periods, **options)


def reply(value: Any) -> None:
    """Write one answer line on stdout."""
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve_commands(ready: dict[str, Any], commands: Mapping[str, Callable[..., Any]]) -> None:
    """Say ``ready``, then answer each command until ``stop`` or end of input.

    ``commands`` maps a command name to a function of the command dict (sync or async)
    whose result is the reply; an unknown command or an exception is replied as
    ``{"error": ...}`` and the node keeps serving.
    """
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        reply(ready)
        await _answer(reader, commands)
    finally:
        transport.close()  # else the pipe's transport warns at exit


async def _answer(reader: asyncio.StreamReader, commands: Mapping[str, Callable[..., Any]]) -> None:
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "stop":
            reply({"ok": True})
            return
        handle = commands.get(op)
        if handle is None:
            reply({"error": f"unknown command {op!r}"})
            continue
        try:
            result = handle(cmd)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # report to the driver, keep serving
            reply({"error": repr(exc)})
            continue
        reply(result)


def tracker_commands(tracker: Tracker) -> dict[str, Callable[..., Any]]:
    """The commands every tracker test node answers: track, untrack, update, list, stats."""

    def untrack(cmd: dict[str, Any]) -> dict[str, bool]:
        tracker.untrack(cmd["owner"], cmd["topic"], cmd["key"])
        return {"ok": True}

    return {
        "track": lambda c: {"ref": tracker.track(c["owner"], c["topic"], c["key"], c["meta"])},
        "untrack": untrack,
        "update": lambda c: {"ref": tracker.update(c["owner"], c["topic"], c["key"], c["meta"])},
        "list": lambda c: tracker.list(c["topic"]),
        "stats": lambda c: tracker.stats(),
    }
