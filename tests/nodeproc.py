"""Node processes for the cluster tests: both ends of their JSON-lines command pipe.

Each test node script (``pubsub_node.py``, ``tracker_node.py``,
``tracker_partition_node.py``) runs :func:`serve_commands`: it prints one JSON line when
ready (with ``"ready": name``), then answers each JSON command line on stdin with one
JSON line on stdout. The tests drive them with :class:`NodeProcess`. Standalone nodes
(``python -m tracker_zmq node``, driven through their client endpoint) run as
:class:`CliNode`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import selectors
import signal
import socket
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


# ---------------------------------------------------------------------------
# standalone nodes: ``python -m tracker_zmq node`` processes (tests/test_node.py)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# short periods for tests: heartbeats every 0.1 s, down after 1 s, permdown after 5 s
FAST_NODE_OPTIONS = (
    "--broadcast-period", "0.1",
    "--max-silent-periods", "3",
    "--down-period", "1",
    "--permdown-period", "5",
    "--gossip-interval", "0.1",
    "--peer-timeout", "1",
    "--client-min-lease", "0.5",
)  # fmt: skip


class CliNode:
    """A ``python -m tracker_zmq node`` process on 127.0.0.1.

    Its stderr (the log) goes to a file under ``log_dir`` (a pipe nobody reads could
    fill up and stall the node); its stdout gives the ready line, parsed into
    ``vsn``, ``endpoint`` and ``client_endpoint``. The same ports can be given again
    to restart a node in place.
    """

    def __init__(
        self,
        name: str,
        log_dir: Path,
        *options: str,
        peers: tuple[str, ...] = (),
        port: int | None = None,
        client_port: int | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.port = port if port is not None else free_port()
        self.client_port = client_port if client_port is not None else free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.client_endpoint = f"tcp://127.0.0.1:{self.client_port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        command = [
            sys.executable, "-m", "tracker_zmq", "node",
            "--name", name,
            "--bind", self.endpoint,
            "--client-bind", self.client_endpoint,
            *(arg for peer in peers for arg in ("--peer", peer)),
            *options,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        try:
            self.ready = self._read_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.vsn = int(self.ready["vsn"])

    def _read_ready(self, timeout: float) -> dict[str, str]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise AssertionError(f"node {self.name} not ready within {timeout} s\n{self.log()}")
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise AssertionError(f"node {self.name} exited ({self.proc.poll()})\n{self.log()}")
        return dict(field.split("=", 1) for field in line.split()[1:])

    def log(self) -> str:
        """What the node logged so far."""
        self._log.flush()
        return self.log_path.read_text()

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the node and wait for its exit status (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node {self.name} ignored SIGTERM\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL the node (if still running)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the node however it goes (SIGTERM, then SIGKILL) and close its files."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
