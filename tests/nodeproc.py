"""Node processes for the cluster tests: both ends of their JSON-lines command pipe.

Each test node script (``pubsub_node.py``, ``tracker_node.py``,
``tracker_partition_node.py``) runs :func:`serve_commands`: it prints one JSON line when
ready (with ``"ready": name``), then answers each JSON command line on stdin with one
JSON line on stdout. The tests drive them with :class:`NodeProcess`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class NodeProcess:
    """A node process and its command pipe; ``ready`` is what it said when it came up."""

    def __init__(self, script: Path, name: str, *args: str, check_errors: bool = True) -> None:
        self.name = name
        self.check_errors = check_errors
        self.proc = subprocess.Popen(
            [sys.executable, str(script), "--name", name, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        self.ready: dict[str, Any] = self._read(20.0)
        assert self.ready["ready"] == name
        self.endpoint: str = self.ready["endpoint"]

    def _read(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"node {self.name} did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"node {self.name} exited (code {self.proc.poll()})")
        return json.loads(line)

    def call(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        """Send one command and return the node's answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        result = self._read(timeout)
        if self.check_errors:
            assert not (isinstance(result, dict) and "error" in result), result
        return result

    def kill(self) -> None:
        """SIGKILL the process (if still running) and close its pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        """Ask the node to stop cleanly; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.call("stop", timeout=5)
                self.proc.wait(5)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


@contextmanager
def spawner(make: Callable[..., NodeProcess]) -> Iterator[Callable[..., NodeProcess]]:
    """Yield ``make``, remembering every node it made; stop them all on the way out."""
    nodes: list[NodeProcess] = []

    def start(*args: Any, **kwargs: Any) -> NodeProcess:
        node = make(*args, **kwargs)
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in nodes:
            node.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> float:
    """Poll ``condition`` until true; the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def _reply(value: Any) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def serve_commands(ready: dict[str, Any], commands: Mapping[str, Callable[..., Any]]) -> None:
    """Node side: say ``ready``, then answer each command until ``stop`` or end of input.

    ``commands`` maps a command name to a function of the command dict (sync or async)
    whose result is the reply; an unknown command or an exception is replied as
    ``{"error": ...}`` and the node keeps serving.
    """
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _reply(ready)
    while True:
        line = await reader.readline()
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["cmd"]
        if op == "stop":
            _reply({"ok": True})
            return
        handle = commands.get(op)
        if handle is None:
            _reply({"error": f"unknown command {op!r}"})
            continue
        try:
            result = handle(cmd)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # report to the test, keep serving
            _reply({"error": repr(exc)})
            continue
        _reply(result)


def tracker_commands(tracker: Any) -> dict[str, Callable[..., Any]]:
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


def tracker_arguments(permdown_period: float) -> argparse.Namespace:
    """The command line of a tracker test node: name, endpoints and short periods."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--bind", default="tcp://127.0.0.1:0")
    parser.add_argument("--peer", action="append", default=[])
    parser.add_argument("--broadcast-period", type=float, default=0.1)
    parser.add_argument("--max-silent-periods", type=int, default=3)
    parser.add_argument("--down-period", type=float, default=1.0)
    parser.add_argument("--permdown-period", type=float, default=permdown_period)
    return parser.parse_args()
