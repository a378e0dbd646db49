"""The one driver of child processes for tests, benchmarks, the demo and the soak.

:class:`Process` starts a child with its stdout on a pipe, waits for its first line (the
ready line every node prints once it serves), and stops it with SIGTERM, then SIGKILL
after a grace period; :func:`spawner` stops every process a test or script started, also
on failure. Two kinds of node are built on it:

* :class:`CommandNode`: a node script (``tests/pubsub_node.py``, ``tests/tracker_node.py``,
  ``bench/tracker_bench_node.py``) that prints a JSON ready line and answers one JSON line
  per JSON command line on its stdin (:mod:`tests.support.node` is its other end);
* :class:`CliNode`: a standalone ``python -m tracker_zmq node`` on fixed or free ports,
  its log in a file, restartable in place; the demo and the soak run these.

A node that does not answer in time, exits, or answers an error raises
:class:`NodeError`, an ``AssertionError`` so that pytest reports it as a failure.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
"""The repository root."""

P = TypeVar("P", bound="Process")


class NodeError(AssertionError):
    """A node did not get ready or answer in time, exited, or answered an error."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    condition: Callable[[], bool], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> float:
    """Poll ``condition`` every ``interval`` s until true; the seconds it took.

    Raises:
        NodeError: After ``timeout`` seconds.
    """
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise NodeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


class Process:
    """A child process whose first stdout line says it is ready; always cleaned up.

    Args:
        name: What messages call it.
        command: The command line.
        stdin: ``subprocess.PIPE`` for a command pipe, else ``subprocess.DEVNULL``.
        stderr: Where its stderr goes: a file, ``subprocess.DEVNULL``, or None (ours).
        env: Extra environment variables.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        stdin: int = subprocess.DEVNULL,
        stderr: IO[str] | int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            list(command),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        """The next line of its stdout.

        Raises:
            NodeError: When none comes within ``timeout`` seconds, or the process exited.
        """
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise NodeError(f"node {self.name} did not answer within {timeout} s{self.tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise NodeError(f"node {self.name} exited (code {self.proc.poll()}){self.tail()}")
        return line

    def tail(self) -> str:
        """What to add to an error message about this process (nothing here)."""
        return ""

    def running(self) -> bool:
        """Whether the process is still alive."""
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process if it is still running."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process (if still running), reap it and close its pipes."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.close()

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM the process and wait for its exit status.

        Raises:
            NodeError: When it ignored SIGTERM for ``timeout`` seconds (it is killed).
        """
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NodeError(f"node {self.name} ignored SIGTERM{self.tail()}") from None

    def stop(self, grace: float = 5.0) -> None:
        """Stop the process however it goes: SIGTERM, SIGKILL after ``grace`` seconds."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        """Close our ends of its pipes."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@contextmanager
def spawner(make: Callable[..., P]) -> Iterator[Callable[..., P]]:
    """Yield ``make``, remembering every process it made; stop them all on the way out."""
    made: list[P] = []

    def start(*args: Any, **kwargs: Any) -> P:
        process = make(*args, **kwargs)
        made.append(process)
        return process

    try:
        yield start
    finally:
        for process in made:
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop node {process.name}: {exc!r}", file=sys.stderr)


# --------------------------------------------------------------- command-pipe nodes


class CommandNode(Process):
    """A node script and its JSON-lines command pipe; ``ready`` is its first line, parsed.

    Args:
        script: The node script, run with this interpreter and ``--name name``.
        name: The node's name.
        *args: More arguments for the script.
        check_errors: Raise :class:`NodeError` when an answer is ``{"error": ...}``.
        ready_timeout: Seconds the node may take to print its ready line.
        stderr: Where its stderr goes (ours by default).
        strict: Run it with warnings as errors (as the tests do).
        python: The interpreter that runs the script (another release's, say).
    """

    def __init__(
        self,
        script: Path,
        name: str,
        *args: str,
        check_errors: bool = True,
        ready_timeout: float = 20.0,
        stderr: IO[str] | int | None = None,
        strict: bool = True,
        python: str = sys.executable,
    ) -> None:
        # node scripts import tests.support.node: the repository root goes on their path;
        # another release's interpreter must not see this tree's sources on PYTHONPATH
        ours = os.environ.get("PYTHONPATH") if python == sys.executable else None
        path = os.pathsep.join(filter(None, [str(ROOT), ours]))
        super().__init__(
            name,
            [python, str(script), "--name", name, *args],
            stdin=subprocess.PIPE,
            stderr=stderr,
            env={"PYTHONPATH": path, **({"PYTHONWARNINGS": "error"} if strict else {})},
        )
        self.check_errors = check_errors
        try:
            self.ready: dict[str, Any] = self.read(ready_timeout)
        except BaseException:
            self.stop()
            raise
        assert self.ready["ready"] == name, self.ready
        self.endpoint: str = self.ready["endpoint"]

    def read(self, timeout: float) -> Any:
        """The node's next answer, parsed (checked for an error unless ``check_errors`` is off)."""
        result = json.loads(self.readline(timeout))
        if self.check_errors and isinstance(result, dict) and "error" in result:
            raise NodeError(f"node {self.name}: {result['error']}")
        return result

    def send(self, cmd: str, **args: Any) -> None:
        """Send one command without waiting for its answer (see :meth:`read`)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()

    def call(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        """Send one command and return the node's answer."""
        self.send(cmd, **args)
        return self.read(timeout)

    def stop(self, grace: float = 5.0) -> None:
        """Ask the node to stop cleanly; then SIGTERM, then SIGKILL, whatever is needed."""
        if self.running():
            try:
                self.check_errors = False
                self.call("stop", timeout=5)
                self.proc.wait(5)
            except (AssertionError, OSError, ValueError, subprocess.TimeoutExpired):
                pass
        super().stop(grace)


# ------------------------------------------------------------------- standalone nodes


FAST_NODE_OPTIONS = (
    "--broadcast-period", "0.1",
    "--max-silent-periods", "3",
    "--down-period", "1",
    "--permdown-period", "5",
    "--gossip-interval", "0.1",
    "--peer-timeout", "1",
    "--client-min-lease", "0.5",
)  # fmt: skip
"""Short periods for tests: heartbeats every 0.1 s, down after 1 s, permdown after 5 s."""


class CliNode(Process):
    """A standalone ``python -m tracker_zmq node`` process.

    Its stderr (the log) goes to a file under ``log_dir`` (a pipe nobody reads could fill
    up and stall the node); its stdout gives the ready line, parsed into ``ready``,
    ``vsn``, ``endpoint`` and ``client_endpoint``. Give the same ``bind`` and
    ``client_bind`` again (or call :meth:`restart`) to restart a node in place.

    Args:
        name: The node's name.
        log_dir: Where its log files go (one per start).
        *options: More command-line options.
        peers: Seed endpoints.
        port: The cluster port on 127.0.0.1; a free one by default.
        client_port: The client port on 127.0.0.1; a free one by default.
        bind: The cluster endpoint (instead of ``port``).
        client_bind: The client endpoint (instead of ``client_port``).
        prefix: A command that runs the node (such as ``ip netns exec NS``).
        timeout: Seconds the node may take to print its ready line.
        strict: Run it with warnings as errors (as the tests do).
        python: The interpreter that runs ``-m tracker_zmq`` (another release's, say).
    """

    def __init__(
        self,
        name: str,
        log_dir: Path,
        *options: str,
        peers: Sequence[str] = (),
        port: int | None = None,
        client_port: int | None = None,
        bind: str | None = None,
        client_bind: str | None = None,
        prefix: Sequence[str] = (),
        timeout: float = 20.0,
        strict: bool = True,
        python: str = sys.executable,
    ) -> None:
        if bind is None:
            bind = f"tcp://127.0.0.1:{free_port() if port is None else port}"
        if client_bind is None:
            client_bind = f"tcp://127.0.0.1:{free_port() if client_port is None else client_port}"
        self.endpoint = bind
        self.client_endpoint = client_bind
        self.port = int(bind.rsplit(":", 1)[1])
        self.client_port = int(client_bind.rsplit(":", 1)[1])
        self.options = options
        self.peers = tuple(peers)
        self.prefix = tuple(prefix)
        self.strict = strict
        self.python = python
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        command = [
            *prefix, python, "-m", "tracker_zmq", "node",
            "--name", name,
            "--bind", bind,
            "--client-bind", client_bind,
            *(arg for peer in peers for arg in ("--peer", peer)),
            *options,
        ]  # fmt: skip
        env = {"PYTHONWARNINGS": "error"} if strict else {}
        if python != sys.executable:  # another release: not this tree's sources (empty: unset)
            env["PYTHONPATH"] = ""
        super().__init__(name, command, stderr=self._log, env=env)
        try:
            line = self.readline(timeout)
            if not line.startswith("ready "):
                raise NodeError(f"node {name} did not start: {line!r}{self.tail()}")
        except BaseException:
            self.stop()
            raise
        self.ready = dict(field.split("=", 1) for field in line.split()[1:])
        self.vsn = int(self.ready["vsn"])

    def restart(self, timeout: float = 20.0, python: str | None = None) -> CliNode:
        """A new process of this node on the same ports (the old one must be gone).

        Args:
            timeout: Seconds the new process may take to print its ready line.
            python: Its interpreter; None: this process's (another release's
                interpreter upgrades or downgrades the node in place).
        """
        return CliNode(
            self.name,
            self.log_dir,
            *self.options,
            peers=self.peers,
            bind=self.endpoint,
            client_bind=self.client_endpoint,
            prefix=self.prefix,
            timeout=timeout,
            strict=self.strict,
            python=self.python if python is None else python,
        )

    def log(self) -> str:
        """What the node logged so far."""
        self._log.flush()
        return self.log_path.read_text()

    def tail(self) -> str:
        return f"\n{self.log()}" if not self._log.closed else ""

    def close(self) -> None:
        super().close()
        self._log.close()
